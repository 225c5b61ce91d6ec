"""kill -9 at a random step, N times: does every run come back on its own and end where an
uninterrupted twin ends?

Each run of the tiny model (same spec and seed as the twin) is submitted to a real supervisor; at a
random step (before or after its first checkpoint) its worker gets SIGKILL. The supervisor must
restart it (retrying, from the last checkpoint or step 0) with no manual step, and its final loss
must equal the twin's within 1e-4.

    .venv/bin/python bench/bench_kill_recovery.py --runs 10
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--save-steps", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    os.environ["TUNEGRAPH_HOME"] = tempfile.mkdtemp(prefix="tg-kill-")
    os.environ["TUNEGRAPH_SUPERVISOR_IDLE"] = "30"
    os.environ["TUNEGRAPH_CPU_SLOTS"] = "2"
    from engine.store.index import Store
    from engine.supervisor import client
    from engine.supervisor.process import stop_supervisor
    from tests.helpers import cpu_estimate, make_spec, wait_for, worker_pid, write_chats

    rng = random.Random(args.seed)
    data = write_chats(Path(os.environ["TUNEGRAPH_HOME"]) / "chats.jsonl")
    store = Store()
    spec = make_spec(data, "twin", max_steps=args.steps, save_steps=args.save_steps)
    [twin] = client.submit(store, [spec], [cpu_estimate(spec)])
    results = []
    try:
        for i in range(args.runs):
            kill_at = rng.randint(1, args.steps - 1)
            spec = make_spec(data, f"killed {i}", max_steps=args.steps, save_steps=args.save_steps)
            [entry] = client.submit(store, [spec], [cpu_estimate(spec)])
            run = wait_for(store, entry["id"], ("training", "completed"), 120, step=kill_at)
            if run["state"] == "completed":
                results.append((kill_at, None, "finished before the kill"))
                continue
            t0 = time.time()
            os.kill(worker_pid(Path(run["run_dir"])), signal.SIGKILL)
            run = wait_for(store, entry["id"], "completed", 300)
            results.append((kill_at, run, f"{time.time() - t0:.0f} s to complete after the kill"))
        reference = store.metrics(wait_for(store, twin["id"], "completed", 300)["id"])[-1]["loss"]
    finally:
        stop_supervisor()
    print(f"{'kill at':>8} {'attempts':>8} {'final loss':>11} {'|diff|':>9}  note")
    worst, completed = 0.0, 0
    for kill_at, run, note in results:
        if run is None:
            print(f"{kill_at:>8} {'-':>8} {'-':>11} {'-':>9}  {note}")
            continue
        loss = store.metrics(run["id"])[-1]["loss"]
        diff = abs(loss - reference)
        worst = max(worst, diff)
        completed += run["state"] == "completed" and diff <= 1e-4
        print(f"{kill_at:>8} {len(run['attempts']):>8} {loss:>11.6f} {diff:>9.2e}  {note}")
    killed = sum(1 for _, run, _ in results if run is not None)
    print(
        f"twin final loss {reference:.6f}; {completed}/{killed} killed runs completed on their own"
    )
    print(f"with the twin's final loss (max |diff| {worst:.2e}, tolerance 1e-4)")
    return 0 if completed == killed else 1


if __name__ == "__main__":
    sys.exit(main())
