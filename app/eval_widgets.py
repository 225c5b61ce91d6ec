"""The Eval node's editors: the metrics to compute and the judge model file.

`MetricsEditor` is a list of ticked metrics: the built-in ones are always listed (ticking adds,
unticking removes), and a line below adds the ones that carry an argument (`regex:PATTERN`,
`python:FILE.py`, `json:SCHEMA.json`), with a Browse button for a Python scorer file. The value
is a list, so a pattern may hold commas. `GgufEditor` is a file field for `.gguf` models.
"""

from __future__ import annotations

from typing import Any

from PySide6 import QtCore, QtWidgets

from app.param_widgets import FileEditor, ParamEditor
from nodes.catalogue import Parameter

BUILT_IN = ("loss", "rouge_l", "exact", "contains", "json", "judge", "judge_pairwise")
ARGUMENT_HINT = "regex:^ACK:  ·  python:score.py  ·  json:schema.json"
GGUF_FILTER = "GGUF models (*.gguf);;All files (*)"
VISIBLE_ROWS = 8


class MetricsEditor(ParamEditor):
    """Ticked metrics, built-in and with arguments; `committed` carries the ticked names."""

    def __init__(self, param: Parameter, parent: QtWidgets.QWidget | None = None):
        super().__init__(param, parent)
        box = QtWidgets.QVBoxLayout()
        box.setContentsMargins(0, 0, 0, 0)
        self.list = QtWidgets.QListWidget()
        self.list.setUniformItemSizes(True)
        for name in BUILT_IN:
            self._add_item(name, False)
        row_height = self.list.sizeHintForRow(0) or 18
        self.list.setFixedHeight(row_height * VISIBLE_ROWS + 6)
        self.list.itemChanged.connect(lambda _item: self._commit())
        add_row = QtWidgets.QHBoxLayout()
        self.extra = QtWidgets.QLineEdit()
        self.extra.setPlaceholderText(ARGUMENT_HINT)
        self.extra.setToolTip("Add a metric with an argument; press Enter")
        self.extra.returnPressed.connect(self.add_from_line)
        browse = QtWidgets.QToolButton(text="Python…")
        browse.setToolTip("Add a python:FILE.py scorer: score(output, reference, row) -> float")
        browse.clicked.connect(self._browse)
        add_row.addWidget(self.extra, 1)
        add_row.addWidget(browse)
        box.addWidget(self.list)
        box.addLayout(add_row)
        self.layout_.addLayout(box)

    def _add_item(self, name: str, checked: bool) -> QtWidgets.QListWidgetItem:
        item = QtWidgets.QListWidgetItem(name)
        item.setFlags(item.flags() | QtCore.Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(
            QtCore.Qt.CheckState.Checked if checked else QtCore.Qt.CheckState.Unchecked
        )
        self.list.addItem(item)
        return item

    def _item(self, name: str) -> QtWidgets.QListWidgetItem | None:
        found = self.list.findItems(name, QtCore.Qt.MatchFlag.MatchExactly)
        return found[0] if found else None

    def names(self) -> list[str]:
        """The ticked metrics, in list order."""
        return [
            self.list.item(i).text()
            for i in range(self.list.count())
            if self.list.item(i).checkState() == QtCore.Qt.CheckState.Checked
        ]

    def add(self, name: str) -> None:
        """Tick `name`, adding it to the list when it is not there yet."""
        name = name.strip()
        if not name:
            return
        item = self._item(name)
        self.list.blockSignals(True)
        if item is None:
            self._add_item(name, True)
        else:
            item.setCheckState(QtCore.Qt.CheckState.Checked)
        self.list.blockSignals(False)
        self._commit()

    def add_from_line(self) -> None:
        """Add what the line holds (e.g. regex:^ACK:) and clear it."""
        self.add(self.extra.text())
        self.extra.clear()

    def _browse(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Choose a Python scorer", "", "Python files (*.py);;All files (*)"
        )
        if path:
            self.add(f"python:{path}")

    def _commit(self) -> None:
        self.committed.emit(self.names())

    def set_value(self, value: Any) -> None:
        """Tick exactly the metrics of `value` (a list; text is split at commas)."""
        try:
            names = self.param.coerce(value)
        except ValueError:
            names = []
        self.list.blockSignals(True)
        for i in range(self.list.count()):
            self.list.item(i).setCheckState(QtCore.Qt.CheckState.Unchecked)
        for name in names:
            item = self._item(name) or self._add_item(name, True)
            item.setCheckState(QtCore.Qt.CheckState.Checked)
        self.list.blockSignals(False)

    def set_error(self, message: str) -> None:
        """Outline the list in red with the message as tooltip ("" clears it)."""
        super().set_error(message)
        self.list.setStyleSheet("QListWidget { border: 1px solid #dc3535; }" if message else "")


class GgufEditor(FileEditor):
    """A .gguf model file (empty: none)."""

    def __init__(self, param: Parameter, parent: QtWidgets.QWidget | None = None):
        super().__init__(param, parent)
        # a field shown only when needed (the Reward node's judge) is not optional there
        self.edit.setPlaceholderText("judge.gguf" if param.visible_if else "judge.gguf (optional)")

    def _browse(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Choose a GGUF model", "", GGUF_FILTER
        )
        if path:
            self.edit.setText(path)
            self._commit()


def make_eval_editor(param: Parameter, parent: QtWidgets.QWidget | None = None) -> ParamEditor:
    """The editor of an Eval node parameter with its own widget (`metrics` or `gguf`)."""
    return MetricsEditor(param, parent) if param.widget == "metrics" else GgufEditor(param, parent)
