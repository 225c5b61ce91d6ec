"""Data steps in the supervisor: the data recipe nodes before a run, built first, under a hold.

A client submits a graph's data steps (nodes.recipes: `{"key", "step", "name", "node_uuid",
"spec", "inputs", "outputs"}`) with a `submit_data` command before the runs that read them. Each
step lives in `<data_dir>/recipes/<key>/`: `step.json`, `supervisor.jsonl` (written here, its only
writer), and what its worker (`python -m engine.recipes.worker STEP_DIR`) writes: `events.jsonl`
(status, progress, log, error), `worker.pid`, its outputs `<port>.jsonl` and the library artifacts
they are copies of. A step whose outputs exist is done and never made again; a failed or cancelled
one submitted again is queued again (a Generate step goes on from the rows it kept).

Each tick a queued step whose inputs exist is placed in a CPU slot like any run (llama.cpp runs
its teacher or judge there), and its worker started detached; a step whose input step failed fails
with it. A queued run with data steps waits ("waiting for its data: …") until every step has
written its outputs, and fails, naming the step and why, when one of them failed (submitting the
graph again retries the step; resume the run after it). A restarted supervisor re-adopts live step
workers and re-queues steps still waiting for a place.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
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
from engine.rundir import SUPERVISOR_LOG, WORKER_LOG
from engine.spec import JobSpec
from engine.store.index import Store
from engine.supervisor import scheduler
from engine.supervisor.jobs import DetachedJobs
from engine.training import launch as runs

HOLD_PREFIX = "data:"
STEP_FILE = "step.json"
CANCEL_GRACE_S = 1.0
log = logging.getLogger("tunegraph.supervisor")


@dataclass
class DataWork:
    """A data step this supervisor looks after: queued, or running (`started`)."""

    key: str
    created_at: float
    started: bool = False
    proc: subprocess.Popen | None = None  # None when re-adopted: watched by worker.pid


def step_dir(key: str) -> Path:
    """The folder of data step `key`."""
    return paths.data_dir() / "recipes" / key


def read_step(key: str) -> dict:
    """The step's description (`step.json`)."""
    return json.loads((step_dir(key) / STEP_FILE).read_text(encoding="utf-8"))


def step_done(step: dict) -> bool:
    """Every output of the step has been written."""
    return all(Path(p).is_file() for p in step["outputs"].values())


def step_label(step: dict) -> str:
    """`Generate "synthetic"` for messages."""
    kind = {"dedup": "Deduplicate"}.get(step["step"], step["step"].capitalize())
    return f'{kind} "{step.get("name") or step["key"][:8]}"'


def step_progress(key: str) -> str:
    """`12/100 rows` from the step worker's last progress event ("" before one)."""
    last = None
    for event in read_events(step_dir(key) / WORKER_LOG):
        if event.kind == "progress":
            last = event
    if last is None or last.get("max_steps") is None:
        return ""
    return f"{last.get('step', 0)}/{last['max_steps']} rows"


class DataSteps(DetachedJobs):
    """Mixed into engine.supervisor.service.Supervisor (it provides store, placements, held,
    emit, cpu_busy, …)."""

    store: Store
    placements: dict[str, scheduler.Placement]
    data_jobs: dict[str, DataWork]

    def emit_step(self, key: str, kind: str, **data: object) -> None:
        """Write an event to the step folder's supervisor.jsonl."""
        with EventLog(step_dir(key) / SUPERVISOR_LOG) as elog:
            elog.emit(kind, **data)

    # -- commands --------------------------------------------------------------------------------
    def submit_data(self, steps: list[dict]) -> dict:
        """Queue each step that is not made, queued or running yet; {key: state} of them all."""
        states = {}
        for step in steps:
            key = step["key"]
            folder = step_dir(key)
            state, _ = run_state(folder) if folder.is_dir() else (None, {})
            if step_done(step):
                states[key] = "completed"
                continue
            if key in self.data_jobs or state in LIVE_STATES:
                states[key] = state or "queued"
                continue
            folder.mkdir(parents=True, exist_ok=True)
            (folder / STEP_FILE).write_text(json.dumps(step, indent=2), encoding="utf-8")
            control.clear(folder)
            self.data_jobs[key] = DataWork(key, time.time())
            self.emit_step(key, "status", state="queued", name=step.get("name"))
            states[key] = "queued"
        return {"ok": True, "steps": states}

    def cancel_data(self, key: str) -> dict:
        """Cancel a data step: a queued one at once, a running one through its worker (a Generate
        step keeps the rows it wrote, for the next time it runs)."""
        work = self.data_jobs.get(key)
        if work is None:
            return {"ok": False, "error": f"the data step {key} is not queued or running"}
        if work.started:
            control.request(step_dir(key), "cancel")
            deadline = time.time() + 5.0
            while time.time() < deadline and runs.worker_alive(step_dir(key)):
                time.sleep(0.05)
            runs.kill_worker_tree(step_dir(key), grace=CANCEL_GRACE_S)
            state = self.finish_data(work, work.proc.poll() if work.proc else None, cancelled=True)
            return {"ok": True, "state": state}
        self.release_data(key)
        self.emit_step(key, "status", state="cancelled", reason="cancelled by the user")
        return {"ok": True, "state": "cancelled"}

    # -- each tick ---------------------------------------------------------------------------------
    def schedule_data(self) -> None:
        """Start the queued steps whose inputs exist, oldest first, in free CPU slots; fail those
        whose input step failed."""
        for work in sorted(self.data_jobs.values(), key=lambda w: (w.created_at, w.key)):
            if work.started:
                continue
            step = read_step(work.key)
            missing = [p for p in step["inputs"] if not Path(p).is_file()]
            if missing:
                broken = self.failed_maker(missing)
                if broken:
                    self.release_data(work.key)
                    self.emit_step(work.key, "status", state="failed", reason=f"its input {broken}")
                continue  # its input step has not written its output yet
            place = scheduler.place(
                None, [], {}, set(), 1, False, hardware.cpu_slots() - self.cpu_busy()
            )
            if place is None:
                return  # FIFO: the next free slot is this step's
            self.start_data(work, place)

    def failed_maker(self, missing: list[str]) -> str:
        """Why a missing input will never come: `Filter "x" failed: …` ("" while it may)."""
        for path in missing:
            folder = Path(path).parent
            if folder.parent != paths.data_dir() / "recipes" or not folder.is_dir():
                return f"{path} does not exist"
            state, data = run_state(folder)
            if state in ("failed", "cancelled"):
                maker = read_step(folder.name)
                return f"{step_label(maker)} {state}: {data.get('reason') or ''}".rstrip(": ")
        return ""

    def start_data(self, work: DataWork, place: scheduler.Placement) -> None:
        """Hold a CPU slot and start the step's worker."""
        folder = step_dir(work.key)
        control.clear(folder)
        prefs = settings.load_or_defaults()
        env = settings.worker_env({}, prefs)
        env["TUNEGRAPH_THREADS"] = str(prefs.cpu_threads or hardware.cpu_threads_per_run())
        hold = HOLD_PREFIX + work.key
        self.store.set_hold(hold, "cpu", place.hold_gib)
        self.placements[hold] = place
        self.emit_step(work.key, "schedule", message=place.message, device=place.device)

        def failed(why: str) -> None:
            self.release_data(work.key)
            self.emit_step(work.key, "status", state="failed", reason=why)

        self.start_worker(work, "recipe_worker", folder, env, failed)

    def release_data(self, key: str) -> None:
        """Forget a step and free its slot."""
        self.forget_job(self.data_jobs, key, HOLD_PREFIX + key)

    def watch_data(self) -> None:
        """Settle the step workers that have ended."""
        for work, code in self.ended_jobs(self.data_jobs, lambda w: step_dir(w.key)):
            self.finish_data(work, code)

    def finish_data(self, work: DataWork, code: int | None, cancelled: bool = False) -> str:
        """A step worker ended: free its slot and settle a state it could not write; the step's
        state now."""
        self.release_data(work.key)
        state, _ = run_state(step_dir(work.key))
        if cancelled and cancel_overrides(state):
            self.emit_step(work.key, "status", state="cancelled", reason="cancelled by the user")
            return "cancelled"
        if state not in TERMINAL_STATES:
            why = f"the data worker exited with code {code}" if code is not None else "it died"
            self.emit_step(work.key, "status", state="failed", reason=f"interrupted: {why}")
            return "failed"
        return state

    def reconcile_data(self) -> None:
        """On start: re-adopt live step workers (and their slots), re-queue steps still waiting,
        fail those whose worker died unwatched (submitting again goes on from what they kept)."""
        root = paths.data_dir() / "recipes"
        if not root.is_dir():
            return
        for folder in sorted(root.iterdir()):
            if not (folder / STEP_FILE).is_file():
                continue
            state, _ = run_state(folder)
            if state not in LIVE_STATES:
                continue
            sup_events = list(read_events(folder / SUPERVISOR_LOG))
            queued = next((e for e in reversed(sup_events) if e.get("state") == "queued"), None)
            work = DataWork(folder.name, queued.ts if queued else time.time())
            if runs.worker_alive(folder):
                work.started = True
                self.data_jobs[folder.name] = work
                place = scheduler.Placement("cpu", [], 0.0, "re-adopted")
                self.placements[HOLD_PREFIX + folder.name] = place
                self.store.set_hold(HOLD_PREFIX + folder.name, "cpu", 0.0)
            elif state == "queued":
                self.data_jobs[folder.name] = work
            else:
                reason = "interrupted: the data worker died while nobody was watching"
                self.emit_step(folder.name, "status", state="failed", reason=reason)

    # -- runs that read the steps' outputs -------------------------------------------------------
    def hold_for_data(self, run: dict, spec: JobSpec) -> bool:
        """True while queued `run` must wait for its data steps (saying why, once per change);
        fails the run when one of them failed."""
        pending = [s for s in spec.data_steps if not step_done(s)]
        if not pending:
            return False
        for step in pending:
            folder = step_dir(step["key"])
            state, data = run_state(folder) if folder.is_dir() else (None, {})
            if state in ("failed", "cancelled", "refused") and step["key"] not in self.data_jobs:
                reason = (
                    f"its data step {step_label(step)} {state}: {data.get('reason') or ''}"
                ).rstrip(": ")
                hint = "Fix the data node, then run the graph again: the step is made again."
                self.emit(
                    run["id"], "error", **{"class": "DataError", "message": reason, "hint": hint}
                )
                self.emit(run["id"], "status", state="failed", reason=reason)
                return True
        first = pending[0]
        progress = step_progress(first["key"])
        reason = f"waiting for its data: {step_label(first)}" + (
            f" ({progress})" if progress else ""
        )
        if run.get("reason") != reason:
            self.emit(run["id"], "status", state="queued", reason=reason)
        return True
