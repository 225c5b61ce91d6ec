"""The QThread bridge between the store and the run views: the UI thread never waits on either.

`RunBridge.start()` starts a reader thread that opens its own `Store`, polls it ~4 times a second
through `engine.store.watch.RunWatcher` and emits what changed as signals (queued to the GUI thread).
Commands (cancel, pause, resume, continue) run on a second thread, because `engine.supervisor.client` waits
for the supervisor's answer. Exports run as an `<engine python> -m app export` child process, so the UI
process never imports torch.
"""

from __future__ import annotations

import json
import queue
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6 import QtCore

from engine.errors import TunegraphError

POLL_S = 0.25
PROGRESS_LINE = re.compile(r"\[\s*(\d+)%\]\s*(.*)")  # `tunegraph export`'s "[ 40%] message"


class _PollThread(QtCore.QThread):
    changed = QtCore.Signal(object)  # list of run dicts
    removed = QtCore.Signal(object)  # list of run ids
    points = QtCore.Signal(object)  # list of engine.store.watch.MetricBatch
    failed = QtCore.Signal(str)

    def __init__(self, store_path: Path | None, interval_s: float, parent: QtCore.QObject):
        super().__init__(parent)
        self.store_path = store_path
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._subs: list[tuple[bool, str]] = []
        self._lock = threading.Lock()

    def run(self) -> None:
        from engine.store.index import Store
        from engine.store.watch import RunWatcher

        try:
            store = Store(self.store_path)
        except Exception as err:  # noqa: BLE001 - shown to the user, thread ends cleanly
            self.failed.emit(str(err))
            return
        watcher = RunWatcher(store)
        try:
            while not self._stop.is_set():
                with self._lock:
                    subs, self._subs = self._subs, []
                for on, run_id in subs:
                    (watcher.subscribe if on else watcher.unsubscribe)(run_id)
                try:
                    update = watcher.poll()
                except Exception as err:  # noqa: BLE001 - e.g. database busy: try again next tick
                    self.failed.emit(str(err))
                    update = None
                if update and update.changed:
                    self.changed.emit([with_clock(store, run) for run in update.changed])
                if update and update.removed:
                    self.removed.emit(update.removed)
                if update and update.batches:
                    self.points.emit(update.batches)
                self._wake.wait(self.interval_s)
                self._wake.clear()
        finally:
            store.close()

    def subscribe(self, run_id: str, on: bool) -> None:
        with self._lock:
            self._subs.append((on, run_id))
        self._wake.set()

    def poke(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()


def with_clock(store, run: dict) -> dict:
    """The run with its training time (engine.store.timing.training_clock), read from its status
    events; a status event that cannot be read leaves the time unknown rather than the row."""
    from engine.store.timing import training_clock

    try:
        clock = training_clock(store.events(run["id"], kinds="status"))
    except Exception:  # noqa: BLE001 - e.g. database busy: the next change reads it again
        clock = {"training_s": None, "training_since": None}
    return {**run, **clock}


class _CommandThread(QtCore.QThread):
    """Runs (label, run_id, fn(store)) jobs one by one; fn may wait on the supervisor."""

    done = QtCore.Signal(str, str, object)
    failed = QtCore.Signal(str, str, str)

    def __init__(self, store_path: Path | None, parent: QtCore.QObject):
        super().__init__(parent)
        self.store_path = store_path
        self.jobs: queue.Queue = queue.Queue()

    def run(self) -> None:
        from engine.store.index import Store

        store = Store(self.store_path)
        try:
            while True:
                job = self.jobs.get()
                if job is None:
                    return
                label, run_id, fn = job
                try:
                    self.done.emit(label, run_id, fn(store))
                except TunegraphError as err:
                    self.failed.emit(label, run_id, str(err))
                except Exception as err:  # noqa: BLE001 - shown on the run, never a raw trace
                    self.failed.emit(label, run_id, f"{type(err).__name__}: {err}")
        finally:
            store.close()


class RunBridge(QtCore.QObject):
    """Signals for the run views; start() once, stop() before the window closes."""

    runsChanged = QtCore.Signal(object)  # noqa: N815 - Qt signal naming
    runsRemoved = QtCore.Signal(object)  # noqa: N815
    pointsArrived = QtCore.Signal(object)  # noqa: N815
    commandDone = QtCore.Signal(str, str, object)  # noqa: N815 - action, run id, result
    commandFailed = QtCore.Signal(str, str, str)  # noqa: N815 - action, run id, message
    exportProgress = QtCore.Signal(str, float, str)  # noqa: N815 - run id, fraction, message
    error = QtCore.Signal(str)

    def __init__(
        self,
        store_path: Path | str | None = None,
        interval_s: float = POLL_S,
        parent: QtCore.QObject | None = None,
    ):
        super().__init__(parent)
        self.store_path = Path(store_path) if store_path else None
        self.runs: dict[str, dict] = {}
        self._poller = _PollThread(self.store_path, interval_s, self)
        self._poller.changed.connect(self._on_changed)
        self._poller.removed.connect(self._on_removed)
        self._poller.points.connect(self.pointsArrived)
        self._poller.failed.connect(self.error)
        self._commands = _CommandThread(self.store_path, self)
        self._commands.done.connect(self._on_done)
        self._commands.failed.connect(self.commandFailed)
        self._exports: list[QtCore.QProcess] = []
        self._exporting: dict[str, int] = {}  # run id -> exports of it running
        self._subscribers: dict[str, int] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._poller.start()
        self._commands.start()

    def stop(self) -> None:
        """Stop both threads and any export child, and wait for them."""
        self._poller.stop()
        self._commands.jobs.put(None)
        for proc in self._exports:
            proc.kill()
            proc.waitForFinished(3000)
        self._exports = []
        self._poller.wait()
        self._commands.wait()

    def refresh(self) -> None:
        """Poll now rather than at the next tick."""
        self._poller.poke()

    # -- metric subscriptions (reference-counted: several views may chart one run) ------------
    def subscribe(self, run_id: str) -> None:
        self._subscribers[run_id] = self._subscribers.get(run_id, 0) + 1
        self._poller.subscribe(run_id, True)  # every subscriber gets a fresh full reset

    def unsubscribe(self, run_id: str) -> None:
        left = self._subscribers.get(run_id, 0) - 1
        if left > 0:
            self._subscribers[run_id] = left
            return
        self._subscribers.pop(run_id, None)
        self._poller.subscribe(run_id, False)

    # -- commands ----------------------------------------------------------------------------
    def control(self, action: str, run_id: str) -> None:
        """cancel / pause / resume through the supervisor (engine.supervisor.client.control)."""
        from engine.supervisor import client

        self.submit_job(action, run_id, lambda store: client.control(store, action, run_id))

    def stop_data(self, key: str) -> None:
        """Stop a data step (a data node's "Stop making this data")."""
        from engine.supervisor import client

        self.submit_job("stop data", key, lambda store: client.cancel_data(store, key))

    def continue_run(self, run_id: str, epochs: float) -> None:
        from engine.supervisor import client

        self.submit_job(
            "continue", run_id, lambda store: client.continue_run(store, run_id, epochs)
        )

    def submit_job(self, label: str, run_id: str, fn: Callable) -> None:
        self._commands.jobs.put((label, run_id, fn))

    def export(self, run_id: str, args: Sequence[str] = ()) -> QtCore.QProcess | None:
        """`tunegraph export RUN ARGS --json` as a child process in the engine's Python (it loads
        torch, the UI must not); its "[ 40%] …" stderr lines become exportProgress, its JSON the
        result of commandDone. Without an engine, commandFailed says how to set it up."""
        from engine.errors import EngineMissingError
        from engine.setup.interpreters import engine_python

        try:
            python = engine_python()
        except EngineMissingError as err:
            message = str(err)
            QtCore.QTimer.singleShot(
                0, self, lambda: self.commandFailed.emit("export", run_id, message)
            )
            return None
        proc = QtCore.QProcess(self)
        self._exports.append(proc)
        self._exporting[run_id] = self._exporting.get(run_id, 0) + 1
        lines: list[str] = [""]  # stderr lines (the last one maybe unfinished)

        def progress(flush: bool = False) -> None:
            text = lines.pop() + bytes(proc.readAllStandardError()).decode("utf-8", "replace")
            parts = text.split("\n")
            rest = "" if flush else parts.pop()
            for line in parts:
                lines.append(line)
                found = PROGRESS_LINE.match(line.strip())
                if found:
                    self.exportProgress.emit(run_id, int(found[1]) / 100, found[2])
            lines.append(rest)

        def finished(code: int, _status) -> None:
            progress(flush=True)
            out = bytes(proc.readAllStandardOutput()).decode("utf-8", "replace").strip()
            if proc in self._exports:
                self._exports.remove(proc)
            self._exporting[run_id] -= 1
            if not self._exporting[run_id]:
                del self._exporting[run_id]
            said = [line for line in lines if line.strip() and not PROGRESS_LINE.match(line)]
            if code == 0:
                try:
                    result: object = json.loads(out)
                except ValueError:
                    result = out
                self.commandDone.emit("export", run_id, result)
            else:
                self.commandFailed.emit(
                    "export", run_id, said[-1] if said else f"export exited with code {code}"
                )
            proc.deleteLater()

        def not_started(error: QtCore.QProcess.ProcessError) -> None:
            if error == QtCore.QProcess.ProcessError.FailedToStart:
                lines.append(f"{python} could not be started: {proc.errorString()}")
                finished(-1, None)

        proc.readyReadStandardError.connect(lambda: progress())
        proc.finished.connect(finished)
        proc.errorOccurred.connect(not_started)
        proc.start(python, ["-m", "app", "export", run_id, *args, "--json"])
        self.exportProgress.emit(run_id, 0.0, "Export: starting")
        return proc

    def exporting(self, run_id: str) -> bool:
        """True while an export of `run_id` started here is running."""
        return run_id in self._exporting

    # -- slots -------------------------------------------------------------------------------
    def _on_changed(self, runs: list) -> None:
        for run in runs:
            self.runs[run["id"]] = run
        self.runsChanged.emit(runs)

    def _on_removed(self, ids: list) -> None:
        for run_id in ids:
            self.runs.pop(run_id, None)
        self.runsRemoved.emit(ids)

    def _on_done(self, label: str, run_id: str, result: object) -> None:
        self.refresh()
        self.commandDone.emit(label, run_id, result)
