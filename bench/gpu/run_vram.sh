#!/usr/bin/env bash
# VRAM estimate accuracy on the lent GPU: 0.5B, 1B, 3B shapes x {16-bit LoRA, 4-bit QLoRA} x
# seq {512, 2048}, each case in a fresh process. About 6-7 minutes. Carry: bench/gpu/wheels/base
# and bench/gpu/wheels/bnb. The 8B shape: run_vram_8b.sh.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
OUT="${OUT:-$ROOT/bench/gpu/out}"; mkdir -p "$OUT"
cd "$ROOT"
timeout 460 "$PY" bench/bench_vram.py --shapes "${SHAPES:-0.5b,1b,3b}" --modes lora,qlora \
  --seqs 512,2048 --batch 2 --steps 4 \
  --out "$OUT/vram.json" 2>"$OUT/vram.log" | tee "$OUT/vram.txt"
