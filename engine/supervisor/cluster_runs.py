"""The supervisor's cluster runs: what the Supervisor does differently for runs whose target is
"cluster" (engine.cluster.executor runs them on a Ray cluster).

Submission checks only that a cluster is named and Ray is installed (the cluster is contacted
when the run starts); a run waits `queued` while the cluster is out of reach; a run whose cluster
stops answering is `retrying` until the executor re-attaches to its actor (then it is back in the
state its worker last reported), and `failed` (interrupted) after LOST_GIVE_UP_S; on a supervisor
restart, runs whose actor still exists are re-adopted and the others reconciled as interrupted.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from engine import control, paths, settings
from engine.errors import TunegraphError
from engine.events import read_events, run_state
from engine.rundir import SPEC_FILE, WORKER_LOG
from engine.spec import JobSpec
from engine.supervisor import scheduler
from engine.training.checkpoints import drop_torn_checkpoints, has_checkpoint
from engine.training.executors import Executor
from engine.training.launch import read_submission

LOST_GIVE_UP_S = float(os.environ.get("TUNEGRAPH_CLUSTER_GIVE_UP_S", "900"))


class ClusterRuns:
    """Mixed into engine.supervisor.service.Supervisor (it provides emit, refuse, queue, procs, local, …)."""

    local: Executor
    procs: dict[str, Executor]
    clusters: dict[str, Executor]
    lost: dict[str, float]
    waiting_note: dict[str, str]

    def submit_cluster(self, run_id: str, spec: JobSpec, meta: dict, estimate) -> dict:
        """A run for the Ray cluster: queued when a cluster is named and Ray is installed
        (the cluster itself is contacted only when the run starts)."""
        from engine.cluster import executor as ray_executor

        address = ray_executor.resolve_address(meta.get("ray_address"))
        refused = None
        if not address:
            refused = scheduler.Refusal(
                "its target is the cluster, and no Ray cluster is named", ray_executor.ADDRESS_HINT
            )
        elif not ray_executor.ray_installed():
            refused = scheduler.Refusal(
                "its target is the cluster, and Ray is not installed", ray_executor.INSTALL_HINT
            )
        if refused:
            return self.refuse(run_id, spec, meta, refused)
        return self.queue(run_id, meta, estimate, target=f"cluster ({address})")

    def executor(self, run_id: str, spec: JobSpec | None = None) -> Executor:
        """What runs (or ran) this run's worker: the local executor, or the Ray cluster's."""
        if run_id in self.procs:
            return self.procs[run_id]
        run_dir = paths.runs_dir() / run_id
        if spec is None:
            try:
                spec = JobSpec.load(run_dir / SPEC_FILE)
            except (OSError, ValueError, TunegraphError):
                return self.local
        if spec.resources.target != "cluster":
            return self.local
        from engine.cluster import executor as ray_executor

        address = ray_executor.read_state(run_dir).get("address") or (
            ray_executor.resolve_address(read_submission(run_dir).get("ray_address"))
        )
        if address not in self.clusters:
            self.clusters[address] = ray_executor.RayExecutor(address)
        return self.clusters[address]

    def start_cluster(self, run_id: str, spec: JobSpec, estimate: dict | None) -> None:
        """Hand a queued run to its Ray cluster; it stays queued while the cluster is out of
        reach (said once in the run's log), and fails when the cluster refuses it."""
        from engine.cluster.executor import ClusterError, ClusterUnavailable

        run_dir = paths.runs_dir() / run_id
        executor = self.executor(run_id, spec)
        prefs = settings.load_or_defaults()
        env = settings.worker_env({}, prefs)
        hold, _ = scheduler.need_gib(estimate)
        wants_gpu = spec.resources.device != "cpu"
        control.clear(run_dir)
        drop_torn_checkpoints(run_dir)
        try:
            asked = executor.start(
                run_id,
                run_dir,
                env,
                spec.resources.gpu_count,
                device=spec.resources.device,
                gpu_count=spec.resources.gpu_count,
                hold_gib=hold if wants_gpu else 0.0,
                cpus=prefs.cpu_threads or 1,
            )
        except ClusterUnavailable as err:
            if not err.connecting and self.waiting_note.get(run_id) != str(err):
                self.waiting_note[run_id] = str(err)
                self.emit(run_id, "log", level="warning", message=f"waiting: {err}")
            return
        except ClusterError as err:
            self.emit(run_id, "error", **{"class": "ClusterError", **_error_fields(err)})
            self.emit(run_id, "status", state="failed", reason=err.message)
            return
        self.waiting_note.pop(run_id, None)
        self.emit(
            run_id,
            "schedule",
            message=f"handed to the Ray {executor.label}"
            + (f", asking for {spec.resources.gpu_count} GPU(s)" if wants_gpu else "")
            + (f" with {hold:.1f} GiB each" if wants_gpu and hold else ""),
            device="ray",
            hold_gib=hold if wants_gpu else 0.0,
            asked=asked,
        )
        self.placements[run_id] = scheduler.Placement("ray", [], hold, "on the cluster")
        self.procs[run_id] = executor

    def out_of_reach(self, run_id: str, reason: str | None) -> None:
        """A cluster run whose cluster does not answer: `retrying` while the executor
        re-attaches; failed (interrupted, resumable from the checkpoints that came back) after
        LOST_GIVE_UP_S."""
        since = self.lost.get(run_id)
        if since is None:
            self.lost[run_id] = time.time()
            self.emit(
                run_id, "status", state="retrying", reason=f"{reason}; re-attaching when it answers"
            )
        elif time.time() - since > LOST_GIVE_UP_S:
            self.lost.pop(run_id)
            self.procs.pop(run_id, None)
            self.placements.pop(run_id, None)
            self.emit(
                run_id,
                "status",
                state="failed",
                reason=f"interrupted: {reason} for {LOST_GIVE_UP_S:.0f} s",
                resumable=has_checkpoint(paths.runs_dir() / run_id),
            )

    def reattached(self, run_id: str) -> None:
        """The cluster answers again: the run is back in the state its worker last reported."""
        self.lost.pop(run_id)
        state, _ = worker_state(paths.runs_dir() / run_id)
        self.emit(
            run_id,
            "status",
            state=state or "queued",
            reason="re-attached to the Ray cluster",
        )

    def readopt_cluster_run(self, run_id: str, run_dir: Path, executor: Executor) -> None:
        """On start: watch a cluster run whose actor still exists; settle one whose actor is gone
        (queued runs that never reached the cluster just wait for their turn)."""
        from engine.cluster.executor import read_state

        state, _ = run_state(run_dir)
        if not read_state(run_dir).get("active"):
            if state not in ("queued", "retrying"):
                self.emit(
                    run_id,
                    "status",
                    state="failed",
                    reason="interrupted: the run was not handed to the cluster",
                    resumable=has_checkpoint(run_dir),
                )
            elif state == "retrying":
                self.emit(run_id, "status", state="queued", reason="retrying")
            return
        if executor.adopt(run_id, run_dir):
            self.procs[run_id] = executor
            self.placements[run_id] = scheduler.Placement("ray", [], 0.0, "re-adopted")
            if state == "retrying":  # out of reach when the last supervisor stopped
                self.lost[run_id] = time.time()
            self.emit(
                run_id,
                "log",
                level="info",
                message="supervisor restarted: re-attached to the run's Ray actor",
            )
            return
        executor.release(run_id, run_dir)
        self.emit(
            run_id,
            "status",
            state="failed",
            reason="interrupted: the run's Ray actor died while nobody was watching",
            resumable=has_checkpoint(run_dir),
        )


def worker_state(run_dir: Path) -> tuple[str | None, dict]:
    """The latest status the worker itself wrote (events.jsonl only)."""
    latest = None
    for event in read_events(Path(run_dir) / WORKER_LOG):
        if event.kind == "status":
            latest = event
    return (latest["state"], latest.data) if latest else (None, {})


def _error_fields(err: TunegraphError) -> dict:
    return {"message": err.message, "hint": err.hint}
