"""Eval jobs in the supervisor: queued, placed under a hold like runs, their workers watched.

An eval (engine.eval.job) arrives as a `submit_eval` command with its estimate (engine.eval.estimate,
made by the client). It is refused when no GPU could ever hold it, else `queued` in its folder's
supervisor.jsonl (this process is that file's only writer). Each tick, after the runs, queued evals
are placed oldest first by the same scheduler and VRAM holds (a `holds` row `eval:<id>` on one
GPU), or a CPU slot when every target is a GGUF or there is no GPU, and their worker starts
detached: `python -m engine.eval.worker EVAL_DIR`, told its device by TUNEGRAPH_EVAL_DEVICE. When it
ends, the hold is released, a worker that died without a final state is marked `failed`, and the
runs it scored are ingested so their scores show at once. `cancel_eval` asks the worker through
control.json and kills its tree; a queued eval is cancelled at once. A restarted supervisor
re-adopts live eval workers with their holds and fails the dead ones (an eval has no checkpoint:
run it again).
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine import control, hardware, paths, settings
from engine.events import (
    LIVE_STATES,
    TERMINAL_STATES,
    EventLog,
    cancel_overrides,
    read_events,
    run_state,
)
from engine.rundir import SUPERVISOR_LOG
from engine.store.index import Store
from engine.supervisor import scheduler
from engine.supervisor.jobs import DetachedJobs
from engine.training import launch as runs

HOLD_PREFIX = "eval:"
CANCEL_GRACE_S = 1.0
log = logging.getLogger("tunegraph.supervisor")


@dataclass
class EvalWork:
    """A live eval this supervisor looks after: queued, or running (`started`)."""

    eval_id: str
    estimate: dict
    created_at: float
    started: bool = False
    proc: subprocess.Popen | None = None  # None when started: adopted, watched by worker.pid


def eval_dir(eval_id: str) -> Path:
    """The folder of eval job `eval_id`."""
    return paths.evals_dir() / eval_id


def wants_gpu(estimate: dict) -> bool:
    """Whether an eval's estimate asks for a GPU (a transformers target), if there is one."""
    return bool(estimate.get("uses_gpu"))


class EvalJobs(DetachedJobs):
    """Mixed into engine.supervisor.service.Supervisor (it provides store, placements, held, …)."""

    store: Store
    placements: dict[str, scheduler.Placement]
    suspended: set[int]
    evals: dict[str, EvalWork]
    eval_cancelling: set[str]
    held: Callable[[], dict[int, float]]  # the Supervisor's: GiB held per GPU

    def emit_eval(self, eval_id: str, kind: str, **data: object) -> None:
        """Write an event to the eval folder's supervisor.jsonl."""
        with EventLog(eval_dir(eval_id) / SUPERVISOR_LOG) as elog:
            elog.emit(kind, **data)

    def submit_eval(self, eval_id: str, estimate: dict) -> dict:
        """Queue an eval, or refuse it when no GPU could ever hold it."""
        gpus = hardware.gpus()
        refused = scheduler.refusal(estimate, gpus, 1, wants_gpu(estimate))
        if refused:
            error = {
                "class": "RefusedError",
                "message": f"eval {eval_id}: {refused.message}",
                "hint": "Score a smaller model, or its GGUF export (llama.cpp runs it on the CPU).",
            }
            self.emit_eval(eval_id, "error", **error)
            self.emit_eval(eval_id, "status", state="refused", reason=error["message"])
            return {"ok": True, "state": "refused", "error": error}
        self.evals[eval_id] = EvalWork(eval_id, estimate, time.time())
        why = scheduler.waiting(
            estimate,
            gpus,
            self.held(),
            self.suspended,
            1,
            wants_gpu(estimate),
            hardware.cpu_slots() - self.cpu_busy(),
        )
        extra = {"reason": why} if why else {}
        self.emit_eval(eval_id, "status", state="queued", estimate=estimate, **extra)
        return {"ok": True, "state": "queued"}

    def cpu_busy(self) -> int:
        """CPU slots taken by runs and evals."""
        return sum(1 for p in self.placements.values() if p.device == "cpu")

    def schedule_evals(self) -> None:
        """Start the queued evals that fit now, oldest first."""
        queued = [w for w in self.evals.values() if not w.started]
        if not queued:
            return
        gpus = hardware.gpus()
        for work in sorted(queued, key=lambda w: (w.created_at, w.eval_id)):
            place = scheduler.place(
                work.estimate,
                gpus,
                self.held(),
                self.suspended,
                1,
                wants_gpu(work.estimate),
                hardware.cpu_slots() - self.cpu_busy(),
            )
            if place is not None:
                self.start_eval(work, place, gpus)

    def start_eval(self, work: EvalWork, place: scheduler.Placement, gpus: list) -> None:
        """Hold the placement and start the eval's worker on it."""
        folder = eval_dir(work.eval_id)
        control.clear(folder)
        prefs = settings.load_or_defaults()
        env = settings.worker_env({}, prefs)
        env["TUNEGRAPH_THREADS"] = str(prefs.cpu_threads or hardware.cpu_threads_per_run())
        env["TUNEGRAPH_EVAL_DEVICE"] = place.device
        if place.device == "cuda" and not any(g.fake for g in gpus):
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in place.gpus)
        key = HOLD_PREFIX + work.eval_id
        gpu_key = ",".join(str(i) for i in place.gpus) if place.gpus else "cpu"
        self.store.set_hold(key, gpu_key, place.hold_gib)
        self.placements[key] = place
        self.emit_eval(
            work.eval_id,
            "schedule",
            message=place.message,
            gpus=place.gpus,
            hold_gib=place.hold_gib,
            device=place.device,
        )

        def failed(why: str) -> None:
            self.release_eval(work.eval_id)
            self.emit_eval(work.eval_id, "status", state="failed", reason=why)

        self.start_worker(work, "eval_worker", folder, env, failed)

    def release_eval(self, eval_id: str) -> None:
        """Forget an eval and free what it held."""
        self.forget_job(self.evals, eval_id, HOLD_PREFIX + eval_id)

    def watch_evals(self) -> None:
        """Settle the eval workers that have ended."""
        for work, code in self.ended_jobs(self.evals, lambda w: eval_dir(w.eval_id)):
            self.finish_eval(work, code)

    def finish_eval(self, work: EvalWork, code: int | None) -> None:
        """An eval worker ended: release its hold, settle its state, ingest the runs it scored."""
        folder = eval_dir(work.eval_id)
        self.release_eval(work.eval_id)
        state, _ = run_state(folder)
        if work.eval_id in self.eval_cancelling:
            self.eval_cancelling.discard(work.eval_id)
            if cancel_overrides(state):
                self.emit_eval(work.eval_id, "status", state="cancelled", reason="cancelled")
        elif state not in TERMINAL_STATES:
            why = f"the eval worker exited with code {code}" if code is not None else "it died"
            self.emit_eval(work.eval_id, "status", state="failed", reason=f"interrupted: {why}")
        self.ingest_scored_runs(folder)

    def ingest_scored_runs(self, folder: Path) -> None:
        """Index the eval logs the eval wrote into the runs it scored."""
        from engine.eval.job import EvalRequest

        try:
            request = EvalRequest.load(folder)
        except Exception:  # noqa: BLE001 - an unreadable request scored nothing to index
            return
        for target in request.targets:
            if target.kind == "run" and Path(target.source).is_dir():
                try:
                    self.store.ingest(Path(target.source))
                except Exception:  # noqa: BLE001 - one bad run must not stop the others
                    log.exception("ingesting %s after eval %s failed", target.source, folder.name)

    def cancel_eval(self, eval_id: str) -> dict:
        """Cancel an eval: a queued one at once, a running one through its worker and a kill."""
        folder = eval_dir(eval_id)
        state, _ = run_state(folder)
        if state in TERMINAL_STATES:
            return {"ok": False, "error": f"the eval is already {state}"}
        work = self.evals.get(eval_id)
        if work is not None and work.started:
            control.request(folder, "cancel")
            self.eval_cancelling.add(eval_id)
            runs.kill_worker_tree(folder, grace=CANCEL_GRACE_S)
            if work.proc is not None:
                from engine.setup.streaming import stop_process

                stop_process(work.proc, CANCEL_GRACE_S, terminate=False)
            self.finish_eval(work, work.proc.poll() if work.proc else None)
            return {"ok": True}
        self.release_eval(eval_id)
        self.emit_eval(eval_id, "status", state="cancelled", reason="cancelled by the user")
        return {"ok": True}

    def reconcile_evals(self) -> None:
        """On start: re-adopt live eval workers (and their holds), re-queue evals still waiting
        for a place, and fail those whose worker died unwatched."""
        for folder in sorted(paths.evals_dir().iterdir()):
            state, _ = run_state(folder)
            if state not in LIVE_STATES:
                continue
            eval_id = folder.name
            sup_events = list(read_events(folder / SUPERVISOR_LOG))
            queued = next((e for e in sup_events if e.get("state") == "queued"), None)
            estimate = (queued.get("estimate") if queued else None) or {}
            work = EvalWork(eval_id, estimate, queued.ts if queued else time.time())
            placed = [e for e in sup_events if e.kind == "schedule"]
            if runs.worker_alive(folder):
                work.started = True
                self.evals[eval_id] = work
                last = placed[-1] if placed else None
                gpus = list(last.get("gpus") or []) if last else []
                place = scheduler.Placement(
                    "cuda" if gpus else "cpu",
                    gpus,
                    float(last.get("hold_gib") or 0.0) if last else 0.0,
                    "re-adopted",
                )
                self.placements[HOLD_PREFIX + eval_id] = place
                gpu_key = ",".join(str(g) for g in gpus) if gpus else "cpu"
                self.store.set_hold(HOLD_PREFIX + eval_id, gpu_key, place.hold_gib)
            elif state == "queued" and not placed and queued is not None:
                self.evals[eval_id] = work  # never started: it waits for a place again
            else:
                reason = "interrupted: the eval worker died while nobody was watching"
                self.emit_eval(eval_id, "status", state="failed", reason=reason)
