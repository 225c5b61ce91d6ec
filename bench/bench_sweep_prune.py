"""Sweep pruning: wall time of a 4-way learning-rate grid under successive halving against the
same grid unpruned, side by side in one process, each in a fresh data folder with the real
supervisor and CPU slots.

    .venv/bin/python bench/bench_sweep_prune.py [--rounds 1] [--slots 2] [--graph G.json]

The graph defaults to resources/examples/sweep-search.json (4 learning rates on the tiny model,
24 steps, an eval every 4). The unpruned study is the same graph with the Sweep node's pruner set
to none. Rounds alternate pruned and unpruned. Prints, per variant, the median wall time from
submission to the study's end, the trials pruned and the best trial's objective (the pruned
study must find the same best trial for the saving to count), and the ratio pruned / unpruned.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_GRAPH = ROOT / "resources" / "examples" / "sweep-search.json"


def one_study(graph: Path, pruner: str, slots: int) -> dict:
    """Run the graph's sweep with `pruner` in a fresh data folder; its time and outcome."""
    with tempfile.TemporaryDirectory(prefix="tg-bench-sweep-") as home:
        data = json.loads(graph.read_text(encoding="utf-8"))
        for node in data["nodes"].values():
            if node["type_"] == "tunegraph.Sweep":
                node["custom"]["pruner"] = pruner
        # the graph's relative dataset path: resolve against the original folder
        for node in data["nodes"].values():
            rel = node["custom"].get("path")
            if node["type_"] == "tunegraph.Dataset" and rel and not os.path.isabs(rel):
                node["custom"]["path"] = str((graph.parent / rel).resolve())
        path = Path(home) / graph.name
        path.write_text(json.dumps(data), encoding="utf-8")
        env = {**os.environ, "TUNEGRAPH_HOME": home, "TUNEGRAPH_CPU_SLOTS": str(slots)}
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "app", "run", str(path), "--yes", "--json"],
            env=env,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"the {pruner} study failed:\n{done.stderr[-2000:]}")
        listed = subprocess.run(
            [sys.executable, "-m", "app", "sweep", "--json"],
            env=env,
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        )
        (summary,) = json.loads(listed.stdout)
        report = json.loads(
            subprocess.run(
                [sys.executable, "-m", "app", "sweep", summary["study"], "--json"],
                env=env,
                capture_output=True,
                text=True,
                cwd=ROOT,
                check=True,
            ).stdout
        )
        subprocess.run(
            [sys.executable, "-m", "app", "supervisor", "--stop"],
            env=env,
            capture_output=True,
            cwd=ROOT,
        )
    best = report["best"] or {}
    return {
        "wall_s": wall,
        "pruned": sum(1 for t in report["trials"] if t["state"] == "pruned"),
        "best_params": best.get("params"),
        "best_value": best.get("value"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--graph", type=Path, default=DEFAULT_GRAPH)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {"successive_halving": [], "none": []}
    for _ in range(args.rounds):
        for pruner in results:
            results[pruner].append(one_study(args.graph, pruner, args.slots))
    medians = {}
    for pruner, rows in results.items():
        walls = [r["wall_s"] for r in rows]
        medians[pruner] = statistics.median(walls)
        last = rows[-1]
        print(
            f"{pruner:18} wall {medians[pruner]:6.1f} s [{min(walls):.1f}-{max(walls):.1f}]  "
            f"pruned {last['pruned']}/4  best {last['best_params']} = {last['best_value']:.4f}"
        )
    same = results["successive_halving"][-1]["best_params"] == results["none"][-1]["best_params"]
    print(
        f"ratio pruned / unpruned: {medians['successive_halving'] / medians['none']:.2f}  "
        f"(same best trial: {'yes' if same else 'no'}; {args.slots} CPU slots, "
        f"{os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()
