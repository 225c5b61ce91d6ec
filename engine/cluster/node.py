"""The node side of a cluster run: one Ray actor per run attempt, on the node Ray placed it on.

`RunActor` materialises a node-local run directory under the node's Tunegraph home
(`TUNEGRAPH_NODE_HOME`, default `<tmp>/tunegraph-node`): the frozen spec with its dataset paths
pointing at the shipped copies, the run's event log so far (so the worker's `seq` continues), and
its checkpoints. It then starts the very same `python -m engine.training.worker RUN_DIR` as a child process
(for gpu_count > 1: through Ray Train, one DDP rank per Ray Train worker, see engine.cluster.train_ranks),
answers polls with the event-log lines the supervisor has not seen, writes control requests into
the node's `control.json`, and hands files (artifacts, checkpoints) back as ZIP bytes.

This module imports no Ray: `engine.cluster.executor` wraps the class with `ray.remote`. It runs with
the node's Python, which must have the same Tunegraph installed (README "Running on a Ray cluster").
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from engine import control
from engine.cluster.node_files import (
    complete_checkpoints,
    die_with_parent,
    materialise,
    node_home,
    node_ip,
    unzip_into,
    zip_bytes,
)
from engine.rundir import LOG_FILE, WORKER_LOG
from engine.setup.streaming import stop_process
from engine.training import launch as runs

KILL_GRACE_S = 1.0


def _die_with_parent() -> None:
    """The single worker treats SIGTERM as cancel."""
    die_with_parent(signal.SIGTERM)


class RunActor:
    """One attempt of one run on a Ray node (wrapped with `ray.remote` by the executor)."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.home = node_home()
        self.run_dir = self.home / "runs" / run_id
        self.proc: subprocess.Popen | None = None
        self.train = None  # engine.cluster.train_ranks.TrainRun for gpu_count > 1
        self._payload = None
        self._cursor = (0, 0)  # (last seq answered, byte offset after it)

    def setup(self, spec: dict, datasets: list[bytes], events: bytes, checkpoints: bytes) -> dict:
        """Write the node-local run directory (see `materialise`); kept for Ray Train's ranks."""
        materialise(self.run_dir, spec, datasets, events, checkpoints)
        self._payload = (spec, datasets, events, checkpoints)
        return self.info()

    def info(self) -> dict:
        """Where this actor runs: node address, node home, the actor's pid."""
        return {"node": node_ip(), "home": str(self.home), "pid": os.getpid()}

    def start(self, env: dict, processes: int = 1, scaling: dict | None = None) -> dict:
        """Start the worker as this actor's child (output to the node's worker.log); with
        `scaling` (several processes), as Ray Train workers instead (engine.cluster.train_ranks)."""
        control.clear(self.run_dir)
        if processes > 1 and scaling:
            import ray

            from engine.cluster.train_ranks import TrainRun

            self.train = TrainRun(
                ray.get_runtime_context().current_actor,
                self.run_id,
                self.run_dir,
                self.home,
                ray.put(self._payload),
                {**env, "TUNEGRAPH_HOME": str(self.home)},
                scaling,
            )
            self.train.start()
            return self.info()
        full_env = {**os.environ, **env, "TUNEGRAPH_HOME": str(self.home)}
        with open(self.run_dir / LOG_FILE, "ab") as out:
            self.proc = subprocess.Popen(
                runs.worker_command(self.run_dir, processes),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(self.run_dir),
                env=full_env,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        return self.info()

    # what Ray Train's ranks call (engine.cluster.train_ranks) --------------------------------------------
    def rank_started(self, info: dict) -> None:
        """Record what a rank reports as its worker starts."""
        self.train.ranks[info["rank"]] = info

    def rank_done(self, rank: int, code: int | None, lines: list[str]) -> None:
        """Rank 0's worker exited: its last event lines and exit code, in one call."""
        self.append_events(lines)
        self.train.codes[rank] = code

    def directive(self, rank: int) -> dict:
        """A pending control action (for rank 0) and whether to end the run now."""
        return self.train.directive(rank)

    def append_events(self, lines: list[str]) -> None:
        """Rank 0's new event lines, appended to this node's log (their seq unchanged)."""
        with open(self.run_dir / WORKER_LOG, "a", encoding="utf-8") as out:
            out.writelines(lines)

    def put_file(self, rel: str, data: bytes, single_file: bool) -> None:
        """A file or folder from rank 0, put at the same place under this node's home."""
        target = (self.home / rel).resolve()
        if not target.is_relative_to(self.home):
            raise ValueError(f"{rel} is outside the node home")
        unzip_into(data, target, single_file=single_file)

    def put_checkpoint(self, name: str, data: bytes) -> None:
        """Unpack a checkpoint rank 0 saved into the node's run directory."""
        unzip_into(data, self.run_dir / "checkpoints" / name)

    def keep_checkpoints(self, names: list[str]) -> None:
        """Delete the checkpoints rank 0 rotated away."""
        for name in complete_checkpoints(self.run_dir):
            if name not in names:
                shutil.rmtree(self.run_dir / "checkpoints" / name, ignore_errors=True)

    def poll(self, after_seq: int) -> dict:
        """The worker's event-log lines with seq > after_seq, whether it still runs (checked
        before reading, so a finished worker's last lines are always included), and the
        complete checkpoints on the node."""
        if self.train is not None:
            alive, code = self.train.alive(), self.train.returncode()
        else:
            code = self.proc.poll() if self.proc is not None else None
            alive = self.proc is not None and code is None
        seq, offset = self._cursor
        if after_seq < seq:
            seq, offset = 0, 0  # an earlier position: read from the start
        lines = []
        path = self.run_dir / WORKER_LOG
        if path.exists():
            with open(path, "rb") as f:
                f.seek(offset)
                for raw in f:
                    if not raw.endswith(b"\n"):
                        break  # torn: the worker is mid-line
                    offset += len(raw)
                    try:
                        line_seq = int(json.loads(raw)["seq"])
                    except (ValueError, KeyError, TypeError):
                        continue
                    seq = line_seq
                    if line_seq > after_seq:
                        lines.append(raw.decode("utf-8"))
        self._cursor = (seq, offset)
        return {
            "lines": lines,
            "alive": alive,
            "returncode": code,
            "checkpoints": complete_checkpoints(self.run_dir),
            "ranks": self.train.ranks_info() if self.train is not None else None,
        }

    def control(self, action: str) -> None:
        """Ask the worker to pause, stop or cancel at its next step (under Ray Train, rank 0
        picks the action up at its next call and writes it on its node)."""
        control.request(self.run_dir, action)
        if self.train is not None:
            self.train.request(action)

    def kill_worker(self) -> None:
        """Terminate the worker's process tree, kill what is left after a short grace (under
        Ray Train every rank ends its worker at its next call; this returns at once)."""
        if self.train is not None:
            self.train.killed = True
            return
        if self.proc is None or self.proc.poll() is not None:
            return
        runs.kill_worker_tree(self.run_dir, grace=KILL_GRACE_S)
        # still loading, there is no worker.pid yet: the child itself is killed after the grace
        stop_process(self.proc, KILL_GRACE_S, terminate=False)

    def fetch(self, path: str) -> dict:
        """A file or folder under the node home: {"file": is it one file, "zip": ZIP bytes}."""
        target = Path(path).resolve()
        if not target.is_relative_to(self.home) or not target.exists():
            raise FileNotFoundError(f"{path} is not a file of this run on {node_ip()}")
        return {"file": target.is_file(), "zip": zip_bytes(target)}

    def cleanup(self) -> None:
        """End the worker and delete this run's files on the node (they were brought back)."""
        if self.train is not None:
            self.train.end()
        self.kill_worker()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        for folder in (self.home / "library").glob(f"{self.run_id}-*"):
            shutil.rmtree(folder, ignore_errors=True)
        for folder in (self.home / "ray-train").glob(f"{self.run_id}-*"):  # Ray Train's storage
            shutil.rmtree(folder, ignore_errors=True)
        for folder in (self.home / "train").glob(f"{self.run_id}-rank*"):  # ranks on this node
            shutil.rmtree(folder, ignore_errors=True)
