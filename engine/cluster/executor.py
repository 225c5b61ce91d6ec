"""The Ray executor: cluster runs behind the same spec and event-log contract as local ones.

The supervisor never imports Ray. Each cluster address gets a *bridge*, a helper process
(`python -m engine.cluster.bridge ADDRESS`) that holds the Ray connection and answers one JSON
request per line. A run attempt becomes one detached, named Ray actor (`engine.cluster.node.RunActor`,
namespace "tunegraph") asking for the run's GPUs (and `vram_gib` when the nodes advertise that
custom resource); it runs the unchanged `python -m engine.training.worker` on its node (a run with
gpu_count > 1 asks nothing itself: it runs Ray Train's TorchTrainer, one DDP rank per worker,
see engine.cluster.train_ranks). The bridge relays
the node's event-log lines into the local `events.jsonl` with their own `seq` and `ts` (for a
cluster run the bridge is that file's one local writer), brings each announced artifact into the
local run directory or library before the event that names it, rewriting its path, and mirrors
complete checkpoints back, so pause/resume and recovery never depend on the node that trained.

A bridge that dies or stops answering (lost connection) makes its runs `retrying`; the executor
starts a new bridge after a pause and re-attaches to the actors by name. An actor that died
reads as a dead worker (the supervisor reconciles it as interrupted).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import queue
import secrets
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from engine import paths
from engine.errors import TunegraphError
from engine.hardware import GIB
from engine.rundir import entry_command
from engine.training.executors import Poll

NAMESPACE = "tunegraph"
ADDRESS_ENV = "TUNEGRAPH_RAY_ADDRESS"
STATE_FILE = "ray.json"  # in a cluster run's local run directory: address, actor name
VRAM_RESOURCE = "vram_gib"
CONNECT_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 30.0
POLL_TIMEOUT_S = 180.0  # a poll may bring a GGUF bundle back
RECONNECT_PAUSE_S = 3.0
INSTALL_HINT = "Install the cluster extra: pip install 'tunegraph[cluster]'."
ADDRESS_HINT = (
    "Name the cluster in Settings (Ray cluster address), set TUNEGRAPH_RAY_ADDRESS, "
    "or pass --cluster ADDRESS to tunegraph run."
)
log = logging.getLogger("tunegraph.ray")


class ClusterUnavailable(Exception):
    """The cluster cannot be reached right now: still connecting, or the connection was lost."""

    def __init__(self, reason: str, connecting: bool = False):
        super().__init__(reason)
        self.connecting = connecting


class ClusterError(TunegraphError):
    """The cluster answered, and refused (e.g. it has no GPU for a CUDA run)."""


def ray_installed() -> bool:
    """True when the `ray` package can be imported (the `cluster` extra is installed)."""
    return importlib.util.find_spec("ray") is not None


def resolve_address(submitted: str | None = None) -> str:
    """The cluster address for a run: the one given at submission, else TUNEGRAPH_RAY_ADDRESS,
    else the Settings field; "" when none is set."""
    if submitted:
        return submitted
    env = os.environ.get(ADDRESS_ENV, "").strip()
    if env:
        return env
    from engine import settings

    try:
        return settings.load().ray_address.strip()
    except Exception:  # noqa: BLE001 - an unreadable settings file names no cluster
        return ""


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast (OSError) when a `host:port` or `ray://host:port` address does not accept a
    connection: ray.init itself keeps retrying an unreachable address for minutes."""
    import socket

    host_port = address.removeprefix("ray://").rsplit("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", "local" or a form Ray resolves itself
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
        pass


def read_state(run_dir: Path) -> dict:
    """A cluster run's `ray.json` ({} when the run never went to a cluster)."""
    try:
        return json.loads((Path(run_dir) / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write_state(run_dir: Path, **values: Any) -> None:
    """Merge `values` into the run's `ray.json` (atomic write)."""
    state = {**read_state(run_dir), **values}
    tmp = Path(run_dir) / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, sort_keys=True), encoding="utf-8")
    os.replace(tmp, Path(run_dir) / STATE_FILE)


# -- the supervisor side -------------------------------------------------------------------------
class RayExecutor:
    """Runs workers on the Ray cluster at `address` through a bridge helper process."""

    def __init__(self, address: str):
        self.address = address
        self.label = f"cluster ({address})"
        self.proc: subprocess.Popen | None = None
        self.answers: queue.Queue = queue.Queue()
        self.ready = False
        self.started_at = 0.0
        self.retry_at = 0.0
        self.reason = f"connecting to the Ray cluster at {address}"
        self.placed: dict[str, dict] = {}  # run -> node and actor pid, once known

    # the bridge's life ---------------------------------------------------------------------------
    def _ensure(self) -> None:
        """Have a connected bridge, or raise ClusterUnavailable (never blocks for long)."""
        if self.proc is not None and self.proc.poll() is not None:
            self._drop(f"the connection to the Ray cluster at {self.address} was lost")
        if self.proc is None:
            if time.time() < self.retry_at:
                raise ClusterUnavailable(self.reason)
            self._spawn()
        if self.ready:
            return
        try:
            hello = self.answers.get(timeout=0.5)
        except queue.Empty:
            if time.time() - self.started_at > CONNECT_TIMEOUT_S:
                self._drop(f"no answer from the Ray cluster at {self.address}")
                raise ClusterUnavailable(self.reason) from None
            raise ClusterUnavailable(self.reason, connecting=True) from None
        if hello is None or "error" in hello:
            why = (hello or {}).get("error") or "the bridge process exited"
            self._drop(f"cannot connect to the Ray cluster at {self.address}: {why}")
            raise ClusterUnavailable(self.reason)
        self.ready = True

    def _spawn(self) -> None:
        from engine.setup.interpreters import engine_python

        try:
            python = engine_python()  # Ray is installed beside the engine, as on the nodes
        except TunegraphError as err:
            self._drop(f"cannot start the Ray bridge: {err}")
            raise ClusterUnavailable(self.reason) from err
        with open(paths.data_dir() / "ray-bridge.log", "ab") as err:
            self.proc = subprocess.Popen(
                entry_command(python, "ray_bridge", self.address),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                bufsize=1,
            )
        self.answers = queue.Queue()
        self.ready = False
        self.started_at = time.time()
        self.reason = f"connecting to the Ray cluster at {self.address}"
        threading.Thread(
            target=_read_lines, args=(self.proc.stdout, self.answers), daemon=True
        ).start()

    def _drop(self, reason: str) -> None:
        """Forget the bridge (killing it if it still runs); try again after a pause."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout):
                try:
                    stream.close()
                except (OSError, AttributeError):
                    pass
        self.proc = None
        self.ready = False
        self.reason = reason
        self.retry_at = time.time() + RECONNECT_PAUSE_S
        log.warning("%s", reason)

    def close(self) -> None:
        """End the bridge (the actors are detached: their runs go on)."""
        if self.proc is not None:
            self._drop("the supervisor stopped")

    def call(self, op: str, timeout: float = REQUEST_TIMEOUT_S, **args) -> dict:
        """One request to the bridge; ClusterUnavailable when it cannot be reached."""
        self._ensure()
        try:
            self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
            self.proc.stdin.flush()
            answer = self.answers.get(timeout=timeout)
        except (OSError, queue.Empty):
            answer = None
        if answer is None:
            self._drop(f"the Ray cluster at {self.address} did not answer ({op})")
            raise ClusterUnavailable(self.reason)
        if answer.get("lost"):
            self._drop(
                f"lost the connection to the Ray cluster at {self.address}: {answer['error']}"
            )
            raise ClusterUnavailable(self.reason)
        if "error" in answer:
            raise ClusterError(answer["error"], answer.get("hint"))
        return answer

    # the Executor operations -----------------------------------------------------------------------
    def start(self, run_id: str, run_dir: Path, env: dict, processes: int, **place) -> dict:
        """Create the run's actor; returns what it asked the cluster for."""
        actor = f"{run_id}.{secrets.token_hex(3)}"
        answer = self.call(
            "start",
            run_id=run_id,
            run_dir=str(run_dir),
            actor=actor,
            env=env,
            processes=processes,
            **place,
        )
        write_state(run_dir, address=self.address, actor=actor, active=True, asked=answer)
        return answer

    def poll(self, run_id: str, run_dir: Path) -> Poll:
        """Relay the actor's new events and say whether the worker lives, or why it cannot tell."""
        actor = read_state(run_dir).get("actor")
        try:
            answer = self.call(
                "poll", POLL_TIMEOUT_S, run_id=run_id, run_dir=str(run_dir), actor=actor
            )
        except ClusterUnavailable as err:  # while (re)connecting nothing is known yet
            return Poll(alive=True, lost=not err.connecting, reason=str(err))
        except ClusterError as err:  # the actor failed to set the run up or hand a file back
            return Poll(alive=False, reason=f"the cluster run failed: {err.message}")
        if answer.get("dead"):
            return Poll(alive=False, reason=f"the Ray actor died ({answer['reason']})")
        where = {"node": answer.get("node"), "actor_pid": answer.get("actor_pid")}
        if answer.get("ranks"):  # Ray Train's workers of a DDP run: rank, node, pid…
            where["ranks"] = answer["ranks"]
        if answer.get("node") and self.placed.get(run_id) != where:
            self.placed[run_id] = where
            write_state(run_dir, **where)
        return Poll(alive=answer.get("alive", True), returncode=answer.get("returncode"))

    def request(self, run_id: str, run_dir: Path, action: str, reason: str = "") -> None:
        """Pass a control action to the worker on the cluster (a prune's reason is the
        supervisor's log line there)."""
        try:
            self.call(
                "control", run_id=run_id, actor=read_state(run_dir).get("actor"), action=action
            )
        except ClusterUnavailable as err:
            raise TunegraphError(f"cannot {action} the run now: {err}") from err

    def kill(self, run_id: str, run_dir: Path) -> None:
        """End the worker on the cluster now (asked again later if the cluster does not answer)."""
        try:
            self.call("kill", run_id=run_id, actor=read_state(run_dir).get("actor"))
        except ClusterUnavailable:
            pass  # the supervisor asks again once the cluster answers

    def release(self, run_id: str, run_dir: Path) -> None:
        """Free the run's Ray actor once its worker has ended."""
        state = read_state(run_dir)
        if not state.get("active"):
            return
        try:
            self.call("release", run_id=run_id, actor=state.get("actor"))
        except (ClusterUnavailable, ClusterError) as err:
            log.warning("could not release the Ray actor of %s: %s", run_id, err)
        write_state(run_dir, active=False)

    def adopt(self, run_id: str, run_dir: Path) -> bool:
        """Whether the run's actor still lives after a supervisor restart (True while unknown)."""
        state = read_state(run_dir)
        if not state.get("active"):
            return False
        try:
            return bool(self.call("adopt", run_id=run_id, actor=state.get("actor"))["alive"])
        except ClusterUnavailable:
            return True  # cannot tell yet: watched, and marked retrying until it answers


def _read_lines(stream, answers: queue.Queue) -> None:
    """The bridge's answers, one JSON object per line; None when it exits."""
    try:
        for line in stream:
            try:
                answers.put(json.loads(line))
            except ValueError:
                continue
    except (OSError, ValueError):  # the stream was closed under us: the bridge was dropped
        pass
    answers.put(None)


def cluster_inventory(address: str) -> list[dict]:
    """The cluster's live nodes: {"node", "cpus", "gpus", "gpu_type", "vram_gib", "memory_gib"}.

    Connects in this process (the CLI's `tunegraph cluster`; the app runs that as a subprocess).
    """
    if not ray_installed():
        raise TunegraphError("Ray is not installed.", INSTALL_HINT)
    import ray

    try:
        check_reachable(address)
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level="ERROR")
    except Exception as err:  # noqa: BLE001 - ConnectionError, ValueError, RuntimeError…
        raise TunegraphError(f"cannot connect to the Ray cluster at {address}: {err}") from err
    try:
        return [node_summary(n) for n in ray.nodes() if n.get("Alive")]
    finally:
        ray.shutdown()


def node_summary(node: dict) -> dict:
    """One entry of `ray.nodes()` in the shape the CLI and the hardware view show."""
    res = node.get("Resources") or {}
    types = [k.split(":", 1)[1] for k in res if k.startswith("accelerator_type:")]
    return {
        "node": node.get("NodeManagerAddress") or node.get("NodeName"),
        "cpus": int(res.get("CPU", 0)),
        "gpus": int(res.get("GPU", 0)),
        "gpu_type": types[0] if types else None,
        VRAM_RESOURCE: res.get(VRAM_RESOURCE),
        "memory_gib": round(res.get("memory", 0) / GIB, 1),
    }
