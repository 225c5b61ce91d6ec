"""Following runs from a terminal: progress bars for `tunegraph run`, and `tunegraph logs`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from engine.events import TERMINAL_STATES, read_events
from engine.rundir import SUPERVISOR_LOG, WORKER_LOG
from engine.store.index import Store
from engine.store.queries import format_event

POLL_S = 0.3
SETTLED = set(TERMINAL_STATES) | {"paused"}


def follow_runs(store: Store, run_ids: list[str], quiet: bool = False) -> dict[str, str]:
    """Show one progress bar per run until every run settles; returns {run_id: final state}.

    Ctrl-C stops following (the runs go on) and says how to cancel them.
    """
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}
    states: dict[str, str] = {}
    quiet = quiet or not sys.stderr.isatty()  # logs and CI get one line per state change
    announced: dict[str, str] = {}
    try:
        while True:
            for i, run_id in enumerate(run_ids):
                run = store.run_json(run_id)
                state = run["state"] or "submitted"
                states[run_id] = state
                # a queued run says why it waits (its data being made, rows so far)
                said = f"{state}: {run['reason']}" if state == "queued" and run["reason"] else state
                if announced.get(run_id) != said and not sys.stderr.isatty():
                    announced[run_id] = said
                    print(f"{run['name']}: {said}", file=sys.stderr, flush=True)
                if quiet:
                    continue
                bar = bars.get(run_id)
                if bar is None:
                    bar = bars[run_id] = tqdm(
                        total=run["max_steps"] or 0,
                        position=i,
                        desc=run["name"][:28].ljust(28),
                        unit="step",
                        leave=True,
                        file=sys.stderr,
                        dynamic_ncols=True,
                    )
                if run["max_steps"] and bar.total != run["max_steps"]:
                    bar.total = run["max_steps"]
                bar.n = run["step"] or 0
                loss = run["metrics"]["loss"]
                bar.set_postfix_str(
                    state + (f" loss {loss:.4f}" if loss is not None else ""), refresh=False
                )
                bar.refresh()
            if all(s in SETTLED for s in states.values()):
                break
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        for bar in bars.values():
            bar.close()
        print(
            "\nStopped following; the runs go on. Cancel with: "
            + "; ".join(f"tunegraph cancel {r}" for r in run_ids if states.get(r) not in SETTLED),
            file=sys.stderr,
        )
        return states
    for bar in bars.values():
        bar.close()
    for run_id in run_ids:
        run = store.run_json(run_id)
        line = f"{run['state']:9} {run['name']} ({run_id})"
        if run["error"]:
            message = run["error"]["message"].rstrip()
            line += f": {message}"
            if run["error"].get("hint"):
                line += (
                    "" if message.endswith((".", "!", "?")) else "."
                ) + f" {run['error']['hint']}"
        print(line, file=sys.stderr)
        for w in run["warnings"]:
            print(f"  warning: {w}", file=sys.stderr)
    return states


def print_logs(store: Store, run_id: str, follow: bool = False, as_json: bool = False) -> int:
    """Both logs of a run merged by time; with follow, keep printing until the run settles."""
    run_dir = Path(store.run_json(run_id)["run_dir"])
    seen = {"worker": 0, "supervisor": 0}
    while True:
        batch = []
        for source, name in (("worker", WORKER_LOG), ("supervisor", SUPERVISOR_LOG)):
            for event in read_events(run_dir / name, after_seq=seen[source]):
                seen[source] = event.seq
                batch.append((event.ts, source, event))
        for _, source, event in sorted(batch, key=lambda item: item[0]):
            record = {
                "source": source,
                "seq": event.seq,
                "ts": event.ts,
                "kind": event.kind,
                **event.data,
            }
            print(json.dumps(record) if as_json else format_event(record))
        sys.stdout.flush()
        if not follow:
            return 0
        state = store.run_json(run_id)["state"]
        if state in SETTLED and not batch:
            return 0
        time.sleep(POLL_S)
