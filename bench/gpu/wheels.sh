#!/usr/bin/env bash
# Download, on a machine with PyPI access, the wheels the lent GPU machine lacks (it has no
# network): Python 3.12, manylinux x86_64, no dependencies resolved (setup.sh installs only what
# is missing there). Two folders, so a call carries only what it needs (the device tool carries
# at most 64 MiB of ignored paths per call):
#   bench/gpu/wheels/base  datasets (+ dill, multiprocess, xxhash, fsspec, pandas), sqlite-utils
#                          (+ its small deps), psutil, platformdirs, nvidia-ml-py, liger-kernel
#   bench/gpu/wheels/bnb   bitsandbytes (4-bit QLoRA; ~41 MiB alone)
# Both are gitignored. Prints each folder's size at the end.
#
#   bash bench/gpu/wheels.sh
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PIP="${PIP:-$ROOT/.venv/bin/pip}"
TAGS=(--only-binary=:all: --no-deps --python-version 3.12
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)

BASE=(
  "datasets>=3.0,<6" dill multiprocess xxhash "fsspec<=2025.10.0,>=2023.1.0"
  pandas python-dateutil pytz tzdata six
  "sqlite-utils>=3.36,<5" sqlite-fts4 click click-default-group tabulate pluggy
  psutil platformdirs "nvidia-ml-py>=12" "liger-kernel>=0.5"
)
BNB=("bitsandbytes>=0.48")

mkdir -p "$HERE/wheels/base" "$HERE/wheels/bnb"
for spec in "${BASE[@]}"; do
  "$PIP" download -q "${TAGS[@]}" -d "$HERE/wheels/base" "$spec" 2>&1 | grep -v "is ignored" || true
done
for spec in "${BNB[@]}"; do
  "$PIP" download -q "${TAGS[@]}" -d "$HERE/wheels/bnb" "$spec" 2>&1 | grep -v "is ignored" || true
done
ls -l "$HERE/wheels/base" "$HERE/wheels/bnb" | awk 'NF>5 {printf "%8.1f MiB  %s\n", $5/1048576, $9}'
du -sm "$HERE/wheels/base" "$HERE/wheels/bnb" | awk '{print "total " $1 " MiB  " $2}'
echo "carry at most 64 MiB per call: base alone, or base + bnb if they fit (see the totals)"
