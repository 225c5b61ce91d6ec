"""Child processes: running a tool whose output lines stream to a callback and which a cancel
check can stop (the engine set-up's uv/pip steps, the GGUF converter and quantizer), and
`stop_process`, the one terminate-wait-kill every part of the engine uses.

A child started in its own session (`new_session=True`) is stopped with its whole process group,
so a tool's own children (a build spawned by pip, say) do not outlive a cancel.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from engine.errors import RunCancelled

TAIL_LINES = 40
STOP_GRACE_S = 5.0

LineSink = Callable[[str], None]
CancelCheck = Callable[[], bool]


def run_streaming(
    cmd: list[str],
    *,
    env: dict | None = None,
    on_line: LineSink | None = None,
    cancel: CancelCheck | None = None,
    poll_s: float = 0.2,
    new_session: bool = False,
) -> tuple[int, list[str]]:
    """Run a command, forwarding each non-blank output line (stdout and stderr; carriage-return
    progress counts as lines) to `on_line`.

    Returns (exit code, last lines). When `cancel()` turns true, or anything interrupts the wait,
    the process (with its group when `new_session`) is terminated, then killed; a cancel raises
    RunCancelled.
    """
    kwargs: dict = {"start_new_session": True} if new_session and os.name != "nt" else {}
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
        **kwargs,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.put(raw)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    tail: list[str] = []
    try:
        while True:
            if cancel is not None and cancel():
                raise RunCancelled()
            try:
                raw = lines.get(timeout=poll_s)
            except queue.Empty:
                continue
            if raw is None:
                break
            for part in raw.replace("\r", "\n").splitlines():
                if part.strip():
                    tail = (tail + [part])[-TAIL_LINES:]
                    if on_line is not None:
                        on_line(part)
        return proc.wait(), tail
    finally:
        if proc.poll() is None:
            stop_process(proc, STOP_GRACE_S, group=bool(kwargs))
        reader.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


def last_log_line(path: Path | str, empty: str) -> str:
    """The last line a child process wrote to its log file at `path`, or `empty` when it wrote
    nothing (or the file cannot be read)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    return text.splitlines()[-1] if text else empty


def stop_process(
    proc: Any, grace: float, *, group: bool = False, terminate: bool = True, reap: bool = True
) -> None:
    """End a child (subprocess.Popen or psutil.Process): SIGTERM (to its whole process group when
    `group`; skipped with `terminate=False` when it was already asked), up to `grace` seconds to
    exit, then SIGKILL and, with `reap`, wait for it."""
    if terminate:
        _signal(proc, group, kill=False)
    try:
        proc.wait(timeout=grace)
    except (subprocess.TimeoutExpired, psutil.TimeoutExpired):
        _signal(proc, group, kill=True)
        if reap:
            proc.wait()


def _signal(proc: Any, group: bool, kill: bool) -> None:
    try:
        if group:
            os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        elif kill:
            proc.kill()
        else:
            proc.terminate()
    except (OSError, psutil.Error):  # already gone
        pass
