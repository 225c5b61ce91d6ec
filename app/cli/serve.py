"""`tunegraph serve MODEL.gguf|RUN`: an OpenAI-compatible endpoint for a tuned model.

The endpoint (engine.chat.serving) is a child process running llama-cpp-python's server with the
model's own chat template and stop tokens. This command starts it, prints the URL (and the API key
when it binds beyond this machine), a curl and a Python example, then one line per request until
Ctrl-C, which stops the endpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from engine.errors import NotFoundError

POLL_S = 0.5


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the `serve` command to the CLI's subparsers."""
    from engine.chat.serving import DEFAULT_PORT

    p = sub.add_parser(
        "serve", help="an OpenAI-compatible local endpoint (/v1/chat/completions) for a GGUF"
    )
    p.add_argument("model", help="a .gguf file, or a run whose GGUF export to serve")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1, this machine only); any other address "
        "needs an API key, generated when --api-key is not given",
    )
    p.add_argument("--api-key", default=None, help="the key clients must send (Bearer)")
    p.add_argument("--ctx", type=int, default=4096, help="context length in tokens")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    p.add_argument("--json", action="store_true", help="print the endpoint as one JSON line")
    p.set_defaults(func=cmd_serve)


def gguf_of_run(run_id: str) -> Path | None:
    """The newest GGUF file exported from `run_id` (library manifests are the truth), or None."""
    from engine.store.library import library_entries

    for entry in library_entries():  # newest first
        if entry.get("run_id") == run_id and entry.get("kind") == "gguf":
            path = Path(entry["file"])
            if path.is_file():
                return path
    return None


def resolve_model(ref: str) -> Path:
    """A .gguf path as given, or the GGUF exported from the run `ref` names (NotFoundError with
    what to do when the run has none)."""
    path = Path(ref)
    if path.suffix.lower() == ".gguf" or path.exists():
        if not path.is_file():
            raise NotFoundError(f"{ref} does not exist.", "Give the path of a .gguf file.")
        return path
    from engine.store.index import Store

    with Store() as store:
        run_id = store.resolve(ref)
    found = gguf_of_run(run_id)
    if found is None:
        raise NotFoundError(
            f"Run {run_id} has no GGUF export: export it first "
            f"(tunegraph export {run_id}), then serve it."
        )
    return found


def cmd_serve(args: argparse.Namespace) -> int:
    """Start the endpoint, print how to reach it, log requests until Ctrl-C."""
    from engine.chat.serving import ServeProcess, needs_key

    gguf = resolve_model(args.model)
    if not args.json:
        print(f"Loading {gguf} …", file=sys.stderr)
    server = ServeProcess(
        gguf, args.host, args.port, api_key=args.api_key, n_ctx=args.ctx, threads=args.threads
    )
    try:
        status = server.wait_ready()
        _announce(server, status, args.json, beyond=needs_key(args.host))
        seen = 0
        while server.running():
            time.sleep(POLL_S)
            status = server.status()
            count = int(status.get("requests") or 0)
            if count != seen and not args.json:
                last = status.get("last_request") or {}
                print(
                    f"[{count}] {last.get('method')} {last.get('path')} → {last.get('status')} "
                    f"({last.get('seconds')} s)",
                    file=sys.stderr,
                    flush=True,
                )
            seen = count
        print("tunegraph: the endpoint stopped.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nStopped serving.", file=sys.stderr)
        return 0
    finally:
        server.stop()


def _announce(server, status: dict, as_json: bool, beyond: bool) -> None:
    if as_json:
        out = {
            "url": server.url,
            "model": server.alias,
            "path": str(server.gguf),
            "api_key": server.api_key,
            "template": status.get("template_name"),
            "stop": status.get("stop_texts"),
            "pid": status.get("pid"),
        }
        print(json.dumps(out), flush=True)
        return
    print(f"Serving {server.alias} at {server.url}")
    print(f"Chat template: {status.get('template_name')}")
    print(f"Stops on: {', '.join(status.get('stop_texts') or []) or 'EOS'} (and EOS/EOT ids)")
    if server.api_key:
        print(f"API key: {server.api_key}")
        if beyond:
            print("Listening beyond this machine: requests without this key get 401.")
    ex = server.examples()
    print("\ncurl:\n" + ex["curl"] + "\n\nPython:\n" + ex["python"])
    print("Ctrl-C stops the endpoint.", file=sys.stderr, flush=True)
