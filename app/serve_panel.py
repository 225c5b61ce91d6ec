"""The Serve panel: an OpenAI-compatible endpoint for a GGUF (engine.chat.serving), with its URL, a
copyable curl and Python example, the requests served so far, "keep serving" and Stop. The Serve
window (ServeDialog) first asks for the port and whether other machines may call (ServeOptions:
0.0.0.0 with a generated API key; else 127.0.0.1 without one).

The endpoint is a child process of the app; it ends with the app unless "Keep serving after
Tunegraph closes" is ticked (then `shutdown()` leaves it running, and its Stop is `kill PID` or
`tunegraph serve` on another port). Nothing here blocks the UI: the child's status file is read
on a timer.
"""

from __future__ import annotations

import socket
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from engine.chat.serving import DEFAULT_PORT, ServeProcess
from engine.errors import TunegraphError

POLL_MS = 500
PORTS_TRIED = 50


def free_port(host: str = "127.0.0.1", start: int = DEFAULT_PORT) -> int:
    """The first port from `start` that can be bound on `host`."""
    for port in range(start, start + PORTS_TRIED):
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
                return port
            except OSError:
                continue
    raise TunegraphError(f"No free port between {start} and {start + PORTS_TRIED - 1}.")


def _code_box(text: str, lines: int) -> QtWidgets.QPlainTextEdit:
    box = QtWidgets.QPlainTextEdit(text)
    box.setReadOnly(True)
    box.setFont(QtGui.QFontDatabase.systemFont(QtGui.QFontDatabase.SystemFont.FixedFont))
    box.setLineWrapMode(QtWidgets.QPlainTextEdit.LineWrapMode.NoWrap)
    box.setFixedHeight(box.fontMetrics().lineSpacing() * lines + 24)
    return box


class ServePanel(QtWidgets.QWidget):
    """One endpoint: starts it, shows how to call it, counts requests, stops it."""

    stopped = QtCore.Signal()

    def __init__(
        self,
        gguf: Path | str,
        host: str = "127.0.0.1",
        port: int | None = None,
        parent: QtWidgets.QWidget | None = None,
    ):
        super().__init__(parent)
        self.gguf = Path(gguf)
        self.server: ServeProcess | None = None
        self.title = QtWidgets.QLabel(f"<b>Serving {self.gguf.name}</b>")
        self.state = QtWidgets.QLabel("Starting…")
        self.state.setWordWrap(True)
        self.url = QtWidgets.QLineEdit()
        self.url.setReadOnly(True)
        self.key = QtWidgets.QLineEdit()
        self.key.setReadOnly(True)
        self.template = QtWidgets.QLabel()
        self.template.setWordWrap(True)
        self.template.setObjectName("hint")
        self.requests = QtWidgets.QLabel("Requests served: 0")
        self.curl = _code_box("", 4)
        self.python = _code_box("", 8)
        self.copy_url = QtWidgets.QPushButton("Copy URL")
        self.copy_curl = QtWidgets.QPushButton("Copy curl")
        self.copy_python = QtWidgets.QPushButton("Copy Python")
        self.keep = QtWidgets.QCheckBox("Keep serving after Tunegraph closes")
        self.stop_button = QtWidgets.QPushButton("Stop")
        self.copy_url.clicked.connect(lambda: self._copy(self.url.text()))
        self.copy_curl.clicked.connect(lambda: self._copy(self.curl.toPlainText()))
        self.copy_python.clicked.connect(lambda: self._copy(self.python.toPlainText()))
        self.keep.toggled.connect(self._on_keep)
        self.stop_button.clicked.connect(self.stop)

        form = QtWidgets.QFormLayout()
        url_row = QtWidgets.QHBoxLayout()
        url_row.addWidget(self.url, 1)
        url_row.addWidget(self.copy_url)
        form.addRow("Base URL", url_row)
        form.addRow("API key", self.key)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.state)
        layout.addLayout(form)
        layout.addWidget(self.template)
        for label, box, button in (
            ("curl", self.curl, self.copy_curl),
            ("Python (pip install openai)", self.python, self.copy_python),
        ):
            head = QtWidgets.QHBoxLayout()
            head.addWidget(QtWidgets.QLabel(label))
            head.addStretch(1)
            head.addWidget(button)
            layout.addLayout(head)
            layout.addWidget(box)
        bottom = QtWidgets.QHBoxLayout()
        bottom.addWidget(self.requests)
        bottom.addStretch(1)
        bottom.addWidget(self.keep)
        bottom.addWidget(self.stop_button)
        layout.addLayout(bottom)
        self._set_ready(False)
        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self.poll)
        try:
            self.server = ServeProcess(self.gguf, host, port or free_port(host))
        except TunegraphError as err:
            self._failed(str(err))
            return
        self.url.setText(self.server.url)
        self.key.setText(self.server.api_key or "none (this machine only)")
        ex = self.server.examples()
        self.curl.setPlainText(ex["curl"])
        self.python.setPlainText(ex["python"])
        self.state.setText(f"Loading {self.gguf.name}…")
        self.timer.start(POLL_MS)

    # -- state ------------------------------------------------------------------------------------
    def _set_ready(self, on: bool) -> None:
        for w in (self.copy_url, self.copy_curl, self.copy_python):
            w.setEnabled(on)

    def _failed(self, message: str) -> None:
        self.state.setText(f"Not serving: {message}")
        self.state.setStyleSheet("color: #e08a80;")
        self.stop_button.setEnabled(False)
        self.keep.setEnabled(False)
        self._set_ready(False)

    @QtCore.Slot()
    def poll(self) -> None:
        """Read the endpoint's status: ready, requests served, or why it ended."""
        if self.server is None:
            return
        status = self.server.status()
        if status.get("state") == "ready":
            self._set_ready(True)
            self.state.setText(f"Serving at {self.server.url} (OpenAI-compatible).")
            self.template.setText(
                f"Chat template: {status.get('template_name')}. Stops on "
                f"{', '.join(status.get('stop_texts') or []) or 'EOS'} and the EOS/EOT ids."
            )
            self.requests.setText(f"Requests served: {status.get('requests') or 0}")
        elif status.get("state") == "failed" or not self.server.running():
            message = status.get("error") or self.server.last_log_line()
            self.timer.stop()
            self.server.stop()
            self.server = None
            self._failed(message)
            self.stopped.emit()

    def _copy(self, text: str) -> None:
        QtWidgets.QApplication.clipboard().setText(text)

    @QtCore.Slot(bool)
    def _on_keep(self, on: bool) -> None:
        if self.server is not None:
            self.server.keep_serving(on)

    # -- ending -----------------------------------------------------------------------------------
    @QtCore.Slot()
    def stop(self) -> None:
        """Stop the endpoint now."""
        self.timer.stop()
        if self.server is not None:
            self.server.stop()
            self.server = None
            self.state.setText("Stopped.")
            self.stop_button.setEnabled(False)
            self.keep.setEnabled(False)
            self._set_ready(False)
            self.stopped.emit()

    def shutdown(self) -> None:
        """The app is closing: stop the endpoint, or leave it running when "keep serving" is on."""
        self.timer.stop()
        if self.server is not None and self.keep.isChecked():
            self.server.detach()
            self.server = None
        else:
            self.stop()


class ServeOptions(QtWidgets.QWidget):
    """Before serving: the port, and whether other machines may call (0.0.0.0 with an API key)."""

    start = QtCore.Signal(str, int)  # host, port

    def __init__(self, gguf: Path | str, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.port = QtWidgets.QSpinBox(minimum=1, maximum=65535)
        try:
            self.port.setValue(free_port())
        except TunegraphError:
            self.port.setValue(DEFAULT_PORT)
        self.allow_remote = QtWidgets.QCheckBox("Allow other machines (shows an API key)")
        self.allow_remote.setToolTip(
            "Listen on every network interface (0.0.0.0) instead of this machine only; requests "
            "must then carry the API key generated for this endpoint, or they get 401."
        )
        hint = QtWidgets.QLabel(
            "Off: only programs on this computer can call the endpoint (127.0.0.1), no key. "
            "On: other machines call http://THIS-COMPUTER:PORT/v1 with the key shown next."
        )
        hint.setWordWrap(True)
        hint.setObjectName("hint")
        self.start_button = QtWidgets.QPushButton("Start serving")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(lambda: self.start.emit(*self.options()))
        form = QtWidgets.QFormLayout()
        form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        form.addRow("Port", self.port)
        form.addRow("", self.allow_remote)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(QtWidgets.QLabel(f"<b>Serve {Path(gguf).name}</b>"))
        layout.addLayout(form)
        layout.addWidget(hint)
        layout.addStretch(1)
        row = QtWidgets.QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.start_button)
        layout.addLayout(row)

    def options(self) -> tuple[str, int]:
        """(host, port) as chosen."""
        return ("0.0.0.0" if self.allow_remote.isChecked() else "127.0.0.1"), self.port.value()


class ServeDialog(QtWidgets.QDialog):
    """A window that asks for the port and reach (ServeOptions), then holds one ServePanel
    (several windows can be open, one per endpoint)."""

    def __init__(self, gguf: Path | str, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.gguf = Path(gguf)
        self.setWindowTitle(f"Serve {self.gguf.name}")
        self.setModal(False)
        self.resize(720, 560)
        self.panel: ServePanel | None = None
        self.options = ServeOptions(gguf, self)
        self.options.start.connect(self.start)
        self.stack = QtWidgets.QStackedLayout(self)
        self.stack.addWidget(self.options)

    @QtCore.Slot(str, int)
    def start(self, host: str, port: int) -> ServePanel:
        """Start the endpoint on host:port and show its panel."""
        self.panel = ServePanel(self.gguf, host=host, port=port, parent=self)
        self.stack.addWidget(self.panel)
        self.stack.setCurrentWidget(self.panel)
        return self.panel

    def shutdown(self) -> None:
        """The app is closing (see ServePanel.shutdown)."""
        if self.panel is not None:
            self.panel.shutdown()

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802 - Qt override
        self.shutdown()
        super().closeEvent(event)
