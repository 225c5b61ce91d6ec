"""The supervisor's answers to client commands: submit, cancel, pause/stop, resume, GPU suspend.

A submit that arrives without an estimate is estimated in a helper process in the engine's Python
(`python -m engine.plan.report RUN_DIR`; the supervisor never imports torch) while the main
loop goes on; its command is answered when the helper finishes, after ESTIMATE_TIMEOUT_S without
an estimate, or with a refusal when the supervisor stops first. A submitted run is then queued or
refused (it can never fit, or every GPU is busy under the "refuse" GPU policy).
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from pathlib import Path

from engine import control, hardware, paths, settings
from engine.errors import TunegraphError
from engine.events import LIVE_STATES, TERMINAL_STATES
from engine.rundir import SPEC_FILE, entry_command
from engine.spec import JobSpec
from engine.store.index import Store
from engine.supervisor import scheduler
from engine.training.checkpoints import has_checkpoint
from engine.training.executors import Executor
from engine.training.launch import read_submission

ESTIMATE_TIMEOUT_S = 300.0
log = logging.getLogger("tunegraph.supervisor")


class ClientCommands:
    """Mixed into engine.supervisor.service.Supervisor (it provides emit, state, held, kill, executor, …)."""

    store: Store
    procs: dict[str, Executor]
    attempts: dict[str, int]
    cancelling: dict[str, float]
    estimating: dict[str, tuple[subprocess.Popen, int, float]]
    suspended: set[int]
    _stop: bool

    def handle(self, cmd: dict) -> dict | None:
        """Carry out one command; its answer, or None when it is answered later (a submit
        waiting for its estimate)."""
        action, run_id = cmd["action"], cmd.get("run_id")
        args = cmd.get("args") or {}
        if action == "submit":
            estimate = args.get("estimate") or read_submission(paths.runs_dir() / run_id).get(
                "estimate"
            )
            if estimate is None:  # estimated in a helper process; the loop goes on meanwhile
                self.estimating[run_id] = (
                    start_estimate(paths.runs_dir() / run_id),
                    cmd["id"],
                    time.time(),
                )
                return None
            return self.submit(run_id, estimate)
        if action == "cancel":
            return self.cancel(run_id)
        if action == "pause":
            return self.pause(run_id)
        if action == "stop":
            return self.pause(run_id, "stop")
        if action == "resume":
            return self.resume(run_id)
        if action == "suspend_gpu":
            self.suspended.add(int(args["gpu"]))
            return {"ok": True}
        if action == "unsuspend_gpu":
            self.suspended.discard(int(args["gpu"]))
            return {"ok": True}
        return {"ok": False, "error": f"unknown command {action!r}"}

    def watch_estimates(self) -> None:
        """Submit the runs whose estimate helper has finished, and answer their commands."""
        for run_id, (helper, cmd_id, started) in list(self.estimating.items()):
            if helper.poll() is None:
                if time.time() - started < ESTIMATE_TIMEOUT_S:
                    continue
                helper.kill()  # submitted without an estimate: it holds nothing
                helper.wait()
            del self.estimating[run_id]
            try:
                result = self.submit(run_id, read_estimate(helper))
            except Exception as exc:  # noqa: BLE001 - the client must get an answer
                log.exception("submit of %s failed", run_id)
                result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            self.store.finish_command(cmd_id, result)

    def abandon_estimates(self) -> None:
        """On exit: submits still waiting for their estimate are refused, never left hanging."""
        for run_id, (helper, cmd_id, _) in list(self.estimating.items()):
            helper.kill()
            helper.wait()
            message = "the supervisor stopped before the run was estimated"
            error = {"class": "RefusedError", "message": message, "hint": "Submit it again."}
            self.emit(run_id, "error", **error)
            self.emit(run_id, "status", state="refused", reason=message)
            self.store.finish_command(cmd_id, {"ok": True, "state": "refused", "error": error})
        self.estimating.clear()

    def submit(self, run_id: str, estimate: dict | None) -> dict:
        """Queue a submitted run, or refuse it with the numbers and what to change."""
        run_dir = paths.runs_dir() / run_id
        spec = JobSpec.load(run_dir / SPEC_FILE)
        meta = read_submission(run_dir)
        if spec.resources.target == "cluster":
            return self.submit_cluster(run_id, spec, meta, estimate)
        gpus = hardware.gpus()
        refused = scheduler.refusal(
            estimate,
            gpus,
            spec.resources.gpu_count,
            spec.resources.device != "cpu",
            requires_gpu=spec.resources.device == "cuda",
        )
        wants_gpu = spec.resources.device != "cpu" and bool(gpus)
        if not refused and wants_gpu and settings.load_or_defaults().gpu_policy == "refuse":
            free_now = scheduler.place(
                estimate, gpus, self.held(), self.suspended, spec.resources.gpu_count, True, 0
            )
            if free_now is None:
                refused = scheduler.Refusal(
                    "every GPU is busy and the GPU policy is to refuse rather than queue",
                    "Start it again when a GPU is free, or set the GPU policy to queue in "
                    "Settings.",
                )
        if refused:
            return self.refuse(run_id, spec, meta, refused)
        return self.queue(run_id, meta, estimate)

    def queue(self, run_id: str, meta: dict, estimate: dict | None, **extra) -> dict:
        """Accept a submitted run: its first `queued` status (with lineage and estimate)."""
        self.emit(
            run_id,
            "status",
            state="queued",
            parent=meta.get("parent"),
            created_at=meta.get("created_at"),
            estimate=estimate,
            **extra,
        )
        return {"ok": True, "state": "queued"}

    def refuse(self, run_id: str, spec: JobSpec, meta: dict, refused: scheduler.Refusal) -> dict:
        """Refuse a submitted run: an error event with the hint, then its `refused` status."""
        message = f"{spec.name}: {refused.message}"
        error = {"class": "RefusedError", "message": message, "hint": refused.hint}
        self.emit(run_id, "error", **error)
        self.emit(
            run_id,
            "status",
            state="refused",
            reason=message,
            parent=meta.get("parent"),
            created_at=meta.get("created_at"),
        )
        return {"ok": True, "state": "refused", "error": error}

    def cancel(self, run_id: str) -> dict:
        """Cancel a run: ask its worker, then kill it; a queued run is cancelled at once."""
        state = self.state(run_id)
        if state in TERMINAL_STATES:
            return {"ok": False, "error": f"the run is already {state}"}
        if run_id in self.procs or (state in LIVE_STATES and state != "queued"):
            run_dir = paths.runs_dir() / run_id
            try:
                self.executor(run_id).request(run_id, run_dir, "cancel")
            except TunegraphError:
                pass  # not reachable right now (or not started): the kill below decides
            self.cancelling[run_id] = time.time()
            self.kill(run_id)
        else:
            self.emit(run_id, "status", state="cancelled", reason="cancelled by the user")
        return {"ok": True}

    def pause(self, run_id: str, action: str = "pause") -> dict:
        """Ask a training run's worker to pause (checkpoint, then stop) or to stop early."""
        state = self.state(run_id)
        if state == "queued" and run_id in self.procs:
            state = "starting"  # its worker is up but has not said so yet
        if state == "queued":
            return {"ok": False, "error": "a queued run cannot be paused; cancel it instead"}
        if state not in ("starting", "training"):
            return {"ok": False, "error": f"only a training run can be paused (it is {state})"}
        try:
            self.executor(run_id).request(run_id, paths.runs_dir() / run_id, action)
        except TunegraphError as err:
            return {"ok": False, "error": str(err)}
        return {"ok": True}

    def resume(self, run_id: str) -> dict:
        """Queue a paused run, or a failed one that has a checkpoint, again."""
        state = self.state(run_id)
        run_dir = paths.runs_dir() / run_id
        if state not in ("paused", "failed"):
            return {
                "ok": False,
                "error": f"only a paused or failed run can be resumed (it is {state})",
            }
        if state == "failed" and not has_checkpoint(run_dir):
            return {"ok": False, "error": "the run has no checkpoint to resume from"}
        control.clear(run_dir)
        self.attempts.pop(run_id, None)
        self.emit(run_id, "status", state="queued", reason="resumed")
        return {"ok": True, "state": "queued"}


def start_estimate(run_dir: Path) -> subprocess.Popen:
    """Estimate a run in a helper process in the engine's Python (the supervisor never imports
    torch); raises EngineMissingError when there is no engine."""
    from engine.setup.interpreters import engine_python

    return subprocess.Popen(
        entry_command(engine_python(), "estimate", str(run_dir)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def read_estimate(helper: subprocess.Popen) -> dict | None:
    """The estimate a finished helper printed, or None when it failed."""
    out = helper.stdout.read() if helper.stdout else ""
    if helper.stdout:
        helper.stdout.close()
    if helper.returncode != 0:
        return None
    try:
        return json.loads(out)
    except ValueError:
        return None
