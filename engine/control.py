"""Control requests from the supervisor to a worker: `control.json` in the run directory.

`{"action": "pause" | "cancel" | "stop" | "prune", "at": ts}` (stop: end training now, evaluate,
and deliver the adapter of the checkpoint with the lowest eval loss when the run has an eval split,
else the current weights, as for a finished run; prune: a sweep's pruner stops a losing trial,
which saves a checkpoint and ends as `pruned`, with the pruner's `reason` from the file), written atomically by the supervisor and polled by the
worker's training callback at every step (portable, works on Windows). SIGTERM/SIGINT only set a
flag (no I/O inside a signal handler); the callback then treats them as a cancel.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from engine.rundir import CONTROL_FILE

ACTIONS = ("pause", "cancel", "stop", "prune")


def request(run_dir: Path | str, action: str, reason: str = "") -> None:
    """Ask the worker of `run_dir` to pause, cancel, stop or prune (atomic write)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown control action {action!r}")
    path = Path(run_dir) / CONTROL_FILE
    tmp = path.with_suffix(".tmp")
    body = {"action": action, "at": time.time(), **({"reason": reason} if reason else {})}
    tmp.write_text(json.dumps(body), encoding="utf-8")
    os.replace(tmp, path)


def clear(run_dir: Path | str) -> None:
    """Forget a request (before a resumed worker starts)."""
    (Path(run_dir) / CONTROL_FILE).unlink(missing_ok=True)


class Control:
    """The worker side: what has been asked of this run, checked cheaply at every step."""

    def __init__(self, run_dir: Path | str):
        self.path = Path(run_dir) / CONTROL_FILE
        self._signalled = False
        self._mtime = 0.0
        self._action: str | None = None
        self.reason = ""  # why, when the request says (a prune)

    def install_signal_handlers(self) -> None:
        """Treat SIGTERM (and SIGBREAK on Windows) as a cancel request."""

        def handler(signum, frame):  # no I/O here: just a flag
            self._signalled = True

        signal.signal(signal.SIGTERM, handler)
        if hasattr(signal, "SIGBREAK"):  # Windows console close
            signal.signal(signal.SIGBREAK, handler)

    def action(self) -> str | None:
        """'pause', 'cancel', 'stop', 'prune' or None. A signal counts as cancel."""
        if self._signalled:
            return "cancel"
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return self._action
        if mtime != self._mtime:
            self._mtime = mtime
            try:
                body = json.loads(self.path.read_text(encoding="utf-8"))
                action, self.reason = body.get("action"), str(body.get("reason") or "")
            except (OSError, ValueError, AttributeError):
                action = None
            self._action = action if action in ACTIONS else None
        return self._action
