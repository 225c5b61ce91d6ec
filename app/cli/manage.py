"""Looking after submitted runs: `runs`, `show`, `diff`, `logs`, `cancel`/`pause`/`resume`/`stop`,
`continue` and `rebuild-index`."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.cli.common import open_store, print_json, run_out

CONTROL_HELP = {
    "cancel": "cancel a run (not reversible; no adapter)",
    "pause": "pause a run at the next step (checkpoint kept; resume later)",
    "resume": "resume a paused or failed run from its checkpoint",
    "stop": "end training now and deliver the adapter (the best checkpoint when the run keeps one)",
}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add `runs`, `show`, `diff`, `logs`, the run controls, `continue` and `rebuild-index`."""
    p = sub.add_parser("runs", help="all runs, newest first")
    p.add_argument("--state", help="only runs in this state (or a comma-separated list)")
    p.add_argument("--sweep", metavar="STUDY", help="only the trials of this sweep")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("show", help="one run: state, progress, metrics, samples, artifacts")
    p.add_argument("run", help="run id, unique id prefix, or unique name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("diff", help="config, LoRA, data and metric differences between runs")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--all", action="store_true", help="also list equal fields")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("logs", help="log lines and events of a run")
    p.add_argument("run")
    p.add_argument("--follow", "-f", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_logs)

    for action, text in CONTROL_HELP.items():
        p = sub.add_parser(action, help=text)
        p.add_argument("run")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=cmd_control)

    p = sub.add_parser("continue", help="a child run from RUN's final checkpoint")
    p.add_argument("run")
    p.add_argument("--epochs", type=float, required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_continue)

    p = sub.add_parser("rebuild-index", help="rebuild the database from the run directories")
    p.set_defaults(func=cmd_rebuild_index)


# -- listing and reading runs ------------------------------------------------------------------
def cmd_runs(args: argparse.Namespace) -> int:
    """`tunegraph runs`: all runs, newest first, as a table or JSON."""
    runs = open_store().list_runs(state=args.state)
    if args.sweep:
        from app.cli.sweep import resolve_study

        study = resolve_study(args.sweep)
        runs = [r for r in runs if ((r.get("spec") or {}).get("trial") or {}).get("study") == study]
    if args.json:
        print_json([run_out(run) for run in runs])
        return 0
    if not runs:
        print("No runs yet.")
        return 0
    print(f"{'ID':24} {'STATE':10} {'STEP':>11} {'LOSS':>8}  NAME")
    for run in runs:
        step = f"{run['step'] or 0}/{run['max_steps'] or '?'}"
        loss = run["metrics"]["loss"]
        print(
            f"{run['id']:24} {run['state'] or '-':10} {step:>11} "
            f"{(f'{loss:.4f}' if loss is not None else '-'):>8}  {run['name']}"
        )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """`tunegraph show RUN`: one run, freshly read from its folder."""
    store = open_store()
    run_id = store.resolve(args.run)
    store.ingest(Path(store.run_json(run_id)["run_dir"]))  # fresh even with no supervisor
    run = store.run_json(run_id)
    if args.json:
        print_json(run_out(run))
    else:
        print_run(run)
    return 0


def print_run(run: dict) -> None:
    """A run's state, progress, metrics, eval scores, warnings, error, artifacts and samples as
    text."""
    print(f"{run['name']}  ({run['id']})")
    print(f"  state     {run['state']}" + (f" ({run['reason']})" if run["reason"] else ""))
    print(f"  progress  step {run['step']}/{run['max_steps']}  epoch {run['epoch']}")
    print(f"  device    {run['device']}")
    if run.get("method"):
        print(f"  method    {run['method']}")
    if run.get("upstream"):
        print(f"  starts from run {run['upstream']}")
    m = dict(run["metrics"])
    method = m.pop("method", None) or {}
    print("  metrics   " + "  ".join(f"{k} {v:.4g}" for k, v in m.items() if v is not None))
    if method:  # the training method's own (TRL's rewards, margins, KL…), at the latest step
        shown = [f"{k} {v:.4g}" for k, v in method.items() if v is not None]
        label = f"  {run['method'] or 'method':<9} "
        for i, line in enumerate(packed(shown, 100 - len(label))):
            print((label if i == 0 else " " * len(label)) + line)
    for name, scores in run["eval"].items():
        shown = "  ".join(f"{k} {v:.4g}" for k, v in scores.items() if v is not None)
        print(f"  eval      {name}: {shown}")
    for w in run["warnings"]:
        print(f"  warning   {w}")
    if run["error"]:
        print(f"  error     {run['error']['message']}")
        if run["error"].get("hint"):
            print(f"  hint      {run['error']['hint']}")
    for a in run["artifacts"]:
        print(f"  artifact  {a['kind']:12} {a['bytes']:>12,} B  {a['path']}")
    for i, s in enumerate(run["samples"], 1):
        print(f"  sample {i}  {s['prompt']!r}\n            -> {s['response']!r}")
    print(f"  run dir   {run['run_dir']}")


def packed(items: list[str], width: int) -> list[str]:
    """`items` joined by two spaces into lines of at most `width` characters (an item is never
    split)."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + 2 + len(item) <= width:
            lines[-1] += "  " + item
        else:
            lines.append(item)
    return lines


def cmd_diff(args: argparse.Namespace) -> int:
    """`tunegraph diff RUN…`: config, LoRA, data and metric differences."""
    from engine.store.diff import diff_json, diff_runs, format_diff

    runs, stats = diff_runs(open_store(), args.runs)
    if args.json:
        print_json(diff_json(runs, stats, differences_only=not args.all))
    else:
        print(format_diff(runs, stats, differences_only=not args.all))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    """`tunegraph logs RUN`: the worker's and the supervisor's events merged by time."""
    from app.cli.follow import print_logs

    store = open_store()
    run_id = store.resolve(args.run)
    return print_logs(store, run_id, follow=args.follow, as_json=args.json)


# -- acting on runs ----------------------------------------------------------------------------
def cmd_control(args: argparse.Namespace) -> int:
    """`tunegraph cancel|pause|resume|stop RUN`: send the command to the supervisor."""
    from engine.supervisor import client

    result = client.control(open_store(), args.command, args.run)
    if getattr(args, "json", False):
        print_json(result)
    else:
        print(f"{args.command}: {result['id']}")
    return 0


def cmd_continue(args: argparse.Namespace) -> int:
    """`tunegraph continue RUN --epochs N`: a child run from RUN's final checkpoint."""
    from engine.supervisor import client

    entry = client.continue_run(open_store(), args.run, args.epochs)
    if args.json:
        print_json(entry)
    else:
        print(f"{entry['state']:8} {entry['id']} {entry['name']} (continues {entry['parent']})")
    return 0


def cmd_rebuild_index(args: argparse.Namespace) -> int:
    """`tunegraph rebuild-index`: rebuild the database from the run directories."""
    store = open_store()
    store.rebuild()
    print(f"Rebuilt the index: {len(store.list_runs())} runs.")
    return 0
