"""Preference votes in the chat pane: the dataset bar under the model columns, and what a vote
writes (engine.data.preferences does the writing).

The bar names the preference dataset votes go to (an editable list of the datasets in
`<data dir>/datasets/`), says how many pairs it holds and where, and puts it into the canvas:
"Use in Dataset node" sets the selected Dataset node's file (or adds a Dataset node when none is
selected); "Copy path" copies the file's path.
"""

from __future__ import annotations

import html
from pathlib import Path

from PySide6 import QtCore, QtWidgets

from engine.data import preferences
from engine.errors import DataError

HINT_COLOUR = "#9aa0a6"


class PreferenceBar(QtWidgets.QWidget):
    """The dataset votes go to, its size, and the buttons that hand it to a Dataset node."""

    use_requested = QtCore.Signal(str)  # "Use in Dataset node": the dataset file

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.name = QtWidgets.QComboBox(editable=True, minimumContentsLength=14)
        self.name.setToolTip(
            "The preference dataset votes go to; type a new name to start another one"
        )
        self.name.setInsertPolicy(QtWidgets.QComboBox.InsertPolicy.NoInsert)
        self.info = QtWidgets.QLabel("")
        self.info.setStyleSheet(f"color: {HINT_COLOUR};")
        self.info.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.use_button = QtWidgets.QPushButton("Use in Dataset node")
        self.use_button.setToolTip(
            "Put this dataset into the selected Dataset node (a new one when none is selected)"
        )
        self.copy_button = QtWidgets.QPushButton("Copy path")
        row = QtWidgets.QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QtWidgets.QLabel("Votes go to"))
        row.addWidget(self.name)
        row.addWidget(self.info, 1)
        row.addWidget(self.use_button)
        row.addWidget(self.copy_button)
        self.name.currentTextChanged.connect(self.show_count)
        self.use_button.clicked.connect(self._ask_use)
        self.copy_button.clicked.connect(self.copy_path)
        self.reload()

    def reload(self) -> None:
        """List the preference datasets (newest first), keeping the name shown."""
        current = self.name.currentText().strip() or preferences.DEFAULT_NAME
        names = [d["name"] for d in preferences.list_datasets()]
        if preferences.DEFAULT_NAME not in names:
            names.append(preferences.DEFAULT_NAME)
        self.name.blockSignals(True)
        self.name.clear()
        self.name.addItems(names)
        self.name.setCurrentText(current)
        self.name.blockSignals(False)
        self.show_count()

    def path(self) -> Path:
        """The file of the dataset named in the bar."""
        return preferences.dataset_path(self.name.currentText() or preferences.DEFAULT_NAME)

    def show_count(self, *_args) -> int:
        """Say how many pairs the dataset holds and where; returns the count."""
        path = self.path()
        count = preferences.count_pairs(path)
        where = html.escape(str(path))
        if count:
            self.info.setText(f"{count} pair{'s' * (count != 1)} in {where}")
        else:
            self.info.setText(f"no pairs yet; the first vote creates {where}")
        self.use_button.setEnabled(count > 0)
        self.copy_button.setEnabled(count > 0)
        return count

    def copy_path(self) -> None:
        QtWidgets.QApplication.clipboard().setText(str(self.path()))

    def _ask_use(self) -> None:
        self.use_requested.emit(str(self.path()))


def record_vote(chosen, others: list, system: str | None, path: Path) -> tuple[str, list]:
    """Append one pair per other answer (chosen: the voted ChatColumn, others: the columns that
    answered the same prompt) to the dataset at `path`; returns the sentence for the status line
    and the columns whose answers were saved as rejected. Raises DataError with one sentence
    when nothing can be saved."""
    prompt = chosen.prompt_turns()
    if system and not (prompt and prompt[0]["role"] == "system"):
        prompt = [{"role": "system", "content": system}, *prompt]
    pairs, same = preferences.pairs_from_vote(
        prompt,
        chosen.voted_text(),
        [(Path(c.path).name, c.answer) for c in others],
        Path(chosen.path).name,
    )
    if not pairs:
        raise DataError(
            "nothing saved: the other answers are the same as this one"
            if same
            else "nothing saved: no other model answered this prompt"
        )
    total = preferences.append_pairs(path, pairs)
    edited = " (edited)" if chosen.voted_text() != chosen.answer else ""
    losers = ", ".join(p.rejected_model for p in pairs)
    note = f" ({same} identical answer{'s' * (same != 1)} left out)" if same else ""
    message = (
        f"Saved {len(pairs)} pair{'s' * (len(pairs) != 1)}: {Path(chosen.path).name}{edited} "
        f"preferred over {losers}{note}. {path.stem} holds {total} pairs."
    )
    return message, [c for c in others if preferences.makes_pair(chosen.voted_text(), c.answer)]


def find_canvas(widget: QtWidgets.QWidget):
    """The canvas of the window holding `widget` (its `canvas` attribute), or None."""
    from app.canvas import Canvas

    parent = widget
    while parent is not None:
        canvas = getattr(parent, "canvas", None)
        if isinstance(canvas, Canvas):
            return canvas
        parent = parent.parentWidget()
    return None


def use_in_dataset_node(canvas, path: str) -> str:
    """Set the selected Dataset node's file to `path`, or add a Dataset node for it when no
    (single) Dataset node is selected; returns the sentence for the status line."""
    from app.node_factory import decl_of

    selected = [n for n in canvas.selected() if decl_of(n).kind == "Dataset"]
    if len(selected) == 1:
        node = selected[0]
        canvas.set_param(node, "path", path)
        return f"“{node.name()}” now reads {Path(path).name}."
    node = canvas.add_node("Dataset", name=Path(path).stem, path=path)
    canvas.select([node])
    return (
        f"Added the Dataset node “{node.name()}” reading {Path(path).name}: connect it to a "
        "Fine-Tune node whose method is dpo, orpo or simpo."
    )
