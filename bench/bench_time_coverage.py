"""Time-estimate coverage: how many short runs finish inside the time range the estimate predicted,
and how wide that range is.

    .venv/bin/python bench/bench_time_coverage.py [--model tiny|PATH|config:<shape>]
        [--device cpu|cuda] [--runs 8] [--learn runs|speed-check|none] [--calibrate 3]
        [--out FILE.json]

The scored set of run shapes (steps, micro-batch, max_seq_length, packing, GGUF export on or off)
is trained one after the other, each as a real worker process (`python -m engine.training.worker
RUN_DIR`, with the thread count the supervisor would give it). Before each run the estimate is
computed as the CLI and the supervisor do (engine.plan.report.estimate_spec), and the run's wall
time from process start to exit is compared with its `time_s` range. What the estimate may know:

- `--learn runs` (default): first `--calibrate` runs of other shapes, on other data, teach the
  machine its speed exactly as the supervisor does after a completed run (engine.plan.calibration),
  and each scored run is recorded after it is scored, so each prediction knows earlier runs only.
- `--learn speed-check`: nothing is recorded; every scored run is predicted as a model's first
  run is, from the speed check alone (engine.plan.probe: a short real run of its spec), which is
  dropped again after each prediction.
- `--learn none`: the size-based model alone (speed check off, nothing recorded).

Prints a table and the coverage line (goals: >= 90% of runs inside their range, a range at most
2x wide).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

GOAL = 0.90
WIDTH_GOAL = 2.0
# calibration runs: other shapes than the scored ones, on other data
CALIBRATE_CPU = [(12, 2, 256, True, False), (25, 4, 128, True, False), (8, 4, 256, True, True)]
CALIBRATE_GPU = [(30, 4, 1024, True, False), (80, 8, 512, True, False), (20, 8, 512, True, True)]
# (steps, micro-batch, max_seq_length, packing, gguf export)
SHAPES_CPU = [
    (5, 2, 128, True, False),
    (20, 4, 256, True, False),
    (10, 8, 512, False, False),
    (40, 2, 256, True, False),
    (10, 4, 512, True, True),
    (30, 8, 256, True, False),
    (15, 1, 1024, False, False),
    (60, 4, 128, True, False),
]
SHAPES_GPU = [
    (20, 4, 512, True, False),
    (50, 8, 1024, True, False),
    (30, 2, 2048, True, False),
    (100, 8, 512, True, False),
    (40, 4, 1024, False, False),
    (20, 16, 512, True, True),
    (60, 4, 2048, True, False),
    (200, 8, 256, True, False),
]


def run_worker(run_dir: Path, env: dict, estimate: dict | None = None) -> tuple[float, dict]:
    """Start the worker, wait for it, return (wall seconds, phase durations from its events);
    with the run's `estimate`, record what it measured for the next estimates."""
    from engine.events import read_events
    from engine.rundir import entry_command

    t0 = time.time()
    with open(run_dir / "worker.log", "ab") as log:
        proc = subprocess.run(
            entry_command(sys.executable, "worker", str(run_dir)),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=900,
        )
    wall = time.time() - t0
    if proc.returncode != 0:
        tail = (run_dir / "worker.log").read_text(errors="replace")[-1500:]
        raise RuntimeError(f"worker failed ({proc.returncode}):\n{tail}")
    states = {e["state"]: e.ts for e in read_events(run_dir / "events.jsonl") if e.kind == "status"}
    if estimate is not None:  # what the supervisor records after a run completed in one go
        from engine.plan import calibration

        calibration.record(
            estimate["calibration_key"],
            calibration.sample_from_phases(
                estimate["work"], t0, states["training"], states["evaluating"], t0 + wall
            ),
        )
    phases = {
        "to_training": states.get("training", t0) - t0,
        "training": states.get("evaluating", t0) - states.get("training", t0),
        "after_training": time.time() - states.get("evaluating", time.time()),
    }
    return wall, {k: round(v, 2) for k, v in phases.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny, config:<shape> or a model folder")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--runs", type=int, default=8, help="how many of the run shapes to score")
    parser.add_argument(
        "--learn",
        default="runs",
        choices=("runs", "speed-check", "none"),
        help="what the estimates learn from: earlier runs, the speed check alone, nothing",
    )
    parser.add_argument(
        "--calibrate", type=int, default=3, help="with --learn runs: calibration runs first"
    )
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--out", help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    common.quiet()
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("bench_time_coverage: --device cuda needs CUDA, and none is visible")
            return 2

    home = Path(tempfile.mkdtemp(prefix="tg-coverage-"))
    os.environ["TUNEGRAPH_HOME"] = str(home)
    os.environ["TUNEGRAPH_SPEED_CHECK"] = "0" if args.learn == "none" else "1"
    learn_runs = args.learn == "runs"
    from engine import hardware
    from engine.plan.report import estimate_spec

    source = common.model_source(args.model, args.device)
    data = common.write_jsonl(home / "chats.jsonl", common.varied_chats(args.rows))
    env = {
        **os.environ,
        "TUNEGRAPH_THREADS": str(hardware.cpu_threads_per_run()),
        "TUNEGRAPH_HOME": str(home),
    }
    calibrate = (CALIBRATE_GPU if args.device == "cuda" else CALIBRATE_CPU)[: args.calibrate]
    calibrate = calibrate if learn_runs else []
    other = common.write_jsonl(home / "other.jsonl", common.varied_chats(args.rows // 2, seed=7))
    for i, (steps, batch, seq, packing, gguf) in enumerate(calibrate):
        spec = common.bench_spec(
            source, other, args.device, steps, batch, seq, name=f"cal{i}", packing=packing
        )
        spec.export.gguf = gguf
        spec.export.quant = "Q8_0"
        run_dir = home / "runs" / f"cal{i}"
        run_dir.mkdir(parents=True)
        spec.save(run_dir / "spec.json")
        wall, _ = run_worker(run_dir, env, estimate_spec(spec, args.device))
        print(f"calibration run {i + 1}/{len(calibrate)}: {wall:.1f} s", file=sys.stderr)
    shapes = (SHAPES_GPU if args.device == "cuda" else SHAPES_CPU)[: args.runs]
    rows, figures = [], []
    for i, (steps, batch, seq, packing, gguf) in enumerate(shapes):
        spec = common.bench_spec(
            source, data, args.device, steps, batch, seq, name=f"cov{i}", packing=packing
        )
        spec.export.gguf = gguf
        spec.export.quant = "Q8_0"
        estimate = estimate_spec(spec, args.device)
        if not learn_runs:  # the next run is a first run again
            (home / "timing.json").unlink(missing_ok=True)
        low, high = estimate["time_s"]["low"], estimate["time_s"]["high"]
        run_dir = home / "runs" / f"cov{i}"
        run_dir.mkdir(parents=True)
        spec.save(run_dir / "spec.json")
        wall, phases = run_worker(run_dir, env, estimate if learn_runs else None)
        inside = low <= wall <= high
        figures.append(
            {
                "steps": steps,
                "batch": batch,
                "seq": seq,
                "packing": packing,
                "gguf": gguf,
                "low": low,
                "high": high,
                "measured": round(wall, 2),
                "inside": inside,
                "width": round(high / low, 2) if low else None,
                "basis": estimate.get("time_basis"),
                "phases": phases,
            }
        )
        rows.append(
            [
                f"{steps}x{batch}@{seq}" + (" packed" if packing else " padded"),
                "gguf" if gguf else "-",
                f"{low:.0f}-{high:.0f}",
                f"{wall:.1f}",
                f"{phases['to_training']:.0f}/{phases['training']:.0f}/"
                f"{phases['after_training']:.0f}",
                "yes" if inside else ("below" if wall < low else "above"),
            ]
        )
        print(f"run {i + 1}/{len(shapes)}: {json.dumps(figures[-1])}", file=sys.stderr)

    shutil.rmtree(home, ignore_errors=True)
    coverage = sum(f["inside"] for f in figures) / len(figures)
    widths = sorted(f["width"] for f in figures if f["width"])
    width = widths[len(widths) // 2] if widths else float("nan")
    print(
        f"\ntime-estimate coverage, {args.model} on {args.device}, one run at a time, "
        + {
            "runs": f"after {len(calibrate)} calibration runs on other shapes and data",
            "speed-check": "each predicted as a first run, from the speed check alone",
            "none": "from the model's size alone",
        }[args.learn]
    )
    print(
        common.table(
            [
                "run (steps x batch @ seq)",
                "export",
                "predicted s",
                "measured s",
                "start/train/end s",
                "inside",
            ],
            rows,
        )
    )
    verdict = "meets" if coverage >= GOAL else "misses"
    print(
        f"coverage = {coverage:.0%} ({sum(f['inside'] for f in figures)}/{len(figures)} runs "
        f"inside the predicted range; {verdict} the goal >= {GOAL:.0%})"
    )
    print(
        f"range width high/low: median {width:.2f}x, max {max(widths or [0]):.2f}x "
        f"({'meets' if widths and max(widths) <= WIDTH_GOAL else 'misses'} the goal <= "
        f"{WIDTH_GOAL:.0f}x)"
    )
    common.write_result(
        args.out,
        {
            "benchmark": "time_coverage",
            "env": common.environment(args.device),
            "model": args.model,
            "runs": figures,
            "coverage": coverage,
            "learn": args.learn,
            "calibration_runs": len(calibrate),
            "median_width": width,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
