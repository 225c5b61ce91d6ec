#!/usr/bin/env bash
# VRAM estimate accuracy for the 8B shape (16-bit LoRA and 4-bit QLoRA, seq 512 and 2048).
# About 6-7 minutes. Carry: bench/gpu/wheels/base and bench/gpu/wheels/bnb.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
OUT="${OUT:-$ROOT/bench/gpu/out}"; mkdir -p "$OUT"
cd "$ROOT"
timeout 460 "$PY" bench/bench_vram.py --shapes 8b --modes lora,qlora --seqs 512,2048 \
  --batch 2 --steps 4 --out "$OUT/vram-8b.json" 2>"$OUT/vram-8b.log" | tee "$OUT/vram-8b.txt"
