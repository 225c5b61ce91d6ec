"""Helper processes that print JSON (estimates, dataset previews), run with QProcess so the UI
never imports torch or transformers and the user can cancel at any time. Both need the training
engine, so they run under `engine.setup.interpreters.engine_python()`; without an engine, `failed` says
how to set it up."""

from __future__ import annotations

import json

from PySide6 import QtCore

from engine.errors import EngineMissingError
from engine.setup.interpreters import engine_python

KILL_WAIT_MS = 3000


class JsonProcess(QtCore.QObject):
    """Runs `python -m MODULE ARGS…`; emits `finished(parsed stdout)` or `failed(message)`."""

    finished = QtCore.Signal(object)
    failed = QtCore.Signal(str)

    def __init__(self, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.process: QtCore.QProcess | None = None
        self.python: str | None = None

    def start(self, module: str, args: list[str]) -> None:
        """Start `engine_python() -m MODULE ARGS` (cancelling a run still going)."""
        self.cancel()
        try:
            python = engine_python()
        except EngineMissingError as err:
            message = str(err)
            QtCore.QTimer.singleShot(0, self, lambda: self.failed.emit(message))
            return
        self.python = python
        process = QtCore.QProcess(self)
        process.finished.connect(lambda code, _status, p=process: self._done(p, code))
        process.errorOccurred.connect(lambda _err, p=process: self._error(p))
        self.process = process
        process.start(python, ["-m", module, *args])

    def is_running(self) -> bool:
        return (
            self.process is not None
            and self.process.state() != QtCore.QProcess.ProcessState.NotRunning
        )

    def cancel(self) -> None:
        """Kill a running process and wait for it (no child is left behind)."""
        process, self.process = self.process, None
        if process is None:
            return
        process.blockSignals(True)
        if process.state() != QtCore.QProcess.ProcessState.NotRunning:
            process.kill()
            process.waitForFinished(KILL_WAIT_MS)
        process.deleteLater()

    def _done(self, process: QtCore.QProcess, code: int) -> None:
        if process is not self.process:
            return
        self.process = None
        out = bytes(process.readAllStandardOutput().data()).decode(errors="replace")
        err = bytes(process.readAllStandardError().data()).decode(errors="replace").strip()
        process.deleteLater()
        try:
            data = json.loads(out)
        except json.JSONDecodeError:
            last = err.splitlines()[-1] if err else f"exit code {code}, no output"
            self.failed.emit(last.removeprefix("tunegraph: "))
            return
        self.finished.emit(data)

    def _error(self, process: QtCore.QProcess) -> None:
        if (
            process is self.process
            and process.error() == QtCore.QProcess.ProcessError.FailedToStart
        ):
            self.process = None
            self.failed.emit(f"could not start {self.python}: {process.errorString()}")
