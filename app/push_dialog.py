""" "Push to Hub…": a run's adapter (and its GGUF bundle) or a library artifact to a Hugging Face
repo: repo name, Public and GGUF check boxes, a progress bar, Cancel. The push runs in a thread
(app.cli.push.push_target, the same code as `tunegraph push`); Cancel stops it before the commit.
"""

from __future__ import annotations

import threading

from PySide6 import QtCore, QtWidgets

from app.chat_worker import error_text


class PushThread(QtCore.QThread):
    """Runs one push; reports progress, then `pushed(result)` or `failed(message)`."""

    progressed = QtCore.Signal(str, float)
    pushed = QtCore.Signal(object)
    failed = QtCore.Signal(str)

    def __init__(self, target: str, repo: str, public: bool, gguf: bool, parent: QtCore.QObject):
        super().__init__(parent)
        self.args = (target, repo, public, gguf)
        self.cancel = threading.Event()

    def run(self) -> None:
        from app.cli.push import push_target

        target, repo, public, gguf = self.args
        try:
            result = push_target(
                target, repo, public, gguf, progress=self.progressed.emit, cancel=self.cancel
            )
        except Exception as err:  # every failure becomes one sentence in the dialog
            self.failed.emit(error_text(err))
            return
        self.pushed.emit(result)


class PushDialog(QtWidgets.QDialog):
    """Push `target` (a run id or an artifact id); `is_run` offers the GGUF bundle box."""

    def __init__(
        self, target: str, title: str, is_run: bool, parent: QtWidgets.QWidget | None = None
    ):
        super().__init__(parent)
        self.target = target
        self.thread: PushThread | None = None
        self.result: dict | None = None
        self.setWindowTitle(f"Push {title} to the Hugging Face Hub")
        self.repo = QtWidgets.QLineEdit()
        self.repo.setPlaceholderText("your-user/" + _slug(title))
        self.public = QtWidgets.QCheckBox("Public (anyone can see it; private otherwise)")
        self.gguf = QtWidgets.QCheckBox("Also push the GGUF bundle (model file, Modelfile)")
        self.gguf.setVisible(is_run)
        self.progress = QtWidgets.QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.status = QtWidgets.QLabel(
            "The adapter goes with its model card and base model; the token is the one in "
            "Settings (OS keyring)."
            if is_run
            else "The artifact goes as it is, with a model card."
        )
        self.status.setWordWrap(True)
        self.push_button = QtWidgets.QPushButton("Push")
        self.push_button.setDefault(True)
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.close_button = QtWidgets.QPushButton("Close")
        self.push_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button.clicked.connect(self.close)
        self.repo.textChanged.connect(self._update)
        form = QtWidgets.QFormLayout()
        form.addRow("Repository", self.repo)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.public)
        layout.addWidget(self.gguf)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        buttons = QtWidgets.QHBoxLayout()
        buttons.addStretch(1)
        for b in (self.push_button, self.cancel_button, self.close_button):
            buttons.addWidget(b)
        layout.addLayout(buttons)
        self.resize(560, 230)
        self._update()

    def _update(self) -> None:
        busy = self.thread is not None
        self.push_button.setEnabled(not busy and "/" in self.repo.text().strip())
        self.cancel_button.setEnabled(busy)
        self.close_button.setEnabled(not busy)
        for w in (self.repo, self.public, self.gguf):
            w.setEnabled(not busy)

    @QtCore.Slot()
    def start(self) -> None:
        if self.thread is not None:
            return
        self.result = None
        self.progress.setValue(0)
        self.status.setText("Starting…")
        self.thread = PushThread(
            self.target,
            self.repo.text().strip(),
            self.public.isChecked(),
            self.gguf.isVisible() and self.gguf.isChecked(),
            self,
        )
        self.thread.progressed.connect(self._on_progress)
        self.thread.pushed.connect(self._on_pushed)
        self.thread.failed.connect(self._on_failed)
        self.thread.finished.connect(self._on_finished)
        self.thread.start()
        self._update()

    @QtCore.Slot()
    def cancel(self) -> None:
        if self.thread is not None:
            self.thread.cancel.set()
            self.status.setText("Cancelling…")

    @QtCore.Slot(str, float)
    def _on_progress(self, message: str, fraction: float) -> None:
        self.progress.setValue(int(1000 * max(0.0, min(1.0, fraction))))
        self.status.setText(message[:1].upper() + message[1:] + "…")

    @QtCore.Slot(object)
    def _on_pushed(self, result: dict) -> None:
        self.result = result
        self.progress.setValue(1000)
        kind = "private" if result["private"] else "public"
        self.status.setText(f"Pushed {len(result['files'])} files to {result['url']} ({kind}).")

    @QtCore.Slot(str)
    def _on_failed(self, message: str) -> None:
        self.status.setText(message)

    @QtCore.Slot()
    def _on_finished(self) -> None:
        self.thread = None
        self._update()

    def shutdown(self) -> None:
        """Cancel a push in progress and wait for its thread."""
        if self.thread is not None:
            self.thread.cancel.set()
            self.thread.wait()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        self.shutdown()
        super().closeEvent(event)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text.lower()).strip("-")
