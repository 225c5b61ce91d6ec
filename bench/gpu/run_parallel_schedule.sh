#!/usr/bin/env bash
# Two runs on one GPU through our supervisor (TUNEGRAPH_HOME in $OUT/home): holds, placement,
# overlap, GPU peak vs holds; then a DDP run when the machine has 2+ GPUs (skipped otherwise).
# About 4-6 minutes. Carry: bench/gpu/wheels/base.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
OUT="${OUT:-$ROOT/bench/gpu/out}"; mkdir -p "$OUT"
cd "$ROOT"
timeout 400 "$PY" bench/gpu/parallel_schedule.py --model config:0.5b --steps 150 \
  --out "$OUT/parallel.json" 2>"$OUT/parallel.log" | tee "$OUT/parallel.txt" || true
timeout 150 "$PY" bench/gpu/parallel_schedule.py --ddp --model config:0.5b --steps 60 \
  --home "$OUT/home-ddp" --out "$OUT/ddp.json" 2>"$OUT/ddp.log" | tee "$OUT/ddp.txt" || true
