#!/usr/bin/env bash
# 4-bit QLoRA (bitsandbytes NF4) on the lent GPU: ours vs plain transformers+PEFT QLoRA, tokens/s
# and peak memory, 1B and 3B shapes. About 6 minutes. Carry: bench/gpu/wheels/base and
# bench/gpu/wheels/bnb (58 MiB together).
set -euo pipefail
source "$(dirname "$0")/setup.sh"
OUT="${OUT:-$ROOT/bench/gpu/out}"; mkdir -p "$OUT"
cd "$ROOT"
for model in 1b 3b; do
  timeout 200 "$PY" bench/bench_throughput.py --model "config:$model" --device cuda --quant 4bit \
    --steps 30 --warmup 5 --batch 4 --seq 1024 --long-tail 4 --repeats 1 \
    --variants ours,ours-liger \
    --out "$OUT/qlora-$model.json" 2>"$OUT/qlora-$model.log" \
    | tee "$OUT/qlora-$model.txt" || echo "qlora $model: exit $?" | tee -a "$OUT/errors.txt"
done
