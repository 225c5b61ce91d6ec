#!/usr/bin/env bash
# Throughput of an 8B-shaped model (Llama-3.1-8B sizes, random weights), bf16 LoRA: the size
# Unsloth's ~2x claim is usually quoted for; batch 4 x 1024 so the baseline (no checkpointing)
# fits in 80 GB. About 6-7 minutes (building and saving 16 GB of
# weights takes 1-2 of them). Carry: bench/gpu/wheels/base.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
OUT="${OUT:-$ROOT/bench/gpu/out}"; mkdir -p "$OUT"
cd "$ROOT"
timeout 450 "$PY" bench/bench_throughput.py --model config:8b --device cuda \
  --steps 20 --warmup 4 --batch 4 --seq 1024 --long-tail 4 --repeats 1 \
  --variants ours,ours-liger \
  --out "$OUT/throughput-8b.json" 2>"$OUT/throughput-8b.log" | tee "$OUT/throughput-8b.txt"
