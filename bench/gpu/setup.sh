#!/usr/bin/env bash
# On the lent GPU machine (no network): install, from the carried wheel folders, each package
# whose module is not importable there yet (what is already installed is left alone), then print
# the versions the benchmarks will record. Sourced by every run_*.sh; sets $PY.
#
#   source bench/gpu/setup.sh
set -uo pipefail
GPU_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$GPU_DIR/../.." && pwd)"
PY="${PY:-$(command -v python3 || command -v python)}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"
export TUNEGRAPH_BENCH_MODELS="${TUNEGRAPH_BENCH_MODELS:-/tmp/tunegraph-bench-models}"

# module to import : wheel name prefix
NEEDS="datasets:datasets dill:dill multiprocess:multiprocess xxhash:xxhash fsspec:fsspec
pandas:pandas dateutil:python_dateutil pytz:pytz tzdata:tzdata six:six
sqlite_utils:sqlite_utils sqlite_fts4:sqlite_fts4 click:click click_default_group:click_default_group
tabulate:tabulate pluggy:pluggy psutil:psutil platformdirs:platformdirs pynvml:nvidia_ml_py
liger_kernel:liger_kernel bitsandbytes:bitsandbytes"

todo=()
for pair in $NEEDS; do
  module="${pair%%:*}" wheel="${pair##*:}"
  if ! "$PY" -c "import $module" >/dev/null 2>&1; then
    file="$(ls "$GPU_DIR"/wheels/*/"$wheel"-*.whl 2>/dev/null | head -1 || true)"
    if [ -n "$file" ]; then todo+=("$file"); else echo "setup: $module missing and no wheel carried"; fi
  fi
done
if [ "${#todo[@]}" -gt 0 ]; then
  "$PY" -m pip install -q --no-index --no-deps "${todo[@]}" 2>&1 | grep -v "^WARNING" || true
fi
"$PY" - <<'PY'
import importlib
out = []
for name in ("torch", "transformers", "peft", "accelerate", "datasets", "bitsandbytes",
             "liger_kernel", "flash_attn"):
    try:
        out.append(f"{name} {getattr(importlib.import_module(name), '__version__', '?')}")
    except Exception as exc:
        out.append(f"{name} -- ({type(exc).__name__})")
import torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA"
print("setup:", gpu, "x", torch.cuda.device_count(), "|", ", ".join(out))
PY
