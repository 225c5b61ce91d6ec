"""The supervisor: one background process per data directory that owns the queue and the workers.

Clients (CLI commands, the app's bridge) only add rows to the `commands` table and read the store.
The supervisor takes those commands, places queued runs on GPUs by VRAM holds (or CPU slots),
starts workers through an executor (engine.executors: detached local processes by default, a Ray
cluster for runs whose target is "cluster"), ingests both event logs of every live run, turns dead
workers into `failed`/`retrying` states, and writes `supervisor.jsonl` (its only writer). An
exclusive lock on `<data_dir>/supervisor.lock` keeps it single; it exits after `idle_exit_s` with
nothing to do. It imports neither torch nor Ray: estimates arrive with the submit command or come
from a helper process, and the Ray connection lives in a bridge process (engine.ray_executor).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from engine import control, hardware, paths, runs, scheduler, settings
from engine.errors import EngineMissingError, TunegraphError
from engine.events import (
    LIVE_STATES,
    SUPERVISOR_LOG,
    TERMINAL_STATES,
    EventLog,
    run_state,
)
from engine.executors import Executor, LocalExecutor
from engine.spec import JobSpec
from engine.store import Store
from engine.supervisor_cluster import ClusterRuns

LOCK_FILE = "supervisor.lock"
TICK_S = 0.25
MAX_ATTEMPTS = 3
ESTIMATE_TIMEOUT_S = 300.0
HOLD_MARGIN = 1.1
log = logging.getLogger("tunegraph.supervisor")


class Supervisor(ClusterRuns):
    def __init__(self, store: Store | None = None, idle_exit_s: float | None = None):
        self.store = store or Store()
        self.idle_exit_s = (
            idle_exit_s
            if idle_exit_s is not None
            else float(os.environ.get("TUNEGRAPH_SUPERVISOR_IDLE", "180"))
        )
        self.local = LocalExecutor()
        self.clusters: dict[str, Executor] = {}  # address -> Ray executor, made on first use
        self.procs: dict[str, Executor] = {}  # live workers we watch -> what runs them
        self.lost: dict[str, float] = {}  # cluster runs out of reach -> since when
        self.waiting_note: dict[str, str] = {}  # queued cluster runs -> why they wait
        self.placements: dict[str, scheduler.Placement] = {}
        self.attempts: dict[str, int] = {}
        self.cancelling: dict[str, float] = {}
        # run -> (estimate helper, submit command id, started at)
        self.estimating: dict[str, tuple[subprocess.Popen, int, float]] = {}
        self.suspended: set[int] = set(user_settings().suspended_gpus)
        self._stop = False
        self._last_busy = time.time()

    # -- logs ------------------------------------------------------------------------------------
    def emit(self, run_id: str, kind: str, **data) -> None:
        with EventLog(paths.runs_dir() / run_id / SUPERVISOR_LOG) as elog:
            elog.emit(kind, **data)
        self.store.ingest(paths.runs_dir() / run_id)

    def state(self, run_id: str) -> str | None:
        return run_state(paths.runs_dir() / run_id)[0]

    # -- main loop -------------------------------------------------------------------------------
    def serve(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "_stop", True))
        self.reconcile()
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

    def tick(self) -> bool:
        """One round: commands, workers, scheduling. Returns True while anything is live."""
        for cmd in self.store.take_commands():
            try:
                result = self.handle(cmd)
            except Exception as exc:  # a bad command must not take the supervisor down
                log.exception("command %s failed", cmd)
                result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            if result is not None:  # None: answered later (a submit waiting for its estimate)
                self.store.finish_command(cmd["id"], result)
        self.watch_estimates()
        self.watch_workers()
        self.schedule()
        queued = self.store.list_runs(state="queued")
        return bool(self.procs or queued or self.estimating)

    # -- commands --------------------------------------------------------------------------------
    def handle(self, cmd: dict) -> dict | None:
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
        if action == "stop":
            self._stop = True
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

    def submit(self, run_id: str, estimate: dict | None) -> dict:
        run_dir = paths.runs_dir() / run_id
        spec = JobSpec.load(run_dir / "spec.json")
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
        if not refused and wants_gpu and user_settings().gpu_policy == "refuse":
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

    # -- workers ---------------------------------------------------------------------------------
    def schedule(self) -> None:
        queued = sorted(
            self.store.list_runs(state="queued"), key=lambda r: (r["created_at"] or 0, r["id"])
        )
        gpus = hardware.gpus()
        for run in queued:
            run_id = run["id"]
            if run_id in self.procs:
                continue
            try:
                spec = JobSpec.load(paths.runs_dir() / run_id / "spec.json")
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
            if spec.resources.target == "cluster":
                self.start_cluster(run_id, spec, run["estimate"])
                continue  # the cluster queues it: Ray places it when it has the resources
            held = self.held()
            cpu_busy = sum(1 for p in self.placements.values() if p.device == "cpu")
            place = scheduler.place(
                run["estimate"],
                gpus,
                held,
                self.suspended,
                spec.resources.gpu_count,
                spec.resources.device != "cpu",
                hardware.cpu_slots() - cpu_busy,
            )
            if place is None:
                continue  # FIFO per resource: later, smaller runs may still fit elsewhere
            self.start(run_id, place, gpus)

    def held(self) -> dict[int, float]:
        held: dict[int, float] = {}
        for h in self.store.holds():
            for gpu in str(h["gpu"]).split(","):
                if gpu not in ("", "cpu"):
                    held[int(gpu)] = held.get(int(gpu), 0.0) + float(h["gib"])
        return held

    def start(self, run_id: str, place: scheduler.Placement, gpus) -> None:
        run_dir = paths.runs_dir() / run_id
        control.clear(run_dir)
        drop_torn_checkpoints(run_dir)  # no worker of this run is alive here
        prefs = user_settings()
        env = settings.worker_env({}, prefs)  # offline mode, threads
        env["TUNEGRAPH_THREADS"] = str(prefs.cpu_threads or hardware.cpu_threads_per_run())
        if place.device == "cuda":
            env["TUNEGRAPH_GPU_IDS"] = ",".join(str(i) for i in place.gpus)
            if not any(g.fake for g in gpus):
                env["CUDA_VISIBLE_DEVICES"] = env["TUNEGRAPH_GPU_IDS"]
        gpu_key = ",".join(str(i) for i in place.gpus) if place.gpus else "cpu"
        self.store.set_hold(run_id, gpu_key, place.hold_gib)
        self.emit(
            run_id,
            "schedule",
            message=place.message,
            gpus=place.gpus,
            hold_gib=place.hold_gib,
            device=place.device,
        )
        self.placements[run_id] = place
        self.attempts[run_id] = self.attempts.get(run_id, 0) + 1
        processes = JobSpec.load(run_dir / "spec.json").resources.gpu_count
        if processes > 1 and place.device == "cpu":  # DDP on the CPU (gloo): split the cores
            env["TUNEGRAPH_THREADS"] = str(max(1, int(env["TUNEGRAPH_THREADS"]) // processes))
        try:
            self.local.start(run_id, run_dir, env, processes)
        except EngineMissingError as err:  # a frozen app without an engine: fail, never loop
            self.placements.pop(run_id, None)
            self.store.release_hold(run_id)
            hint = "Set it up with Help > Set up training engine, or `tunegraph engine setup`."
            self.emit(
                run_id, "error", **{"class": type(err).__name__, "message": str(err), "hint": hint}
            )
            self.emit(
                run_id, "status", state="failed", reason=str(err), resumable=has_checkpoint(run_dir)
            )
            return
        self.procs[run_id] = self.local

    def kill(self, run_id: str) -> None:
        self.executor(run_id).kill(run_id, paths.runs_dir() / run_id)

    def watch_workers(self) -> None:
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
        place = self.placements.get(run_id)
        if not place or place.device != "cuda":
            return
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
        """A worker exited: release its hold and settle states the worker could not write."""
        run_dir = paths.runs_dir() / run_id
        self.store.ingest(run_dir)
        executor = self.procs.pop(run_id, None) or self.local
        executor.release(run_id, run_dir)
        self.placements.pop(run_id, None)
        self.store.release_hold(run_id)
        state, data = run_state(run_dir)
        if run_id in self.cancelling:
            self.cancelling.pop(run_id)
            if state != "cancelled":
                self.emit(run_id, "status", state="cancelled", reason="cancelled by the user")
            return
        if state in TERMINAL_STATES or state == "paused":
            if state == "failed" and self.transient(run_id):
                self.retry(run_id, data.get("reason") or "failed")
            return
        # the worker died without saying why (killed, crashed hard)
        reason = why or (
            f"the worker exited with code {returncode}"
            if returncode is not None
            else "the worker died"
        )
        if state == "starting" and self.attempts.get(run_id, 0) < MAX_ATTEMPTS:
            self.retry(run_id, f"{reason} while loading")
            return
        self.emit(
            run_id,
            "status",
            state="failed",
            reason=f"interrupted: {reason}",
            resumable=has_checkpoint(run_dir),
        )

    def transient(self, run_id: str) -> bool:
        """A CUDA out-of-memory at the very first step is worth another try (fragmentation)."""
        if self.attempts.get(run_id, 0) >= MAX_ATTEMPTS:
            return False
        errors = self.store.events(run_id, kinds=["error"])
        if not errors:
            return False
        last = errors[-1]["data"] if "data" in errors[-1] else errors[-1]
        run = self.store.run_json(run_id)
        return "OutOfMemoryError" in str(last.get("class")) and (run["step"] or 0) <= 1

    def retry(self, run_id: str, reason: str) -> None:
        attempt = self.attempts.get(run_id, 0)
        self.emit(
            run_id,
            "status",
            state="retrying",
            reason=f"{reason} (attempt {attempt} of {MAX_ATTEMPTS})",
        )
        self.emit(run_id, "status", state="queued", reason="retrying")

    # -- crash recovery --------------------------------------------------------------------------
    def reconcile(self) -> None:
        """On start: re-adopt live workers, settle dead ones, restore holds."""
        for run_dir in sorted(paths.runs_dir().iterdir()):
            if not (run_dir / "spec.json").is_file():
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
                hold = next((h for h in self.store.holds() if h["run_id"] == run_id), None)
                gpus = [int(g) for g in str(hold["gpu"]).split(",") if g.isdigit()] if hold else []
                self.placements[run_id] = scheduler.Placement(
                    "cuda" if gpus else "cpu",
                    gpus,
                    float(hold["gib"]) if hold else 0.0,
                    "re-adopted",
                )
                self.local.adopt(run_id, run_dir)
                self.procs[run_id] = self.local
                self.emit(
                    run_id,
                    "log",
                    level="info",
                    message="supervisor restarted: re-adopted the live worker",
                )
            else:
                self.store.release_hold(run_id)
                self.emit(
                    run_id,
                    "status",
                    state="failed",
                    reason="interrupted: the worker died while nobody was watching",
                    resumable=has_checkpoint(run_dir),
                )
        live = set(self.procs)
        for h in self.store.holds():
            if h["run_id"] not in live:
                self.store.release_hold(h["run_id"])


def user_settings() -> settings.Settings:
    """The user's settings; defaults when the file is unreadable (never stop the queue)."""
    try:
        return settings.load()
    except Exception:
        return settings.Settings()


def read_submission(run_dir: Path) -> dict:
    """What the client recorded at submission: parent, created_at, estimate."""
    try:
        return json.loads((Path(run_dir) / "submission.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's complete checkpoints, oldest step first.

    A worker killed while saving leaves a folder without `trainer_state.json` (the Trainer
    writes it last): that one cannot be resumed from and does not count.
    """
    folder = Path(run_dir) / "checkpoints"
    found = []
    for path in folder.glob("checkpoint-*") if folder.is_dir() else []:
        step = path.name.split("-", 1)[1]
        if step.isdigit() and _complete_checkpoint(path):
            found.append((int(step), path))
    return [path for _, path in sorted(found)]


def _complete_checkpoint(path: Path) -> bool:
    try:
        json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        return True
    except (OSError, ValueError):
        return False


def has_checkpoint(run_dir: Path) -> bool:
    """True when the run can be resumed: it has a complete checkpoint."""
    return bool(checkpoints(run_dir))


def drop_torn_checkpoints(run_dir: Path) -> None:
    """Delete checkpoint folders a dead worker left half-written, so a new worker resumes from
    the latest complete one (the Trainer takes the highest-numbered folder)."""
    complete = set(checkpoints(run_dir))
    for path in (Path(run_dir) / "checkpoints").glob("checkpoint-*"):
        if path.is_dir() and path not in complete:
            shutil.rmtree(path, ignore_errors=True)


def start_estimate(run_dir: Path) -> subprocess.Popen:
    """Estimate a run in a helper process in the engine's Python (the supervisor never imports
    torch); raises EngineMissingError when there is no engine."""
    from engine.interpreters import engine_python

    return subprocess.Popen(
        [engine_python(), "-m", "engine.estimate_report", str(run_dir)],
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


# -- process management --------------------------------------------------------------------------
def lock_path() -> Path:
    return paths.data_dir() / LOCK_FILE


def supervisor_pid() -> int | None:
    """The pid of the live supervisor of this data directory, or None."""
    import psutil

    try:
        info = json.loads(lock_path().read_text(encoding="utf-8"))
        proc = psutil.Process(info["pid"])
        if (
            abs(proc.create_time() - info["create_time"]) < 1.0
            and proc.is_running()
            and proc.status() != psutil.STATUS_ZOMBIE
        ):
            return info["pid"]
    except (OSError, ValueError, KeyError, psutil.Error):
        pass
    return None


def ensure_supervisor(timeout: float = 20.0) -> int:
    """Start the background supervisor for this data directory unless one runs; returns its pid."""
    from engine.interpreters import tunegraph_command

    pid = supervisor_pid()
    if pid:
        return pid
    kwargs: dict = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL}
    if os.name == "nt":
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | 0x00000008
    else:
        kwargs["start_new_session"] = True
    with open(paths.data_dir() / "supervisor.log", "ab") as err:
        subprocess.Popen(tunegraph_command("supervisor"), stderr=err, **kwargs)
    deadline = time.time() + timeout
    while time.time() < deadline:
        pid = supervisor_pid()
        if pid:
            return pid
        time.sleep(0.05)
    raise RuntimeError("the supervisor did not start; see supervisor.log in the data directory")


def stop_supervisor(timeout: float = 10.0) -> bool:
    """End the supervisor at once (workers keep running). True if one was stopped."""
    import psutil

    pid = supervisor_pid()
    if not pid:
        return False
    proc = psutil.Process(pid)
    proc.terminate()
    try:
        proc.wait(timeout)
    except psutil.TimeoutExpired:
        proc.kill()
    return True


def serve_locked(idle_exit_s: float | None = None) -> int:
    """Run the supervisor in this process if no other holds the lock; 0 when it ran."""
    import psutil

    path = lock_path()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.name == "nt":
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return 1
    os.ftruncate(fd, 0)
    os.write(
        fd, json.dumps({"pid": os.getpid(), "create_time": psutil.Process().create_time()}).encode()
    )
    logging.basicConfig(
        filename=paths.data_dir() / "supervisor.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    try:
        Supervisor(idle_exit_s=idle_exit_s).serve()
    finally:
        os.ftruncate(fd, 0)
        os.close(fd)
    return 0
