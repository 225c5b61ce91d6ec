"""The `tunegraph` command line: the headless face of every feature.

Each command group lives in its own module with an `add_parsers(sub)` that registers its commands:
`submit` (run, estimate), `manage` (runs, show, diff, logs, run controls, continue,
rebuild-index), `tools` (supervisor, preview, make-tiny-model, cluster, demo), `export` (export,
chat), `eval` (score and rank models on an eval set), `serve` (an OpenAI-compatible endpoint),
`push` (to the Hugging Face Hub), `sweep` (a sweep's trials and best), `datasets` (what data nodes made) and `engine` (engine status/setup). A failing command prints one clear sentence on stderr (no
traceback unless --debug) and exits non-zero. Commands that list or report take --json and print
the shapes DESIGN.md fixes.
"""

from __future__ import annotations

import argparse
import sys

from app.cli import datasets, export, manage, push, serve, submit, sweep, tools
from app.cli import engine as engine_commands
from app.cli import eval as eval_command
from app.cli.common import run_guarded
from engine import __version__

COMMAND_GROUPS = (
    submit,
    manage,
    sweep,
    datasets,
    tools,
    export,
    eval_command,
    serve,
    push,
    engine_commands,
)

# commands that import torch/transformers in-process; a frozen app runs them in the engine's Python
# eval: reads the eval set and a model's config (for its estimate) before handing it to the supervisor
IN_ENGINE_COMMANDS = {"export", "preview", "make-tiny-model", "cluster", "eval"}  # cluster: Ray


def build_parser() -> argparse.ArgumentParser:
    """The `tunegraph` argument parser: the top-level options and every group's commands."""
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
    for group in COMMAND_GROUPS:
        group.add_parsers(sub)
    return parser


def tunegraph_command(*args: str) -> list[str]:
    """The command line that runs `tunegraph ARGS…` with the app's own interpreter."""
    from engine.setup.interpreters import console_executable, frozen

    if frozen():
        return [console_executable(), *args]
    return [sys.executable, "-m", "app", *args]


def is_command(argv: list[str]) -> bool:
    """True when `tunegraph ARGV` is a command line call rather than "open the app (on GRAPH)"."""
    return bool(argv) and (argv[0].startswith("-") or argv[0] in command_names())


def command_names() -> set[str]:
    """The sub-commands `tunegraph` knows."""
    parser = build_parser()
    return set(
        next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    )


def main(argv: list[str] | None = None) -> int:
    """Run `tunegraph ARGV` headless; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    return run_guarded(lambda: _dispatch(args, argv), debug=args.debug)


def _dispatch(args: argparse.Namespace, argv: list[str]) -> int:
    """Run the parsed command, in the engine's Python when it needs torch and this process has
    none."""
    if args.command in IN_ENGINE_COMMANDS:
        code = engine_commands.run_in_engine(argv)  # None: this process has the engine itself
        if code is not None:
            return code
    return args.func(args)
