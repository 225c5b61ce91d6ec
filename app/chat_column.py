"""One model of the chat pane: its header, transcript, the figures of its last answer, and the
"Better" vote on that answer (with an optional edit of it first) when models answer side by side.

The model runs in its own thread and child process (app/chat_worker.py). The pane numbers each
prompt it sends (`turn`); a column remembers which turn its last answer belongs to, so the pane
can tell which answers were given to the same prompt.
"""

from __future__ import annotations

import html
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from app.chat_worker import ChatModel

USER_COLOUR = "#8ab4f8"
MODEL_COLOUR = "#81c995"
ERROR_COLOUR = "#f28b82"
HINT_COLOUR = "#9aa0a6"


class ChatColumn(QtWidgets.QFrame):
    """One model's conversation: header, transcript, figures and vote of the last answer."""

    idle = QtCore.Signal()  # an answer ended (done or failed) or loading ended
    remove_requested = QtCore.Signal(object)
    serve_requested = QtCore.Signal(str)  # "Serve": an OpenAI-compatible endpoint for this GGUF
    vote_requested = QtCore.Signal(object)  # "Better": this column's answer is the preferred one

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
        self.turn = 0  # the pane's number of the prompt asked last
        self.answered_turn = 0  # the turn the last complete answer belongs to (0: none)

        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(self._build_head())
        self.template_label = QtWidgets.QLabel("Loading the model…")
        self.template_label.setWordWrap(True)
        self.template_label.setStyleSheet(f"color: {HINT_COLOUR};")
        self.progress = QtWidgets.QProgressBar(maximum=0, textVisible=False, maximumHeight=6)
        self.transcript = QtWidgets.QTextEdit(readOnly=True)
        self.transcript.setPlaceholderText("Answers appear here.")
        self.edit_box = QtWidgets.QPlainTextEdit()
        self.edit_box.setPlaceholderText("The answer as it should be; “Better” saves this text.")
        self.edit_box.setMaximumHeight(110)
        self.edit_box.hide()
        layout.addWidget(self.template_label)
        layout.addWidget(self.progress)
        layout.addWidget(self.transcript, 1)
        layout.addWidget(self.edit_box)
        layout.addLayout(self._build_foot())

        self.model = ChatModel(self.path, self, n_threads=n_threads)
        self.model.loaded.connect(self._on_loaded)
        self.model.piece.connect(self._on_piece)
        self.model.done.connect(self._on_done)
        self.model.failed.connect(self._on_failed)

    def _build_head(self) -> QtWidgets.QHBoxLayout:
        self.title = QtWidgets.QLabel(f"<b>{html.escape(Path(self.path).name)}</b>")
        self.title.setToolTip(self.path)
        self.title.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QtWidgets.QToolButton(text="✕", toolTip="Remove this model", autoRaise=True)
        close.clicked.connect(self._ask_remove)
        self.serve_button = QtWidgets.QToolButton(text="Serve…")
        self.serve_button.setToolTip("Serve this GGUF as an OpenAI-compatible endpoint")
        self.serve_button.clicked.connect(self._ask_serve)
        head = QtWidgets.QHBoxLayout()
        head.addWidget(self.title, 1)
        head.addWidget(self.serve_button)
        head.addWidget(close)
        return head

    def _build_foot(self) -> QtWidgets.QHBoxLayout:
        self.stats_label = QtWidgets.QLabel("")
        self.stats_label.setStyleSheet(f"color: {HINT_COLOUR};")
        self.copy_button = QtWidgets.QToolButton(
            text="Copy", toolTip="Copy the last answer", enabled=False
        )
        self.copy_button.clicked.connect(self.copy_answer)
        self.edit_button = QtWidgets.QToolButton(text="Edit", checkable=True, enabled=False)
        self.edit_button.setToolTip("Correct this answer before voting for it")
        self.edit_button.toggled.connect(self._on_edit_toggled)
        self.better_button = QtWidgets.QPushButton("Better", enabled=False)
        self.better_button.setToolTip(
            "Prefer this answer: one pair (this answer chosen, the other model's rejected) per "
            "other model goes into the preference dataset"
        )
        self.better_button.clicked.connect(self._ask_vote)
        foot = QtWidgets.QHBoxLayout()
        foot.addWidget(self.stats_label, 1)
        foot.addWidget(self.copy_button)
        foot.addWidget(self.edit_button)
        foot.addWidget(self.better_button)
        return foot

    @property
    def busy(self) -> bool:
        return self.model.busy

    def ask(self, prompt: str, options: dict, keep_history: bool = True, turn: int = 0) -> bool:
        """Send `prompt` (plus the conversation so far unless keep_history is False); `turn` is
        the pane's number of this prompt."""
        if not self.ready or self.busy:
            return False
        if not keep_history:
            self.history = []
        self.history.append({"role": "user", "content": prompt})
        self.answer = ""
        self.turn = turn
        self.set_votable(False)
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
        self.answered_turn = 0
        self.transcript.clear()
        self.stats_label.clear()
        self.copy_button.setEnabled(False)
        self.set_votable(False)

    def copy_answer(self) -> None:
        QtWidgets.QApplication.clipboard().setText(self.answer)

    def close_model(self) -> None:
        self.model.close()

    # -- votes ------------------------------------------------------------------------------------
    def has_answer(self, turn: int) -> bool:
        """Whether this column answered the pane's prompt number `turn` (with some text)."""
        return (
            turn > 0
            and self.answered_turn == turn
            and bool(self.answer.strip())
            and bool(self.history)
            and self.history[-1]["role"] == "assistant"
        )

    def voted_text(self) -> str:
        """The answer a vote saves: the edited text while the editor is open, else the answer."""
        return self.edit_box.toPlainText() if self.edit_button.isChecked() else self.answer

    def prompt_turns(self) -> list[dict]:
        """The conversation this column's last answer replies to (it ends with the user turn)."""
        return [dict(m) for m in self.history[:-1]]

    def set_votable(self, votable: bool) -> None:
        """Offer (or withdraw) Better and Edit on the last answer."""
        self.better_button.setEnabled(votable)
        self.edit_button.setEnabled(votable)
        if not votable:
            self.edit_button.setChecked(False)

    def set_edited(self, text: str) -> None:
        """Open the editor with `text` as the answer to vote for (what typing in it does)."""
        self.edit_button.setChecked(True)
        self.edit_box.setPlainText(text)

    def show_vote(self, note: str, chosen: bool, edited: str | None = None) -> None:
        """After a vote: the note in the figures line, the chosen answer's frame marked, and the
        text saved in its place when the answer was edited."""
        self.set_votable(False)
        self.stats_label.setText(note)
        if edited is not None:
            self._new_block(top_margin=4)
            self._write("Saved as: ", MODEL_COLOUR, bold=True)
            self._write(edited, HINT_COLOUR)
        self.setStyleSheet(
            f"ChatColumn {{ border: 2px solid {MODEL_COLOUR}; border-radius: 4px; }}"
            if chosen
            else ""
        )

    def _ask_vote(self) -> None:
        self.vote_requested.emit(self)

    def _on_edit_toggled(self, on: bool) -> None:
        if on and not self.edit_box.toPlainText():
            self.edit_box.setPlainText(self.answer)
        self.edit_box.setVisible(on)
        if on:
            self.edit_box.setFocus()

    # -- transcript ----------------------------------------------------------------------------
    def _ask_remove(self) -> None:
        self.remove_requested.emit(self)

    def _ask_serve(self) -> None:
        self.serve_requested.emit(self.path)

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
        self.answered_turn = self.turn
        self.edit_box.clear()
        self.setStyleSheet("")
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
            self.template_label.setStyleSheet(f"color: {ERROR_COLOUR};")
        elif self.history and self.history[-1]["role"] == "user":
            self.history.pop()  # the question got no answer; it is not part of the conversation
        self._new_block(top_margin=4)
        self._write(message, ERROR_COLOUR)
        self.stats_label.setText("")
        self.idle.emit()
