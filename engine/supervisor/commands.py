"""The supervisor's answers to client commands: submit, cancel, pause/stop, resume, GPU suspend.

A submit that arrives without an estimate is estimated in a helper process in the engine's Python
(`python -m engine.plan.report RUN_DIR`; the supervisor never imports torch) while the main
loop goes on; its command is answered when the helper finishes, or after ESTIMATE_TIMEOUT_S. No run
is placed blind: a run still without an estimate then (the helper failed, timed out, could not
start, or the supervisor stopped first) is refused, with the helper's own error in the reason. A
submitted run is otherwise queued (with why it waits, in GiB, when it cannot start at once) or
refused (it can never fit, or every GPU is busy under the "refuse" GPU policy).
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import tempfile
import time
from pathlib import Path

from engine import control, hardware, paths, settings
from engine.errors import TunegraphError
from engine.events import LIVE_STATES, TERMINAL_STATES
from engine.rundir import SPEC_FILE, entry_command
from engine.spec import JobSpec
from engine.store.index import Store
from engine.supervisor import scheduler
from engine.training.checkpoints import drop_torn_checkpoints, has_checkpoint
from engine.training.executors import Executor
from engine.training.launch import read_submission

ESTIMATE_TIMEOUT_S = 300.0
RESUMABLE = ("paused", "failed", "pruned")  # a pruned trial kept its last checkpoint
log = logging.getLogger("tunegraph.supervisor")


class ClientCommands:
    """Mixed into engine.supervisor.service.Supervisor (it provides emit, state, held, kill, executor, …)."""

    store: Store
    procs: dict[str, Executor]
    cancelling: dict[str, float]
    estimating: dict[str, tuple[subprocess.Popen, int, float]]
    placements: dict[str, scheduler.Placement]
    suspended: set[int]
    _stop: bool

    def handle(self, cmd: dict) -> dict | None:
        """Carry out one command; its answer, or None when it is answered later (a submit
        waiting for its estimate)."""
        action, run_id = cmd["action"], cmd.get("run_id")
        args = cmd.get("args") or {}
        if action == "submit":
            if args.get("refuse"):  # the client found why it cannot run (its data)
                return self.refuse_submitted(run_id, scheduler.Refusal(**args["refuse"]))
            estimate = args.get("estimate") or read_submission(paths.runs_dir() / run_id).get(
                "estimate"
            )
            if estimate is not None:
                return self.submit(run_id, estimate)
            try:  # estimated in a helper process; the loop goes on meanwhile
                helper = start_estimate(paths.runs_dir() / run_id)
            except (TunegraphError, OSError) as err:  # no engine to estimate in
                hint = (
                    getattr(err, "hint", None) or "Set up the training engine, then start it again."
                )
                return self.refuse_unestimated(
                    run_id, f"the estimate helper could not start: {message_of(err)}", hint
                )
            self.estimating[run_id] = (helper, cmd["id"], time.time())
            return None
        if action == "submit_eval":  # engine.supervisor.evals
            return self.submit_eval(args["eval_id"], args.get("estimate") or {})
        if action == "cancel_eval":
            return self.cancel_eval(args["eval_id"])
        if action == "submit_data":  # engine.supervisor.data_steps
            return self.submit_data(args["steps"])
        if action == "cancel_data":
            return self.cancel_data(args["key"])
        if action == "sweep":  # engine.supervisor.sweeps
            return self.submit_sweep(args)
        if action == "cancel_sweep":
            return self.cancel_sweep(args["study"])
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
        """Submit the runs whose estimate helper has finished (refuse those it could not
        estimate, or that it did not answer in ESTIMATE_TIMEOUT_S), and answer their commands."""
        for run_id, (helper, cmd_id, started) in list(self.estimating.items()):
            timed_out = False
            if helper.poll() is None:
                if time.time() - started < ESTIMATE_TIMEOUT_S:
                    continue
                helper.kill()
                helper.wait()
                timed_out = True
            del self.estimating[run_id]
            estimate, error = read_estimate(helper)
            try:
                if timed_out:
                    result = self.refuse_unestimated(
                        run_id,
                        f"the estimate helper gave no answer in {ESTIMATE_TIMEOUT_S:.0f} s",
                        "Start it again; `tunegraph estimate GRAPH` shows whether estimating "
                        "it hangs.",
                    )
                elif estimate is None:
                    result = self.refuse_unestimated(
                        run_id,
                        f"the estimate helper failed: {error}",
                        "Fix what the error names, then start it again.",
                    )
                else:
                    result = self.submit(run_id, estimate)
            except Exception as exc:  # noqa: BLE001 - the client must get an answer
                log.exception("submit of %s failed", run_id)
                result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            self.store.finish_command(cmd_id, result)

    def abandon_estimates(self) -> None:
        """On exit: submits still waiting for their estimate are refused, never left hanging."""
        for run_id, (helper, cmd_id, _) in list(self.estimating.items()):
            helper.kill()
            helper.wait()
            read_estimate(helper)  # closes its files
            try:
                result = self.refuse_unestimated(
                    run_id,
                    "the supervisor stopped before the run was estimated",
                    "Submit it again.",
                )
            except Exception as exc:  # noqa: BLE001 - the client must get an answer
                log.exception("refusal of %s failed", run_id)
                result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            self.store.finish_command(cmd_id, result)
        self.estimating.clear()

    def submit(self, run_id: str, estimate: dict | None) -> dict:
        """Queue a submitted run, or refuse it with the numbers and what to change (or because
        it has no estimate: no run is placed blind)."""
        if estimate is None:
            return self.refuse_unestimated(
                run_id, "none came with it", "Start it again so that it is estimated."
            )
        run_dir = paths.runs_dir() / run_id
        spec = JobSpec.load(run_dir / SPEC_FILE)
        meta = read_submission(run_dir)
        chain = self.upstream_refusal(spec)
        if chain:
            return self.refuse(run_id, spec, meta, chain)
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
        if refused:
            return self.refuse(run_id, spec, meta, refused)
        # with the runs accepted earlier in this round, which start before it
        held, on_cpu = self.queued_load(gpus)
        wants_gpu = spec.resources.device != "cpu" and bool(gpus)
        if wants_gpu and settings.load_or_defaults().gpu_policy == "refuse":
            free_now = scheduler.place(
                estimate, gpus, held, self.suspended, spec.resources.gpu_count, True, 0
            )
            if free_now is None:
                return self.refuse(
                    run_id,
                    spec,
                    meta,
                    scheduler.Refusal(
                        "every GPU is busy and the GPU policy is to refuse rather than queue",
                        "Start it again when a GPU is free, or set the GPU policy to queue in "
                        "Settings.",
                    ),
                )
        why = self.upstream_reason(spec) or scheduler.waiting(
            estimate,
            gpus,
            held,
            self.suspended,
            spec.resources.gpu_count,
            spec.resources.device != "cpu",
            hardware.cpu_slots() - self.cpu_busy() - on_cpu,
        )
        return self.queue(run_id, meta, estimate, **({"reason": why} if why else {}))

    def queued_load(self, gpus: list[hardware.Gpu]) -> tuple[dict[int, float], int]:
        """What the queued local runs not started yet (accepted in this same round) will take,
        in one pass over them: GiB held per GPU by live runs plus where the queued GPU runs would
        go (the refuse policy must not accept two runs for one place), and how many CPU slots."""
        held = dict(self.held())
        on_cpu = 0
        for run in self.store.list_runs(state="queued"):
            resources = (run.get("spec") or {}).get("resources") or {}
            if run["id"] in self.procs or resources.get("target") == "cluster":
                continue
            if resources.get("device") == "cpu" or not gpus:
                on_cpu += 1
                continue
            if not run["estimate"]:
                continue
            spot = scheduler.place(
                run["estimate"], gpus, held, self.suspended, resources.get("gpu_count", 1), True, 0
            )
            for gpu in spot.gpus if spot else []:
                held[gpu] = held.get(gpu, 0.0) + spot.hold_gib
        return held, on_cpu

    def refuse_unestimated(self, run_id: str, why: str, hint: str) -> dict:
        """Refuse a run that has no estimate (`why` says what became of it): no run is placed
        blind, since its hold would be a guess."""
        return self.refuse_submitted(
            run_id,
            scheduler.Refusal(
                f"not estimated, and no run is placed without an estimate: {why}", hint
            ),
        )

    def refuse_submitted(self, run_id: str, refused: scheduler.Refusal) -> dict:
        """Refuse a submitted run, reading its spec and submission record from its folder."""
        run_dir = paths.runs_dir() / run_id
        return self.refuse(
            run_id, JobSpec.load(run_dir / SPEC_FILE), read_submission(run_dir), refused
        )

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
        """Queue a paused, failed or pruned run again: from its last checkpoint, or from step 0
        when it has none (and the run says so). Its attempts keep why it stopped before."""
        state = self.state(run_id)
        run_dir = paths.runs_dir() / run_id
        if state not in RESUMABLE:
            return {
                "ok": False,
                "error": f"only a paused, failed or pruned run can be resumed (it is {state})",
            }
        control.clear(run_dir)
        drop_torn_checkpoints(run_dir)
        if not has_checkpoint(run_dir):
            self.emit(
                run_id,
                "log",
                level="info",
                message="restarted from the beginning: no checkpoint yet",
            )
        self.emit(run_id, "status", state="queued", reason="resumed")
        return {"ok": True, "state": "queued"}


class EstimateHelper(subprocess.Popen):
    """A helper process whose stdout and stderr go to temporary files (a pipe that nobody
    reads while it runs could fill up and stall it)."""

    def __init__(self, command: list[str]):
        self.out = tempfile.TemporaryFile("w+", encoding="utf-8")
        self.err = tempfile.TemporaryFile("w+", encoding="utf-8")
        try:
            super().__init__(
                command, stdin=subprocess.DEVNULL, stdout=self.out, stderr=self.err, text=True
            )
        except BaseException:
            self.close_files()
            raise

    def outputs(self) -> tuple[str, str]:
        """(stdout, stderr) of the finished helper; its files are closed afterwards."""
        texts = []
        for file in (self.out, self.err):
            if file.closed:
                texts.append("")
                continue
            file.seek(0)
            texts.append(file.read())
        self.close_files()
        return texts[0], texts[1]

    def close_files(self) -> None:
        """Close (and so delete) the temporary files."""
        self.out.close()
        self.err.close()


def start_estimate(run_dir: Path) -> EstimateHelper:
    """Estimate a run in a helper process in the engine's Python (the supervisor never imports
    torch); raises EngineMissingError when there is no engine."""
    from engine.setup.interpreters import engine_python

    return EstimateHelper(entry_command(engine_python(), "estimate", str(run_dir)))


def read_estimate(helper: subprocess.Popen) -> tuple[dict | None, str]:
    """(estimate, "") from a finished helper, or (None, its own error): the `error` of the JSON
    it printed, else the last meaningful line of its stderr, else its exit code."""
    if isinstance(helper, EstimateHelper):
        out, err = helper.outputs()
    else:
        out, err = helper.communicate()
    try:
        data = json.loads(out) if out and out.strip() else None
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("error"):
        error = data["error"]
        message = error.get("message") if isinstance(error, dict) else None
        return None, str(message or error)
    if helper.returncode == 0 and isinstance(data, dict):
        return data, ""
    line = last_error_line(err or "")
    if line:
        return None, line
    if helper.returncode:
        return None, f"it exited with code {helper.returncode} and printed no error"
    return None, "it printed no estimate"


# `pkg.module.SomeError: message` as the last line of a traceback
_EXCEPTION_LINE = re.compile(r"^((?:\w+\.)*)(\w*(?:Error|Exception|Exit|Interrupt)): (.+)$")


def last_error_line(stderr: str) -> str:
    """The last meaningful line of a helper's stderr: a CLI's `tunegraph: ` prefix dropped, a
    traceback's last line without the module path (and without the class for our own errors,
    whose messages are written for users)."""
    lines = [ln.strip() for ln in stderr.splitlines()]
    lines = [ln for ln in lines if ln and set(ln) - set("^~ ")]
    if not lines:
        return ""
    line = lines[-1].removeprefix("tunegraph: ")
    found = _EXCEPTION_LINE.match(line)
    if not found:
        return line
    module, name, message = found.groups()
    return message if module.startswith("engine.") else f"{name}: {message}"


def message_of(err: BaseException) -> str:
    """An exception as one user-facing sentence: our errors' message, else `Class: text`."""
    if isinstance(err, TunegraphError):
        return err.message
    return f"{type(err).__name__}: {err}"
