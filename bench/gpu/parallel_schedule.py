"""Runs on one GPU through our supervisor (or one DDP run over every GPU with --ddp): their
VRAM holds, placements, overlap in time, and the GPU's peak memory against the holds. With
--share-base on, the runs (one base, submitted together) train as one group process on one copy
of the base (engine.supervisor.groups); off, each has a worker of its own.

    python bench/gpu/parallel_schedule.py --out $OUT/parallel.json [--model config:0.5b]
        [--steps 150] [--runs 2] [--share-base off|on] [--ddp]

TUNEGRAPH_HOME is $OUT/home (or --home), so the run directories, event logs and the store come
back with the results. The GPU's used memory is sampled through NVML every 0.2 s while the runs
live. GGUF export is off (merging a random 0.5B model tells nothing); the adapter is kept.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import common  # noqa: E402

TERMINAL = {"completed", "failed", "cancelled", "refused"}


def sample_gpu(stop: threading.Event, samples: list) -> None:
    import pynvml

    pynvml.nvmlInit()
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    while not stop.is_set():
        used = [pynvml.nvmlDeviceGetMemoryInfo(h).used / 2**30 for h in handles]
        samples.append((time.time(), used))
        stop.wait(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="config:0.5b")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=2, help="how many runs to submit together")
    parser.add_argument(
        "--share-base",
        choices=("off", "on"),
        default="off",
        help="on: the runs share one copy of the base in one group process",
    )
    parser.add_argument("--ddp", action="store_true", help="one run over every GPU instead")
    parser.add_argument(
        "--wait", type=float, default=480, help="seconds to wait for the runs before reporting"
    )
    parser.add_argument("--home", help="TUNEGRAPH_HOME (default: OUT/home)")
    parser.add_argument("--out", required=True, help="the JSON result file")
    args = parser.parse_args(argv)
    out = Path(args.out)
    home = Path(args.home or out.parent / "home")
    home.mkdir(parents=True, exist_ok=True)
    os.environ["TUNEGRAPH_HOME"] = str(home)
    common.quiet()

    import torch

    if not torch.cuda.is_available():
        print("parallel_schedule: needs CUDA; none is visible, nothing measured")
        return 0
    count = torch.cuda.device_count()
    if args.ddp and count < 2:
        print(f"parallel_schedule --ddp: needs 2 or more GPUs, this machine has {count}")
        common.write_result(str(out), {"benchmark": "ddp", "skipped": f"{count} GPU"})
        return 0

    from engine.events import read_events
    from engine.plan.report import estimate_spec
    from engine.store.index import Store
    from engine.supervisor import client
    from engine.supervisor import process as supervisor_process

    source = common.model_source(args.model, "cuda")
    data = common.write_jsonl(home / "chats.jsonl", common.varied_chats(1000, long_tail=4))
    names = ["ddp"] if args.ddp else [f"variant {i}" for i in range(args.runs)]
    specs = []
    for name in names:
        spec = common.bench_spec(source, data, "cuda", args.steps, args.batch, args.seq, name=name)
        spec.resources.gpu_count = count if args.ddp else 1
        spec.resources.share_base = args.share_base == "on"
        spec.export.adapter_zip = True
        specs.append(spec)
    estimates = [estimate_spec(s, "cuda") for s in specs]

    stop, samples = threading.Event(), []
    sampler = threading.Thread(target=sample_gpu, args=(stop, samples), daemon=True)
    sampler.start()
    store = Store()
    t0 = time.time()
    holds_seen: list[dict] = []
    try:
        entries = client.submit(store, specs, estimates)
        ids = [e["id"] for e in entries]
        deadline = t0 + args.wait
        while time.time() < deadline:
            holds_seen.append({"t": round(time.time() - t0, 1), "holds": store.holds()})
            runs = [store.run_json(i) for i in ids]
            if all(r["state"] in TERMINAL for r in runs):
                break
            time.sleep(1.0)
        runs = [store.run_json(i) for i in ids]
        for run in runs:  # out of time: the next measurement gets the GPU to itself
            if run["state"] not in TERMINAL:
                client.control(store, "cancel", run["id"])
    finally:
        stop.set()
        sampler.join(timeout=5)
        supervisor_process.stop_supervisor()
        store.close()

    result_runs = []
    for spec, est, run in zip(specs, estimates, runs, strict=True):
        run_dir = Path(run["run_dir"])
        schedule = [
            dict(e.data) for e in read_events(run_dir / "supervisor.jsonl") if e.kind == "schedule"
        ]
        statuses = {
            e["state"]: e.ts for e in read_events(run_dir / "events.jsonl") if e.kind == "status"
        }
        peaks = [
            e["peak_mem_gib"]
            for e in read_events(run_dir / "events.jsonl")
            if e.kind == "metric" and e.get("peak_mem_gib") is not None
        ]
        result_runs.append(
            {
                "name": spec.name,
                "state": run["state"],
                "device": run["device"],
                "estimate_vram_gib": est["vram_gib"],
                "schedule": schedule,
                "group": next((e.get("group") for e in reversed(schedule)), None),
                "training_from": statuses.get("training"),
                "training_to": statuses.get("evaluating"),
                "peak_reserved_gib": max(peaks) if peaks else None,
                "tokens_per_s": (run.get("metrics") or {}).get("tokens_per_s"),
                "error": run.get("error"),
            }
        )
    spans = [(r["training_from"], r["training_to"]) for r in result_runs]
    overlap = None  # the time every run was training at once
    if len(spans) > 1 and all(a and b for a, b in spans):
        overlap = max(0.0, min(b for _, b in spans) - max(a for a, _ in spans))
    peak_used = max((max(u) for _, u in samples), default=None)
    result = {
        "benchmark": "ddp" if args.ddp else "parallel_schedule",
        "env": common.environment("cuda"),
        "settings": vars(args),
        "runs": result_runs,
        "training_overlap_s": overlap,
        "gpu_peak_used_gib": peak_used,
        "holds_sampled": holds_seen[:: max(1, len(holds_seen) // 40)],
        "wall_s": round(time.time() - t0, 1),
    }
    for r in result_runs:
        print(
            f"{r['name']}: {r['state']} on {r['device']} ({r['group'] or 'own worker'}), "
            f"estimate {r['estimate_vram_gib']}, "
            f"peak reserved {r['peak_reserved_gib']} GiB, {r['tokens_per_s']} tokens/s"
        )
    print(
        f"training overlap {overlap} s; GPU peak used {peak_used} GiB "
        "(NVML, all processes, contexts included)"
    )
    common.write_result(str(out), result)
    return 0 if all(r["state"] == "completed" for r in result_runs) else 1


if __name__ == "__main__":
    sys.exit(main())
