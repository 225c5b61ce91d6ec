"""The run panel's "Open in TensorBoard": a button and a link on the row of a run that reports to
TensorBoard (`report_to=tensorboard`) and has event files, and `TensorBoards`, the viewers it
started (engine.training.tensorboard_server), one per run, each ended when the panel closes.

The button is disabled, with a tooltip naming the install, when the engine's Python has no
TensorBoard. Nothing here blocks the UI: TensorBoard's readiness is polled on a timer; once it
answers its URL shows on the row and opens in the browser (QDesktopServices.openUrl).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from PySide6 import QtCore, QtGui, QtWidgets

from engine.errors import TunegraphError
from engine.setup.interpreters import engine_python
from engine.training.tensorboard_server import (
    INSTALL,
    TensorBoardProcess,
    event_dir,
    tensorboard_installed,
)

TENSORBOARD = "Open in TensorBoard"
POLL_MS = 300
READY_TIMEOUT_MS = 60_000


@functools.cache
def _installed(python: str) -> bool:
    return tensorboard_installed(python)


def availability() -> tuple[bool, str]:
    """(usable, tooltip): whether the engine's Python has TensorBoard, and what the button says."""
    try:
        python = engine_python()
    except TunegraphError as err:
        return False, str(err)
    if not _installed(python):
        return False, f"TensorBoard is not installed in the training engine: {INSTALL}"
    return True, "TensorBoard for this run's event files, in your browser"


class TensorBoardButton(QtWidgets.QWidget):
    """The row's button and, once a viewer runs, the link to it."""

    def __init__(self, on_click: Callable[[], None], parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.button = QtWidgets.QPushButton(TENSORBOARD)
        self.button.setAutoDefault(False)
        self.button.clicked.connect(lambda _=False: on_click())
        self.link = QtWidgets.QLabel()
        self.link.setOpenExternalLinks(True)
        self.link.hide()
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.button)
        layout.addWidget(self.link)

    def update_run(self, run: dict) -> None:
        """Shown for runs with TensorBoard event files; enabled when TensorBoard is installed."""
        logdir = event_dir(run.get("run_dir"), run.get("spec"))
        self.setVisible(logdir is not None)
        if logdir is not None:
            usable, tip = availability()
            self.button.setEnabled(usable)
            self.button.setToolTip(tip)

    def show_url(self, url: str | None) -> None:
        """The running viewer's address (hidden when None)."""
        self.link.setText(f'<a href="{url}">{url}</a>' if url else "")
        self.link.setVisible(bool(url))


class TensorBoards(QtCore.QObject):
    """The TensorBoard viewers the run panel started, by run id."""

    opened = QtCore.Signal(str, str)  # run id, URL
    failed = QtCore.Signal(str, str)  # run id, message

    def __init__(self, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.viewers: dict[str, TensorBoardProcess] = {}
        self._waiting: dict[str, tuple[TensorBoardProcess, QtCore.QElapsedTimer]] = {}
        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self._poll)

    def open(self, run: dict) -> TensorBoardProcess | None:
        """Start (or show again) the viewer of `run`; `opened` once it answers, else `failed`."""
        run_id = run["id"]
        viewer = self.viewers.get(run_id)
        if viewer is not None and viewer.running():
            if run_id not in self._waiting:
                self._opened(run_id, viewer)
            return viewer
        logdir = event_dir(run.get("run_dir"), run.get("spec"))
        if logdir is None:
            self.failed.emit(run_id, "this run has no TensorBoard event files")
            return None
        try:
            viewer = TensorBoardProcess(logdir)
        except (TunegraphError, OSError) as err:
            self.failed.emit(run_id, str(err))
            return None
        self.viewers[run_id] = viewer
        clock = QtCore.QElapsedTimer()
        clock.start()
        self._waiting[run_id] = (viewer, clock)
        self.timer.start(POLL_MS)
        return viewer

    def _poll(self) -> None:
        for run_id, (viewer, clock) in list(self._waiting.items()):
            if viewer.answers(timeout=0.2):
                del self._waiting[run_id]
                self._opened(run_id, viewer)
            elif not viewer.running() or clock.elapsed() > READY_TIMEOUT_MS:
                del self._waiting[run_id]
                message = viewer.last_log_line() if not viewer.running() else "no answer"
                viewer.stop()
                self.viewers.pop(run_id, None)
                self.failed.emit(run_id, f"TensorBoard did not start: {message}")
        if not self._waiting:
            self.timer.stop()

    def _opened(self, run_id: str, viewer: TensorBoardProcess) -> None:
        self.opened.emit(run_id, viewer.url)
        QtGui.QDesktopServices.openUrl(QtCore.QUrl(viewer.url))

    def shutdown(self) -> None:
        """End every viewer (the panel or the app is closing)."""
        self.timer.stop()
        self._waiting.clear()
        for viewer in self.viewers.values():
            viewer.stop()
        self.viewers.clear()
