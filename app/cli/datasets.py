"""`tunegraph datasets`: the datasets data nodes produced, with their manifests; and
`build_data`, with which `tunegraph run GRAPH --only-data` builds a graph's data steps alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from app.cli.common import open_store, print_json
from engine.formatting import format_count
from engine.store.index import Store

POLL_S = 0.5


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the `datasets` command to the CLI's subparsers."""
    p = sub.add_parser("datasets", help="datasets produced by data nodes, with their manifests")
    p.add_argument(
        "--steps", action="store_true", help="the data steps instead: state and rows made so far"
    )
    p.add_argument("--cancel", metavar="KEY", help="stop a data step (its key or a prefix)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_datasets)


def produced() -> list[dict]:
    """The manifests of the datasets data steps made, newest first (engine.recipes.manifest)."""
    from engine import paths
    from engine.recipes.manifest import read_manifest

    root = paths.library_dir()
    found = []
    for folder in root.iterdir() if root.is_dir() else []:
        manifest = read_manifest(folder)
        if manifest and manifest.get("kind") == "dataset" and manifest.get("step"):
            found.append(manifest)
    return sorted(found, key=lambda m: m.get("created_at") or 0, reverse=True)


def all_steps() -> list[dict]:
    """Every data step of this data directory, newest first: {"key", "step", "name", "state",
    "reason", "progress", "outputs"}."""
    from engine import paths
    from engine.events import run_state
    from engine.supervisor.data_steps import STEP_FILE, step_progress

    root = paths.data_dir() / "recipes"
    out = []
    for folder in root.iterdir() if root.is_dir() else []:
        if not (folder / STEP_FILE).is_file():
            continue
        step = json.loads((folder / STEP_FILE).read_text(encoding="utf-8"))
        state, data = run_state(folder)
        out.append(
            {
                "key": step["key"],
                "step": step["step"],
                "name": step.get("name"),
                "state": state,
                "reason": data.get("reason"),
                "progress": step_progress(step["key"]) or None,
                "outputs": step["outputs"],
                "changed": (folder / STEP_FILE).stat().st_mtime,
            }
        )
    return sorted(out, key=lambda s: s.pop("changed"), reverse=True)


def cmd_datasets(args: argparse.Namespace) -> int:
    """`tunegraph datasets [--steps] [--cancel KEY] [--json]`."""
    if args.cancel:
        return cancel_step(args.cancel)
    if args.steps:
        found = all_steps()
        if args.json:
            print_json(found)
        for s in [] if args.json else found:
            progress = f" ({s['progress']})" if s["progress"] else ""
            why = f": {s['reason']}" if s["state"] in ("failed", "cancelled") else ""
            print(f'{s["key"]}  {s["state"] or "-":10} {s["step"]} "{s["name"]}"{progress}{why}')
        return 0
    rows = produced()
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("No datasets made by data nodes yet.")
        return 0
    print(f"{'ID':44} {'ROWS':>7} {'DROPPED':>8}  MADE BY")
    for m in rows:
        counts = m.get("counts") or {}
        dropped = sum((counts.get("dropped") or {}).values())
        teacher = (m.get("teacher") or {}).get("path")
        made = f'{m["step"]} "{m.get("name") or ""}"' + (
            f", teacher {Path(teacher).name}" if teacher else ""
        )
        print(f"{m['id']:44} {format_count(m.get('rows')):>7} {dropped:>8}  {made}")
    return 0


def cancel_step(ref: str) -> int:
    """Stop the data step whose key starts with `ref`."""
    from engine.errors import TunegraphError
    from engine.supervisor import client

    found = [s["key"] for s in all_steps() if s["key"].startswith(ref)]
    if len(found) != 1:
        raise TunegraphError(
            f"{ref!r} names {len(found)} data steps",
            "`tunegraph datasets --steps` lists them with their keys.",
        )
    result = client.cancel_data(open_store(), found[0])
    if result.get("state") == "completed":
        print(f"The data step {found[0]} had already ended (completed) when the stop reached it.")
    else:
        print(f"Stopped the data step {found[0]}; running the graph again goes on from its rows.")
    return 0


def build_data(store: Store, steps: list[dict], quiet: bool = False) -> int:
    """Submit `steps` and follow them to their end, one line per change (rows made on a
    terminal); 0 when every step has written its outputs."""
    from engine.events import TERMINAL_STATES, run_state
    from engine.supervisor.client import send
    from engine.supervisor.data_steps import step_dir, step_done, step_label

    result = send(store, "submit_data", steps=steps)
    said: dict[str, str] = {}
    try:
        while True:
            settled = True
            for step in steps:
                key = step["key"]
                state = "completed" if step_done(step) else run_state(step_dir(key))[0]
                if state not in TERMINAL_STATES:
                    settled = False
                line = f"{step_label(step)}: {state or 'submitted'}"
                if said.get(key) != line and not quiet:
                    said[key] = line
                    print(line, file=sys.stderr, flush=True)
            if settled:
                break
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        print("\nStopped following; the data steps go on.", file=sys.stderr)
        return 1
    for step in steps:
        if not quiet:
            for port, path in step["outputs"].items():
                print(f"{step_label(step)} {port}: {path}")
    ok = all(step_done(s) for s in steps) and result.get("ok", True)
    return 0 if ok else 1


def steps_of(specs: list) -> list[dict]:
    """The data steps of compiled specs, once each, in order."""
    from engine.supervisor.client import data_steps_of

    return data_steps_of(specs)


def cmd_only_data(specs: list, as_json: bool) -> int:
    """`tunegraph run GRAPH --only-data`: build the graph's data, train nothing."""
    steps = steps_of(specs)
    if not steps:
        print("The graph has no data nodes feeding a Fine-Tune node.", file=sys.stderr)
        return 1
    code = build_data(open_store(), steps, quiet=as_json)
    if as_json:
        print_json(
            [
                {"key": s["key"], "step": s["step"], "name": s["name"], "outputs": s["outputs"]}
                for s in steps
            ]
        )
    return code
