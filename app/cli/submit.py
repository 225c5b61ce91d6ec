"""`tunegraph run` and `tunegraph estimate`: compile a graph file, estimate its runs, submit them to
the supervisor and follow them. The steps are plain functions the demo reuses."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from app.cli.common import open_store, print_json, run_out
from engine.errors import TunegraphError
from engine.formatting import format_count, format_rough_duration

if TYPE_CHECKING:
    from engine.spec import JobSpec
    from engine.store.index import Store
    from nodes.results import CompileError

DEVICES = ("auto", "cuda", "cpu")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the `run` and `estimate` commands to the CLI's subparsers."""
    p = sub.add_parser("run", help="compile a graph, submit its runs and follow them")
    p.add_argument("graph")
    p.add_argument("--only", action="append", metavar="NAME", help="only this Fine-Tune node")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--cluster", metavar="ADDR", help="a Ray cluster address")
    p.add_argument("--detach", action="store_true", help="submit and return at once")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument(
        "--only-data", action="store_true", help="build the graph's data nodes, train nothing"
    )
    p.add_argument(
        "--no-share-base",
        action="store_true",
        help="train every run in a process of its own (by default runs of one base model that "
        "start together share one copy of it)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("estimate", help="parameters, VRAM, mode and time for each run of a graph")
    p.add_argument("graph")
    p.add_argument("--only", action="append", metavar="NAME")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_estimate)


# -- graph compilation -------------------------------------------------------------------------
def compile_graph(
    path: str, only: list[str] | None = None
) -> tuple[list[JobSpec], list[tuple[str, list[CompileError]]]]:
    """Compile a graph file; returns (specs, refused) where refused lists (module name, errors),
    with --only keeping the named Fine-Tune modules."""
    from engine.data.check import check_dataset
    from nodes import compile as compile_nodes
    from nodes import load_graph

    # every dataset read whole: a malformed line refuses its module here, not its worker later
    result = compile_nodes(load_graph(path), graph_path=path, data_check=check_dataset)
    modules = list(result.modules)
    if only:
        names = {m.name for m in modules}
        unknown = [n for n in only if n not in names]
        if unknown:
            raise TunegraphError(
                f"{path}: no Fine-Tune node named {unknown[0]!r}.",
                "Fine-Tune nodes in this graph: " + ", ".join(sorted(names)),
            )
        modules = [m for m in modules if m.name in only]
    specs = [m.spec for m in modules if m.spec is not None]
    refused = [(m.name, list(m.errors)) for m in modules if m.spec is None]
    # problems of the graph as a whole, and nodes of unknown type that feed no module (a typo or
    # a newer version's node): nothing to run is lost silently, so they refuse too
    in_modules = {(e.node_id, e.field, e.message) for m in result.modules for e in m.errors}
    graph_errors = [
        e
        for e in result.errors
        if not e.node_id
        or (e.kind == "unknown_type" and (e.node_id, e.field, e.message) not in in_modules)
    ]
    if graph_errors and not only:
        refused.append(("graph", graph_errors))
    return specs, refused


def rows_text(est: dict) -> str:
    """`1,234 rows`, or why the estimate has no count: its data nodes make the rows first."""
    rows = est.get("dataset_rows")
    if isinstance(rows, int):
        return f"{rows:,} rows"
    return "rows not made yet" if est.get("data_pending") else "rows unknown"


def describe_estimate(name: str, est: dict) -> str:
    """One run's estimate as the lines `tunegraph run` and `estimate` print."""
    vram, t = est["vram_gib"], est["time_s"]
    params, trainable = format_count(est["params"]), format_count(est["trainable_params"])
    low, high = format_rough_duration(t["low"]), format_rough_duration(t["high"])
    from engine.plan.memory import PROCESS_GIB, ram_parts, vram_parts_text

    parts = est.get("vram_parts_gib") or {}
    on_cpu = est["device"] == "cpu"
    if on_cpu:  # RAM, without the GPU's share (the mode's reason says why not 4-bit)
        parts = ram_parts(parts)
        memory = f"~{sum(parts.values()):.2f} GiB of RAM (the process ~{PROCESS_GIB} GiB more)"
    else:
        memory = f"VRAM ~{vram['bf16']} GiB 16-bit / ~{vram['4bit']} GiB 4-bit"
    text = (
        f"{name}: {params} params ({trainable} trainable), {memory}, mode {est['mode']} "
        f"({est['mode_reason']}), device {est['device']}, time {low} – {high}, " + rows_text(est)
    )
    if parts:
        text += f"\n  {'RAM' if on_cpu else 'VRAM'}: " + vram_parts_text(parts)
    return text + "".join(f"\n  warning: {w}" for w in est["warnings"])


# -- the steps of `tunegraph run` --------------------------------------------------------------
def prepare_runs(
    graph: str,
    only: list[str] | None = None,
    device: str = "auto",
    quiet: bool = False,
    share_base: bool = True,
) -> tuple[list[JobSpec], list[dict], list[dict]]:
    """Compile `graph` for `device` and estimate each run, printing the estimates and the runs
    that will share a base model (unless quiet) and the refused modules on stderr; returns
    (specs, estimates, refused entries). `share_base` False: every run trains alone."""
    from engine.plan.report import estimate_specs

    specs, errors = compile_graph(graph, only)
    for spec in specs:
        if device != "auto":
            spec.resources.device = device
        if not share_base:
            spec.resources.share_base = False
    entries = [
        {
            "id": None,
            "name": name,
            "state": "refused",
            "error": {"class": "CompileError", "message": "; ".join(map(str, errs)), "hint": None},
        }
        for name, errs in errors
    ]
    estimates = estimate_specs(specs, device)  # in the engine's Python when not here
    for spec, est in zip(specs, estimates, strict=True):
        if not quiet:
            print(describe_estimate(spec.name, est), file=sys.stderr)
    if not quiet:
        for line in sharing_lines(specs, estimates):
            print(line, file=sys.stderr)
    for entry in entries:
        print(f"refused: {entry['name']}: {entry['error']['message']}", file=sys.stderr)
    return specs, estimates, entries


def sharing_lines(specs: list[JobSpec], estimates: list[dict]) -> list[str]:
    """'2 runs share one copy of <base> (saves 1.2 GiB): a, b' for each group the runs would
    form when they start together (nothing when the setting share_base is off)."""
    from engine import settings
    from engine.plan import sharing

    if not settings.load_or_defaults().share_base:
        return []
    by_id = {
        str(i): (spec, est) for i, (spec, est) in enumerate(zip(specs, estimates, strict=True))
    }
    lines = []
    for group in sharing.groups([(i, spec, est) for i, (spec, est) in by_id.items()]):
        members = [by_id[i] for i in group]
        sentence = sharing.sharing_sentence(
            len(group),
            members[0][0].base_model.source,
            sharing.saving_gib([est for _, est in members]),
        )
        lines.append(f"{sentence}: " + ", ".join(spec.name for spec, _ in members))
    return lines


def confirm(count: int) -> bool:
    """Ask on the terminal whether to start `count` runs (Enter means yes)."""
    return input(f"Start {count} run(s)? [Y/n] ").strip().lower() in ("", "y", "yes")


def submit_runs(
    store: Store, specs: list[JobSpec], estimates: list[dict], cluster: str | None = None
) -> list[dict]:
    """Hand `specs` to the supervisor; returns its entries, printing the refused ones on stderr."""
    from engine.supervisor import client

    submitted = client.submit(store, specs, estimates, cluster=cluster) if specs else []
    for e in submitted:
        if e["state"] == "refused":
            hint = e["error"].get("hint")
            message = f"{e['name']}: {e['error']['message']}" + (f" {hint}" if hint else "")
            print(f"refused: {message}", file=sys.stderr)
    return submitted


def queued_ids(entries: list[dict]) -> list[str]:
    """The ids of the runs the supervisor queued (not the sweeps)."""
    return [e["id"] for e in entries if e["state"] == "queued" and not e.get("sweep")]


def follow_graph_sweeps(
    store: Store, sweeps: list[str], run_ids: list[str], entries: list[dict], as_json: bool
) -> int:
    """Follow a graph's sweeps (their trials as they come) and plain runs to their end; 0 when
    every plain run completed, every sweep ended with a best trial and nothing was refused."""
    from app.cli.sweep import follow_sweeps
    from engine.sweep import report as reports

    states, followed = follow_sweeps(store, sweeps, run_ids, quiet=as_json)
    if as_json:
        print_json([run_out(store.run_json(r)) for r in followed])
    plain = {r: states.get(r) for r in run_ids}
    best = all(reports.report(name, store)["best"] for name in sweeps)
    return 0 if best and run_exit_code(plain, entries) == 0 else 1


def run_exit_code(states: dict[str, str], entries: list[dict]) -> int:
    """0 when every followed run completed and no module was refused, else 1."""
    refused = any(e["state"] == "refused" for e in entries)
    ok = all(s == "completed" for s in states.values()) and not refused
    return 0 if ok else 1


# -- commands ----------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    """`tunegraph run`: compile, estimate, confirm, submit, then follow the runs to their end."""
    from app.cli.follow import follow_runs

    if args.only_data:
        from app.cli.datasets import cmd_only_data

        specs, errors = compile_graph(args.graph, args.only)
        for name, errs in errors:
            print(f"refused: {name}: " + "; ".join(map(str, errs)), file=sys.stderr)
        return cmd_only_data(specs, args.json) or (1 if errors else 0)
    specs, estimates, entries = prepare_runs(
        args.graph, args.only, args.device, quiet=args.json, share_base=not args.no_share_base
    )
    if specs and not args.yes and sys.stdin.isatty() and not confirm(len(specs)):
        print("Nothing submitted.", file=sys.stderr)
        return 1
    store = open_store()
    submitted = submit_runs(store, specs, estimates, cluster=args.cluster)
    entries += submitted
    run_ids = queued_ids(submitted)
    sweeps = [e["id"] for e in submitted if e.get("sweep") and e["state"] != "refused"]
    if args.detach:
        return _report_detached(entries, run_ids + sweeps, args.json)
    if sweeps:
        return follow_graph_sweeps(store, sweeps, run_ids, entries, args.json)
    if not run_ids:
        return 1
    states = follow_runs(store, run_ids, quiet=args.json)
    if args.json:
        print_json([run_out(store.run_json(r)) for r in run_ids])
    return run_exit_code(states, entries)


def _report_detached(entries: list[dict], run_ids: list[str], as_json: bool) -> int:
    """`run --detach`: list what was submitted or refused; 1 when anything was refused."""
    if as_json:
        print_json(entries)
    else:
        for e in entries:
            print(f"{e['state']:8} {e['id'] or '-':24} {e['name']}")
    refused = any(e["state"] == "refused" for e in entries)
    return 1 if refused or not run_ids else 0


def cmd_estimate(args: argparse.Namespace) -> int:
    """`tunegraph estimate`: each run's parameters, VRAM, mode and time; 1 when a module is refused."""
    from engine.plan.report import estimate_graph

    specs, errors = compile_graph(args.graph, args.only)
    entries = estimate_graph(specs, device=args.device)
    for _, errs in errors:
        for err in errs:
            print(f"error: {err}", file=sys.stderr)
    if args.json:
        print_json(entries)
    else:
        for e in entries:
            print(describe_estimate(e["name"], e["estimate"]))
    return 1 if errors else 0
