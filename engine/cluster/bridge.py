"""The Ray bridge: `python -m engine.cluster.bridge ADDRESS`, a helper process of the supervisor.

It holds the Ray connection (so a lost cluster can only take this process down, never the
supervisor) and answers one JSON request per stdin line with one JSON line on stdout. The first
line it writes says whether it connected. Ops: start, poll, control, kill, release, adopt.
A failure of the connection itself is answered with `"lost": true`; an actor that died with
`"dead": true`. See engine.cluster.executor for the contract.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from engine import paths
from engine.cluster.executor import NAMESPACE, VRAM_RESOURCE
from engine.cluster.node import RunActor
from engine.cluster.node_files import complete_checkpoints, unzip_into, zip_bytes
from engine.cluster.train_ranks import RANKS_GROUP
from engine.cluster.train_ranks import scaling as train_scaling
from engine.rundir import SPEC_FILE, WORKER_LOG

POLL_WAIT_S = 0.2
CALL_TIMEOUT_S = 20.0
FETCH_TIMEOUT_S = 600.0
DURABLE = ("status", "artifact", "error")
log = logging.getLogger("tunegraph.ray_bridge")


@dataclass
class Attempt:
    """What the bridge keeps about one run's actor."""

    actor: object
    name: str
    waiting: list = field(default_factory=list)  # setup/start/info calls not answered yet
    poll_ref: object = None
    last_seq: int | None = None
    node: str | None = None
    home: str | None = None
    pid: int | None = None
    checkpoints: list[str] | None = None


class Bridge:
    """The Ray connection and this supervisor's run actors, driven one request at a time."""

    def __init__(self, address: str):
        import ray

        from engine.cluster.executor import check_reachable

        check_reachable(address)
        self.ray = ray
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level="ERROR")
        # Ray Train's ranks call the actor in their own group (engine.cluster.train_ranks)
        self.remote_actor = ray.remote(concurrency_groups={RANKS_GROUP: 4})(RunActor)
        self.attempts: dict[str, Attempt] = {}

    # -- requests ---------------------------------------------------------------------------------
    def handle(self, req: dict) -> dict:
        """Run one request's op; Ray's failures become `dead`, `error` or `lost` answers."""
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        op = req.pop("op")
        try:
            return getattr(self, f"op_{op}")(**req)
        except RayActorError as err:
            self.attempts.pop(req.get("run_id"), None)
            return {"dead": True, "reason": _first_line(err)}
        except RayTaskError as err:  # the actor raised: a real answer, not a lost link
            return {"error": _first_line(err.cause if err.cause else err)}
        except (GetTimeoutError, ConnectionError, self.ray.exceptions.RaySystemError) as err:
            return {"lost": True, "error": _first_line(err)}
        except LookupError as err:
            return {"error": str(err)}

    def attempt(self, run_id: str, name: str) -> Attempt:
        """The run's actor by name (after a bridge restart too); LookupError when gone."""
        att = self.attempts.get(run_id)
        if att is None or att.name != name:
            try:
                actor = self.ray.get_actor(name, namespace=NAMESPACE)
            except ValueError as err:
                raise _Gone(f"the Ray actor {name} no longer exists") from err
            att = Attempt(actor, name, waiting=[actor.info.remote()])
            self.attempts[run_id] = att
        return att

    def op_start(self, run_id, run_dir, actor, env, processes, device, gpu_count, hold_gib, cpus):
        """Create the run's detached actor and queue its setup and start; returns what Ray got."""
        run_dir = Path(run_dir)
        total = self.ray.cluster_resources()
        gpus = int(total.get("GPU", 0))
        if device == "cuda" and gpus < gpu_count:
            return {
                "error": f"the run asks for {gpu_count} CUDA GPU(s), the cluster has {gpus}",
                "hint": "Set device to auto or cpu on the Fine-Tune node, or add GPU nodes.",
            }
        num_gpus = gpu_count if device != "cpu" and gpus else 0
        resources = {}
        if num_gpus and hold_gib and VRAM_RESOURCE in total:
            resources[VRAM_RESOURCE] = round(float(hold_gib) * num_gpus, 2)
        scaling = None
        if processes > 1:  # DDP through Ray Train: the ranks hold the resources, not the actor
            per_gpu = {VRAM_RESOURCE: resources[VRAM_RESOURCE] / num_gpus} if resources else {}
            scaling = train_scaling(processes, bool(num_gpus), cpus, per_gpu)
            threads = scaling["resources_per_worker"]["CPU"]
            cpus, num_gpus, resources = 0, 0, {}
        else:
            threads = cpus
        spec = json.loads((run_dir / SPEC_FILE).read_text(encoding="utf-8"))
        datasets = []
        for entry in spec["datasets"]:
            path = Path(entry["path"])
            datasets.append(path.read_bytes() if path.is_file() else None)
        handle = self.remote_actor.options(
            name=actor,
            namespace=NAMESPACE,
            lifetime="detached",
            num_cpus=cpus,
            num_gpus=num_gpus,
            resources=resources,
            max_restarts=0,
        ).remote(run_id)
        events = _complete_bytes(run_dir / WORKER_LOG)
        env = {**env, "TUNEGRAPH_THREADS": str(threads)}
        att = Attempt(handle, actor, last_seq=_last_seq(events))
        att.waiting = [
            handle.setup.remote(spec, datasets, events, _latest_checkpoint_zip(run_dir)),
            handle.start.remote(env, processes, scaling),
        ]
        self.attempts[run_id] = att
        asked = {"num_cpus": cpus, "num_gpus": num_gpus, "resources": resources}
        if scaling:
            asked["ray_train"] = scaling
        return asked

    def op_poll(self, run_id, run_dir, actor):
        """Bring in the worker's new event lines and say whether it still runs."""
        ray = self.ray
        att = self.attempt(run_id, actor)
        run_dir = Path(run_dir)
        if not self.placed(att):
            return {"alive": True, "pending": True}
        if att.last_seq is None:
            _truncate_torn_tail(run_dir / WORKER_LOG)
            att.last_seq = _last_seq(_complete_bytes(run_dir / WORKER_LOG))
        if att.poll_ref is None:
            att.poll_ref = att.actor.poll.remote(att.last_seq)
        ready, _ = ray.wait([att.poll_ref], timeout=POLL_WAIT_S)
        if not ready:
            return {"alive": True, "pending": True}
        answer = ray.get(att.poll_ref)
        att.poll_ref = None
        # checkpoints first: a "paused" (or failed) line must not arrive before the checkpoint
        # the worker saved ahead of it, or the run would look unresumable for a moment
        if answer["checkpoints"] != att.checkpoints or not answer["alive"]:
            self.mirror_checkpoints(att, run_id, run_dir, answer["checkpoints"])
        self.relay(att, run_id, run_dir, answer["lines"])
        return {
            "alive": answer["alive"],
            "returncode": answer["returncode"],
            "node": att.node,
            "actor_pid": att.pid,
            "ranks": answer.get("ranks"),
        }

    def op_control(self, run_id, actor, action):
        """Pass a pause, stop or cancel request to the run's worker."""
        att = self.attempt(run_id, actor)
        if not self.placed(att):
            return {"error": "the run has not started on the cluster yet"}
        self.ray.get(att.actor.control.remote(action), timeout=CALL_TIMEOUT_S)
        return {"ok": True}

    def op_kill(self, run_id, actor):
        """End the run's worker now (or the actor, while it still waits for resources)."""
        att = self.attempt(run_id, actor)
        if not self.placed(att):  # still waiting for resources: no worker to end
            self.ray.kill(att.actor)
            return {"ok": True}
        self.ray.get(att.actor.kill_worker.remote(), timeout=CALL_TIMEOUT_S)
        return {"ok": True}

    def op_release(self, run_id, actor):
        """Clean up and end the run's actor; an actor already gone is fine."""
        try:
            att = self.attempt(run_id, actor)
        except _Gone:
            return {"ok": True}
        try:
            self.ray.get(att.actor.cleanup.remote(), timeout=CALL_TIMEOUT_S)
        except self.ray.exceptions.RayActorError:
            pass
        self.ray.kill(att.actor)
        self.attempts.pop(run_id, None)
        return {"ok": True}

    def placed(self, att: Attempt) -> bool:
        """True once the actor runs on a node and has answered its first calls."""
        if att.waiting:
            ready, _ = self.ray.wait(att.waiting, num_returns=len(att.waiting), timeout=0.5)
            if len(ready) < len(att.waiting):
                return False
            for info in self.ray.get(att.waiting):
                att.node, att.home, att.pid = info["node"], info["home"], info["pid"]
            att.waiting = []
        return True

    def op_adopt(self, run_id, actor):
        """Whether the run's actor still answers (after a supervisor restart)."""
        try:
            att = self.attempt(run_id, actor)
        except _Gone:
            return {"alive": False}
        self.ray.get(att.actor.info.remote(), timeout=CALL_TIMEOUT_S)
        return {"alive": True}

    # -- bringing things back ----------------------------------------------------------------------
    def relay(self, att: Attempt, run_id: str, run_dir: Path, lines: list[str]) -> None:
        """Append the node's new event lines to the local log, keeping seq and ts; artifacts are
        brought back first and their paths rewritten, the device reads ray:<node>."""
        if not lines:
            return
        with open(run_dir / WORKER_LOG, "a", encoding="utf-8") as out:
            for raw in lines:
                event = json.loads(raw)
                if event["seq"] <= att.last_seq:
                    continue
                if event["kind"] == "artifact":
                    event["path"] = self.bring_back(att, run_id, run_dir, event["path"])
                if event["kind"] == "status" and event.get("device"):
                    event["node_device"] = event["device"]
                    event["device"] = f"ray:{event.pop('ray_node', None) or att.node}"
                out.write(json.dumps(event) + "\n")
                out.flush()
                if event["kind"] in DURABLE:
                    os.fsync(out.fileno())
                att.last_seq = event["seq"]

    def fetch(self, att: Attempt, path: Path, dest: Path) -> None:
        """Copy a file or folder from the run's node to `dest`."""
        got = self.ray.get(att.actor.fetch.remote(str(path)), timeout=FETCH_TIMEOUT_S)
        unzip_into(got["zip"], dest, single_file=got["file"])

    def bring_back(self, att: Attempt, run_id: str, run_dir: Path, node_path: str) -> str:
        """Copy an artifact from the node; returns its local path (unchanged when it lies
        outside the node's run directory and library)."""
        home, path = Path(att.home), Path(node_path)
        library, node_run = home / "library", home / "runs" / run_id
        if path.is_relative_to(library) and path != library:
            folder = path.relative_to(library).parts[0]
            self.fetch(att, library / folder, paths.library_dir() / folder)
            return str(paths.library_dir() / path.relative_to(library))
        if path.is_relative_to(node_run) and path != node_run:
            local = run_dir / path.relative_to(node_run)
            self.fetch(att, path, local)
            return str(local)
        return node_path

    def mirror_checkpoints(self, att: Attempt, run_id: str, run_dir: Path, remote: list) -> None:
        """Make the local complete checkpoints those of the node (new ones fetched, rotated ones
        deleted); a checkpoint the node deletes mid-copy is tried again at the next poll. Rotated
        ones are deleted only once every checkpoint the node has is here: a fetch that fails (the
        actor dying mid-copy) must not leave the run with nothing to resume from."""
        local = set(complete_checkpoints(run_dir))
        node_dir = Path(att.home) / "runs" / run_id / "checkpoints"
        att.checkpoints = list(remote)
        for name in remote:
            if name in local:
                continue
            try:
                self.fetch(att, node_dir / name, run_dir / "checkpoints" / name)
            except Exception:  # noqa: BLE001 - rotated away meanwhile: next poll
                log.warning("checkpoint %s of %s not copied:\n%s", name, run_id, _tb())
                att.checkpoints = None
        if remote and set(remote) <= set(complete_checkpoints(run_dir)):
            for name in local - set(remote):
                shutil.rmtree(run_dir / "checkpoints" / name, ignore_errors=True)


class _Gone(LookupError):
    pass


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _tb() -> str:
    return traceback.format_exc(limit=3)


def _complete_bytes(path: Path) -> bytes:
    """A log's bytes up to its last complete line."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return b""
    return raw[: raw.rfind(b"\n") + 1]


def _truncate_torn_tail(path: Path) -> None:
    if path.exists():
        keep = len(_complete_bytes(path))
        if keep != path.stat().st_size:
            with open(path, "r+b") as f:
                f.truncate(keep)


def _last_seq(data: bytes) -> int:
    for line in reversed(data.splitlines()):
        try:
            return int(json.loads(line)["seq"])
        except (ValueError, KeyError, TypeError):
            continue
    return 0


def _latest_checkpoint_zip(run_dir: Path) -> bytes:
    """The run's latest complete checkpoint as ZIP bytes of `checkpoints/` (b"" when none)."""
    names = complete_checkpoints(run_dir)
    if not names:
        return b""
    latest = max(names, key=lambda n: int(n.split("-", 1)[1]))
    staging = run_dir / ".ship"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(run_dir / "checkpoints" / latest, staging / latest)
        return zip_bytes(staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv: list[str]) -> int:
    """Serve requests until stdin closes. stdout carries only answers (Ray's output goes to
    stderr, which the supervisor sends to ray-bridge.log)."""
    if len(argv) != 1:
        print("usage: python -m engine.cluster.bridge ADDRESS", file=sys.stderr)
        return 2
    answers = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    try:
        bridge = Bridge(argv[0])
    except Exception as err:  # noqa: BLE001 - the supervisor gets the reason
        answers.write(json.dumps({"error": _first_line(err)}) + "\n")
        return 1
    answers.write(json.dumps({"ok": True}) + "\n")
    for line in sys.stdin:
        try:
            answer = bridge.handle(json.loads(line))
        except Exception as err:  # noqa: BLE001 - an answer, always
            log.error("request failed: %s\n%s", line.strip(), traceback.format_exc())
            answer = {"error": f"{type(err).__name__}: {_first_line(err)}"}
        answers.write(json.dumps(answer, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
