"""Where a run's worker executes: the supervisor's pluggable executors.

The supervisor decides *when* a run starts (queue, holds, slots); an executor decides *where* and
*how*: it starts the worker, reports whether it still lives, relays control requests, kills it, and
re-adopts it after a supervisor restart. `LocalExecutor` (the default, nothing extra to install)
runs `python -m engine.training.worker RUN_DIR` as a detached process of this machine. The Ray executor
(`engine.cluster.executor`, extra `tunegraph[cluster]`) runs the same worker on a Ray cluster and
relays its event log back, so both look the same to the store and the UI.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from engine import control
from engine.setup.streaming import stop_process
from engine.training import launch as runs

CANCEL_GRACE_S = 1.0


@dataclass
class Poll:
    """What an executor knows about one run's worker right now.

    `alive` False means the worker has ended and everything it wrote has been brought in;
    `lost` means the executor cannot tell right now (e.g. the cluster connection dropped):
    the worker may still run, `reason` says why it cannot be reached.
    """

    alive: bool
    returncode: int | None = None
    lost: bool = False
    reason: str | None = None


class Executor(Protocol):
    """The operations the supervisor needs from whatever runs a worker."""

    label: str  # "local", or "cluster (ADDRESS)"

    def start(self, run_id: str, run_dir: Path, env: dict, processes: int, **place) -> dict | None:
        """Start the run's worker (it resumes from a checkpoint in the run directory, if any)."""

    def poll(self, run_id: str, run_dir: Path) -> Poll:
        """Bring the worker's new events in and say whether it still lives."""

    def request(self, run_id: str, run_dir: Path, action: str) -> None:
        """Ask the worker to pause, stop or cancel at its next step (control.json)."""

    def kill(self, run_id: str, run_dir: Path) -> None:
        """End the worker's process tree now (terminate, then kill after a short grace)."""

    def release(self, run_id: str, run_dir: Path) -> None:
        """Forget a worker that has ended and free what it held."""

    def adopt(self, run_id: str, run_dir: Path) -> bool:
        """After a supervisor restart: True (and watched from now on) if the worker still lives."""

    def close(self) -> None:
        """The supervisor stops: drop connections (workers go on)."""


class LocalExecutor:
    """Detached worker processes on this machine (DESIGN.md "The flow of one run", step 5)."""

    label = "local"

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen | None] = {}

    def start(self, run_id: str, run_dir: Path, env: dict, processes: int, **place) -> None:
        """Start the worker as a detached process of this machine."""
        self.procs[run_id] = runs.start_worker(run_dir, env, processes)
        return None

    def poll(self, run_id: str, run_dir: Path) -> Poll:
        """Whether the worker still lives, and its exit code once it has ended."""
        proc = self.procs.get(run_id)
        if proc is not None:
            code = proc.poll()
            return Poll(alive=code is None, returncode=code)
        return Poll(alive=runs.worker_alive(run_dir))

    def request(self, run_id: str, run_dir: Path, action: str) -> None:
        """Write the control action for the worker to read at its next step."""
        control.request(run_dir, action)

    def kill(self, run_id: str, run_dir: Path) -> None:
        """End the worker's process tree, killing what outlives the grace period."""
        proc = self.procs.get(run_id)
        runs.kill_worker_tree(run_dir, grace=CANCEL_GRACE_S)
        if proc is not None:  # the tree was asked to end: wait, then kill what still runs
            stop_process(proc, CANCEL_GRACE_S, terminate=False)

    def release(self, run_id: str, run_dir: Path) -> None:
        """Forget the worker's process."""
        self.procs.pop(run_id, None)

    def adopt(self, run_id: str, run_dir: Path) -> bool:
        """Watch a worker left from a previous supervisor through worker.pid, if it lives."""
        if not runs.worker_alive(run_dir):
            return False
        self.procs[run_id] = None  # not our child: watched through worker.pid
        return True

    def close(self) -> None:
        """Nothing to drop: local workers go on without the supervisor."""
        return None
