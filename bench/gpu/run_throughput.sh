#!/usr/bin/env bash
# Throughput on the lent GPU: ours vs plain transformers+PEFT (padded batches), bf16 LoRA, with
# the speed switches one at a time; MFU against the bf16 peak measured in the same run.
# About 5-7 minutes on an H100. Carry: bench/gpu/wheels/base.
#   bash bench/gpu/run_throughput.sh            (figures in $OUT, else bench/gpu/out)
set -euo pipefail
source "$(dirname "$0")/setup.sh"
OUT="${OUT:-$ROOT/bench/gpu/out}"; mkdir -p "$OUT"
cd "$ROOT"
for model in 0.5b 1b; do
  timeout 270 "$PY" bench/bench_throughput.py --model "config:$model" --device cuda \
    --steps 40 --warmup 5 --batch 8 --seq 2048 --long-tail 4 --repeats 2 \
    --variants ours,ours-padded,ours-eager,ours-liger,ours-ckpt \
    --out "$OUT/throughput-$model.json" 2>"$OUT/throughput-$model.log" \
    | tee "$OUT/throughput-$model.txt" || echo "throughput $model: exit $?" | tee -a "$OUT/errors.txt"
done
