"""Creating run directories (and reading back their submission record) and starting worker
processes.

A run directory is created at submission: `spec.json` (frozen) and a first `queued` status in
`supervisor.jsonl`. Workers are started detached (their own process group / session) so they
survive the process that started them; `worker.pid` lets anyone find them again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Protocol

from engine import paths
from engine.rundir import LOG_FILE, PID_FILE, SPEC_FILE, entry_command, entry_module
from engine.setup.interpreters import engine_python
from engine.spec import JobSpec


class RunIndex(Protocol):
    """What `create_run` needs of the store (engine.store.index.Store, a wing above this one)."""

    def register_run(
        self,
        run_id: str,
        spec: JobSpec,
        run_dir: Path,
        created_at: float | None = None,
        parent: str | None = None,
        estimate: dict | None = None,
    ) -> None:
        """Index a new run."""


def create_run(
    spec: JobSpec,
    store: RunIndex,
    parent: str | None = None,
    estimate: dict | None = None,
    run_id: str | None = None,
) -> str:
    """Freeze the spec into a new run directory and index it; returns the run id (`run_id`, when
    the caller named it first: a sweep's trial).

    The run becomes `queued` (or `refused`) when the supervisor takes its submit command: only
    the supervisor writes supervisor.jsonl.
    """
    run_id = run_id or paths.new_run_id()
    run_dir = paths.runs_dir() / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    spec.save(run_dir / SPEC_FILE)
    meta = {"parent": parent, "created_at": time.time(), "estimate": estimate}
    (run_dir / "submission.json").write_text(json.dumps(meta), encoding="utf-8")
    store.register_run(
        run_id, spec, run_dir, created_at=meta["created_at"], parent=parent, estimate=estimate
    )
    return run_id


def read_submission(run_dir: Path) -> dict:
    """What the client recorded at submission: parent, created_at, estimate."""
    try:
        return json.loads((Path(run_dir) / "submission.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def worker_command(run_dir: Path, processes: int = 1) -> list[str]:
    """The worker's command line in the engine's Python (interpreters.engine_python; raises
    EngineMissingError without one); several processes train with DDP under torchrun."""
    python = engine_python()
    if processes > 1:
        return [
            python,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            "-m",
            entry_module("worker"),
            str(run_dir),
        ]
    return entry_command(python, "worker", str(run_dir))


def start_worker(run_dir: Path, env: dict | None = None, processes: int = 1) -> subprocess.Popen:
    """Start `python -m engine.training.worker RUN_DIR` (under torchrun for processes > 1) in its own
    process group, output to worker.log."""
    return start_detached(worker_command(run_dir, processes), run_dir, env)


def start_detached(command: list[str], folder: Path, env: dict | None = None) -> subprocess.Popen:
    """Start a worker process in its own process group (so it outlives its starter) in `folder`,
    its output appended to the folder's worker.log; a stale worker.pid is removed first."""
    folder = Path(folder)
    (folder / PID_FILE).unlink(missing_ok=True)
    out = open(folder / LOG_FILE, "ab")
    kwargs: dict = {
        "stdout": out,
        "stderr": subprocess.STDOUT,
        "stdin": subprocess.DEVNULL,
        "cwd": str(folder),
        "env": {**os.environ, **(env or {})},
    }
    if os.name == "nt":
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
    else:
        kwargs["start_new_session"] = True
    try:
        return subprocess.Popen(command, **kwargs)
    finally:
        out.close()


def read_pid(run_dir: Path) -> dict | None:
    """The run's worker.pid record (pid and start time), or None when absent or unreadable."""
    try:
        return json.loads((Path(run_dir) / PID_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def worker_alive(run_dir: Path) -> bool:
    """True when the pid in worker.pid is alive and is the same process (start time matches)."""
    import psutil

    info = read_pid(run_dir)
    if not info:
        return False
    try:
        proc = psutil.Process(info["pid"])
        if abs(proc.create_time() - info["create_time"]) > 1.0:
            return False  # the pid was reused by another process
        return proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, KeyError):
        return False


def kill_worker_tree(run_dir: Path, grace: float = 1.0) -> bool:
    """Terminate the worker and its children, then kill what is left after `grace` seconds."""
    import psutil

    info = read_pid(run_dir)
    if not info or not worker_alive(run_dir):
        return False
    try:
        proc = psutil.Process(info["pid"])
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return False
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace)
    return True
