"""`tunegraph push RUN|ARTIFACT REPO [--public] [--gguf]`: a run's adapter (and its GGUF bundle)
or one library artifact to the Hugging Face Hub, private unless --public.

`push_target` is shared with the app's "Push to Hub…" dialog: it finds what to push (the run's
adapter ZIP or adapter folder, its newest GGUF bundle with --gguf, or the named artifact), stages
it with a model card (engine.export.hub.stage) and uploads it with progress and cancel.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
from pathlib import Path

from engine.errors import NotFoundError, TunegraphError
from engine.export.hub import Part, Progress, push, stage
from engine.rundir import ADAPTER, ADAPTER_WEIGHTS, MODEL, SPEC_FILE


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the `push` command to the CLI's subparsers."""
    p = sub.add_parser(
        "push", help="a run's adapter (and GGUF bundle) or an artifact to the Hugging Face Hub"
    )
    p.add_argument("target", metavar="RUN|ARTIFACT", help="a run, or a library artifact id")
    p.add_argument("repo", metavar="REPO", help="the Hub repository, owner/name")
    p.add_argument("--public", action="store_true", help="make a new repo public (default private)")
    p.add_argument("--gguf", action="store_true", help="also push the run's GGUF bundle")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_push)


def _entries() -> list[dict]:
    from engine.store.library import library_entries

    return library_entries()


def _newest(run_id: str, kinds: tuple[str, ...]) -> dict | None:
    for entry in _entries():  # newest first
        if entry.get("run_id") == run_id and entry.get("kind") in kinds:
            if Path(entry["file"]).exists():
                return entry
    return None


def _run_parts(run_id: str, gguf: bool) -> tuple[list[Part], str, str | None]:
    from engine.store.index import Store

    with Store() as store:
        run = store.run_json(run_id)
    run_dir = Path(run["run_dir"])
    base = None
    try:
        base = json.loads((run_dir / SPEC_FILE).read_text(encoding="utf-8"))["base_model"]["source"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    parts = []
    entry = _newest(run_id, ("adapter_zip",))
    if entry is not None:
        parts.append(Part("adapter_zip", Path(entry["file"])))
    elif (run_dir / ADAPTER / ADAPTER_WEIGHTS).is_file():
        parts.append(Part("adapter_dir", run_dir / ADAPTER))
    elif (run_dir / MODEL / "config.json").is_file():  # full fine-tuning: the whole model
        parts.append(Part("model_dir", run_dir / MODEL))
    else:
        raise NotFoundError(
            f"Run {run_id} has no adapter to push (it is {run.get('state')}).",
            "Push a completed run.",
        )
    if gguf:
        bundle = _newest(run_id, ("gguf_bundle",))
        if bundle is None:
            raise NotFoundError(
                f"Run {run_id} has no GGUF bundle: export it first (tunegraph export {run_id}).",
            )
        parts.append(Part("gguf_bundle", Path(bundle["file"])))
    return parts, run.get("name") or run_id, base


def find_parts(target: str, gguf: bool) -> tuple[list[Part], str, str | None]:
    """(parts, title, base model) for a run or a library artifact id (exact, or a unique prefix)."""
    entries = _entries()
    exact = [e for e in entries if e.get("id") == target]
    if not exact:
        from engine.store.index import Store

        try:
            with Store() as store:
                run_id = store.resolve(target)
            return _run_parts(run_id, gguf)
        except NotFoundError:
            exact = [e for e in entries if str(e.get("id", "")).startswith(target)]
            if len(exact) != 1:
                raise NotFoundError(
                    f"No run or artifact matches {target!r}"
                    + (f" ({len(exact)} artifacts do: give more of the id)." if exact else "."),
                    "`tunegraph runs` lists runs; the app's Library shows artifact ids.",
                ) from None
    entry = exact[0]
    if gguf:
        raise TunegraphError(
            "--gguf adds a run's GGUF bundle; an artifact is pushed as it is.",
            "Push the run with --gguf, or push the GGUF bundle artifact itself.",
        )
    title = entry.get("run_name") or entry["id"]
    return [Part(str(entry.get("kind")), Path(entry["file"]))], title, entry.get("base_model")


def push_target(
    target: str,
    repo: str,
    public: bool = False,
    gguf: bool = False,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> dict:
    """Find, stage and push; returns {"repo", "url", "private", "files"}."""
    from engine.export.hub import check_can_push

    check_can_push(repo)  # offline, repo name, token: before any unpacking
    parts, title, base = find_parts(target, gguf)
    with tempfile.TemporaryDirectory(prefix="tunegraph-push-") as tmp:
        files = stage(parts, Path(tmp), title, base)
        url = push(files, repo, private=not public, progress=progress, cancel=cancel)
    return {"repo": repo, "url": url, "private": not public, "files": sorted(files)}


def cmd_push(args: argparse.Namespace) -> int:
    """Push with a progress line on stderr; Ctrl-C cancels before the commit."""

    def show(message: str, fraction: float) -> None:
        if not args.json:
            print(f"\r[{fraction:4.0%}] {message[:90]:90}", end="", file=sys.stderr, flush=True)

    result = push_target(args.target, args.repo, args.public, args.gguf, progress=show)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(file=sys.stderr)
    kind = "private" if result["private"] else "public"
    print(f"Pushed {len(result['files'])} files to {result['url']} ({kind}).")
    return 0
