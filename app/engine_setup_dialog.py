"""The training-engine set-up dialog and the About dialog.

`EngineSetupDialog` shows what `tunegraph engine status --json` reports (engine ready or not,
the GPUs, the flavour chosen for them and why), lets the user override the flavour or pick an
offline bundle, and runs `tunegraph engine setup --json-progress` as a QProcess (the UI never
imports torch and stays responsive), showing each step, a progress bar and the tail of the log.
Cancel writes `cancel` to the process (it kills the running uv step and removes the half-made
environment).
"""

from __future__ import annotations

import json
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from app.cli.main import tunegraph_command
from engine import __version__
from engine.setup.bundle import FLAVOURS
from engine.setup.interpreters import engine_dir, engine_status

LOG_LINES = 12
KILL_WAIT_MS = 10000


def _start(process: QtCore.QProcess, args: list[str]) -> None:
    cmd = tunegraph_command(*args)
    process.start(cmd[0], cmd[1:])


def _free_text(folder: Path) -> str:
    from engine.hardware import GIB
    from engine.setup.environment import FREE_NEEDED, free_bytes

    free = free_bytes(folder) / GIB
    return (
        f"{free:.1f} GB free in {folder} (needs {FREE_NEEDED['cpu'] / GIB:.0f} GB for cpu, "
        f"{FREE_NEEDED['cu128'] / GIB:.0f} GB for CUDA)"
    )


class EngineSetupDialog(QtWidgets.QDialog):
    """Set up (or redo) the training engine; `engineReady` fires when a set-up succeeded."""

    statusLoaded = QtCore.Signal(object)  # noqa: N815 - the status dict
    progressed = QtCore.Signal(str, float)  # step, fraction
    finishedSetup = QtCore.Signal(bool, str)  # noqa: N815 - ok, message
    engineReady = QtCore.Signal(object)  # noqa: N815 - the engine record

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Set up the training engine")
        self.resize(640, 520)
        self.status: dict | None = None
        self.detected: str | None = None
        self.log_path: Path | None = None
        self._buffer = b""
        self._error: dict | None = None
        self._done: dict | None = None

        self.state_label = QtWidgets.QLabel("Checking the engine…")
        self.state_label.setWordWrap(True)
        self.gpu_label = QtWidgets.QLabel("")
        self.gpu_label.setWordWrap(True)
        self.flavour_combo = QtWidgets.QComboBox()
        self.flavour_combo.addItem("auto", "auto")
        for name in FLAVOURS:
            self.flavour_combo.addItem(name, name)
        self.bundle_edit = QtWidgets.QLineEdit()
        self.bundle_edit.setPlaceholderText("none: download from the internet")
        self.bundle_button = QtWidgets.QPushButton("Use offline bundle…")
        self.bundle_button.clicked.connect(self.pick_bundle)
        self.space_label = QtWidgets.QLabel(_free_text(engine_dir()))
        self.space_label.setWordWrap(True)
        self.step_label = QtWidgets.QLabel("")
        self.progress = QtWidgets.QProgressBar()
        self.progress.setRange(0, 100)
        self.error_label = QtWidgets.QLabel("")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #e06c75;")
        self.log_view = QtWidgets.QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(200)

        form = QtWidgets.QFormLayout()
        form.addRow("Engine:", self.state_label)
        form.addRow("This machine:", self.gpu_label)
        form.addRow("Flavour:", self.flavour_combo)
        bundle_row = QtWidgets.QHBoxLayout()
        bundle_row.addWidget(self.bundle_edit, 1)
        bundle_row.addWidget(self.bundle_button)
        form.addRow("Offline bundle:", bundle_row)
        form.addRow("Free space:", self.space_label)

        self.start_button = QtWidgets.QPushButton("Start")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button = QtWidgets.QPushButton("Close")
        self.close_button.clicked.connect(self.reject)
        buttons = QtWidgets.QHBoxLayout()
        buttons.addStretch(1)
        for b in (self.start_button, self.cancel_button, self.close_button):
            buttons.addWidget(b)

        layout = QtWidgets.QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.step_label)
        layout.addWidget(self.progress)
        layout.addWidget(self.error_label)
        layout.addWidget(QtWidgets.QLabel("Log:"))
        layout.addWidget(self.log_view, 1)
        layout.addLayout(buttons)

        self.status_process = QtCore.QProcess(self)
        self.status_process.finished.connect(self._status_done)
        self.setup_process: QtCore.QProcess | None = None
        self.log_timer = QtCore.QTimer(self)
        self.log_timer.setInterval(500)
        self.log_timer.timeout.connect(self._refresh_log)
        self.refresh_status()

    # -- status --------------------------------------------------------------------------------
    def refresh_status(self) -> None:
        """Run `tunegraph engine status --json` (a real subprocess; no torch in this one)."""
        if self.status_process.state() == QtCore.QProcess.ProcessState.NotRunning:
            _start(self.status_process, ["engine", "status", "--json"])

    def _status_done(self, _code: int, _status) -> None:
        out = bytes(self.status_process.readAllStandardOutput().data()).decode("utf-8", "replace")
        try:
            status = json.loads(out)
        except ValueError:
            err = bytes(self.status_process.readAllStandardError().data()).decode(
                "utf-8", "replace"
            )
            self.state_label.setText("Could not read the engine status: " + err.strip()[-300:])
            return
        self.status = status
        if status["ready"]:
            flavour = status.get("flavour") or "?"
            self.state_label.setText(
                f"Ready: torch {status.get('torch') or '?'} ({flavour}) in {status['python']}. "
                "Start sets it up again."
            )
        else:
            self.state_label.setText(f"Not set up: {status['reason']}.")
        detected = status.get("detected") or {}
        self.detected = detected.get("flavour")
        gpus = detected.get("gpus") or []
        listing = "\n".join(
            f"GPU {i}: driver {g['driver']}, compute capability {g['compute_cap']}"
            for i, g in enumerate(gpus)
        )
        self.gpu_label.setText(
            (listing + "\n" if listing else "")
            + f"Chosen flavour: {self.detected} — {detected.get('reason', '')}"
        )
        self.flavour_combo.setItemText(0, f"auto ({self.detected})")
        self.statusLoaded.emit(status)

    # -- set-up --------------------------------------------------------------------------------
    def pick_bundle(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Offline engine bundle", "", "Engine bundles (*.tar);;All files (*)"
        )
        if path:
            self.bundle_edit.setText(path)

    def command_args(self) -> list[str]:
        """The `tunegraph` arguments Start runs."""
        args = ["engine", "setup", "--json-progress", "--yes"]
        args += ["--flavour", self.flavour_combo.currentData()]
        bundle = self.bundle_edit.text().strip()
        if bundle:
            args += ["--bundle", bundle]
        return args

    def start(self) -> None:
        if self.running():
            return
        self._buffer, self._error, self._done = b"", None, None
        self.error_label.setText("")
        self.log_view.clear()
        self.progress.setValue(0)
        self.step_label.setText("Starting…")
        process = QtCore.QProcess(self)
        process.readyReadStandardOutput.connect(self._read)
        process.finished.connect(self._finished)
        self.setup_process = process
        self._set_running(True)
        _start(process, self.command_args())
        self.log_timer.start()

    def running(self) -> bool:
        return (
            self.setup_process is not None
            and self.setup_process.state() != QtCore.QProcess.ProcessState.NotRunning
        )

    def cancel(self) -> None:
        """Ask the set-up to stop (it kills its uv step and cleans up), kill it if it will not."""
        if not self.running():
            return
        self.step_label.setText("Cancelling…")
        self.setup_process.write(b"cancel\n")
        if not self.setup_process.waitForFinished(KILL_WAIT_MS):
            self.setup_process.kill()
            self.setup_process.waitForFinished(3000)

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.close_button.setEnabled(not running)
        self.flavour_combo.setEnabled(not running)
        self.bundle_button.setEnabled(not running)
        self.bundle_edit.setEnabled(not running)

    def _read(self) -> None:
        self._buffer += bytes(self.setup_process.readAllStandardOutput().data())
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            try:
                event = json.loads(raw.decode("utf-8", "replace"))
            except ValueError:
                continue
            kind = event.get("event")
            if kind == "progress":
                self.step_label.setText(event["step"])
                self.progress.setValue(int(event["fraction"] * 100))
                self.progressed.emit(event["step"], event["fraction"])
            elif kind == "start":
                self.step_label.setText(f"Flavour {event['flavour']}: {event['reason']}")
            elif kind == "log":
                self.log_path = Path(event["path"])
            elif kind == "error":
                self._error = event
            elif kind == "done":
                self._done = event["record"]

    def _refresh_log(self) -> None:
        if self.log_path is None or not self.log_path.is_file():
            return
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        tail = "\n".join(text.splitlines()[-LOG_LINES:])
        if tail != self.log_view.toPlainText():
            self.log_view.setPlainText(tail)

    def _finished(self, code: int, _status) -> None:
        self._read()
        self.log_timer.stop()
        self._refresh_log()
        self._set_running(False)
        if self._done is not None and code == 0:
            self.progress.setValue(100)
            message = f"The training engine is ready (torch {self._done['torch']})."
            self.step_label.setText(message)
            self.finishedSetup.emit(True, message)
            self.engineReady.emit(self._done)
            self.refresh_status()
            return
        if self._error is not None:
            message = self._error["message"]
            if self._error.get("hint"):
                message += " " + self._error["hint"]
        else:
            err = bytes(self.setup_process.readAllStandardError().data()).decode("utf-8", "replace")
            lines = [ln for ln in err.splitlines() if ln.strip()]
            message = lines[-1] if lines else f"The set-up stopped (exit code {code})."
        self.step_label.setText("The set-up did not finish.")
        self.error_label.setText(message.removeprefix("tunegraph: "))
        self.finishedSetup.emit(False, message)

    # -- closing -------------------------------------------------------------------------------
    def reject(self) -> None:
        if self.running():
            return  # Cancel first: closing must not leave a half-made engine behind
        self.shutdown()
        super().reject()

    def shutdown(self) -> None:
        """Stop the status and set-up processes (no child outlives the dialog)."""
        self.cancel()
        self.log_timer.stop()
        if self.status_process.state() != QtCore.QProcess.ProcessState.NotRunning:
            self.status_process.kill()
            self.status_process.waitForFinished(3000)


class AboutDialog(QtWidgets.QDialog):
    """Version, data folder, engine folder and engine status."""

    setupRequested = QtCore.Signal()  # noqa: N815

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        from engine import paths

        self.setWindowTitle("About Tunegraph")
        status = engine_status()
        if status["ready"]:
            engine = f"ready — torch {status['torch'] or '?'} ({status['flavour'] or '?'}), {status['python']}"
        else:
            engine = f"not set up — {status['reason']}"
        self.text = (
            f"<h3>Tunegraph {__version__}</h3>"
            "<p>Fine-tune open LLMs with LoRA/QLoRA by wiring nodes.</p>"
            f"<p><b>Data folder:</b> {paths.data_dir()}<br>"
            f"<b>Engine folder:</b> {status['engine_dir']}<br>"
            f"<b>Training engine:</b> {engine}</p>"
            "<p>Both folders are kept when Tunegraph is upgraded or uninstalled.</p>"
        )
        self.label = QtWidgets.QLabel(self.text)
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        setup = QtWidgets.QPushButton("Set up training engine…")
        setup.clicked.connect(self._setup)
        close = QtWidgets.QPushButton("Close")
        close.clicked.connect(self.accept)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(setup)
        row.addStretch(1)
        row.addWidget(close)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.label)
        layout.addLayout(row)

    def _setup(self) -> None:
        self.accept()
        self.setupRequested.emit()


def offer_on_start_default() -> bool:
    """Offer the set-up on start-up unless under pytest (tests never get surprise dialogs)."""
    import os
    import sys

    return "PYTEST_CURRENT_TEST" not in os.environ and "pytest" not in sys.modules


class EngineUi(QtCore.QObject):
    """The window's engine pieces: Help → About / Set up training engine…, the first-launch
    banner, and the check Run makes before it opens the confirmation."""

    setup_dialog_shown = QtCore.Signal()

    def __init__(self, window: QtWidgets.QMainWindow, offer_on_start: bool | None = None):
        super().__init__(window)
        self.window = window
        self.setup_dialog: EngineSetupDialog | None = None
        self.about_dialog: AboutDialog | None = None
        self.prompt: QtWidgets.QMessageBox | None = None
        self.setup_action = QtGui.QAction("Set up training engine…", window)
        self.setup_action.setStatusTip("Install torch for this machine's GPU (or from a bundle)")
        self.setup_action.triggered.connect(self.show_setup)
        self.about_action = QtGui.QAction("About Tunegraph", window)
        self.about_action.setMenuRole(QtGui.QAction.MenuRole.AboutRole)
        self.about_action.triggered.connect(self.show_about)
        menu = window.menuBar().addMenu("&Help")
        menu.addAction(self.setup_action)
        menu.addSeparator()
        menu.addAction(self.about_action)
        self.banner: QtWidgets.QToolBar | None = None
        if offer_on_start_default() if offer_on_start is None else offer_on_start:
            QtCore.QTimer.singleShot(0, self, self.offer_if_missing)

    def status(self) -> dict:
        return engine_status()

    def offer_if_missing(self) -> None:
        """A dismissible banner above the canvas when the engine is not set up."""
        status = self.status()
        if status["ready"] or self.banner is not None:
            return
        bar = QtWidgets.QToolBar("Training engine", self.window)
        bar.setObjectName("engine-banner")
        bar.setMovable(False)
        label = QtWidgets.QLabel(
            "  The training engine is not set up yet: the canvas works, but runs need it.  "
        )
        bar.addWidget(label)
        bar.addAction("Set up training engine…", self.show_setup)
        bar.addAction("Dismiss", self.dismiss_banner)
        self.window.addToolBarBreak()
        self.window.addToolBar(QtCore.Qt.ToolBarArea.TopToolBarArea, bar)
        self.banner = bar

    def dismiss_banner(self) -> None:
        if self.banner is not None:
            self.window.removeToolBar(self.banner)
            self.banner.deleteLater()
            self.banner = None

    def ensure_ready(self) -> bool:
        """True when runs can start; otherwise explain what is missing and offer the set-up."""
        status = self.status()
        if status["ready"]:
            return True
        box = QtWidgets.QMessageBox(self.window)
        box.setIcon(QtWidgets.QMessageBox.Icon.Information)
        box.setWindowTitle("The training engine is not set up")
        box.setText(
            "Runs need the training engine (Python with torch), and it is not set up on this "
            f"machine: {status['reason']}."
        )
        box.setInformativeText(
            "Set it up now (it downloads torch for your GPU, or installs from an offline "
            "bundle). Your graph stays as it is."
        )
        setup = box.addButton(
            "Set up training engine…", QtWidgets.QMessageBox.ButtonRole.AcceptRole
        )
        box.addButton(QtWidgets.QMessageBox.StandardButton.Cancel)
        box.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        box.finished.connect(lambda _r, b=box, s=setup: self._prompt_done(b, s))
        self.prompt = box
        box.open()
        self.window.statusBar().showMessage(
            "Nothing submitted: the training engine is not set up.", 8000
        )
        return False

    def _prompt_done(self, box: QtWidgets.QMessageBox, setup: QtWidgets.QAbstractButton) -> None:
        clicked = box.clickedButton() is setup
        self.prompt = None
        if clicked:
            self.show_setup()

    def show_setup(self) -> EngineSetupDialog:
        if self.setup_dialog is None:
            dialog = EngineSetupDialog(self.window)
            dialog.engineReady.connect(self._on_ready)
            self.setup_dialog = dialog
        self.setup_dialog.show()
        self.setup_dialog.raise_()
        self.setup_dialog_shown.emit()
        return self.setup_dialog

    def show_about(self) -> AboutDialog:
        dialog = AboutDialog(self.window)
        dialog.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.setupRequested.connect(self.show_setup)
        dialog.destroyed.connect(self._forget_about)
        self.about_dialog = dialog
        dialog.open()
        return dialog

    def _forget_about(self, *_args) -> None:
        self.about_dialog = None

    def _on_ready(self, _record) -> None:
        self.dismiss_banner()
        self.window.statusBar().showMessage("The training engine is ready.", 8000)

    def shutdown(self) -> None:
        if self.setup_dialog is not None:
            self.setup_dialog.shutdown()
            self.setup_dialog.close()
        if self.prompt is not None:
            self.prompt.done(0)


def install_engine_ui(
    window: QtWidgets.QMainWindow, offer_on_start: bool | None = None
) -> EngineUi:
    """Help menu (About, Set up training engine…), the first-launch banner, the Run check."""
    return EngineUi(window, offer_on_start)
