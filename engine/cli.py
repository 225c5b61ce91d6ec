"""The `tunegraph` command line: the headless face of every feature.

A failing command prints one clear sentence on stderr (no traceback unless --debug) and exits
non-zero. Commands that list or report take --json and print the shapes DESIGN.md fixes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from engine import __version__
from engine.errors import TunegraphError


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False, default=str))


def _store():
    from engine.store import Store

    return Store()


def _run_out(run: dict) -> dict:
    """A run in exactly the DESIGN.md "JSON shapes" keys (the store adds a few of its own)."""
    from engine.store_queries import RUN_KEYS

    return {key: run[key] for key in RUN_KEYS}


# -- graph compilation -------------------------------------------------------------------------
def compile_graph(path: str, only: list[str] | None = None):
    """Compile a graph file; returns (specs, refused) where refused lists (module name, errors),
    with --only keeping the named Fine-Tune modules."""
    from nodes import compile as compile_nodes
    from nodes import load_graph

    result = compile_nodes(load_graph(path), graph_path=path)
    modules = list(result.modules)
    if only:
        names = {m.name for m in modules}
        unknown = [n for n in only if n not in names]
        if unknown:
            raise TunegraphError(
                f"{path}: no Fine-Tune module named {unknown[0]!r}.",
                "Modules in this graph: " + ", ".join(sorted(names)),
            )
        modules = [m for m in modules if m.name in only]
    specs = [m.spec for m in modules if m.spec is not None]
    refused = [(m.name, list(m.errors)) for m in modules if m.spec is None]
    graph_errors = [e for e in result.errors if not e.node_id]
    if graph_errors and not only:
        refused.append(("graph", graph_errors))
    return specs, refused


# -- commands ----------------------------------------------------------------------------------
def cmd_run(args) -> int:
    from engine import client
    from engine.estimate_report import estimate_specs
    from engine.follow import follow_runs

    specs, errors = compile_graph(args.graph, args.only)
    for spec in specs:
        if args.device != "auto":
            spec.resources.device = args.device
    entries = [
        {
            "id": None,
            "name": name,
            "state": "refused",
            "error": {"class": "CompileError", "message": "; ".join(map(str, errs)), "hint": None},
        }
        for name, errs in errors
    ]
    estimates = estimate_specs(specs, args.device)  # in the engine's Python when not here
    for spec, est in zip(specs, estimates, strict=True):
        if not args.json:
            print(describe_estimate(spec.name, est), file=sys.stderr)
    for entry in entries:
        print(f"refused: {entry['error']['message']}", file=sys.stderr)
    if specs and not args.yes and sys.stdin.isatty():
        if input(f"Start {len(specs)} run(s)? [Y/n] ").strip().lower() not in ("", "y", "yes"):
            print("Nothing submitted.", file=sys.stderr)
            return 1
    store = _store()
    submitted = client.submit(store, specs, estimates, cluster=args.cluster) if specs else []
    entries += submitted
    run_ids = [e["id"] for e in submitted if e["state"] == "queued"]
    for e in submitted:
        if e["state"] == "refused":
            print(
                f"refused: {e['error']['message']} {e['error'].get('hint') or ''}", file=sys.stderr
            )
    refused = any(e["state"] == "refused" for e in entries)
    if args.detach:
        if args.json:
            _print_json(entries)
        else:
            for e in entries:
                print(f"{e['state']:8} {e['id'] or '-':24} {e['name']}")
        return 1 if refused or not run_ids else 0
    if not run_ids:
        return 1
    states = follow_runs(store, run_ids, quiet=args.json)
    if args.json:
        _print_json([_run_out(store.run_json(r)) for r in run_ids])
    ok = all(s == "completed" for s in states.values()) and not refused
    return 0 if ok else 1


def describe_estimate(name: str, est: dict) -> str:
    vram, t = est["vram_gib"], est["time_s"]
    text = (
        f"{name}: {est['params']:,} params ({est['trainable_params']:,} trainable), "
        f"VRAM ~{vram['bf16']} GiB 16-bit / ~{vram['4bit']} GiB 4-bit, mode {est['mode']} "
        f"({est['mode_reason']}), device {est['device']}, time {t['low']:.0f}-{t['high']:.0f} s, "
        f"{est['dataset_rows']} rows"
    )
    parts = est.get("vram_parts_gib")
    if parts:
        from engine.estimate import vram_parts_text

        text += "\n  VRAM: " + vram_parts_text(parts)
    return text + "".join(f"\n  warning: {w}" for w in est["warnings"])


def cmd_control(args) -> int:
    from engine import client

    result = client.control(_store(), args.command, args.run)
    if getattr(args, "json", False):
        _print_json(result)
    else:
        print(f"{args.command}: {result['id']}")
    return 0


def cmd_continue(args) -> int:
    from engine import client

    entry = client.continue_run(_store(), args.run, args.epochs)
    if args.json:
        _print_json(entry)
    else:
        print(f"{entry['state']:8} {entry['id']} {entry['name']} (continues {entry['parent']})")
    return 0


def cmd_supervisor(args) -> int:
    from engine import supervisor_process

    if args.stop:
        stopped = supervisor_process.stop_supervisor()
        print("Stopped the supervisor." if stopped else "No supervisor was running.")
        return 0
    if supervisor_process.serve_locked() != 0:
        print("A supervisor already runs for this data directory.", file=sys.stderr)
        return 1
    return 0


def cmd_runs(args) -> int:
    store = _store()
    runs = store.list_runs(state=args.state)
    if args.json:
        _print_json([_run_out(run) for run in runs])
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


def cmd_show(args) -> int:
    store = _store()
    run_id = store.resolve(args.run)
    store.ingest(Path(store.run_json(run_id)["run_dir"]))  # fresh even with no supervisor
    run = store.run_json(run_id)
    if args.json:
        _print_json(_run_out(run))
        return 0
    print(f"{run['name']}  ({run['id']})")
    print(f"  state     {run['state']}" + (f" ({run['reason']})" if run["reason"] else ""))
    print(f"  progress  step {run['step']}/{run['max_steps']}  epoch {run['epoch']}")
    print(f"  device    {run['device']}")
    m = run["metrics"]
    print("  metrics   " + "  ".join(f"{k} {v:.4g}" for k, v in m.items() if v is not None))
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
    return 0


def cmd_diff(args) -> int:
    from engine.run_diff import diff_json, diff_runs, format_diff

    runs, stats = diff_runs(_store(), args.runs)
    if args.json:
        _print_json(diff_json(runs, stats, differences_only=not args.all))
    else:
        print(format_diff(runs, stats, differences_only=not args.all))
    return 0


def cmd_logs(args) -> int:
    from engine.follow import print_logs

    store = _store()
    run_id = store.resolve(args.run)
    return print_logs(store, run_id, follow=args.follow, as_json=args.json)


def cmd_preview(args) -> int:
    """The first rows of a dataset through the base model's chat template, trained text marked."""
    from engine.data import format_preview, load_dataset_rows, preview_rows
    from engine.models import load_tokenizer, resolve_source
    from engine.spec import BaseModelSpec, DatasetSpec
    from engine.templates import prepare_tokenizer

    ds = DatasetSpec(path=args.dataset, format=args.format)
    rows, fmt = load_dataset_rows(ds)
    base = BaseModelSpec(source=args.model)
    tokenizer = load_tokenizer(base, resolve_source(base))
    setup = prepare_tokenizer(tokenizer)
    previews = preview_rows(ds, tokenizer, n=args.rows, max_seq_length=args.max_seq_length)
    print(f"{args.dataset}: {len(rows)} rows, format {fmt}, chat template {setup.origin}")
    print(format_preview(previews, color=sys.stdout.isatty()))
    return 0


def cmd_make_tiny_model(args) -> int:
    from engine.tinymodel import build_tiny_model

    t0 = time.time()
    out = build_tiny_model(Path(args.dir), seed=args.seed)
    print(f"Built a tiny Llama in {out} ({time.time() - t0:.1f} s).")
    return 0


def cmd_estimate(args) -> int:
    from engine.estimate_report import estimate_graph

    specs, errors = compile_graph(args.graph, args.only)
    entries = estimate_graph(specs, device=args.device)
    for _, errs in errors:
        for err in errs:
            print(f"error: {err}", file=sys.stderr)
    if args.json:
        _print_json(entries)
    else:
        for e in entries:
            print(describe_estimate(e["name"], e["estimate"]))
    return 1 if errors else 0


def cmd_cluster(args) -> int:
    """The Ray cluster's live nodes with their CPUs and GPUs (what the hardware view lists)."""
    from engine.ray_executor import ADDRESS_HINT, cluster_inventory, resolve_address

    address = resolve_address(args.address)
    if not address:
        raise TunegraphError("No Ray cluster is named.", ADDRESS_HINT)
    nodes = cluster_inventory(address)
    if args.json:
        _print_json({"address": address, "nodes": nodes})
        return 0
    print(f"Ray cluster at {address}: {len(nodes)} node(s)")
    for n in nodes:
        gpus = f"{n['gpus']} GPU" + (f" {n['gpu_type']}" if n["gpu_type"] else "")
        print(f"  {n['node']:24} {n['cpus']:>4} CPU  {gpus}")
    return 0


def cmd_rebuild_index(args) -> int:
    store = _store()
    store.rebuild()
    print(f"Rebuilt the index: {len(store.list_runs())} runs.")
    return 0


def cmd_demo(args) -> int:
    from engine import demo

    return demo.main([args.graph] if args.graph else [])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunegraph",
        description=(
            "Tunegraph: fine-tune open LLMs with LoRA/QLoRA by wiring nodes. "
            "With no command, opens the desktop app."
        ),
    )
    parser.add_argument("--version", action="version", version=f"tunegraph {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("run", help="compile a graph, submit its runs and follow them")
    p.add_argument("graph")
    p.add_argument("--only", action="append", metavar="NAME", help="only this Fine-Tune module")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--cluster", metavar="ADDR", help="a Ray cluster address")
    p.add_argument("--detach", action="store_true", help="submit and return at once")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("estimate", help="parameters, VRAM, mode and time for each run of a graph")
    p.add_argument("graph")
    p.add_argument("--only", action="append", metavar="NAME")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser("runs", help="all runs, newest first")
    p.add_argument("--state", help="only runs in this state (or a comma-separated list)")
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

    helps = {
        "cancel": "cancel a run (not reversible; no adapter)",
        "pause": "pause a run at the next step (checkpoint kept; resume later)",
        "resume": "resume a paused or failed run from its checkpoint",
        "stop": "end training now and deliver the adapter (the best checkpoint when the "
        "run keeps one)",
    }
    for action in ("cancel", "pause", "resume", "stop"):
        p = sub.add_parser(action, help=helps[action])
        p.add_argument("run")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=cmd_control)

    p = sub.add_parser("continue", help="a child run from RUN's final checkpoint")
    p.add_argument("run")
    p.add_argument("--epochs", type=float, required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_continue)

    p = sub.add_parser("supervisor", help="run (or stop) the background supervisor")
    p.add_argument("--stop", action="store_true")
    p.set_defaults(func=cmd_supervisor)

    p = sub.add_parser(
        "preview",
        help="a dataset's first rows as the model sees them, with the trained tokens marked",
    )
    p.add_argument("dataset")
    p.add_argument(
        "--model",
        default="builtin:tiny-llama",
        help="base model whose chat template and tokenizer to use",
    )
    p.add_argument("--format", default="auto")
    p.add_argument("--rows", "-n", type=int, default=3)
    p.add_argument("--max-seq-length", type=int, default=2048)
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser("make-tiny-model", help="build a tiny random Llama + tokenizer in DIR")
    p.add_argument("dir")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_make_tiny_model)

    from engine.cli_export import add_parsers as add_export_parsers

    add_export_parsers(sub)

    from engine.cli_engine import add_parsers as add_engine_parsers

    add_engine_parsers(sub)

    p = sub.add_parser("cluster", help="the Ray cluster's nodes, CPUs and GPUs")
    p.add_argument("address", nargs="?", help="default: TUNEGRAPH_RAY_ADDRESS or Settings")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_cluster)

    p = sub.add_parser("rebuild-index", help="rebuild the database from the run directories")
    p.set_defaults(func=cmd_rebuild_index)

    p = sub.add_parser(
        "demo", help="run the example sweep headless on the CPU and list what each run produced"
    )
    p.add_argument("graph", nargs="?", help="another graph file (default: the example sweep)")
    p.set_defaults(func=cmd_demo)
    return parser


def open_app(argv: list[str]) -> int:
    """`tunegraph` and `tunegraph GRAPH`: the desktop app (the only place the CLI imports Qt)."""
    if argv and not Path(argv[0]).is_file():
        print(
            f"tunegraph: {argv[0]}: no such graph file or command (see tunegraph --help)",
            file=sys.stderr,
        )
        return 2
    try:
        from app.main import main as app_main
    except ImportError as err:
        print(f"tunegraph: the desktop app cannot start: {err}", file=sys.stderr)
        return 1
    return app_main(argv[:1])


# commands that import torch/transformers in-process; a frozen app runs them in the engine's Python
IN_ENGINE_COMMANDS = {"export", "preview", "make-tiny-model", "cluster"}  # cluster: Ray


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    commands = next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if not argv or (not argv[0].startswith("-") and argv[0] not in commands):
        return open_app(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        if args.command in IN_ENGINE_COMMANDS:
            from engine.cli_engine import run_in_engine

            code = run_in_engine(argv)  # None: this process has the engine itself
            if code is not None:
                return code
        return args.func(args)
    except TunegraphError as err:
        if args.debug:
            raise
        print(f"tunegraph: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nStopped.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `tunegraph logs RUN | head`
        sys.stderr.close()
        return 0
