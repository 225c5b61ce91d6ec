"""The canvas's background data checks: each Dataset node's whole file is read and converted
(engine.data.check) off the UI thread whenever its path (or the file) changes, and the canvas
re-compiles when a result arrives, so a missing file, a malformed line N or rows of no known
format become an error badge on the Dataset node and the modules it feeds cannot start.

`problem(ds, method)` answers at once from the cache (kept per file size and modification time)
and queues a check when the file has not been read as it is now; until then the node shows no
data error (the compile's first-row check still runs).
"""

from __future__ import annotations

from PySide6 import QtCore

from engine.data.check import cache_key, cached_problem, check_dataset
from engine.spec import DatasetSpec


class _Done(QtCore.QObject):
    finished = QtCore.Signal(object)  # the cache key checked


class _Check(QtCore.QRunnable):
    def __init__(self, ds: DatasetSpec, method: str, key: tuple, done: _Done):
        super().__init__()
        self.ds, self.method, self.key, self.done = ds, method, key, done

    def run(self) -> None:
        try:
            check_dataset(self.ds, self.method)
        finally:
            self.done.finished.emit(self.key)


class DataChecks(QtCore.QObject):
    """Whole-file checks of the Dataset nodes' files, one background thread at a time."""

    checked = QtCore.Signal()  # a result arrived: compile again to show it

    def __init__(self, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.pool = QtCore.QThreadPool(self)
        self.pool.setMaxThreadCount(1)
        self.pending: set[tuple] = set()
        self._done = _Done(self)
        self._done.finished.connect(self._on_finished)

    def problem(self, ds: DatasetSpec, method: str) -> str:
        """The file's problem if it was checked as it is now, else "" (and a check is queued)."""
        known = cached_problem(ds, method)
        if known is not None:
            return known
        key = cache_key(ds, method)
        if key is not None and key not in self.pending and ds.path.strip():
            self.pending.add(key)
            self.pool.start(_Check(ds, method, key, self._done))
        return ""

    @property
    def busy(self) -> bool:
        return bool(self.pending)

    def wait(self, timeout_ms: int = 30000) -> bool:
        """Wait for the queued checks (tests, shutdown); True when none is left running."""
        return self.pool.waitForDone(timeout_ms)

    def _on_finished(self, key: tuple) -> None:
        self.pending.discard(key)
        self.checked.emit()
