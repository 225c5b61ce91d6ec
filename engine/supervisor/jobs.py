"""What the supervisor's detached job workers share (eval jobs, data steps): starting one in the
engine's Python, telling whether it has ended (a worker started by this supervisor is its child;
one re-adopted after a restart is watched through its folder's worker.pid), and the bookkeeping
of a table of them (`DetachedJobs`, mixed into the Supervisor by engine.supervisor.evals and
engine.supervisor.data_steps)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from engine.errors import EngineMissingError
from engine.rundir import entry_command
from engine.store.index import Store
from engine.supervisor import scheduler
from engine.training import launch as runs


class Work(Protocol):
    """A job a supervisor looks after: queued, or running (`started`, `proc` None when
    re-adopted after a restart)."""

    started: bool
    proc: subprocess.Popen | None


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


class DetachedJobs:
    """Mixed into the Supervisor (it provides store and placements): a job's worker started,
    a finished job forgotten with its hold, the ended ones found."""

    store: Store
    placements: dict[str, scheduler.Placement]

    def start_worker(
        self, work: Work, entry: str, folder: Path, env: dict, failed: Callable[[str], None]
    ) -> None:
        """Start the job's worker; `failed(why)` when it cannot start."""
        try:
            work.proc = start_job(entry, folder, env)
        except (EngineMissingError, OSError) as err:
            failed(str(err))
            return
        work.started = True

    def forget_job(self, jobs: dict[str, Any], key: str, hold: str) -> None:
        """Drop job `key` from its table and free its hold."""
        jobs.pop(key, None)
        self.placements.pop(hold, None)
        self.store.release_hold(hold)

    @staticmethod
    def ended_jobs(
        jobs: dict[str, Any], folder_of: Callable[[Any], Path]
    ) -> Iterator[tuple[Any, int | None]]:
        """(work, exit code when known) of each started job whose worker has ended."""
        for work in list(jobs.values()):
            if work.started:
                ended, code = job_ended(work.proc, folder_of(work))
                if ended:
                    yield work, code
