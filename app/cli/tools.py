"""Helper commands: `supervisor`, `preview`, `make-tiny-model`, `cluster` and `demo`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from app.cli.common import print_json
from engine.errors import TunegraphError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add `supervisor`, `preview`, `make-tiny-model`, `cluster` and `demo` to the subparsers."""
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

    p = sub.add_parser("cluster", help="the Ray cluster's nodes, CPUs and GPUs")
    p.add_argument("address", nargs="?", help="default: TUNEGRAPH_RAY_ADDRESS or Settings")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_cluster)

    p = sub.add_parser(
        "demo", help="run the example sweep headless on the CPU and list what each run produced"
    )
    p.add_argument("graph", nargs="?", help="another graph file (default: the example sweep)")
    p.set_defaults(func=cmd_demo)


def cmd_supervisor(args: argparse.Namespace) -> int:
    """`tunegraph supervisor`: serve this data directory's supervisor, or stop it with --stop."""
    from engine.supervisor import process as supervisor_process

    if args.stop:
        stopped = supervisor_process.stop_supervisor()
        print("Stopped the supervisor." if stopped else "No supervisor was running.")
        return 0
    if supervisor_process.serve_locked() != 0:
        print("A supervisor already runs for this data directory.", file=sys.stderr)
        return 1
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    """The first rows of a dataset through the base model's chat template, trained text marked."""
    from engine.data.prepare import format_preview, load_dataset_rows, preview_rows
    from engine.data.templates import prepare_tokenizer
    from engine.models.sources import load_tokenizer, resolve_source
    from engine.spec import BaseModelSpec, DatasetSpec

    ds = DatasetSpec(path=args.dataset, format=args.format)
    rows, fmt = load_dataset_rows(ds)
    base = BaseModelSpec(source=args.model)
    tokenizer = load_tokenizer(base, resolve_source(base))
    setup = prepare_tokenizer(tokenizer)
    previews = preview_rows(ds, tokenizer, n=args.rows, max_seq_length=args.max_seq_length)
    print(f"{args.dataset}: {len(rows)} rows, format {fmt}, chat template {setup.origin}")
    print(format_preview(previews, color=sys.stdout.isatty()))
    return 0


def cmd_make_tiny_model(args: argparse.Namespace) -> int:
    """`tunegraph make-tiny-model DIR`: a tiny random Llama and its tokenizer in DIR."""
    from engine.models.tiny import build_tiny_model

    t0 = time.time()
    out = build_tiny_model(Path(args.dir), seed=args.seed)
    print(f"Built a tiny Llama in {out} ({time.time() - t0:.1f} s).")
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    """The Ray cluster's live nodes with their CPUs and GPUs (what the hardware view lists)."""
    from engine.cluster.executor import ADDRESS_HINT, cluster_inventory, resolve_address

    address = resolve_address(args.address)
    if not address:
        raise TunegraphError("No Ray cluster is named.", ADDRESS_HINT)
    nodes = cluster_inventory(address)
    if args.json:
        print_json({"address": address, "nodes": nodes})
        return 0
    print(f"Ray cluster at {address}: {len(nodes)} node(s)")
    for n in nodes:
        gpus = f"{n['gpus']} GPU" + (f" {n['gpu_type']}" if n["gpu_type"] else "")
        print(f"  {n['node']:24} {n['cpus']:>4} CPU  {gpus}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """`tunegraph demo [GRAPH]`: the example sweep (or GRAPH) headless on the CPU."""
    from app.cli import demo

    return demo.main([args.graph] if args.graph else [])
