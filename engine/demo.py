"""`make demo` and `tunegraph demo`: run the example sweep headless on the CPU and print what each
run produced. In the installed (frozen) app the sweep lies in `_internal/resources/`, which is
`Path(__file__).parents[1] / "resources"` there too."""

from __future__ import annotations

import sys
from pathlib import Path

from engine import cli
from engine.store import Store

SWEEP = Path(__file__).resolve().parent.parent / "resources" / "examples" / "sweep.json"


def main(argv: list[str] | None = None) -> int:
    graph = Path(argv[0]) if argv else SWEEP
    if not graph.is_file():  # the examples ship with a checkout and the installers, not the wheel
        print(f"tunegraph demo: no graph file at {graph}", file=sys.stderr)
        return 1
    code = cli.main(["run", str(graph), "--device", "cpu", "--yes"])
    store = Store()
    runs = [r for r in store.list_runs() if r["state"] is not None][:10]
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
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
