"""Run estimates for the confirmation, streamed from a helper process and kept for the app's life.

`EstimateStream.start(specs)` runs `engine_python() -m engine.plan.report --stream auto` with the
specs on stdin (the UI never imports torch) and emits `estimated(index, entry)` as each run's
line arrives, `finished()` once every run has answered, or `failed(message)` when the helper
cannot start or ends before answering them all. `cancel()` kills the helper. Every estimate that
arrives is kept in `CACHE` under `engine.plan.report.cache_key` (the spec's JSON, the device, the
GPUs, the dataset files' size and modification time), so the same runs confirmed again need no
helper at all.
"""

from __future__ import annotations

import json

from PySide6 import QtCore

from engine.errors import EngineMissingError
from engine.plan.report import cache_key
from engine.rundir import entry_command
from engine.setup.interpreters import engine_python
from engine.spec import JobSpec

DEVICE = "auto"  # the confirmation estimates each run for the device its node asks for
KILL_WAIT_MS = 3000


class EstimateCache:
    """Estimates by `cache_key`; an edited dataset file or spec gives a new key, so a kept
    estimate is never one for other inputs."""

    def __init__(self) -> None:
        self._estimates: dict[str, dict] = {}

    def get(self, spec: JobSpec, device: str = DEVICE) -> dict | None:
        """The kept estimate of `spec` as it is now, or None."""
        return self._estimates.get(cache_key(spec, device))

    def put(self, key: str, estimate: dict) -> None:
        self._estimates[key] = estimate

    def clear(self) -> None:
        self._estimates.clear()


CACHE = EstimateCache()


class EstimateStream(QtCore.QObject):
    """One helper process estimating a list of specs, one JSON line per spec."""

    estimated = QtCore.Signal(int, object)  # index into the specs started, the entry dict
    finished = QtCore.Signal()
    failed = QtCore.Signal(str)
    processes_started = 0  # helpers started by every stream of this process (tests count them)

    def __init__(self, parent: QtCore.QObject | None = None, cache: EstimateCache = CACHE):
        super().__init__(parent)
        self.cache = cache
        self.process: QtCore.QProcess | None = None
        # a helper that has answered every run and is exiting (unloading torch takes seconds)
        self.exiting: QtCore.QProcess | None = None
        self.keys: list[str] = []
        self.answered: set[int] = set()
        self._out = b""

    def start(self, specs: list[JobSpec]) -> None:
        """Estimate `specs` in a helper (cancelling one still going)."""
        self.cancel()
        try:
            python = engine_python()
        except EngineMissingError as err:
            message = str(err)
            QtCore.QTimer.singleShot(0, self, lambda: self.failed.emit(message))
            return
        self.keys = [cache_key(s, DEVICE) for s in specs]  # the files as they are when sent
        self.answered, self._out = set(), b""
        process = QtCore.QProcess(self)
        process.readyReadStandardOutput.connect(lambda p=process: self._read(p))
        process.finished.connect(lambda code, _status, p=process: self._done(p, code))
        process.errorOccurred.connect(lambda _err, p=process: self._error(p, python))
        self.process = process
        command = entry_command(python, "estimate", "--stream", DEVICE)
        type(self).processes_started += 1
        process.start(command[0], command[1:])
        process.write(json.dumps([s.to_dict() for s in specs]).encode("utf-8"))
        process.closeWriteChannel()

    def is_running(self) -> bool:
        return self.process is not None

    def cancel(self) -> None:
        """Kill the helper (and one still exiting) and wait for it: no process is left behind."""
        for process in (self.process, self.exiting):
            if process is None:
                continue
            process.blockSignals(True)
            if process.state() != QtCore.QProcess.ProcessState.NotRunning:
                process.kill()
                process.waitForFinished(KILL_WAIT_MS)
            process.deleteLater()
        self.process = self.exiting = None

    def _read(self, process: QtCore.QProcess) -> None:
        if process is not self.process:
            return
        self._out += bytes(process.readAllStandardOutput().data())
        *lines, self._out = self._out.split(b"\n")
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a stray print of a library: not ours
            index = entry.get("index") if isinstance(entry, dict) else None
            if not isinstance(index, int) or not 0 <= index < len(self.keys):
                continue
            self.answered.add(index)
            if isinstance(entry.get("estimate"), dict):
                self.cache.put(self.keys[index], entry["estimate"])
            self.estimated.emit(index, entry)
        if len(self.answered) == len(self.keys) and process is self.process:
            self.process, self.exiting = None, process  # done: no need to wait for its exit
            self.finished.emit()

    def _done(self, process: QtCore.QProcess, code: int) -> None:
        if process is self.process:  # the last lines, the very last one maybe without "\n"
            self._out += bytes(process.readAllStandardOutput().data()) + b"\n"
            self._read(process)  # hands the process to `exiting` when every run has answered
        if process is self.exiting:
            self.exiting = None
            process.deleteLater()
            return
        if process is not self.process:
            return
        self.process = None
        err = bytes(process.readAllStandardError().data()).decode(errors="replace").strip()
        process.deleteLater()
        last = err.splitlines()[-1] if err else f"the helper ended with exit code {code}"
        self.failed.emit(last.removeprefix("tunegraph: "))

    def _error(self, process: QtCore.QProcess, python: str) -> None:
        if (
            process is self.process
            and process.error() == QtCore.QProcess.ProcessError.FailedToStart
        ):
            self.process = None
            self.failed.emit(f"could not start {python}: {process.errorString()}")
