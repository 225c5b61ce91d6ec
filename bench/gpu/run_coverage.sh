#!/usr/bin/env bash
# Time-estimate coverage on the lent GPU: 8 short worker runs of the 0.5B shape with varied
# steps/batch/seq, each run's measured wall time against its predicted range. About 5-7 minutes.
# Carry: bench/gpu/wheels/base.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
OUT="${OUT:-$ROOT/bench/gpu/out}"; mkdir -p "$OUT"
cd "$ROOT"
timeout 460 "$PY" bench/bench_time_coverage.py --model config:0.5b --device cuda --runs 8 \
  --out "$OUT/coverage.json" 2>"$OUT/coverage.log" | tee "$OUT/coverage.txt"
