"""`tunegraph eval TARGET… --set FILE [--metric M]… [--judge JUDGE.gguf] [--max-rows N] [--json]`:
score runs, base models or GGUF files on one eval set, ranked.

The command checks every input first (targets, the eval set's rows, the metrics, the judge file),
so a mistake is one sentence before anything loads. It then writes an eval job, estimates what the
eval will hold and hands it to the supervisor, which places the eval worker under a hold like a
run (engine.supervisor.evals). Progress (rows scored) goes to stderr; Ctrl-C cancels the eval and
exits 130. The ranked table (or DESIGN.md's `eval --json` shape) goes to stdout; a run's scores
are also recorded with the run (`tunegraph show RUN --json`'s `eval`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from app.cli.common import open_store, print_json
from engine.errors import EvalError, NotFoundError, TunegraphError

if TYPE_CHECKING:
    from engine.eval.targets import Target
    from engine.store.index import Store

POLL_S = 0.3
SUPERVISOR_CHECK_S = 2.0
NOT_A_TARGET = (
    "target {text!r} is neither a run, a base model (builtin:, a hub id, a folder, gguf:PATH) "
    "nor a .gguf file"
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the `eval` command."""
    p = sub.add_parser("eval", help="score runs, base models or GGUFs on one eval set, ranked")
    p.add_argument(
        "targets",
        nargs="+",
        metavar="TARGET",
        help="a run (id, prefix or name), a base model (builtin:, hub id, folder, gguf:PATH) or "
        "a .gguf file",
    )
    p.add_argument(
        "--set",
        dest="set_path",
        required=True,
        metavar="FILE",
        help="the eval set (any dataset format; each row's last assistant turn is the reference)",
    )
    p.add_argument(
        "--metric",
        dest="metrics",
        action="append",
        default=[],
        metavar="M",
        help="loss, exact, contains, regex:PATTERN, json, json:SCHEMA.json, rouge_l, "
        "python:FILE.py, judge, judge_pairwise (repeat; default: loss and rouge_l)",
    )
    p.add_argument(
        "--judge", metavar="JUDGE.gguf", help="a GGUF model that grades the outputs (metric judge)"
    )
    p.add_argument("--max-rows", type=int, metavar="N", help="score at most N rows of the set")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)


def resolve_targets(store: Store, texts: list[str]) -> list[Target]:
    """Each TARGET as a run, a base-model source or a GGUF file (one sentence when it is none)."""
    from engine.eval.targets import hub_target, model_target, run_target

    targets = []
    for text in texts:
        target = model_target(text)
        if target is None:
            try:
                run_id = store.resolve(text)
            except NotFoundError as err:
                if err.message.startswith(f"{text.strip()!r} matches"):
                    raise  # several runs answer to it: the sentence lists them
                target = hub_target(text)
                if target is None:
                    raise EvalError(
                        NOT_A_TARGET.format(text=text), "`tunegraph runs` lists the runs."
                    ) from None
            else:
                target = run_target(text, run_id, store.run_json(run_id)["run_dir"])
        targets.append(target)
    return targets


def cmd_eval(args: argparse.Namespace) -> int:
    """Check, submit and follow one eval; print its ranking (or JSON)."""
    from engine.eval.estimate import estimate_eval
    from engine.eval.job import EvalRequest, check_request, create_eval_dir
    from engine.supervisor.client import submit_eval

    store = open_store()
    request = EvalRequest(
        targets=resolve_targets(store, args.targets),
        set_path=str(Path(args.set_path).expanduser().resolve()),
        metrics=list(args.metrics),
        judge=str(Path(args.judge).expanduser().resolve())
        if args.judge and not args.judge.startswith("pypi:")
        else args.judge,
        max_rows=args.max_rows,
    )
    _, metrics = check_request(request)
    estimate = estimate_eval(request.targets, metrics)
    eval_id, folder = create_eval_dir(request)
    answer = submit_eval(store, eval_id, estimate)
    if answer.get("state") == "refused":
        error = answer.get("error") or {}
        raise EvalError(
            error.get("message") or "the supervisor refused the eval", error.get("hint")
        )
    if not answer.get("ok", True):
        raise EvalError(f"the supervisor did not take the eval: {answer.get('error')}")
    try:
        state, data = follow_eval(folder)
    except KeyboardInterrupt:
        from engine.supervisor.client import cancel_eval

        cancel_eval(store, eval_id)
        print("\nCancelled: the eval was stopped.", file=sys.stderr)
        return 130
    return report(folder, state, data, args.json)


def follow_eval(folder: Path) -> tuple[str, dict]:
    """Show progress on stderr until the eval settles; returns (state, its status event)."""
    from engine.events import TERMINAL_STATES, read_events, run_state
    from engine.rundir import SUPERVISOR_LOG, WORKER_LOG
    from engine.supervisor.process import ensure_supervisor

    seen = {WORKER_LOG: 0, SUPERVISOR_LOG: 0}
    tty = sys.stderr.isatty()
    width = 0
    checked = time.time()
    while True:
        for name in seen:
            for event in read_events(folder / name, after_seq=seen[name]):
                seen[name] = event.seq
                line = describe(event.kind, event.data)
                if not line:
                    continue
                if tty and event.kind == "progress":
                    print("\r" + line.ljust(width), end="", file=sys.stderr, flush=True)
                    width = len(line)
                else:
                    print(("\n" if tty and width else "") + line, file=sys.stderr, flush=True)
                    width = 0
        state, data = run_state(folder)
        if state in TERMINAL_STATES:
            if tty and width:
                print(file=sys.stderr)
            return state, data
        if state == "queued" and time.time() - checked > SUPERVISOR_CHECK_S:
            ensure_supervisor()  # one that exited (or died) is started again and re-queues it
            checked = time.time()
        time.sleep(POLL_S)


def describe(kind: str, data: dict) -> str | None:
    """One progress line for an event of the eval's logs, or None to show nothing."""
    if kind == "progress":
        return f"eval: {data['step']}/{data['max_steps']} rows scored ({data.get('target')})"
    if kind == "status" and data.get("state") in ("queued", "evaluating"):
        reason = data.get("reason")
        return f"eval: {data['state']}" + (f" ({reason})" if reason else "")
    if kind == "schedule":
        return f"eval: {data['message']}"
    if kind == "log" and data.get("level") == "info":  # warnings are printed with the result
        return f"eval: {data['message']}"
    return None


def report(folder: Path, state: str, data: dict, as_json: bool) -> int:
    """Print a finished eval's result; raise its error when it failed."""
    from engine.eval.job import read_result
    from engine.eval.scoreboard import EvalResult, RowResult, TargetResult, format_table

    if state != "completed":
        from engine.events import read_events
        from engine.rundir import SUPERVISOR_LOG, WORKER_LOG

        errors = [
            e
            for name in (WORKER_LOG, SUPERVISOR_LOG)
            for e in read_events(folder / name)
            if e.kind == "error"
        ]
        if errors:
            raise TunegraphError(errors[-1]["message"], errors[-1].get("hint"))
        raise TunegraphError(f"the eval ended {state}: {data.get('reason') or 'no reason given'}")
    result = read_result(folder)
    if result is None:
        raise TunegraphError(f"the eval completed but wrote no result ({folder})")
    for warning in data.get("warnings") or []:
        print(f"warning: {warning}", file=sys.stderr)
    if as_json:
        print_json(result)
        return 0
    shown = EvalResult(
        result["set"],
        result["rows"],
        result["metrics"],
        [
            TargetResult(r["target"], r["kind"], r["scores"], [RowResult(**x) for x in r["rows"]])
            for r in result["results"]
        ],
    )
    print(format_table(shown))
    return 0
