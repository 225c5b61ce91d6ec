"""VRAM estimate against a traced training step, no GPU needed: engine.plan.estimate.memory_parts (the
tensor part of the estimate, before the allocator's slack and the CUDA context) vs the peak of
live tensor bytes in two LoRA training steps traced on fake tensors (engine/memory_sim.py), for
models shaped like 0.5B-8B Llama/Qwen at their full depth.

    .venv/bin/python bench/bench_vram_sim.py [--shapes 0.5b,1b,3b,8b] [--seqs 512,2048]
        [--batch 2] [--out FILE.json]

Cases per shape and sequence length: checkpointing off and on, times LoRA r16 on q/k/v/o
without dropout (the defaults) and on all linears with dropout 0.05; padding-free batches (the
default) with sdpa. What the trace cannot show, and bench/bench_vram.py measures on a GPU: the
CUDA context, kernels' workspaces, the caching allocator's rounding and fragmentation, and
4-bit bases (bitsandbytes has no fake-tensor kernels). Goal: within +-10%.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from engine.hardware import GIB

GOAL = 0.10
LORA_CASES = [
    ("q,k,v,o", ["q_proj", "k_proj", "v_proj", "o_proj"], 0.0),
    ("all d.05", ["all-linear"], 0.05),
]


def one_case(shape: str, seq: int, batch: int, checkpointing: bool, targets, dropout) -> dict:
    from engine.plan.estimate import memory_parts, peak_vram_gib
    from engine.plan.memory_trace import simulate_peak
    from engine.plan.shape import model_shape

    config = common.shape_config(shape)
    spec = common.bench_spec("unused", Path("unused.jsonl"), "cuda", 2, batch, seq)
    spec.lora.target_modules = list(targets)
    spec.lora.dropout = dropout
    started = time.perf_counter()
    traced = simulate_peak(config, spec, seq, checkpointing)
    shp = model_shape(config)
    parts = memory_parts(shp, spec, False, checkpointing, seq)
    estimate = sum(parts.values())
    return {
        "shape": shape,
        "seq": seq,
        "batch": batch,
        "checkpointing": checkpointing,
        "targets": targets,
        "dropout": dropout,
        "params": shp.params,
        "parts_gib": {k: round(v / GIB, 3) for k, v in parts.items()},
        "estimate_tensors_gib": round(estimate / GIB, 3),
        "estimate_gib": peak_vram_gib(shp, spec, False, checkpointing, seq),
        "traced_gib": round(traced.peak_bytes / GIB, 3),
        "error": round((estimate - traced.peak_bytes) / traced.peak_bytes, 4),
        "trace_s": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="0.5b,1b,3b,8b")
    parser.add_argument("--seqs", default="512,2048")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--out", help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    common.quiet()

    results, rows = [], []
    for shape in args.shapes.split(","):
        for seq in (int(s) for s in args.seqs.split(",")):
            for checkpointing in (False, True):
                for label, targets, dropout in LORA_CASES:
                    r = one_case(shape, seq, args.batch, checkpointing, targets, dropout)
                    results.append(r)
                    rows.append(
                        [
                            shape,
                            seq,
                            "on" if checkpointing else "off",
                            label,
                            f"{r['estimate_tensors_gib']:.2f}",
                            f"{r['traced_gib']:.2f}",
                            f"{r['error']:+.1%}",
                            f"{r['estimate_gib']:.2f}",
                        ]
                    )
                    print(f"{shape} seq {seq} ckpt {checkpointing} {label}: {r}", file=sys.stderr)

    print(
        f"\nVRAM estimate (tensors) vs a traced training step, batch {args.batch}, LoRA r16, "
        "padding-free, sdpa; GiB"
    )
    print(
        common.table(
            ["shape", "seq", "ckpt", "LoRA", "estimate", "traced", "error", "with ctx+slack"],
            rows,
        )
    )
    errors = [abs(r["error"]) for r in results]
    inside = sum(e <= GOAL for e in errors)
    print(
        f"\nratio: {inside}/{len(errors)} cases within +-{GOAL:.0%} of the traced peak "
        f"(max |error| {max(errors):.1%}, mean {sum(errors) / len(errors):.1%})"
    )
    common.write_result(
        args.out,
        {
            "benchmark": "vram_sim",
            "env": common.environment("cpu"),
            "batch": args.batch,
            "results": results,
            "within_goal": inside,
            "cases": len(errors),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
