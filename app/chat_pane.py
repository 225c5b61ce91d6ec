"""The chat pane: talk to one GGUF, or 2–4 side by side, with the model's own chat template.

Each model is a `ChatColumn` (its own thread and child process, see app/chat_worker.py); the pane
sends the same prompt, system prompt and sampling settings to every column. A prompt set (a named
list of prompts, JSON under `<data dir>/prompt_sets/`) is replayed on every model with one click:
each prompt is asked fresh (no history), the next one once every model has answered.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from app.chat_worker import ChatModel
from engine import paths

MAX_MODELS = 4
USER_COLOUR = "#8ab4f8"
MODEL_COLOUR = "#81c995"
ERROR_COLOUR = "#f28b82"


# -- prompt sets (plain JSON, no Qt) -------------------------------------------------------------
def prompt_sets_dir() -> Path:
    path = paths.data_dir() / "prompt_sets"
    path.mkdir(exist_ok=True)
    return path


def _set_file(name: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "prompts"
    return prompt_sets_dir() / f"{slug}.json"


def save_prompt_set(name: str, prompts: list[str]) -> Path:
    """Save `prompts` under `name` (replacing a set of that name); returns the file."""
    prompts = [p for p in (str(p).strip() for p in prompts) if p]
    if not name.strip() or not prompts:
        raise ValueError("a prompt set needs a name and at least one prompt")
    path = _set_file(name)
    path.write_text(
        json.dumps({"name": name.strip(), "prompts": prompts}, indent=2) + "\n", encoding="utf-8"
    )
    return path


def list_prompt_sets() -> dict[str, list[str]]:
    """Every saved set, name -> prompts (unreadable files are skipped)."""
    out = {}
    for file in sorted(prompt_sets_dir().glob("*.json")):
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            out[str(data["name"])] = [str(p) for p in data["prompts"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


# -- one model --------------------------------------------------------------------------------
class ChatColumn(QtWidgets.QFrame):
    """One model's conversation: header, transcript, figures of the last answer."""

    idle = QtCore.Signal()  # an answer ended (done or failed) or loading ended
    remove_requested = QtCore.Signal(object)
    serve_requested = QtCore.Signal(str)  # "Serve": an OpenAI-compatible endpoint for this GGUF

    def __init__(self, path: str, parent: QtWidgets.QWidget | None = None, n_threads: int = 0):
        super().__init__(parent)
        self.setFrameShape(QtWidgets.QFrame.Shape.StyledPanel)
        self.path = str(path)
        self.history: list[dict] = []
        self.answer = ""
        self.error: str | None = None
        self.ready = False
        self.info: dict = {}
        self.stats: dict = {}

        self.title = QtWidgets.QLabel(f"<b>{html.escape(Path(path).name)}</b>")
        self.title.setToolTip(self.path)
        self.title.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QtWidgets.QToolButton(text="✕", toolTip="Remove this model", autoRaise=True)
        close.clicked.connect(self._ask_remove)
        self.serve_button = QtWidgets.QToolButton(text="Serve…")
        self.serve_button.setToolTip("Serve this GGUF as an OpenAI-compatible endpoint")
        self.serve_button.clicked.connect(lambda: self.serve_requested.emit(self.path))
        self.template_label = QtWidgets.QLabel("Loading the model…")
        self.template_label.setWordWrap(True)
        self.template_label.setStyleSheet("color: #9aa0a6;")
        self.progress = QtWidgets.QProgressBar(maximum=0, textVisible=False, maximumHeight=6)
        self.transcript = QtWidgets.QTextEdit(readOnly=True)
        self.transcript.setPlaceholderText("Answers appear here.")
        self.stats_label = QtWidgets.QLabel("")
        self.stats_label.setStyleSheet("color: #9aa0a6;")
        self.copy_button = QtWidgets.QToolButton(
            text="Copy", toolTip="Copy the last answer", enabled=False
        )
        self.copy_button.clicked.connect(self.copy_answer)

        head = QtWidgets.QHBoxLayout()
        head.addWidget(self.title, 1)
        head.addWidget(self.serve_button)
        head.addWidget(close)
        foot = QtWidgets.QHBoxLayout()
        foot.addWidget(self.stats_label, 1)
        foot.addWidget(self.copy_button)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(head)
        layout.addWidget(self.template_label)
        layout.addWidget(self.progress)
        layout.addWidget(self.transcript, 1)
        layout.addLayout(foot)

        self.model = ChatModel(self.path, self, n_threads=n_threads)
        self.model.loaded.connect(self._on_loaded)
        self.model.piece.connect(self._on_piece)
        self.model.done.connect(self._on_done)
        self.model.failed.connect(self._on_failed)

    @property
    def busy(self) -> bool:
        return self.model.busy

    def ask(self, prompt: str, options: dict, keep_history: bool = True) -> bool:
        """Send `prompt` (plus the conversation so far unless keep_history is False)."""
        if not self.ready or self.busy:
            return False
        if not keep_history:
            self.history = []
        self.history.append({"role": "user", "content": prompt})
        self.answer = ""
        self._new_block(top_margin=10 if self.transcript.toPlainText() else 0)
        self._write("You: ", USER_COLOUR, bold=True)
        self._write(prompt, USER_COLOUR)
        self._new_block(top_margin=4)
        self._write("Model: ", MODEL_COLOUR, bold=True)
        self.stats_label.setText("Answering…")
        if not self.model.send(self.history, **options):
            return False
        return True

    def stop(self) -> None:
        self.model.stop()

    def clear(self) -> None:
        self.history = []
        self.answer = ""
        self.transcript.clear()
        self.stats_label.clear()
        self.copy_button.setEnabled(False)

    def copy_answer(self) -> None:
        QtWidgets.QApplication.clipboard().setText(self.answer)

    def close_model(self) -> None:
        self.model.close()

    def _ask_remove(self) -> None:
        self.remove_requested.emit(self)

    def _new_block(self, top_margin: int = 0) -> None:
        cursor = self.transcript.textCursor()
        cursor.movePosition(QtGui.QTextCursor.MoveOperation.End)
        fmt = QtGui.QTextBlockFormat()
        fmt.setTopMargin(top_margin)
        if self.transcript.document().isEmpty():
            cursor.setBlockFormat(fmt)
        else:
            cursor.insertBlock(fmt)

    def _write(self, text: str, colour: str | None = None, bold: bool = False) -> None:
        cursor = self.transcript.textCursor()
        cursor.movePosition(QtGui.QTextCursor.MoveOperation.End)
        fmt = QtGui.QTextCharFormat()
        if colour:
            fmt.setForeground(QtGui.QColor(colour))
        if bold:
            fmt.setFontWeight(QtGui.QFont.Weight.Bold)
        cursor.insertText(text, fmt)
        self.transcript.setTextCursor(cursor)
        self.transcript.ensureCursorVisible()

    # -- model signals --------------------------------------------------------------------------
    @QtCore.Slot(dict)
    def _on_loaded(self, info: dict) -> None:
        self.ready = True
        self.info = info
        self.progress.hide()
        family = info.get("family")
        template = info.get("template_name") or "unknown"
        self.template_label.setText(
            f"Template: {template}" + (f" · {family}" if family and family not in template else "")
        )
        self.idle.emit()

    @QtCore.Slot(str)
    def _on_piece(self, text: str) -> None:
        self.answer += text
        self._write(text)

    @QtCore.Slot(dict)
    def _on_done(self, stats: dict) -> None:
        self.stats = stats
        self.history.append({"role": "assistant", "content": self.answer})
        self.copy_button.setEnabled(bool(self.answer))
        rate = stats.get("tokens_per_s")
        parts = [f"{stats.get('completion_tokens', 0)} tokens"]
        if rate:
            parts.append(f"{rate:.1f} tok/s")
        reason = {
            "stop": "end of turn",
            "length": "max tokens reached",
            "interrupted": "stopped",
        }.get(stats.get("stop_reason"), "")
        if reason:
            parts.append(reason)
        self.stats_label.setText(" · ".join(parts))
        self.idle.emit()

    @QtCore.Slot(str)
    def _on_failed(self, message: str) -> None:
        self.error = message
        self.progress.hide()
        if not self.ready:
            self.template_label.setText("Could not load this model.")
            self.template_label.setStyleSheet("color: #f28b82;")
        elif self.history and self.history[-1]["role"] == "user":
            self.history.pop()  # the question got no answer; it is not part of the conversation
        self._new_block(top_margin=4)
        self._write(message, ERROR_COLOUR)
        self.stats_label.setText("")
        self.idle.emit()


# -- the pane ---------------------------------------------------------------------------------
class ChatPane(QtWidgets.QWidget):
    """Models side by side, the prompt box, sampling settings and prompt sets."""

    all_idle = QtCore.Signal()  # every model has finished the current prompt
    replay_finished = QtCore.Signal()
    models_changed = QtCore.Signal(int)
    serveRequested = QtCore.Signal(str)  # noqa: N815 - a column's "Serve": the GGUF to serve

    def __init__(self, parent: QtWidgets.QWidget | None = None, n_threads: int = 0):
        super().__init__(parent)
        self.n_threads = n_threads
        self.columns: list[ChatColumn] = []
        self.sent_prompts: list[str] = []
        self._replay: list[str] = []
        self._replaying = False
        self._waiting = False

        layout = QtWidgets.QVBoxLayout(self)
        layout.addLayout(self._build_model_row())
        layout.addWidget(self._build_columns(), 1)
        layout.addLayout(self._build_input_row())
        layout.addLayout(self._build_sets_row())
        self._connect_signals()
        self.reload_sets()
        self._update_buttons()

    # -- building ---------------------------------------------------------------------------------
    def _build_model_row(self) -> QtWidgets.QHBoxLayout:
        """The Open button, the system prompt and the sampling options."""
        self.open_button = QtWidgets.QPushButton("Open GGUF…")
        self.open_button.setToolTip(f"Add a model; up to {MAX_MODELS} answer side by side")
        self.system = QtWidgets.QLineEdit(placeholderText="System prompt (optional)")
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.open_button)
        row.addWidget(QtWidgets.QLabel("System"))
        row.addWidget(self.system, 1)
        self._add_sampling_options(row)
        return row

    def _add_sampling_options(self, row: QtWidgets.QHBoxLayout) -> None:
        """Temperature, top-p and max tokens, each with its label, at the end of `row`."""
        self.temperature = QtWidgets.QDoubleSpinBox(
            minimum=0.0, maximum=2.0, singleStep=0.1, value=0.7, decimals=2
        )
        self.top_p = QtWidgets.QDoubleSpinBox(
            minimum=0.05, maximum=1.0, singleStep=0.05, value=0.95, decimals=2
        )
        self.max_tokens = QtWidgets.QSpinBox(minimum=1, maximum=8192, singleStep=64, value=256)
        for label, box in (
            ("Temperature", self.temperature),
            ("Top-p", self.top_p),
            ("Max tokens", self.max_tokens),
        ):
            row.addWidget(QtWidgets.QLabel(label))
            row.addWidget(box)

    def _build_columns(self) -> QtWidgets.QSplitter:
        """The splitter that holds the model columns, showing a hint while it has none."""
        self.splitter = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        self.splitter.setChildrenCollapsible(False)
        self.empty = QtWidgets.QLabel(
            "Open a GGUF, or use “Test in chat” on a finished run.\n"
            f"Add up to {MAX_MODELS} models to compare their answers."
        )
        self.empty.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.empty.setStyleSheet("color: #9aa0a6;")
        self.splitter.addWidget(self.empty)
        return self.splitter

    def _build_input_row(self) -> QtWidgets.QHBoxLayout:
        """The prompt box with Send, Stop and Clear beside it."""
        self.prompt = QtWidgets.QPlainTextEdit(placeholderText="Ask something… (Ctrl+Enter sends)")
        self.prompt.setMaximumHeight(70)
        self.send_shortcut = QtGui.QShortcut(QtGui.QKeySequence("Ctrl+Return"), self.prompt)
        self.send_button = QtWidgets.QPushButton("Send")
        self.send_button.setDefault(True)
        self.stop_button = QtWidgets.QPushButton("Stop", enabled=False)
        self.clear_button = QtWidgets.QPushButton("Clear")
        buttons = QtWidgets.QVBoxLayout()
        for b in (self.send_button, self.stop_button, self.clear_button):
            buttons.addWidget(b)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.prompt, 1)
        row.addLayout(buttons)
        return row

    def _build_sets_row(self) -> QtWidgets.QHBoxLayout:
        """The prompt-set picker, Replay and Save, and the status line."""
        self.sets = QtWidgets.QComboBox(minimumContentsLength=18)
        self.sets.setToolTip("Saved prompt sets")
        self.replay_button = QtWidgets.QPushButton("Replay on all models")
        self.save_set_button = QtWidgets.QPushButton("Save prompts as set…")
        self.save_set_button.setToolTip("Save the prompts sent so far as a named set")
        self.status = QtWidgets.QLabel("")
        row = QtWidgets.QHBoxLayout()
        row.addWidget(QtWidgets.QLabel("Prompt set"))
        row.addWidget(self.sets)
        row.addWidget(self.replay_button)
        row.addWidget(self.save_set_button)
        row.addWidget(self.status, 1)
        return row

    def _connect_signals(self) -> None:
        """The buttons and the Ctrl+Enter shortcut to what they do."""
        self.open_button.clicked.connect(self.open_gguf_dialog)
        self.send_shortcut.activated.connect(self.send_prompt)
        self.send_button.clicked.connect(self.send_prompt)
        self.stop_button.clicked.connect(self.stop)
        self.clear_button.clicked.connect(self.clear)
        self.replay_button.clicked.connect(self.replay_selected)
        self.save_set_button.clicked.connect(self.save_set_dialog)

    # -- models ---------------------------------------------------------------------------------
    def add_model(self, path: str | Path) -> ChatColumn | None:
        """Load a GGUF in a new column (None, with a message, when four are open already)."""
        if len(self.columns) >= MAX_MODELS:
            self.status.setText(f"At most {MAX_MODELS} models side by side; remove one first.")
            return None
        column = ChatColumn(str(path), self, n_threads=self.n_threads)
        column.idle.connect(self._on_column_idle)
        column.remove_requested.connect(self.remove_model)
        column.serve_requested.connect(self.serveRequested)
        self.empty.hide()
        self.splitter.addWidget(column)
        self.columns.append(column)
        self.splitter.setSizes([1000] * self.splitter.count())
        self._update_buttons()
        self.models_changed.emit(len(self.columns))
        return column

    def open_gguf_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Open a GGUF model", "", "GGUF models (*.gguf);;All files (*)"
        )
        if path:
            self.add_model(path)

    @QtCore.Slot(object)
    def remove_model(self, column: ChatColumn) -> None:
        if column not in self.columns:
            return
        self.columns.remove(column)
        column.close_model()
        column.hide()
        column.setParent(None)
        column.deleteLater()
        if not self.columns:
            self.empty.show()
        self._update_buttons()
        self.models_changed.emit(len(self.columns))
        self._on_column_idle()

    def close_all(self) -> None:
        """End every model's thread and process (call before the window closes)."""
        self._replay = []
        for column in list(self.columns):
            column.close_model()

    def busy(self) -> bool:
        return any(c.busy for c in self.columns)

    # -- asking -----------------------------------------------------------------------------------
    def options(self) -> dict:
        return {
            "max_tokens": self.max_tokens.value(),
            "temperature": self.temperature.value(),
            "top_p": self.top_p.value(),
            "system": self.system.text().strip() or None,
        }

    def send_prompt(self) -> None:
        text = self.prompt.toPlainText().strip()
        if text and self.ask(text):
            self.prompt.clear()

    def ask(self, prompt: str, keep_history: bool = True) -> bool:
        """Send `prompt` to every ready model; False when none could take it."""
        if self.busy():
            self.status.setText("Wait for the answers, or press Stop.")
            return False
        options = self.options()
        sent = [c.ask(prompt, options, keep_history) for c in self.columns if c.ready]
        if not any(sent):
            self.status.setText(
                "No model is ready to answer." if self.columns else "Open a GGUF first."
            )
            return False
        self.sent_prompts.append(prompt)
        self._waiting = True
        self.status.setText("")
        self._update_buttons()
        return True

    def stop(self) -> None:
        self._replay = []
        for column in self.columns:
            column.stop()

    def clear(self) -> None:
        self.stop()
        self.sent_prompts = []
        for column in self.columns:
            column.clear()

    # -- prompt sets ------------------------------------------------------------------------------
    def reload_sets(self) -> None:
        current = self.sets.currentText()
        self.sets.clear()
        self._set_data = list_prompt_sets()
        self.sets.addItems(list(self._set_data))
        if current in self._set_data:
            self.sets.setCurrentText(current)
        self._update_buttons()

    def save_set_dialog(self) -> None:
        if not self.sent_prompts:
            self.status.setText("Send some prompts first; they become the set.")
            return
        name, ok = QtWidgets.QInputDialog.getText(self, "Save prompt set", "Name of the set:")
        if ok and name.strip():
            self.save_set(name, self.sent_prompts)

    def save_set(self, name: str, prompts: list[str]) -> None:
        save_prompt_set(name, prompts)
        self.reload_sets()
        self.sets.setCurrentText(name.strip())
        self.status.setText(f"Saved the prompt set “{name.strip()}” ({len(prompts)} prompts).")

    def replay_selected(self) -> None:
        prompts = self._set_data.get(self.sets.currentText(), [])
        if prompts:
            self.replay(prompts)

    def replay(self, prompts: list[str]) -> bool:
        """Ask each prompt, fresh, of every model; the next one once all have answered."""
        if not prompts or not any(c.ready for c in self.columns) or self.busy():
            self.status.setText("Open a model and wait for it to load before replaying.")
            return False
        for column in self.columns:
            column.clear()
        self.sent_prompts = []
        self._replay = list(prompts)
        self._replaying = True
        self._next_replay()
        return True

    def _next_replay(self) -> None:
        prompt = self._replay.pop(0)
        remaining = len(self._replay)
        self.status.setText(
            f"Replaying: {remaining} prompt{'s' * (remaining != 1)} after this one."
        )
        if not self.ask(prompt, keep_history=False):
            self._replay = []
            self._replaying = False

    @QtCore.Slot()
    def _on_column_idle(self) -> None:
        self._update_buttons()
        if self.busy():
            return
        if self._waiting:
            self._waiting = False
            self.all_idle.emit()
            if self._replay:
                self._next_replay()
            elif self._replaying:
                self._replaying = False
                self.status.setText("Replay finished.")
                self.replay_finished.emit()

    def _update_buttons(self) -> None:
        busy = self.busy()
        ready = any(c.ready for c in self.columns)
        self.send_button.setEnabled(ready and not busy)
        self.stop_button.setEnabled(busy)
        self.replay_button.setEnabled(ready and not busy and self.sets.count() > 0)
        self.open_button.setEnabled(len(self.columns) < MAX_MODELS)
