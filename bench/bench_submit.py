"""Time from submit to the first training step: through the client and the supervisor, against
starting the worker by hand (`python -m engine.training.worker RUN_DIR`) on the same spec.

    .venv/bin/python bench/bench_submit.py [--rounds 5]

Each round times a bare worker, a submit to a supervisor already running (warm) and a submit that
has to start the supervisor first (cold), in that order; every run is cancelled after its first
step. The estimate is computed once beforehand, as `tunegraph run` does before it submits. Prints
a table of seconds and the ratio of the medians (goal: warm / bare <= 1.2).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GOAL = 1.2


def write_chats(path: Path, rows: int = 40) -> Path:
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"My router blinks red (ticket {i})."},
                    {
                        "role": "assistant",
                        "content": f"Sorry! For ticket {i}: restart it and wait a minute.",
                    },
                ]
            }
        )
        for i in range(rows)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_spec(data: Path):
    from engine.spec import BaseModelSpec, DatasetSpec, JobSpec, LoraSpec, TrainingSpec

    return JobSpec(
        name="bench",
        base_model=BaseModelSpec(source="builtin:tiny-llama"),
        datasets=[DatasetSpec(path=str(data))],
        training=TrainingSpec(
            max_steps=200, micro_batch_size=4, max_seq_length=128, eval_split=0.1, save_steps=0
        ),
        lora=LoraSpec(r=4, alpha=8),
    )


def milestones(run_dir: Path, timeout: float = 120.0) -> tuple[float, float]:
    """Time stamps of the worker's `starting` status (its process is up) and of its first
    metric event (its first training step)."""
    from engine.events import read_events
    from engine.rundir import WORKER_LOG

    deadline = time.time() + timeout
    started = None
    while time.time() < deadline:
        for event in read_events(run_dir / WORKER_LOG):
            if event.kind == "status" and event["state"] == "starting" and started is None:
                started = event.ts
            if event.kind == "metric":
                return started, event.ts
            if event.kind == "status" and event["state"] in ("failed", "refused"):
                raise RuntimeError(f"the run failed: {event.get('reason')}")
        time.sleep(0.02)
    raise RuntimeError(f"no training step in {run_dir} after {timeout:.0f} s")


def bare(spec, threads: str) -> tuple[float, float]:
    from engine import control, paths
    from engine.rundir import entry_command

    run_dir = paths.runs_dir() / f"bare-{time.time_ns()}"
    run_dir.mkdir()
    spec.save(run_dir / "spec.json")
    with open(run_dir / "worker.log", "ab") as log:
        t0 = time.time()
        proc = subprocess.Popen(
            entry_command(sys.executable, "worker", str(run_dir)),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=run_dir,
            env={**os.environ, "TUNEGRAPH_THREADS": threads},
        )
    try:
        started, step = milestones(run_dir)
        control.request(run_dir, "cancel")
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return started - t0, step - t0


def supervised(store, spec, estimate: dict, cold: bool) -> tuple[float, float]:
    from engine.supervisor import client
    from engine.supervisor import process as supervisor_process

    if cold:
        supervisor_process.stop_supervisor()
    else:
        supervisor_process.ensure_supervisor()
    t0 = time.time()
    [entry] = client.submit(store, [spec], [estimate])
    started, step = milestones(Path(store.run_json(entry["id"])["run_dir"]))
    client.control(store, "cancel", entry["id"])
    return started - t0, step - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="tg-bench-"))
    os.environ.update(
        {
            "TUNEGRAPH_HOME": str(home),
            "TUNEGRAPH_SUPERVISOR_IDLE": "60",
            "TUNEGRAPH_CPU_SLOTS": "1",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    os.environ.pop("TUNEGRAPH_FAKE_GPUS", None)

    from engine import hardware
    from engine.models.tiny import ensure_builtin_tiny_model
    from engine.plan.report import estimate_spec
    from engine.store.index import Store
    from engine.supervisor import process as supervisor_process

    ensure_builtin_tiny_model()
    spec = make_spec(write_chats(home / "chats.jsonl"))
    estimate = estimate_spec(spec, "cpu")
    threads = str(hardware.cpu_threads_per_run())  # what the supervisor gives a CPU run
    paths_ = ("bare worker", "client + warm supervisor", "client + cold supervisor")
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in paths_}
    store = Store()
    try:
        bare(spec, threads)  # warm the OS file cache so the first round is not penalised
        for i in range(args.rounds):
            times[paths_[0]].append(bare(spec, threads))
            times[paths_[1]].append(supervised(store, spec, estimate, False))
            times[paths_[2]].append(supervised(store, spec, estimate, True))
            print(
                f"round {i + 1}: " + ", ".join(f"{k} {v[-1][1]:.2f} s" for k, v in times.items()),
                file=sys.stderr,
            )
    finally:
        supervisor_process.stop_supervisor()
        store.close()
        shutil.rmtree(home, ignore_errors=True)

    print(
        f"\nseconds from submit ({args.rounds} rounds, {os.cpu_count()} CPU cores, "
        "builtin:tiny-llama on the CPU; median [min-max])"
    )
    print(f"{'path':26} {'to worker up':>20} {'to first step':>20}")
    for name, values in times.items():
        cells = []
        for column in (0, 1):
            col = [v[column] for v in values]
            cells.append(f"{statistics.median(col):6.2f} [{min(col):5.2f}-{max(col):5.2f}]")
        print(f"{name:26} {cells[0]:>20} {cells[1]:>20}")
    base = statistics.median(v[1] for v in times[paths_[0]])
    warm = statistics.median(v[1] for v in times[paths_[1]]) / base
    cold = statistics.median(v[1] for v in times[paths_[2]]) / base
    verdict = "meets" if warm <= GOAL else "misses"
    print(
        f"ratio to first step, warm/bare {warm:.2f} ({verdict} the goal <= {GOAL}); "
        f"cold/bare {cold:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
