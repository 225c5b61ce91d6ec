"""Reading sweeps off the UI thread: `engine.sweep.report` opens Optuna's storage and computes
parameter importances (PED-ANOVA), which takes a moment, so each read runs on a one-thread pool (as
app.data_checks does) with its own `Store`, and its result arrives as a signal on the GUI thread.

`study_of(runs)` says which study a selection of runs are the trials of (the runs' spec.trial).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from PySide6 import QtCore


def trial_of(run: dict) -> dict:
    """The run's trial ({"study", "number", "params"}), or {} for a run no sweep started."""
    return dict((run.get("spec") or {}).get("trial") or {})


def study_of(runs: Iterable[dict]) -> str | None:
    """The study every one of `runs` is a trial of; None when they are not all trials of one."""
    studies = {trial_of(run).get("study") for run in runs}
    if len(studies) != 1:
        return None
    return studies.pop() or None


class _Signals(QtCore.QObject):
    loaded = QtCore.Signal(str, object)  # key, result
    failed = QtCore.Signal(str, str)  # key, one sentence


class _Read(QtCore.QRunnable):
    def __init__(self, key: str, fn: Callable, store_path: Path | None, signals: _Signals):
        super().__init__()
        self.key, self.fn, self.store_path, self.signals = key, fn, store_path, signals

    def run(self) -> None:
        from engine.errors import TunegraphError
        from engine.store.index import Store

        try:
            with Store(self.store_path) as store:
                result = self.fn(store)
        except (TunegraphError, KeyError, ValueError) as err:
            self.signals.failed.emit(self.key, str(err))
        except Exception as err:  # noqa: BLE001 - one sentence to the view, never a raw trace
            import traceback

            traceback.print_exc()
            self.signals.failed.emit(self.key, f"{type(err).__name__}: {err}")
        else:
            self.signals.loaded.emit(self.key, result)


class SweepReader(QtCore.QObject):
    """Runs `fn(store)` reads one at a time in the background; `loaded(key, result)` or
    `failed(key, message)` when each is done. A key already being read is not queued again."""

    loaded = QtCore.Signal(str, object)
    failed = QtCore.Signal(str, str)

    def __init__(self, store_path: Path | str | None = None, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.store_path = Path(store_path) if store_path else None
        self.pool = QtCore.QThreadPool(self)
        self.pool.setMaxThreadCount(1)
        self.pending: set[str] = set()
        self._signals = _Signals(self)
        self._signals.loaded.connect(self._on_loaded)
        self._signals.failed.connect(self._on_failed)

    def read(self, key: str, fn: Callable) -> bool:
        """Queue a read; False when one of `key` is still under way."""
        if key in self.pending:
            return False
        self.pending.add(key)
        self.pool.start(_Read(key, fn, self.store_path, self._signals))
        return True

    def report(self, study: str) -> bool:
        """Read `engine.sweep.report.report(study)`."""
        from engine.sweep.report import report

        return self.read(f"report:{study}", lambda store: report(study, store))

    def summaries(self) -> bool:
        """Read `engine.sweep.report.summaries()`: one line per study."""
        from engine.sweep.report import summaries

        return self.read("summaries", summaries)

    @property
    def busy(self) -> bool:
        return bool(self.pending)

    def wait(self, timeout_ms: int = 30000) -> bool:
        """Wait for the queued reads (tests, closing); True when none is left running."""
        return self.pool.waitForDone(timeout_ms)

    def _on_loaded(self, key: str, result: object) -> None:
        self.pending.discard(key)
        self.loaded.emit(key, result)

    def _on_failed(self, key: str, message: str) -> None:
        self.pending.discard(key)
        self.failed.emit(key, message)
