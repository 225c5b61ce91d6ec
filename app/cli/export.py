"""`tunegraph export` and `tunegraph chat`: the command-line face of export and chat.

`add_parsers(subparsers)` adds both commands to the main parser (app/cli/main.py). Failures raise
TunegraphError subclasses; the main CLI prints them as one sentence.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.errors import NotFoundError, TunegraphError
from engine.events import LIVE_STATES, EventLog, read_events, run_state
from engine.formatting import format_bytes
from engine.rundir import SPEC_FILE, WORKER_LOG


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the `export` and `chat` commands to the CLI's subparsers."""
    from engine.spec import GGUF_QUANTS

    p = sub.add_parser("export", help="export a finished run: adapter ZIP and GGUF bundle")
    p.add_argument("run", help="run id, unique id prefix, or unique name")
    p.add_argument(
        "--quant",
        choices=GGUF_QUANTS,
        default=None,
        help="GGUF quantization (default: the run's setting, Q4_K_M)",
    )
    p.add_argument("--merged", action="store_true", help="also keep the merged 16-bit folder")
    p.add_argument(
        "--no-merged", action="store_true", help="no merged folder, whatever the run says"
    )
    p.add_argument("--no-gguf", action="store_true", help="only the adapter ZIP")
    p.add_argument("--no-adapter-zip", action="store_true", help="no adapter ZIP")
    p.add_argument("--ollama", metavar="NAME", help="install into Ollama under NAME")
    p.add_argument("--verbose", "-v", action="store_true", help="show converter output")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("chat", help="chat with a GGUF model (interactive without --prompt)")
    p.add_argument("model", help="a .gguf file")
    p.add_argument("--prompt", help="ask one question, print the answer and exit")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--ctx", type=int, default=4096, help="context length in tokens")
    p.add_argument("--json", action="store_true", help="with --prompt: print the answer as JSON")
    p.set_defaults(func=cmd_chat)


# -- export ---------------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    """Export a run in this process, logging to its events.jsonl, then index the result."""
    from dataclasses import replace

    from engine.export.job import nothing_to_make, skip_existing
    from engine.export.pipeline import export_run, require_adapter
    from engine.spec import JobSpec
    from engine.store.index import Store
    from engine.training.launch import worker_alive

    store = Store()
    try:
        run_id = store.resolve(args.run)
        run_dir = Path(store.run_json(run_id)["run_dir"])
        state, last = run_state(run_dir)
        if worker_alive(run_dir) or (state in LIVE_STATES and state != "exporting"):
            raise TunegraphError(
                f"Run {run_id} is {state or 'running'}: it cannot be exported "
                "while its worker runs.",
                "Wait for it to finish, or cancel it.",
            )
        spec = JobSpec.load(run_dir / SPEC_FILE)
        require_adapter(run_dir, spec)
        options = replace(
            spec.export,
            adapter_zip=not args.no_adapter_zip,
            gguf=not args.no_gguf,
            quant=args.quant or spec.export.quant,
            merged=(args.merged or spec.export.merged) and not args.no_merged,
            ollama_name=args.ollama or "",
        )
        # what the library already holds for this run is named, not made again
        options, existing = skip_existing(run_id, options)
        if nothing_to_make(options):
            return _report(args, run_id, state or "completed", [], [], existing)
        previous = state if state and state != "exporting" else "completed"
        progress = _progress_printer(args.verbose)  # on stderr, so also with --json
        with EventLog(run_dir / WORKER_LOG) as log:
            start = log.emit("status", state="exporting", reason="export from the command line")
            try:
                warnings = export_run(run_dir, options, log, progress)
            except BaseException:  # failed or interrupted: the run is back where it was
                _restore(log, previous, last)
                raise
            _restore(log, previous, last, warnings)
        store.ingest(run_dir)
        made = [
            _artifact(e)
            for e in read_events(run_dir / WORKER_LOG, start.seq)
            if e.kind == "artifact"
        ]
    finally:
        store.close()
    return _report(args, run_id, previous, warnings, made, existing)


def _report(
    args: argparse.Namespace,
    run_id: str,
    state: str,
    warnings: list[str],
    made: list[dict],
    existing: list[dict],
) -> int:
    """Print what the export made and what the library already held (not made again)."""
    kept = [_existing(m) for m in existing]
    if args.json:
        out = {"id": run_id, "state": state, "warnings": warnings, "artifacts": made}
        print(json.dumps({**out, "existing": kept}, indent=2))
        return 0
    if not made:
        print("Nothing to export: the library already holds what was asked for.", file=sys.stderr)
    for art in made:
        print(f"{art['kind']:12} {format_bytes(art['bytes']):>9}  {art['path']}")
    for art in kept:
        print(f"{art['kind']:12} {format_bytes(art['bytes']):>9}  {art['path']}  (already there)")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _existing(manifest: dict) -> dict:
    """A library manifest in the shape of the made artifacts (path: the artifact itself)."""
    return {
        "id": manifest.get("id"),
        "kind": manifest.get("kind"),
        "path": manifest.get("file"),
        "bytes": manifest.get("bytes"),
        "sha256": manifest.get("sha256"),
        "quant": manifest.get("quant"),
    }


def _restore(log: EventLog, previous: str, last: dict, warnings: list[str] | None = None) -> None:
    """Put the run back in the state it had before the export, adding the export's warnings."""
    kept = list(last.get("warnings") or [])
    log.emit(
        "status",
        state=previous,
        reason=last.get("reason"),
        warnings=kept + [w for w in warnings or [] if w not in kept],
    )


def _artifact(event) -> dict:
    return {
        "id": event.get("id"),
        "kind": event.get("artifact_kind") or event.get("kind"),
        "path": event.get("path"),
        "bytes": event.get("bytes"),
        "sha256": event.get("sha256"),
    }


def _progress_printer(verbose: bool):
    """Progress lines "[ 40%] message" on stderr (the app's run panel reads them)."""

    def show(message: str, fraction: float | None) -> None:
        if fraction is None and not verbose:
            return
        print(message if fraction is None else f"[{fraction:4.0%}] {message}", file=sys.stderr)

    return show


# -- chat -----------------------------------------------------------------------------------------
def cmd_chat(args: argparse.Namespace) -> int:
    """One answer with --prompt (text or --json), else an interactive chat."""
    from engine.chat.session import ChatSession

    if not Path(args.model).is_file():
        raise NotFoundError(f"{args.model} does not exist.", "Give the path of a .gguf file.")
    if args.json and args.prompt is None:
        raise TunegraphError("--json needs --prompt (the interactive chat has no JSON output).")
    options = {
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "system": args.system,
    }
    with ChatSession(args.model, n_ctx=args.ctx) as session:
        if args.prompt is not None:
            return _one_answer(session, args.prompt, options, args.json)
        return _repl(session, options)


def _one_answer(session, prompt: str, options: dict, as_json: bool) -> int:
    messages = [{"role": "user", "content": prompt}]
    pieces = []
    for piece in session.stream(messages, **options):
        pieces.append(piece)
        if not as_json:
            print(piece, end="", flush=True)
    stats = session.stats
    if as_json:
        print(
            json.dumps(
                {
                    "text": "".join(pieces),
                    "prompt_tokens": stats.prompt_tokens,
                    "completion_tokens": stats.completion_tokens,
                    "tokens_per_s": stats.tokens_per_s,
                    "stop_reason": stats.stop_reason,
                }
            )
        )
    else:
        print()
        print(_stats_line(stats), file=sys.stderr)
    return 0


def _repl(session, options: dict) -> int:
    print(f"Template: {session.template_name}", file=sys.stderr)
    print(
        "Type a message; /reset starts over, /exit (or Ctrl-D) quits, Ctrl-C stops an answer.",
        file=sys.stderr,
    )
    history: list[dict] = []
    while True:
        try:
            text = input("you> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        except KeyboardInterrupt:
            print(file=sys.stderr)
            return 0
        if text.strip() in ("/exit", "/quit"):
            return 0
        if text.strip() == "/reset":
            history = []
            continue
        if not text.strip():
            continue
        history.append({"role": "user", "content": text})
        answer = []
        print("model> ", end="", flush=True)
        try:
            for piece in session.stream(history, **options):
                answer.append(piece)
                print(piece, end="", flush=True)
        except KeyboardInterrupt:
            session.stop()
            print(" [stopped]", end="")
        print()
        if session.stats:
            print(_stats_line(session.stats), file=sys.stderr)
        history.append({"role": "assistant", "content": "".join(answer)})


def _stats_line(stats) -> str:
    speed = f", {stats.tokens_per_s:.1f} tokens/s" if stats.tokens_per_s else ""
    return (
        f"[{stats.prompt_tokens} prompt tokens, {stats.completion_tokens} answer tokens"
        f"{speed}, {stats.stop_reason}]"
    )
