#!/usr/bin/env bash
# Two runs on one GPU through our supervisor (TUNEGRAPH_HOME in $OUT/home): holds, placement,
# overlap, GPU peak vs holds, each run its own worker; then 2 and 4 runs sharing one copy of the
# base in a group process; then a DDP run when the machine has 2+ GPUs (skipped otherwise).
# About 8-9 minutes (timeouts 170 + 170 + 200 + 60 s): a call of its own. Carry: bench/gpu/wheels/base.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
OUT="${OUT:-$ROOT/bench/gpu/out}"; mkdir -p "$OUT"
cd "$ROOT"
timeout 170 "$PY" bench/gpu/parallel_schedule.py --model config:0.5b --steps 100 --wait 140 \
  --out "$OUT/parallel.json" 2>"$OUT/parallel.log" | tee "$OUT/parallel.txt" || true
# the same two runs, and four, as one group process sharing the base (issue 23)
timeout 170 "$PY" bench/gpu/parallel_schedule.py --model config:0.5b --steps 100 --wait 140 --share-base on \
  --home "$OUT/home-group" --out "$OUT/group2.json" 2>"$OUT/group2.log" | tee "$OUT/group2.txt" || true
timeout 200 "$PY" bench/gpu/parallel_schedule.py --model config:0.5b --steps 100 --wait 170 --runs 4 \
  --share-base on --home "$OUT/home-group4" --out "$OUT/group4.json" 2>"$OUT/group4.log" \
  | tee "$OUT/group4.txt" || true
timeout 60 "$PY" bench/gpu/parallel_schedule.py --ddp --model config:0.5b --steps 60 \
  --home "$OUT/home-ddp" --out "$OUT/ddp.json" 2>"$OUT/ddp.log" | tee "$OUT/ddp.txt" || true
