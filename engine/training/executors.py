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

    def request(self, run_id: str, run_dir: Path, action: str, reason: str = "") -> None:
        """Ask the worker to pause, stop, prune or cancel at its next step (control.json)."""

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

    def request(self, run_id: str, run_dir: Path, action: str, reason: str = "") -> None:
        """Write the control action for the worker to read at its next step."""
        control.request(run_dir, action, reason)

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


class GroupExecutor:
    """Runs that share one base model, each a member of a group process on this machine
    (engine.training.group). The group process records itself in every member's worker.pid and
    removes a member's record when that run ends, so each run is watched as if it had a worker
    of its own; a request acts on one run (its control.json), and only the last run still in
    the group takes the process down when it is killed."""

    label = "local"

    def __init__(self) -> None:
        self.procs: dict[Path, subprocess.Popen | None] = {}  # group dir -> its process
        self.member_of: dict[str, Path] = {}  # run id -> its group dir

    def start_group(self, group_dir: Path, run_dirs: dict[str, Path], env: dict) -> None:
        """Write the group's group.json and start its process over `run_dirs` (by run id)."""
        from engine.training.group_launch import create_group, start_group

        create_group(group_dir, list(run_dirs.values()))
        self.procs[Path(group_dir)] = start_group(group_dir, env)
        for run_id in run_dirs:
            self.member_of[run_id] = Path(group_dir)

    def group_of(self, run_id: str) -> Path | None:
        """The group directory the run trains in, or None."""
        return self.member_of.get(run_id)

    def members(self, group_dir: Path) -> list[str]:
        """The run ids of a group not released yet."""
        return [r for r, g in self.member_of.items() if g == Path(group_dir)]

    def poll(self, run_id: str, run_dir: Path) -> Poll:
        """A member lives while its group process does and its worker.pid record is there."""
        group_dir = self.member_of[run_id]
        proc = self.procs.get(group_dir)
        code = proc.poll() if proc is not None else None
        if code is not None or (proc is None and not runs.worker_alive(group_dir)):
            return Poll(alive=False, returncode=code)
        return Poll(alive=runs.worker_alive(run_dir))

    def request(self, run_id: str, run_dir: Path, action: str, reason: str = "") -> None:
        """Write the control action for the run to read at its next step in the group."""
        control.request(run_dir, action, reason)

    def kill(self, run_id: str, run_dir: Path) -> None:
        """End the group process when this run is the last one training in it; otherwise the
        run leaves at its next turn by its control request, and the others go on."""
        group_dir = self.member_of.get(run_id)
        if group_dir is None:
            return
        runs_dir = Path(run_dir).parent
        others = [
            r for r in self.members(group_dir) if r != run_id and runs.worker_alive(runs_dir / r)
        ]
        if others:
            return
        proc = self.procs.get(group_dir)
        runs.kill_worker_tree(group_dir, grace=CANCEL_GRACE_S)
        if proc is not None:
            stop_process(proc, CANCEL_GRACE_S, terminate=False)

    def release(self, run_id: str, run_dir: Path) -> None:
        """Forget a run that has ended, and its group once none of its runs is left."""
        group_dir = self.member_of.pop(run_id, None)
        if group_dir is not None and not self.members(group_dir):
            proc = self.procs.pop(group_dir, None)
            if proc is not None:
                proc.poll()  # reaped when it has ended

    def adopt_groups(self, groups_dir: Path) -> None:
        """After a supervisor restart: know the members of every group process still alive."""
        from engine.training.group_launch import read_group

        for group_dir in sorted(Path(groups_dir).iterdir()):
            if not runs.worker_alive(group_dir):
                continue
            try:
                members = read_group(group_dir)
            except ValueError:
                continue
            self.procs[group_dir] = None  # not our child: watched through worker.pid
            for run_dir in members:
                self.member_of[run_dir.name] = group_dir

    def adopt(self, run_id: str, run_dir: Path) -> bool:
        """True (and watched from now on) when the run is a live member of an adopted group."""
        return run_id in self.member_of and runs.worker_alive(run_dir)

    def close(self) -> None:
        """Nothing to drop: group processes go on without the supervisor."""
        return None
