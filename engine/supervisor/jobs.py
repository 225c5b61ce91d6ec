"""What the supervisor's detached job workers share (eval jobs, data steps): starting one in the
engine's Python, and telling whether it has ended (a worker started by this supervisor is its
child; one re-adopted after a restart is watched through its folder's worker.pid)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from engine.rundir import entry_command
from engine.training import launch as runs


def start_job(entry: str, folder: Path, env: dict) -> subprocess.Popen:
    """Start `python -m <entry> FOLDER` detached, in the engine's Python; EngineMissingError or
    OSError when it cannot start."""
    from engine.setup.interpreters import engine_python

    return runs.start_detached(entry_command(engine_python(), entry, str(folder)), folder, env)


def job_ended(proc: subprocess.Popen | None, folder: Path) -> tuple[bool, int | None]:
    """(whether the job's worker has ended, its exit code when known)."""
    if proc is not None:
        code = proc.poll()
        return code is not None, code
    return not runs.worker_alive(folder), None
