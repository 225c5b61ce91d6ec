"""Cluster runs with gpu_count > 1: DDP across the GPUs Ray Train gives, on one or several nodes.

The run's actor (`engine.cluster.node.RunActor`) stays the one thing the bridge talks to. For such a
run it starts `ray.train.torch.TorchTrainer(...).fit()` in a background thread, with
`num_workers = gpu_count` (one GPU each, or CPUs for a cpu run). Each Ray Train worker:

1. materialises its own node-local copy of the run directory (spec, shipped datasets, the event
   log so far, the checkpoint to resume from) under `<node home>/train/<run>-rank<N>/`, which is
   also the rank's Tunegraph home, so its library stays apart from other ranks';
2. agrees on a rendezvous: rank 0 picks a free port on its node and broadcasts address and port
   over the (gloo) process group Ray Train has set up for the workers;
3. starts the unchanged `python -m engine.training.worker RUN_DIR` as a child process (dies with its Ray
   worker) with RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR and
   MASTER_PORT from `ray.train.get_context()`; the worker's HF Trainer forms the DDP group;
4. asks the run's actor every half second what to do: rank 0 writes a pending control action
   into its control file (the worker's `agree()` broadcast carries it to every rank), and every
   rank ends its child when the actor was told to kill the run. Rank 0 also sends its complete
   checkpoints, then its new event lines (artifacts first, paths rewritten to the actor's node
   home) to the actor, which appends them to its own log, so `poll(offset)` keeps the worker's
   contiguous `seq`.

Ray Train's own reporting and checkpointing are not used (nothing calls `ray.train.report`);
its storage path is node-local. Imports Ray and torch only inside functions.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from engine import control
from engine.cluster import node_files
from engine.rundir import LOG_FILE, WORKER_LOG
from engine.setup.streaming import stop_process
from engine.training import launch as runs

TICK_S = 0.5
KILL_GRACE_S = 2.0
ACTOR_TIMEOUT_S = 60.0
TEARDOWN_S = 12.0  # releasing a run waits this long for Ray Train to end (placement group freed)
RANKS_GROUP = "ranks"  # the actor's concurrency group for the ranks' calls (ray_bridge)


def _on(actor, method: str):
    """`actor.method`, called in the ranks' concurrency group: the ranks are answered while
    the actor's default thread waits (releasing a run waits for Ray Train to end)."""
    return getattr(actor, method).options(concurrency_group=RANKS_GROUP)


def scaling(processes: int, use_gpu: bool, cpus: int, extra: dict | None = None) -> dict:
    """What each Ray Train worker asks for: CPUs (the run's threads split over the ranks, as for
    a local DDP run), one GPU when the run uses GPUs, and any custom resource (the per-GPU VRAM
    hold)."""
    per_worker = {"CPU": max(1, cpus // processes)}
    if use_gpu:
        per_worker["GPU"] = 1
    per_worker.update(extra or {})
    return {"num_workers": processes, "use_gpu": use_gpu, "resources_per_worker": per_worker}


class TrainRun:
    """The actor side: one TorchTrainer.fit() in a background thread, and what the ranks ask."""

    def __init__(self, actor, run_id: str, run_dir: Path, home: Path, payload, env: dict, how):
        self.actor, self.run_id, self.run_dir, self.home = actor, run_id, run_dir, home
        self.payload, self.env, self.how = payload, env, how
        self.pending: str | None = None  # set by the actor's thread, taken by rank 0's calls
        self.lock = threading.Lock()
        self.killed = False
        self.ranks: dict[int, dict] = {}
        self.codes: dict[int, int] = {}
        self.error: str | None = None
        self.thread = threading.Thread(target=self._fit, name=f"ray-train-{run_id}", daemon=True)

    def start(self) -> None:
        """Start fit() in the background thread."""
        self.thread.start()

    def _fit(self) -> None:
        try:
            from ray.train import RunConfig, ScalingConfig
            from ray.train.torch import TorchConfig, TorchTrainer

            storage = self.home / "ray-train"
            storage.mkdir(parents=True, exist_ok=True)
            trainer = TorchTrainer(
                train_loop,
                train_loop_config={
                    "actor": self.actor,
                    "run_id": self.run_id,
                    "actor_home": str(self.home),
                    "payload": self.payload,
                    "env": self.env,
                },
                torch_config=TorchConfig(backend="gloo"),  # only for the rendezvous broadcast
                scaling_config=ScalingConfig(**self.how),
                run_config=RunConfig(
                    name=f"{self.run_id}-{os.getpid()}-{int(time.time())}",
                    storage_path=str(storage),
                ),
            )
            trainer.fit()
        except BaseException as exc:  # noqa: BLE001 - the run's log must say why
            self.error = f"{type(exc).__name__}: {exc}"
            with open(self.run_dir / LOG_FILE, "a", encoding="utf-8") as out:
                out.write(f"Ray Train failed:\n{traceback.format_exc()}\n")

    # what the actor answers --------------------------------------------------------------------
    def alive(self) -> bool:
        """Until rank 0's worker has exited and its last lines are in (Ray Train's teardown may
        still go on: releasing the run waits for it, see `end`), or fit() ended without that."""
        return 0 not in self.codes and self.thread.is_alive()

    def returncode(self) -> int | None:
        """Rank 0's exit code; None while fit() runs, 1 when it ended without one."""
        if 0 in self.codes:
            return self.codes[0]
        return None if self.thread.is_alive() else 1

    def end(self, wait: float = TEARDOWN_S) -> None:
        """End every rank's worker and wait (bounded) for fit() to return, so Ray Train frees
        its placement group before the actor goes (a resumed run needs the same resources)."""
        self.killed = True
        self.thread.join(wait)

    def directive(self, rank: int) -> dict:
        """What a rank must do now: the pending action (taken by rank 0 only) and whether to end."""
        action = None
        if rank == 0:
            with self.lock:
                action, self.pending = self.pending, None
        return {"action": action, "kill": self.killed}

    def request(self, action: str) -> None:
        """Hold a control action for rank 0's next call."""
        with self.lock:
            self.pending = action

    def ranks_info(self) -> list[dict]:
        """The started ranks' records, by rank."""
        return sorted(dict(self.ranks).values(), key=lambda r: r["rank"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In a rank's worker, before exec: be killed when its Ray Train worker dies (Linux)."""
    node_files.die_with_parent(signal.SIGKILL)


def train_loop(config: dict) -> None:
    """One Ray Train worker: its rank of the run's DDP (see the module docstring)."""
    import ray
    import ray.train
    import torch.distributed as dist

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    actor, run_id = config["actor"], config["run_id"]
    home = node_files.node_home() / "train" / f"{run_id}-rank{rank}"
    shutil.rmtree(home, ignore_errors=True)
    run_dir = home / "runs" / run_id
    try:
        spec, datasets, events, checkpoints = ray.get(config["payload"])
        node_files.materialise(run_dir, spec, datasets, events, checkpoints)
        rendezvous = [(node_files.node_ip(), _free_port()) if rank == 0 else None]
        dist.broadcast_object_list(rendezvous, src=0)
        master_addr, master_port = rendezvous[0]
        env = {
            **os.environ,
            **config["env"],
            "TUNEGRAPH_HOME": str(home),
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(ctx.get_local_rank()),
            "LOCAL_WORLD_SIZE": str(ctx.get_local_world_size()),
            "GROUP_RANK": str(ctx.get_node_rank()),
            "NODE_RANK": str(ctx.get_node_rank()),
            "MASTER_ADDR": master_addr,
            "MASTER_PORT": str(master_port),
        }
        with open(run_dir / LOG_FILE, "ab") as out:
            proc = subprocess.Popen(
                runs.worker_command(run_dir, 1),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(run_dir),
                env=env,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        info = {
            "rank": rank,
            "world_size": world,
            "local_rank": ctx.get_local_rank(),
            "node_rank": ctx.get_node_rank(),
            "node": node_files.node_ip(),
            "pid": proc.pid,
            "master": f"{master_addr}:{master_port}",
        }
        ray.get(_on(actor, "rank_started").remote(info), timeout=ACTOR_TIMEOUT_S)
        relay = _Relay(actor, run_dir, home, Path(config["actor_home"])) if rank == 0 else None
        try:
            while True:
                code = proc.poll()  # before relaying, so the last lines always go
                todo = ray.get(_on(actor, "directive").remote(rank), timeout=ACTOR_TIMEOUT_S)
                if todo["action"]:
                    control.request(run_dir, todo["action"])
                if todo["kill"] and code is None:
                    stop_process(proc, KILL_GRACE_S)
                    code = proc.returncode
                if code is not None:
                    break
                if relay is not None:
                    relay.step()
                time.sleep(TICK_S)
        finally:
            if proc.poll() is None:  # the actor is gone or the relay failed: end the rank
                stop_process(proc, KILL_GRACE_S)
        if relay is not None:  # the last lines and the exit code in one call: a poll sees the
            relay.checkpoints()  # final status together with the end of the run
            ray.get(
                _on(actor, "rank_done").remote(rank, code, relay.lines()), timeout=ACTOR_TIMEOUT_S
            )
    finally:
        shutil.rmtree(home, ignore_errors=True)


class _Relay:
    """Rank 0's events, checkpoints and artifacts, sent to the run's actor in order."""

    def __init__(self, actor, run_dir: Path, home: Path, actor_home: Path):
        self.actor, self.run_dir, self.home, self.actor_home = actor, run_dir, home, actor_home
        self.offset = (
            (run_dir / WORKER_LOG).stat().st_size if (run_dir / WORKER_LOG).exists() else 0
        )
        self.sent: set[str] = set(node_files.complete_checkpoints(run_dir))  # shipped in

    def _call(self, ref):
        import ray

        return ray.get(ref, timeout=node_files.FETCH_TIMEOUT_S)

    def step(self) -> None:
        self.checkpoints()
        self.events()

    def checkpoints(self) -> None:
        names = node_files.complete_checkpoints(self.run_dir)
        for name in names:
            if name in self.sent:
                continue
            try:
                data = node_files.zip_bytes(self.run_dir / "checkpoints" / name)
            except OSError:  # rotated away meanwhile
                continue
            self._call(_on(self.actor, "put_checkpoint").remote(name, data))
            self.sent.add(name)
        if set(names) != self.sent:
            self.sent &= set(names)
            self._call(_on(self.actor, "keep_checkpoints").remote(sorted(self.sent)))

    def events(self) -> None:
        lines = self.lines()
        if lines:
            self._call(_on(self.actor, "append_events").remote(lines))

    def lines(self) -> list[str]:
        """The worker's new complete event lines (artifacts sent first, paths rewritten)."""
        path = self.run_dir / WORKER_LOG
        lines: list[str] = []
        if not path.exists():
            return lines
        with open(path, "rb") as f:
            f.seek(self.offset)
            for raw in f:
                if not raw.endswith(b"\n"):
                    break  # torn: the worker is mid-line
                self.offset += len(raw)
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                if event.get("kind") == "artifact" and event.get("path"):
                    event["path"] = self.ship(Path(event["path"]))
                if event.get("kind") == "status" and event.get("device"):
                    event["ray_node"] = node_files.node_ip()
                lines.append(json.dumps(event) + "\n")
        return lines

    def ship(self, path: Path) -> str:
        """Send an artifact under the rank's home to the same place under the actor's home."""
        if not path.is_relative_to(self.home) or not path.exists():
            return str(path)
        rel = path.relative_to(self.home)
        if rel.parts[0] == "library" and len(rel.parts) > 1:  # the whole library entry
            entry = self.home / "library" / rel.parts[1]
            self._call(
                _on(self.actor, "put_file").remote(
                    str(entry.relative_to(self.home)), node_files.zip_bytes(entry), False
                )
            )
        else:
            self._call(
                _on(self.actor, "put_file").remote(
                    str(rel), node_files.zip_bytes(path), path.is_file()
                )
            )
        return str(self.actor_home / rel)
