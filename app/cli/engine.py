"""`tunegraph engine status|setup`: the training engine's environment from the command line.

`setup --json-progress` prints one JSON object per line on stdout for the app's set-up dialog:
`{"event": "start", "flavour", "reason", "log"}`, `{"event": "progress", "step", "fraction"}`,
then `{"event": "done", "record": {...}}` or `{"event": "error", "message", "hint"}`. A line
`cancel` on stdin, SIGTERM or Ctrl-C cancels cleanly (the running uv step is killed).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from engine.errors import TunegraphError
from engine.setup.bundle import FLAVOURS


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the `engine` command and its `status` and `setup` sub-commands to the subparsers."""
    p = sub.add_parser("engine", help="the training engine (torch environment): status, setup")
    esub = p.add_subparsers(dest="engine_command", required=True)
    s = esub.add_parser("status", help="is the engine ready, which Python and torch flavour")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)
    s = esub.add_parser("setup", help="install torch of the right flavour, transformers, …")
    s.add_argument("--flavour", choices=("auto", *FLAVOURS), default="auto")
    s.add_argument("--bundle", metavar="PATH", help="an offline bundle (.tar or folder)")
    s.add_argument("--python", metavar="PATH", help="the Python to build the engine from")
    s.add_argument("--app-wheel", metavar="PATH", help="the tunegraph wheel to install")
    s.add_argument("--engine-dir", metavar="DIR", help="where to put it (default: see status)")
    s.add_argument("--no-llama", action="store_true", help="skip llama-cpp-python (no chat)")
    s.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    s.add_argument("--json-progress", action="store_true", help="JSON lines on stdout")
    s.set_defaults(func=cmd_setup)


def cmd_status(args: argparse.Namespace) -> int:
    """`tunegraph engine status`: is the engine ready, and what this machine would get; 0 if ready."""
    from engine.setup.environment import detect_flavour
    from engine.setup.interpreters import engine_status

    status = engine_status()
    detected = detect_flavour()
    status["detected"] = {
        "flavour": detected.name,
        "reason": detected.reason,
        "gpus": [{"driver": g.driver, "compute_cap": g.compute_cap} for g in detected.gpus],
    }
    if args.json:
        print(json.dumps(status, indent=2))
        return 0 if status["ready"] else 1
    if status["ready"]:
        print(f"Engine ready: {status['python']}")
        print(f"  flavour {status['flavour'] or '-'}, torch {status['torch'] or '?'}")
    else:
        print(f"Engine not set up: {status['reason']}.")
        print("  Run `tunegraph engine setup` (or `--bundle FILE` offline).")
    print(f"  engine folder {status['engine_dir']}")
    print(f"  this machine: {detected.name} — {detected.reason}")
    return 0 if status["ready"] else 1


def _emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def _watch_stdin(cancel: threading.Event) -> None:
    def read() -> None:
        for line in sys.stdin:
            if line.strip() == "cancel":
                cancel.set()
                return

    threading.Thread(target=read, daemon=True).start()


def cmd_setup(args: argparse.Namespace) -> int:
    """`tunegraph engine setup`: install the engine of the right flavour, with progress on stderr
    (or JSON lines on stdout)."""
    from engine.setup import environment as engine_env

    flavour = engine_env.flavour_named(args.flavour)
    cancel = threading.Event()
    as_json = args.json_progress
    if as_json:
        _watch_stdin(cancel)
        _emit({"event": "start", "flavour": flavour.name, "reason": flavour.reason})
    else:
        print(f"Flavour {flavour.name}: {flavour.reason}", file=sys.stderr)
        print(f"Installs {flavour.packages}.", file=sys.stderr)
        if not args.yes and sys.stdin.isatty():
            if input("Set up the training engine now? [Y/n] ").strip().lower() not in (
                "",
                "y",
                "yes",
            ):
                print("Nothing changed.", file=sys.stderr)
                return 1
    try:
        signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    except ValueError:  # not the main thread (tests calling main() from a thread)
        pass

    def progress(step: str, fraction: float) -> None:
        if as_json:
            _emit({"event": "progress", "step": step, "fraction": round(fraction, 3)})
        else:
            print(f"[{fraction * 100:3.0f}%] {step}", file=sys.stderr, flush=True)

    from pathlib import Path

    from engine.setup.interpreters import engine_dir

    log = (Path(args.engine_dir) if args.engine_dir else engine_dir()) / "setup.log"
    if as_json:
        _emit({"event": "log", "path": str(log)})
    else:
        print(f"Log: {log}", file=sys.stderr)
    try:
        record = engine_env.setup(
            flavour,
            log=log,
            bundle=args.bundle,
            engine_dir=args.engine_dir,
            progress=progress,
            cancel=cancel,
            python=args.python,
            app_wheel=args.app_wheel,
            llama=not args.no_llama,
        )
    except KeyboardInterrupt:
        if as_json:
            _emit({"event": "error", "message": "The engine set-up was cancelled.", "hint": None})
        print("\nThe engine set-up was cancelled; nothing was changed.", file=sys.stderr)
        return 130
    except TunegraphError as err:
        if as_json:
            _emit({"event": "error", "message": err.message, "hint": err.hint})
        raise
    if as_json:
        _emit({"event": "done", "record": record})
    else:
        print(
            f"Engine ready: {record['python']} (torch {record['torch']}, {record['flavour']}).",
            file=sys.stderr,
        )
        if record.get("llama_cpp") and "unavailable" in str(record["llama_cpp"]):
            print(f"  llama-cpp-python {record['llama_cpp']}.", file=sys.stderr)
    return 0


def run_in_engine(argv: list[str]) -> int | None:
    """Run `tunegraph ARGV` in the engine's Python when this process cannot import torch
    (a frozen app); None when it can, so the caller runs the command itself."""
    import subprocess

    from engine.plan.report import engine_in_process
    from engine.setup.interpreters import engine_python

    if engine_in_process():
        return None
    return subprocess.call([engine_python(), "-m", "app", *argv])
