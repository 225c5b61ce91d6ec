"""The Sweep node's search space in the properties panel: one row per knob.

A row picks a knob (every field a sweep can vary, labelled "Learning rate (training)"), a kind
(values, range, range log, steps) and the values text, and is checked as it is typed by the
engine's own reading of a space line (app.space_lines): the one sentence of what is wrong shows
under the row. The property holds the
lines as a graph file does (`training.learning_rate: 1e-5 .. 1e-3 log`); a line the rows cannot
show (not `knob: values`, or a knob no part has) stays as typed in a text row, and a row nobody
edited gives back its line unchanged, so a hand-written space survives the panel. Like every
editor, `committed` carries the whole list once an edit is finished: one edit, one undo step.
"""

from __future__ import annotations

from typing import Any

from PySide6 import QtCore, QtWidgets

from app.param_widgets import ParamEditor
from app.space_lines import (
    KIND_HELP,
    KINDS,
    LOG,
    SPAN,
    STEPS,
    VALUES,
    Knob,
    convert,
    default_kind,
    example,
    guess_step,
    knobs,
    problem,
    read_line,
)
from nodes.catalogue import Parameter

ERROR_COLOUR = "#ff7b7b"


# -- rows ------------------------------------------------------------------------------------------
class _Row(QtWidgets.QFrame):
    """A row of the editor: `line()` is what it stores; `changed` after any edit, `finished`
    when an edit is done (commit), `removed` from its − button."""

    changed = QtCore.Signal()
    finished = QtCore.Signal()
    removed = QtCore.Signal(object)

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("spaceRow")
        self.setStyleSheet("QFrame#spaceRow { background: #2c2f34; border-radius: 4px; }")
        self.box = QtWidgets.QVBoxLayout(self)
        self.box.setContentsMargins(4, 4, 4, 4)
        self.box.setSpacing(3)
        self.remove = QtWidgets.QToolButton(text="−")
        self.remove.setToolTip("Remove this knob from the search")
        self.remove.clicked.connect(lambda: self.removed.emit(self))
        self.problem = QtWidgets.QLabel()
        self.problem.setWordWrap(True)
        self.problem.setStyleSheet(f"color: {ERROR_COLOUR};")
        self.problem.hide()

    def line(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def key(self) -> str | None:
        """The knob's `part.field` (None: a text row whose knob does not resolve)."""
        return None

    def show_problem(self, text: str) -> None:
        self.problem.setText(text)
        self.problem.setToolTip(text)
        self.problem.setVisible(bool(text))


class KnobRow(_Row):
    """A knob, its kind and its values text (and step, for steps)."""

    def __init__(
        self,
        all_knobs: list[Knob],
        knob: Knob,
        kind: str,
        text: str = "",
        step: str = "",
        original: str = "",
        parent: QtWidgets.QWidget | None = None,
    ):
        super().__init__(parent)
        self.knobs = all_knobs
        self.original = original  # the line as stored, given back until the row is edited
        self.knob_combo = QtWidgets.QComboBox()
        self.knob_combo.setMaxVisibleItems(20)
        self.knob_combo.setSizeAdjustPolicy(
            QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.knob_combo.setMinimumContentsLength(14)
        for k in all_knobs:
            self.knob_combo.addItem(k.title(), k.key)
            self.knob_combo.setItemData(
                self.knob_combo.count() - 1, k.key, QtCore.Qt.ItemDataRole.ToolTipRole
            )
        self.kind_combo = QtWidgets.QComboBox()
        for name in KINDS:
            self.kind_combo.addItem(name)
            self.kind_combo.setItemData(
                self.kind_combo.count() - 1, KIND_HELP[name], QtCore.Qt.ItemDataRole.ToolTipRole
            )
        self.values = QtWidgets.QLineEdit(text)
        self.step_label = QtWidgets.QLabel("step")
        self.step = QtWidgets.QLineEdit(step)
        self.step.setFixedWidth(56)
        self.step.setPlaceholderText("8")
        first = QtWidgets.QHBoxLayout()
        first.addWidget(self.knob_combo, 1)
        first.addWidget(self.remove)
        second = QtWidgets.QHBoxLayout()
        second.addWidget(self.kind_combo)
        second.addWidget(self.values, 1)
        second.addWidget(self.step_label)
        second.addWidget(self.step)
        self.box.addLayout(first)
        self.box.addLayout(second)
        self.box.addWidget(self.problem)
        self._set_knob(knob)
        self._set_kind(kind)
        self.knob_combo.activated.connect(self._on_knob)
        self.kind_combo.activated.connect(self._on_kind)
        self.values.editingFinished.connect(self._fill_step)  # before the commit below
        for edit in (self.values, self.step):
            edit.textEdited.connect(self._on_typed)
            edit.editingFinished.connect(self.finished)

    # -- state -------------------------------------------------------------------------------
    @property
    def knob(self) -> Knob:
        return self.knobs[self.knob_combo.currentIndex()]

    @property
    def kind(self) -> str:
        return self.kind_combo.currentText()

    def key(self) -> str | None:
        return self.knob.key

    def line(self) -> str:
        """`part.field: values` as typed (the stored line until the row is edited); "" while
        the values are empty."""
        if self.original:
            return self.original
        text = self.values.text().strip()
        if not text:
            return ""
        if self.kind == LOG:
            text += " log"
        elif self.kind == STEPS and self.step.text().strip():
            text += f" step {self.step.text().strip()}"
        return f"{self.knob.key}: {text}"

    def check(self) -> str:
        """The row's problem in one sentence ("" when its line reads, or it is still empty)."""
        text = self.values.text().strip()
        if not text:
            return ""
        if self.kind == VALUES and ".." in text:
            return f"A list of values is a, b, c; for {text} pick the kind range"
        if self.kind != VALUES and not SPAN.match(text):
            return f"A range is low .. high, e.g. {example(self.knob, self.kind)}"
        if self.kind == STEPS and not self.step.text().strip():
            return "Give the step, e.g. 8 for 8 .. 64 step 8"
        return problem(self.line())

    # -- edits -------------------------------------------------------------------------------
    def _set_knob(self, knob: Knob) -> None:
        self.knob_combo.setCurrentIndex(self.knobs.index(knob))
        self.knob_combo.setToolTip(f"{knob.key} (short name {knob.short})")
        model = self.kind_combo.model()
        for i, name in enumerate(KINDS):  # a text or on/off knob only takes a list of values
            model.item(i).setEnabled(name == VALUES or knob.numeric)

    def _set_kind(self, kind: str) -> None:
        self.kind_combo.setCurrentText(kind)
        self.step_label.setVisible(kind == STEPS)
        self.step.setVisible(kind == STEPS)
        self.values.setPlaceholderText(example(self.knob, kind))
        self.values.setToolTip(KIND_HELP[kind])

    def _edited(self) -> None:
        self.original = ""
        self.changed.emit()

    def _on_typed(self, _text: str) -> None:
        self._edited()

    def _fill_step(self) -> None:
        """A range typed in steps with no step yet: one that cuts it in four."""
        text = self.values.text().strip()
        if self.kind == STEPS and not self.step.text().strip() and SPAN.match(text):
            self.step.setText(guess_step(text, self.knob))
            self._edited()

    def _on_knob(self, _index: int) -> None:
        knob = self.knob
        self._set_knob(knob)
        if not self.values.text().strip():  # nothing typed yet: the new knob's usual kind
            self._set_kind(default_kind(knob))
        elif not knob.numeric and self.kind != VALUES:
            self.values.clear()
            self._set_kind(VALUES)
        else:
            self._set_kind(self.kind)
        self._edited()
        self.finished.emit()

    def _on_kind(self, _index: int) -> None:
        self.values.setText(convert(self.values.text(), self.step.text(), self.kind))
        if self.kind == STEPS and not self.step.text().strip():
            self.step.setText(guess_step(self.values.text(), self.knob))
        self._set_kind(self.kind)
        self._edited()
        self.finished.emit()


class TextRow(_Row):
    """A hand-typed line the knob rows cannot show, kept as text."""

    def __init__(self, line: str, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.edit = QtWidgets.QLineEdit(line)
        self.edit.setToolTip(
            "Typed by hand: `knob: values`, e.g. training.learning_rate: 1e-5 .. 1e-3 log"
        )
        first = QtWidgets.QHBoxLayout()
        first.addWidget(self.edit, 1)
        first.addWidget(self.remove)
        self.box.addLayout(first)
        self.box.addWidget(self.problem)
        self.edit.textEdited.connect(lambda _t: self.changed.emit())
        self.edit.editingFinished.connect(self.finished)

    def line(self) -> str:
        return self.edit.text().strip()

    def check(self) -> str:
        return problem(self.line()) if self.line() else ""


# -- the editor ------------------------------------------------------------------------------------
class SpaceEditor(ParamEditor):
    """The search space: knob rows, text rows for lines typed by hand, and + to add a knob."""

    def __init__(self, param: Parameter, parent: QtWidgets.QWidget | None = None):
        super().__init__(param, parent)
        self.all_knobs = knobs()
        self.by_key = {k.key: k for k in self.all_knobs}
        self.rows: list[_Row] = []
        self.stored: list[str] = []
        column = QtWidgets.QVBoxLayout()
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(2)
        self.row_box = QtWidgets.QVBoxLayout()
        self.row_box.setContentsMargins(0, 0, 0, 0)
        self.row_box.setSpacing(4)
        self.empty = QtWidgets.QLabel("No knob yet: add the first one to search.")
        self.empty.setObjectName("hint")
        self.row_box.addWidget(self.empty)
        column.addLayout(self.row_box)
        bar = QtWidgets.QHBoxLayout()
        self.add_button = QtWidgets.QPushButton("+ Add knob")
        self.add_button.setToolTip("Search one more knob of the Fine-Tune node this Sweep feeds")
        self.add_button.setAutoDefault(False)
        self.add_button.clicked.connect(self.add_knob)
        bar.addWidget(self.add_button)
        bar.addStretch(1)
        column.addLayout(bar)
        self.error = QtWidgets.QLabel()  # the compiler's word on the whole space
        self.error.setWordWrap(True)
        self.error.setStyleSheet(f"color: {ERROR_COLOUR};")
        self.error.hide()
        column.addWidget(self.error)
        self.layout_.addLayout(column, 1)
        self.compile_error = ""

    # -- value -------------------------------------------------------------------------------
    def lines(self) -> list[str]:
        """The lines the rows hold now (rows still empty are left out)."""
        return [line for line in (row.line() for row in self.rows) if line]

    def set_value(self, value: Any) -> None:
        """Show the stored lines (a list, or text split on newlines and `;`); the rows stay as
        they are when they already hold exactly these lines."""
        try:
            lines = self.param.coerce(value)
        except ValueError:
            lines = [str(value)] if value else []
        if lines == self.stored and lines == self.lines():
            return
        for row in list(self.rows):
            self._drop(row)
        for line in lines:
            self._add_row(self._row_for(line))
        self.stored = list(lines)
        self.recheck()

    def _row_for(self, line: str) -> _Row:
        read = read_line(line, self.by_key)
        if read is None:
            return TextRow(line)
        knob, kind, text, step = read
        if not knob.numeric and kind != VALUES:
            return TextRow(line)
        return KnobRow(self.all_knobs, knob, kind, text, step, original=line)

    def _commit(self) -> None:
        lines = self.lines()
        self.recheck()
        if lines != self.stored:
            self.stored = lines
            self.committed.emit(lines)

    # -- rows --------------------------------------------------------------------------------
    def add_knob(self) -> KnobRow:
        """A new row for the first knob not searched yet (learning rate first); nothing is
        stored until its values are typed."""
        used = {row.key() for row in self.rows}
        order = sorted(self.all_knobs, key=lambda k: not k.key.endswith("learning_rate"))
        knob = next((k for k in order if k.key not in used), self.all_knobs[0])
        row = KnobRow(self.all_knobs, knob, default_kind(knob))
        self._add_row(row)
        row.values.setFocus()
        self.recheck()
        return row

    def _add_row(self, row: _Row) -> None:
        row.changed.connect(self.recheck)
        row.finished.connect(self._commit)
        row.removed.connect(self.remove_row)
        self.row_box.addWidget(row)
        self.rows.append(row)
        self.empty.hide()

    def remove_row(self, row: _Row) -> None:
        self._drop(row)
        self._commit()

    def _drop(self, row: _Row) -> None:
        self.rows.remove(row)
        self.row_box.removeWidget(row)
        row.hide()
        row.deleteLater()
        self.empty.setVisible(not self.rows)

    # -- problems ----------------------------------------------------------------------------
    def recheck(self) -> None:
        """Each row's problem under it (a knob listed twice included); the compiler's message
        on the whole space below the rows when no row explains it."""
        seen: set[str] = set()
        any_problem = False
        for row in self.rows:
            text = row.check()
            key = row.key()
            if not text and row.line() and key in seen:
                text = f"{key} is listed twice: one row per knob"
            if row.line() and key:
                seen.add(key)
            row.show_problem(text)
            any_problem |= bool(text)
        shown = self.compile_error if not any_problem else ""
        self.error.setText(shown)
        self.error.setVisible(bool(shown))

    def problems(self) -> list[str]:
        """The sentences shown under the rows, top to bottom."""
        return [row.problem.text() for row in self.rows if row.problem.text()]

    def set_error(self, message: str) -> None:
        """The compile error on the space (an empty space, a grid over a continuous range…)."""
        self.compile_error = message
        self.setToolTip(self.param.help + (f"\n\n⚠ {message}" if message else ""))
        self.recheck()
