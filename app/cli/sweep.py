"""`tunegraph sweep [STUDY]`: a sweep's trials and best so far (or every study), `--cancel` to
stop one; and `follow_sweeps`, with which `tunegraph run` follows a graph's sweeps as their trials
start, are pruned and finish (one line per change: a sweep's trials are not known in advance).
"""

from __future__ import annotations

import argparse
import sys
import time

from app.cli.common import open_store, print_json
from engine.errors import TunegraphError
from engine.formatting import format_cell, format_setting
from engine.store.index import Store

POLL_S = 0.5
SETTLED = ("completed", "failed", "cancelled", "refused", "pruned", "paused")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the `sweep` command to the CLI's subparsers."""
    p = sub.add_parser("sweep", help="a sweep's trials and best so far (no STUDY: every sweep)")
    p.add_argument("study", nargs="?", help="the study's name or a unique prefix of it")
    p.add_argument("--cancel", action="store_true", help="stop the sweep: no new trials")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    """`tunegraph sweep [STUDY] [--cancel] [--json]`."""
    from engine.sweep import report as reports

    store = open_store()
    if not args.study:
        rows = reports.summaries(store)
        if args.json:
            print_json(rows)
        elif not rows:
            print("No sweeps yet.")
        for row in [] if args.json else rows:
            best = format_cell(row["best"]) if row["best"] is not None else "—"
            print(
                f"{row['study']:32} {row['state']:9} {row['trials']}/{row['budget']} trials  "
                f"best {row['objective']} {best}  {row['name']}"
            )
        return 0
    name = resolve_study(args.study)
    if args.cancel:
        from engine.supervisor import client

        client.cancel_sweep(store, name)
        print(f"Stopped the sweep {name}: no new trials; its live trials are cancelled.")
        return 0
    rep = reports.report(name, store)
    if args.json:
        print_json(rep)
    else:
        print_report(rep)
    return 0


def resolve_study(ref: str) -> str:
    """A study's full name from its name or a unique prefix; TunegraphError when none or many."""
    from engine.sweep import study as studies

    names = studies.names()
    if ref in names:
        return ref
    found = [n for n in names if n.startswith(ref)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise TunegraphError(f"no sweep {ref!r}", "`tunegraph sweep` lists every sweep.")
    raise TunegraphError(f"{ref!r} names {len(found)} sweeps: " + ", ".join(found))


def print_report(rep: dict) -> None:
    """A study as a table of trials, its best and its knobs' importances."""
    from engine.sweep.report import params_text

    print(
        f"sweep {rep['study']} ({rep['name']}): {rep['state']} · {rep['strategy']} · pruner "
        f"{rep['pruner']} · {rep['objective']} ({rep['direction']}) · "
        f"{len(rep['trials'])}/{rep['budget']} trials"
    )
    print("space: " + "; ".join(rep["space"]))
    knobs = rep["knobs"]
    heads = [knobs[k] for k in knobs]
    print(
        f"{'#':>3}  {'STATE':10} "
        + " ".join(f"{h:>10}" for h in heads)
        + f" {rep['objective'][:12]:>12} {'PRUNED AT':>9}  RUN"
    )
    for t in rep["trials"]:
        values = " ".join(f"{format_setting(t['params'].get(k)):>10}" for k in knobs)
        value = format_cell(t["value"]) if t["value"] is not None else "—"
        pruned = str(t["pruned_at"]) if t["pruned_at"] is not None else ""
        print(
            f"{t['number']:>3}  {t['state']:10} {values} {value:>12} {pruned:>9}  "
            f"{t['run_id'] or '-'}"
        )
    best = rep["best"]
    if best:
        print(
            f"best: #{best['number']} {rep['objective']} {format_cell(best['value'])} "
            f"({params_text(best['params'], knobs)}) run {best['run_id']}"
        )
    if rep["importance"]:
        shares = ", ".join(f"{knobs.get(k, k)} {v:.2f}" for k, v in rep["importance"].items())
        print("importance: " + shares)


def follow_sweeps(
    store: Store, studies_: list[str], run_ids: list[str], quiet: bool = False
) -> tuple[dict[str, str], list[str]]:
    """Follow the runs `run_ids` and every trial of the sweeps `studies_` until the sweeps are
    over and their runs settled, one line per state change on stderr (the reason of a pruned
    or failed run too); returns ({run id: state}, every run id followed, trials included)."""
    from engine.sweep import report as reports
    from engine.sweep import study as studies

    followed = list(run_ids)
    said: dict[str, str] = {}
    states: dict[str, str] = {}
    try:
        while True:
            open_studies = [s for s in studies_ if studies.load(s).state == studies.RUNNING]
            for name in studies_:
                for run_id in sorted(reports.runs_of(store, name)):
                    if run_id not in followed:
                        followed.append(run_id)
            for run_id in followed:
                run = store.run_json(run_id)
                state = states[run_id] = run["state"] or "submitted"
                if said.get(run_id) != state:
                    said[run_id] = state
                    why = f": {run['reason']}" if state in ("pruned", "failed") else ""
                    if not quiet:
                        print(f"{run['name']}: {state}{why}", file=sys.stderr, flush=True)
            if not open_studies and all(s in SETTLED for s in states.values()):
                break
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        print(
            "\nStopped following; the sweeps go on. Stop one with: "
            + "; ".join(f"tunegraph sweep {s} --cancel" for s in studies_),
            file=sys.stderr,
        )
        return states, followed
    for name in studies_:
        if not quiet:
            print_report(reports.report(name, store))
    return states, followed
