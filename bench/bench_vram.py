"""VRAM estimate accuracy (CUDA only): engine.plan.estimate's peak against the measured peak of real
training steps, for random-weight models shaped like 0.5B-8B Llama/Qwen, 16-bit LoRA and 4-bit
QLoRA, at a few sequence lengths.

    .venv/bin/python bench/bench_vram.py [--shapes 0.5b,1b,3b,8b] [--modes lora,qlora]
        [--seqs 512,2048] [--batch 2] [--steps 4] [--out FILE.json]

Each case runs in a fresh process (so peaks and the CUDA context are its own) through the
worker's own setup (engine.training.trainer.build_trainer: 4-bit base, kbit preparation, LoRA r16 on
q/k/v/o, gradient checkpointing as "auto" decides) on rows long enough to fill every sequence,
and records torch.cuda.max_memory_allocated, max_memory_reserved and the process's whole use
from NVML / nvidia-smi (reserved + CUDA context). The estimate is
engine.plan.estimate.peak_vram_gib with the checkpointing the run actually used; its error is given
against reserved + context (what the estimate models). Goal: within +-10%.
On a machine without CUDA it prints that it needs CUDA and exits 0 without writing figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

GOAL = 0.10


def process_gpu_gib() -> float | None:
    """This process's whole GPU memory (context included) from NVML, else nvidia-smi."""
    pid = os.getpid()
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == pid and proc.usedGpuMemory:
                return proc.usedGpuMemory / 2**30
    except Exception:
        pass
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout
        for line in out.splitlines():
            p, used = (x.strip() for x in line.split(","))
            if int(p) == pid:
                return float(used) / 1024
    except Exception:
        pass
    return None


def long_rows(n: int = 64) -> list[dict]:
    """Plain-text rows far longer than any --seqs, so every example is exactly max_seq_length."""
    import random

    rng = random.Random(0)
    return [{"text": " ".join(common.sentence(rng) for _ in range(1200))} for _ in range(n)]


def one_case(shape: str, mode: str, seq: int, batch: int, steps: int) -> dict:
    """Train a few steps of one case in this process and return estimate and measurements."""
    import torch
    from transformers import AutoConfig

    from engine.control import Control
    from engine.events import NullLog
    from engine.plan.estimate import peak_vram_gib
    from engine.plan.shape import model_shape
    from engine.training.trainer import build_trainer

    common.quiet()
    source = str(common.random_model(shape, "cuda"))
    torch.cuda.empty_cache()
    work = Path(tempfile.mkdtemp(prefix="tg-vram-"))
    data = common.write_jsonl(work / "long.jsonl", long_rows())
    spec = common.bench_spec(source, data, "cuda", steps, batch, seq, data_format="text")
    spec.lora.quantization = "4bit" if mode == "qlora" else "none"
    (work / "run").mkdir()
    torch.cuda.reset_peak_memory_stats()
    setup = build_trainer(spec, work / "run", NullLog(), Control(work / "run"))
    ckpt = bool(setup.trainer.args.activation_checkpointing)
    setup.trainer.train()
    torch.cuda.synchronize()
    allocated = torch.cuda.max_memory_allocated() / 2**30
    reserved = torch.cuda.max_memory_reserved() / 2**30
    whole = process_gpu_gib()
    context = whole - torch.cuda.memory_reserved() / 2**30 if whole is not None else None
    shp = model_shape(AutoConfig.from_pretrained(source))
    estimate = peak_vram_gib(shp, spec, mode == "qlora", ckpt, seq)
    shutil.rmtree(work, ignore_errors=True)
    measured = reserved + (context if context is not None else 0.0)
    return {
        "shape": shape,
        "mode": mode,
        "seq": seq,
        "batch": batch,
        "checkpointing": ckpt,
        "params": shp.params,
        "estimate_gib": estimate,
        "max_allocated_gib": round(allocated, 3),
        "max_reserved_gib": round(reserved, 3),
        "context_gib": round(context, 3) if context is not None else None,
        "measured_gib": round(measured, 3),
        "error": round((estimate - measured) / measured, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="0.5b,1b,3b,8b")
    parser.add_argument("--modes", default="lora,qlora")
    parser.add_argument("--seqs", default="512,2048")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", help="write the figures to this JSON file")
    parser.add_argument("--one", nargs=3, metavar=("SHAPE", "MODE", "SEQ"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("bench_vram: needs CUDA (an NVIDIA GPU); none is visible here, nothing measured")
        return 0
    if args.one:
        shape, mode, seq = args.one
        print("RESULT " + json.dumps(one_case(shape, mode, int(seq), args.batch, args.steps)))
        return 0

    cases = [
        (shape, mode, int(seq))
        for shape in args.shapes.split(",")
        for mode in args.modes.split(",")
        for seq in args.seqs.split(",")
    ]
    results, rows = [], []
    for shape, mode, seq in cases:
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                shape,
                mode,
                str(seq),
                "--batch",
                str(args.batch),
                "--steps",
                str(args.steps),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            print(f"{shape} {mode} seq {seq}: failed: {' | '.join(tail)}", file=sys.stderr)
            results.append({"shape": shape, "mode": mode, "seq": seq, "failed": tail})
            rows.append([shape, mode, seq, "-", "-", "-", "-", "-", "failed"])
            continue
        r = json.loads(line[len("RESULT ") :])
        results.append(r)
        rows.append(
            [
                shape,
                mode,
                seq,
                "on" if r["checkpointing"] else "off",
                f"{r['estimate_gib']:.2f}",
                f"{r['max_allocated_gib']:.2f}",
                f"{r['max_reserved_gib']:.2f}",
                f"{r['measured_gib']:.2f}",
                f"{r['error']:+.1%}",
            ]
        )
        print(f"{shape} {mode} seq {seq}: {json.dumps(r)}", file=sys.stderr)

    print(
        f"\nVRAM estimate vs measured, {torch.cuda.get_device_name(0)}, batch {args.batch}, "
        "LoRA r16 q/k/v/o; GiB; measured = max reserved + CUDA context"
    )
    print(
        common.table(
            [
                "shape",
                "mode",
                "seq",
                "ckpt",
                "estimate",
                "max alloc",
                "max reserved",
                "measured",
                "error",
            ],
            rows,
        )
    )
    ok = [r for r in results if "error" in r]
    within = sum(abs(r["error"]) <= GOAL for r in ok)
    worst = max((abs(r["error"]) for r in ok), default=float("nan"))
    print(f"VRAM estimate within ±{GOAL:.0%}: {within}/{len(ok)} cases; worst error {worst:.1%}")
    common.write_result(
        args.out,
        {
            "benchmark": "vram",
            "env": common.environment("cuda"),
            "settings": vars(args),
            "cases": results,
            "within_goal": within,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
