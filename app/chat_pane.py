"""The chat pane: talk to one GGUF, or 2–4 side by side, with the model's own chat template.

Each model is a `ChatColumn` (app/chat_column.py: its own thread and child process); the pane
sends the same prompt, system prompt and sampling settings to every column. A prompt set (a named
list of prompts, JSON under `<data dir>/prompt_sets/`) is replayed on every model with one click:
each prompt is asked fresh (no history), the next one once every model has answered.

When two or more models have answered the same prompt, each answer offers "Better" (and an edit
of it first): the vote appends one preference pair per other answer to the dataset named in the
bar under the columns (app/chat_votes.py), which a Dataset node can read at once.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from app.chat_column import ChatColumn
from app.chat_votes import PreferenceBar, find_canvas, record_vote, use_in_dataset_node
from engine import paths
from engine.errors import TunegraphError

MAX_MODELS = 4
__all__ = ["ChatColumn", "ChatPane", "list_prompt_sets", "save_prompt_set"]


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


# -- the pane ---------------------------------------------------------------------------------
class ChatPane(QtWidgets.QWidget):
    """Models side by side, the prompt box, sampling settings and prompt sets."""

    all_idle = QtCore.Signal()  # every model has finished the current prompt
    replay_finished = QtCore.Signal()
    models_changed = QtCore.Signal(int)
    dataset_saved = QtCore.Signal(str)  # a vote appended pairs to this preference dataset file
    serveRequested = QtCore.Signal(str)  # noqa: N815 - a column's "Serve": the GGUF to serve

    def __init__(self, parent: QtWidgets.QWidget | None = None, n_threads: int = 0):
        super().__init__(parent)
        self.n_threads = n_threads
        self.columns: list[ChatColumn] = []
        self.sent_prompts: list[str] = []
        self._replay: list[str] = []
        self._replaying = False
        self._waiting = False
        self.turn = 0  # the number of the prompt sent last (votes compare answers of one turn)
        self.turn_system: str | None = None  # the system prompt that turn was asked with
        self.voted_turn = 0
        self.canvas = None  # the canvas "Use in Dataset node" edits (default: the window's)

        layout = QtWidgets.QVBoxLayout(self)
        layout.addLayout(self._build_model_row())
        layout.addWidget(self._build_columns(), 1)
        self.votes = PreferenceBar()
        layout.addWidget(self.votes)
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
        self.votes.use_requested.connect(self.use_dataset)

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
        column.vote_requested.connect(self.vote)
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
        self.turn += 1
        sent = [c.ask(prompt, options, keep_history, self.turn) for c in self.columns if c.ready]
        if not any(sent):
            self.status.setText(
                "No model is ready to answer." if self.columns else "Open a GGUF first."
            )
            return False
        self.sent_prompts.append(prompt)
        self.turn_system = options["system"]
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

    # -- preference votes -------------------------------------------------------------------------
    def answered(self) -> list[ChatColumn]:
        """The columns that answered the last prompt (votes compare these)."""
        return [c for c in self.columns if c.has_answer(self.turn)]

    @QtCore.Slot(object)
    def vote(self, column: ChatColumn) -> bool:
        """`column`'s answer is the better one: save one pair per other answer of this prompt
        into the dataset named in the bar; False (with the reason shown) when nothing was saved."""
        answered = self.answered()
        if column not in answered or self.busy() or self.voted_turn == self.turn:
            return False
        others = [c for c in answered if c is not column]
        try:
            message, rejected = record_vote(column, others, self.turn_system, self.votes.path())
        except (TunegraphError, OSError) as err:
            self.status.setText(f"Vote not saved: {err}")
            return False
        self.voted_turn = self.turn
        edited = column.voted_text() if column.voted_text() != column.answer else None
        column.show_vote(
            "Better ✓ saved as chosen" + (" (edited)" if edited is not None else ""),
            chosen=True,
            edited=edited,
        )
        for other in others:
            other.show_vote(
                "saved as rejected" if other in rejected else "same answer: left out",
                chosen=False,
            )
        self.votes.reload()
        self.status.setText(message)
        self.dataset_saved.emit(str(self.votes.path()))
        return True

    @QtCore.Slot(str)
    def use_dataset(self, path: str) -> None:
        """Put the dataset into the canvas (see app/chat_votes.py), or copy its path."""
        canvas = self.canvas or find_canvas(self)
        if canvas is None:
            QtWidgets.QApplication.clipboard().setText(path)
            self.status.setText(f"Copied {path}: paste it into a Dataset node's File.")
            return
        self.status.setText(use_in_dataset_node(canvas, path))

    def _update_votes(self, busy: bool) -> None:
        self.votes.setVisible(len(self.columns) >= 2)  # votes compare two answers or more
        answered = [] if busy or self.voted_turn == self.turn else self.answered()
        for column in self.columns:
            column.set_votable(len(answered) >= 2 and column in answered)

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
        self._update_votes(busy)
