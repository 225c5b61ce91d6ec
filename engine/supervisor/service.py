"""The supervisor: one background process per data directory that owns the queue and the workers.

Clients (CLI commands, the app's bridge) only add rows to the `commands` table and read the store.
The supervisor takes those commands (engine.supervisor.commands), places queued runs on GPUs by
VRAM holds (or CPU slots), starts workers through an executor (engine.training.executors: detached local
processes by default, a Ray cluster for runs whose target is "cluster", engine.supervisor.cluster_runs),
ingests both event logs of every live run, turns dead workers into `failed`/`retrying` states, and
writes `supervisor.jsonl` (its only writer). A chained run waits for the run it starts from
(engine.supervisor.chains). An exclusive lock on `<data_dir>/supervisor.lock`
keeps it single (engine.supervisor.process starts, finds and stops it); it exits after
`idle_exit_s` with nothing to do. It imports neither torch nor Ray: estimates arrive with the
submit command or come from a helper process, and the Ray connection lives in a bridge process
(engine.cluster.executor).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time

from engine import control, hardware, paths, settings
from engine.errors import EngineMissingError, TunegraphError
from engine.events import LIVE_STATES, TERMINAL_STATES, EventLog, cancel_overrides, run_state
from engine.plan import calibration
from engine.rundir import SPEC_FILE, SUPERVISOR_LOG
from engine.spec import JobSpec
from engine.store.index import Store
from engine.supervisor import scheduler
from engine.supervisor.chains import ChainedRuns
from engine.supervisor.cluster_runs import ClusterRuns
from engine.supervisor.commands import ClientCommands
from engine.supervisor.data_steps import DataSteps, DataWork
from engine.supervisor.evals import EvalJobs, EvalWork
from engine.supervisor.groups import SharedBases
from engine.supervisor.recovery import MAX_RETRIES, nothing_left, oom_fallback
from engine.supervisor.sweeps import SweepStudies
from engine.training import launch as runs
from engine.training.checkpoints import drop_torn_checkpoints, has_checkpoint
from engine.training.executors import Executor, GroupExecutor, LocalExecutor

TICK_S = 0.25
HOLD_MARGIN = 1.1
log = logging.getLogger("tunegraph.supervisor")


class Supervisor(
    ClientCommands, ClusterRuns, EvalJobs, ChainedRuns, SweepStudies, DataSteps, SharedBases
):
    """The queue and the workers of one data directory (run by engine.supervisor.process)."""

    def __init__(self, store: Store | None = None, idle_exit_s: float | None = None):
        self.store = store or Store()
        self.idle_exit_s = (
            idle_exit_s
            if idle_exit_s is not None
            else float(os.environ.get("TUNEGRAPH_SUPERVISOR_IDLE", "180"))
        )
        self.local = LocalExecutor()
        self.grouped = GroupExecutor()  # runs sharing one base in a group process (groups.py)
        self.clusters: dict[str, Executor] = {}  # address -> Ray executor, made on first use
        self.procs: dict[str, Executor] = {}  # live workers we watch -> what runs them
        self.lost: dict[str, float] = {}  # cluster runs out of reach -> since when
        self.waiting_note: dict[str, str] = {}  # queued cluster runs -> why they wait
        self.placements: dict[str, scheduler.Placement] = {}
        self.cancelling: dict[str, float] = {}
        self.parked: set[str] = set()  # chained runs waiting on a paused or failed upstream
        # run -> (estimate helper, submit command id, started at)
        self.estimating: dict[str, tuple[subprocess.Popen, int, float]] = {}
        self.suspended: set[int] = set(settings.load_or_defaults().suspended_gpus)
        self.evals: dict[str, EvalWork] = {}  # queued and running eval jobs (evals.py)
        self.eval_cancelling: set[str] = set()
        self.studies: dict = {}  # running sweeps by study name (sweeps.py)
        self.pruning: dict[str, str] = {}  # trial runs asked to prune -> why
        self.data_jobs: dict[str, DataWork] = {}  # queued and running data steps (data_steps.py)
        self._stop = False
        self._last_busy = time.time()

    # -- logs ------------------------------------------------------------------------------------
    def emit(self, run_id: str, kind: str, **data) -> None:
        """Write an event to the run's supervisor.jsonl and ingest it into the store."""
        with EventLog(paths.runs_dir() / run_id / SUPERVISOR_LOG) as elog:
            elog.emit(kind, **data)
        self.store.ingest(paths.runs_dir() / run_id)

    def state(self, run_id: str) -> str | None:
        """The run's current state from its event logs."""
        return run_state(paths.runs_dir() / run_id)[0]

    # -- main loop -------------------------------------------------------------------------------
    def serve(self) -> None:
        """The main loop: tick until SIGTERM, a stop command or `idle_exit_s` with nothing to do."""
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "_stop", True))
        self.reconcile()
        self.reconcile_evals()
        self.reconcile_sweeps()
        self.reconcile_data()
        try:
            while not self._stop:
                try:
                    busy = self.tick()
                except Exception:  # e.g. the database stayed locked: log it, try again
                    log.exception("supervisor tick failed")
                    busy = True
                now = time.time()
                if busy:
                    self._last_busy = now
                elif now - self._last_busy > self.idle_exit_s:
                    log.info("idle for %.0f s: exiting", self.idle_exit_s)
                    break
                time.sleep(TICK_S)
        finally:
            self.abandon_estimates()
            for executor in self.clusters.values():
                executor.close()

    def tick(self) -> bool:
        """One round: commands, workers, scheduling. Returns True while anything is live.
        Commands are answered once the round has scheduled: a client whose runs were submitted
        together finds them placed (or waiting) when its answers come."""
        answers = []
        for cmd in self.store.take_commands():
            try:
                result = self.handle(cmd)
            except Exception as exc:  # a bad command must not take the supervisor down
                log.exception("command %s failed", cmd)
                result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            if result is not None:  # None: answered later (a submit waiting for its estimate)
                answers.append((cmd["id"], result))
        try:
            self.watch_estimates()
            self.watch_workers()
            sweeping = self.drive_sweeps()  # before scheduling: a trial asked now starts now
            self.watch_data()
            self.schedule_data()  # data steps first: the runs that read them wait for them
            self.schedule()
        finally:
            for cmd_id, result in answers:
                self.store.finish_command(cmd_id, result)
        self.watch_evals()
        self.schedule_evals()  # after the runs: a run waiting for memory goes first
        queued = [r for r in self.store.list_runs(state="queued") if r["id"] not in self.parked]
        live = self.procs or queued or self.estimating or self.evals or self.data_jobs
        return bool(live or sweeping)

    # -- workers ---------------------------------------------------------------------------------
    def schedule(self) -> None:
        """Start the queued runs that fit now, oldest first (cluster runs go to their cluster);
        runs of one base start together in one process when they can (engine.supervisor.groups)."""
        queued = sorted(
            self.store.list_runs(state="queued"), key=lambda r: (r["created_at"] or 0, r["id"])
        )
        gpus = hardware.gpus()
        ready: list[tuple[dict, JobSpec]] = []  # the local runs that may start now, oldest first
        for run in queued:
            run_id = run["id"]
            if run_id in self.procs:
                continue
            try:
                spec = JobSpec.load(paths.runs_dir() / run_id / SPEC_FILE)
            except (OSError, ValueError, TunegraphError) as err:  # must not hold up the rest
                self.emit(
                    run_id,
                    "error",
                    **{
                        "class": type(err).__name__,
                        "message": str(err),
                        "hint": "Submit the run again.",
                    },
                )
                self.emit(run_id, "status", state="failed", reason=str(err))
                continue
            if self.hold_for_upstream(run, spec):
                continue  # a chained run waits for the run it starts from
            if self.hold_for_data(run, spec):
                continue  # its data steps have not written its datasets yet
            if spec.resources.target == "cluster":
                self.start_cluster(run_id, spec, run["estimate"])
                continue  # the cluster queues it: Ray places it when it has the resources
            ready.append((run, spec))
        started: set[str] = set()
        sharing = len(ready) > 1 and settings.load_or_defaults().share_base
        for run, spec in ready:
            run_id = run["id"]
            if run_id in started:
                continue
            waiting = [r for r in ready if r[0]["id"] not in started]
            group = self.group_for((run, spec), waiting, gpus) if sharing else None
            if group is not None:  # it and later runs of its base share one process
                members, place = group
                self.start_group(members, place, gpus)
                started.update(r["id"] for r, _ in members)
                continue
            place = self.place_now(run["estimate"], spec, gpus)
            if place is None:
                continue  # FIFO per resource: later, smaller runs may still fit elsewhere
            self.start(run_id, place, gpus)
            started.add(run_id)

    def place_now(
        self, estimate: dict | None, spec: JobSpec, gpus, slots: int = 1
    ) -> scheduler.Placement | None:
        """Where a run of `spec` with `estimate` would start now, after what live runs hold
        (`slots`: the CPU slots it takes there, a group's one per member)."""
        return scheduler.place(
            estimate,
            gpus,
            self.held(),
            self.suspended,
            spec.resources.gpu_count,
            spec.resources.device != "cpu",
            hardware.cpu_slots() - self.cpu_busy() - (slots - 1),
        )

    def held(self) -> dict[int, float]:
        """GiB held on each GPU index by the live runs."""
        held: dict[int, float] = {}
        for h in self.store.holds():
            for gpu in str(h["gpu"]).split(","):
                if gpu not in ("", "cpu"):
                    held[int(gpu)] = held.get(int(gpu), 0.0) + float(h["gib"])
        return held

    def start(self, run_id: str, place: scheduler.Placement, gpus) -> None:
        """Hold the placement's memory and start the run's worker on it."""
        run_dir = paths.runs_dir() / run_id
        self.prepare(run_id)
        self.hold(run_id, place)
        env = self.worker_env(place, gpus)
        processes = JobSpec.load(run_dir / SPEC_FILE).resources.gpu_count
        if processes > 1 and place.device == "cpu":  # DDP on the CPU (gloo): split the cores
            env["TUNEGRAPH_THREADS"] = str(max(1, int(env["TUNEGRAPH_THREADS"]) // processes))
        try:
            self.local.start(run_id, run_dir, env, processes)
        except EngineMissingError as err:  # a frozen app without an engine: fail, never loop
            self.no_engine(run_id, err)
            return
        self.procs[run_id] = self.local

    def prepare(self, run_id: str) -> None:
        """Before a run's worker starts: no stale control request, no torn checkpoint (no
        worker of this run is alive here)."""
        run_dir = paths.runs_dir() / run_id
        control.clear(run_dir)
        drop_torn_checkpoints(run_dir)

    def hold(self, run_id: str, place: scheduler.Placement, **extra) -> None:
        """Hold the placement's memory for the run and say where it goes (its `schedule` event,
        with `extra` keys)."""
        gpu_key = ",".join(str(i) for i in place.gpus) if place.gpus else "cpu"
        self.store.set_hold(run_id, gpu_key, place.hold_gib)
        self.emit(
            run_id,
            "schedule",
            message=place.message,
            gpus=place.gpus,
            hold_gib=place.hold_gib,
            device=place.device,
            **extra,
        )
        self.placements[run_id] = place

    def worker_env(self, place: scheduler.Placement, gpus, slots: int = 1) -> dict:
        """A worker's environment: offline mode and threads from the settings (the threads of
        `slots` CPU slots), and the GPUs of its placement."""
        prefs = settings.load_or_defaults()
        env = settings.worker_env({}, prefs)  # offline mode, threads
        threads = prefs.cpu_threads or hardware.cpu_threads_per_run()
        env["TUNEGRAPH_THREADS"] = str(threads * slots)
        if place.device == "cuda":
            env["TUNEGRAPH_GPU_IDS"] = ",".join(str(i) for i in place.gpus)
            if not any(g.fake for g in gpus):
                env["CUDA_VISIBLE_DEVICES"] = env["TUNEGRAPH_GPU_IDS"]
        return env

    def no_engine(self, run_id: str, err: EngineMissingError) -> None:
        """A worker could not start for want of an engine: the run fails, saying how to set
        one up (never retried in a loop)."""
        run_dir = paths.runs_dir() / run_id
        self.placements.pop(run_id, None)
        self.store.release_hold(run_id)
        hint = "Set it up with Help > Set up training engine, or `tunegraph engine setup`."
        self.emit(
            run_id, "error", **{"class": type(err).__name__, "message": str(err), "hint": hint}
        )
        self.emit(
            run_id, "status", state="failed", reason=str(err), resumable=has_checkpoint(run_dir)
        )

    def kill(self, run_id: str) -> None:
        """Kill the run's worker through whatever runs it."""
        self.executor(run_id).kill(run_id, paths.runs_dir() / run_id)

    def watch_workers(self) -> None:
        """Ingest every live worker's events, tighten holds, and settle the ones that ended."""
        for run_id in list(self.procs):
            run_dir = paths.runs_dir() / run_id
            executor = self.procs[run_id]
            poll = executor.poll(run_id, run_dir)
            self.store.ingest(run_dir)
            if poll.lost:
                self.out_of_reach(run_id, poll.reason)
                continue
            if run_id in self.lost:
                self.reattached(run_id)
            if poll.alive:
                if run_id in self.cancelling and executor is not self.local:
                    self.kill(run_id)  # asked while the cluster was out of reach
                self.tighten_hold(run_id)
                continue
            self.finish(run_id, poll.returncode, poll.reason)

    def tighten_hold(self, run_id: str) -> None:
        """Lower a GPU run's hold to its measured peak (with HOLD_MARGIN) once it is known."""
        place = self.placements.get(run_id)
        if not place or place.device != "cuda" or self.procs.get(run_id) is self.grouped:
            return  # a group member's peak is the whole group's
        if not str(self.store.run_json(run_id)["device"] or "").startswith("cuda"):
            return  # a worker on the CPU (fake GPUs) measures RAM, not VRAM
        peaks = [m.get("peak_mem_gib") for m in self.store.metrics(run_id)[-5:]]
        peaks = [p for p in peaks if p]
        if not peaks:
            return
        tightened = round(max(peaks) * HOLD_MARGIN, 2)
        if tightened < place.hold_gib - 0.05:
            place.hold_gib = tightened
            self.store.set_hold(run_id, ",".join(map(str, place.gpus)), tightened)
            self.emit(
                run_id,
                "schedule",
                message=f"hold tightened to {tightened:.1f} GiB "
                f"(measured peak {max(peaks):.1f} GiB)",
                hold_gib=tightened,
            )

    def finish(self, run_id: str, returncode: int | None, why: str | None = None) -> None:
        """A worker exited: release its hold, settle states the worker could not write, and start
        it again when it died without being asked (or ran out of memory) and retries are left."""
        run_dir = paths.runs_dir() / run_id
        self.store.ingest(run_dir)
        executor = self.procs.pop(run_id, None) or self.local
        if executor is self.grouped:
            self.regroup_holds(run_id)  # before it is forgotten: the others keep the base held
        left = self.left_group(run_id) if executor is self.grouped else None
        executor.release(run_id, run_dir)
        place = self.placements.pop(run_id, None)
        self.store.release_hold(run_id)
        state, data = run_state(run_dir)
        if run_id in self.cancelling:
            self.cancelling.pop(run_id)
            if cancel_overrides(state):
                self.emit(run_id, "status", state="cancelled", reason="cancelled by the user")
            return
        if self.settle_pruned(run_id, state):
            return
        if state in TERMINAL_STATES or state == "paused":
            if state == "completed" and executor is self.local:
                self.record_timing(run_id)
            if state == "failed" and self.out_of_memory(run_id):
                self.after_out_of_memory(run_id, place.device if place else "cpu")
            return
        if left is not None:  # split from its group (an out-of-memory there), or cannot share
            self.train_alone(run_id, left)
            return
        # the worker died without saying why (killed, crashed hard)
        reason = why or (
            f"the worker exited with code {returncode}"
            if returncode is not None
            else "the worker died"
        )
        self.retry_or_fail(run_id, f"interrupted: {reason}")

    def record_timing(self, run_id: str) -> None:
        """Keep what a run that completed in one go measured, so the next estimate of the same
        model on this device predicts from this machine's own speed (engine.plan.calibration)."""
        run = self.store.run_json(run_id)
        estimate = run.get("estimate") or {}
        key, work = estimate.get("calibration_key"), estimate.get("work")
        if not key or not work or len(run["attempts"]) != 1:
            return  # no prediction to learn from, or a run that was paused or retried
        placed = [e["ts"] for e in self.store.events(run_id, kinds="schedule") if "device" in e]
        states = {
            e["state"]: e["ts"]
            for e in self.store.events(run_id, kinds="status", source="worker")
            if e.get("state") in ("training", "evaluating", "completed")
        }
        if not placed or len(states) < 3:
            return
        try:
            calibration.record(
                key,
                calibration.sample_from_phases(
                    work, placed[-1], states["training"], states["evaluating"], states["completed"]
                ),
            )
        except OSError as err:  # a full disk must not stop the supervisor
            log.warning("could not record the run's timing: %s", err)

    def out_of_memory(self, run_id: str) -> bool:
        """The worker's last error was a (CUDA) out-of-memory."""
        errors = self.store.events(run_id, kinds=["error"], source="worker")
        return bool(errors) and "OutOfMemoryError" in str(errors[-1].get("class"))

    def auto_retries(self, run_id: str) -> int:
        """Automatic restarts since the user last submitted or resumed the run."""
        count = 0
        for event in self.store.events(run_id, kinds="status", source="supervisor"):
            if event.get("state") == "retrying":
                count += 1
            elif event.get("state") == "queued" and event.get("reason") != "retrying":
                count = 0
        return count

    def retry_or_fail(self, run_id: str, reason: str, change: str | None = None) -> None:
        """`retrying` (from the last checkpoint, or step 0) while retries are left, else `failed`
        (always resumable by the user)."""
        run_dir = paths.runs_dir() / run_id
        done = self.auto_retries(run_id)
        if done >= MAX_RETRIES:
            self.emit(
                run_id,
                "status",
                state="failed",
                reason=f"{reason} (after {done} automatic retries)",
                resumable=True,
            )
            return
        drop_torn_checkpoints(run_dir)
        start = "its last checkpoint" if has_checkpoint(run_dir) else "step 0 (no checkpoint yet)"
        text = f"{reason}; restarting from {start}, retry {done + 1} of {MAX_RETRIES}"
        if change:
            text += f", with {change}"
        self.emit(run_id, "status", state="retrying", reason=text, change=change)
        self.emit(run_id, "status", state="queued", reason="retrying")

    def after_out_of_memory(self, run_id: str, device: str) -> None:
        """Climb the out-of-memory ladder (engine.supervisor.recovery): change the run's spec and
        start it again, or leave it failed, saying why, when nothing is left to try."""
        run_dir = paths.runs_dir() / run_id
        if self.auto_retries(run_id) >= MAX_RETRIES:
            self.retry_or_fail(run_id, "CUDA out of memory")  # failed, saying how often it tried
            return
        spec = JobSpec.load(run_dir / SPEC_FILE)
        rung = oom_fallback(spec, device)
        if rung is None:
            reason = nothing_left(spec, device)
            self.emit(run_id, "status", state="failed", reason=reason, resumable=True)
            return
        changed, what = rung
        changed.save(run_dir / SPEC_FILE)
        self.store.update_spec(run_id, changed)
        self.emit(run_id, "log", level="warning", message=f"out of memory: retrying with {what}")
        self.retry_or_fail(run_id, "CUDA out of memory", change=what)

    # -- crash recovery --------------------------------------------------------------------------
    def reconcile(self) -> None:
        """On start: re-adopt live workers (and group processes), settle dead ones, restore
        holds."""
        self.grouped.adopt_groups(paths.groups_dir())
        for run_dir in sorted(paths.runs_dir().iterdir()):
            if not (run_dir / SPEC_FILE).is_file():
                continue
            self.store.ingest(run_dir)
            run_id = run_dir.name
            state, _ = run_state(run_dir)
            if state not in LIVE_STATES:
                continue
            executor = self.executor(run_id)
            if executor is not self.local:
                self.readopt_cluster_run(run_id, run_dir, executor)
                continue
            if state == "queued" and not runs.worker_alive(run_dir):
                continue  # still waiting for a place (a worker just started is adopted below)
            if state == "retrying":
                self.emit(run_id, "status", state="queued", reason="retrying")
                continue
            if runs.worker_alive(run_dir):
                worker = self.grouped if self.grouped.adopt(run_id, run_dir) else self.local
                hold = next((h for h in self.store.holds() if h["run_id"] == run_id), None)
                gpus = [int(g) for g in str(hold["gpu"]).split(",") if g.isdigit()] if hold else []
                self.placements[run_id] = scheduler.Placement(
                    "cuda" if gpus else "cpu",
                    gpus,
                    float(hold["gib"]) if hold else 0.0,
                    "re-adopted",
                )
                if worker is self.local:
                    self.local.adopt(run_id, run_dir)
                self.procs[run_id] = worker
                self.emit(
                    run_id,
                    "log",
                    level="info",
                    message="supervisor restarted: re-adopted the live worker",
                )
            else:
                self.store.release_hold(run_id)
                self.retry_or_fail(run_id, "interrupted: the worker died while nobody was watching")
        live = set(self.procs)
        for h in self.store.holds():
            if h["run_id"] not in live:
                self.store.release_hold(h["run_id"])
