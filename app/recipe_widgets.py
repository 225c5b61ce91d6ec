"""Property editors of the data nodes: text with one entry per line (a Generate node's seeds),
a prompt template over several lines, and a list of document files with a picker."""

from __future__ import annotations

from typing import Any

from PySide6 import QtCore, QtWidgets

from app.param_widgets import ParamEditor
from nodes.catalogue import Parameter

DOCUMENT_FILTER = "Documents (*.txt *.md *.markdown *.pdf);;All files (*)"


class _FocusOut(QtCore.QObject):
    """Calls `commit` when the watched editor loses focus (a plain text edit has no
    editingFinished)."""

    def __init__(self, commit, parent: QtCore.QObject):
        super().__init__(parent)
        self.commit = commit

    def eventFilter(self, _obj, event) -> bool:  # noqa: N802 - Qt override
        if event.type() == QtCore.QEvent.Type.FocusOut:
            self.commit()
        return False


class MultiLineEditor(ParamEditor):
    """Several lines of text: a template (one string) or entries one per line (a list)."""

    def __init__(self, param: Parameter, parent=None):
        super().__init__(param, parent)
        self.edit = QtWidgets.QPlainTextEdit()
        self.edit.setTabChangesFocus(True)
        self.edit.setFixedHeight(90)
        if param.widget == "template":
            self.edit.setPlaceholderText(
                "empty: the task's default; {seed} and {passage} mark the places"
            )
        else:
            self.edit.setPlaceholderText("one per line")
        self.layout_.addWidget(self.edit)
        self.edit.installEventFilter(_FocusOut(self._commit, self))
        self._shown = ""

    def value(self) -> Any:
        text = self.edit.toPlainText()
        if self.param.type == "list":
            return [line.strip() for line in text.splitlines() if line.strip()]
        return text

    def _commit(self) -> None:
        if self.edit.toPlainText() != self._shown:
            self._shown = self.edit.toPlainText()
            self.committed.emit(self.value())

    def set_value(self, value: Any) -> None:
        if isinstance(value, (list, tuple)):
            text = "\n".join(str(v) for v in value)
        else:
            text = "" if value is None else str(value)
        self._shown = text
        self.edit.blockSignals(True)
        self.edit.setPlainText(text)
        self.edit.blockSignals(False)


class FilesEditor(MultiLineEditor):
    """Document files, one path per line, with a picker that adds files."""

    def __init__(self, param: Parameter, parent=None):
        super().__init__(param, parent)
        self.edit.setPlaceholderText("one file per line: .txt, .md or .pdf")
        button = QtWidgets.QToolButton(text="Add…")
        button.setToolTip("Add text, Markdown or PDF files")
        button.clicked.connect(self._browse)
        self.layout_.addWidget(button, 0, QtCore.Qt.AlignmentFlag.AlignTop)

    def _browse(self) -> None:
        paths, _ = QtWidgets.QFileDialog.getOpenFileNames(
            self, "Add documents", "", DOCUMENT_FILTER
        )
        if paths:
            current = self.value()
            self.set_value(current + [p for p in paths if p not in current])
            self._shown = ""  # changed: commit
            self._commit()
