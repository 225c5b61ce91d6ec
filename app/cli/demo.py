"""`make demo` and `tunegraph demo`: run the example sweep headless on the CPU and print what each
run produced. In the installed (frozen) app the sweep lies in `_internal/resources/`, which is
`SOURCE_ROOT / "resources"` there too."""

from __future__ import annotations

import sys
from pathlib import Path

from app.cli import submit
from app.cli.common import run_guarded
from app.cli.follow import follow_runs
from engine.paths import SOURCE_ROOT
from engine.store.index import Store

SWEEP = SOURCE_ROOT / "resources" / "examples" / "sweep.json"


def main(argv: list[str] | None = None) -> int:
    """Run GRAPH (default: the example sweep) on the CPU, then list the newest runs; returns the
    exit code of the run."""
    graph = Path(argv[0]) if argv else SWEEP
    if not graph.is_file():  # the examples ship with a checkout and the installers, not the wheel
        print(f"tunegraph demo: no graph file at {graph}", file=sys.stderr)
        return 1
    code = run_guarded(lambda: run_on_cpu(graph))
    print_runs(Store())
    return code


def run_on_cpu(graph: Path) -> int:
    """What `tunegraph run GRAPH --device cpu --yes` does: compile, estimate, submit and follow
    every run; 0 when all complete."""
    specs, estimates, entries = submit.prepare_runs(str(graph), device="cpu")
    store = Store()
    submitted = submit.submit_runs(store, specs, estimates)
    run_ids = submit.queued_ids(submitted)
    if not run_ids:
        return 1
    states = follow_runs(store, run_ids)
    return submit.run_exit_code(states, entries + submitted)


def print_runs(store: Store, limit: int = 10) -> None:
    """The newest runs with their losses, artifacts and first sample."""
    runs = [r for r in store.list_runs() if r["state"] is not None][:limit]
    print("\nRuns in", Path(store.path).parent)
    for run in runs:
        m = run["metrics"]
        loss = f"{m['loss']:.3f}" if m["loss"] is not None else "-"
        eval_loss = f"{m['eval_loss']:.3f}" if m["eval_loss"] is not None else "-"
        print(
            f"  {run['state']:10} {run['name']:28} loss {loss:>7}  eval {eval_loss:>7}  {run['id']}"
        )
        for a in run["artifacts"]:
            print(f"      {a['kind']:12} {a['path']}")
        for s in run["samples"][:1]:
            print(f"      sample: {s['prompt'][:60]!r} -> {s['response'][:60]!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
