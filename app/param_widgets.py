"""One editor widget per declared parameter type: text, int, float, choice, bool, file, model
source (a picker of the models on this machine, app.model_choices), list of target modules,
column mapping, and (app.space_editor) a Sweep node's search space.

Each editor emits `committed(value)` once the user finishes an edit (Enter, focus out, a click),
never on every keystroke, so one edit is one undo step. NodeGraphQt's own INT/FLOAT editors lose
edits (shared/NOTES.md); these call `Canvas.set_param`, which stores typed values.
"""

from __future__ import annotations

import json
from typing import Any

from PySide6 import QtCore, QtGui, QtWidgets

from app import model_choices
from engine.formatting import format_float
from nodes.catalogue import Parameter

INT_LIMIT = 2_147_483_647
COMMON_MODULES = (
    "auto",  # the attention's query and value projections, as this model names them
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "qkv_proj",  # Phi-3's fused query/key/value
    "gate_up_proj",  # Phi-3's fused gate and up
    "all-linear",
)
WHOLE_SETS = ("auto", "all-linear")  # each stands alone: ticking one clears the other names
VALUE_ROLE = QtCore.Qt.ItemDataRole.UserRole  # a model entry's value (its text is a label)
DATASET_FILTER = "Datasets (*.jsonl *.json *.csv *.parquet);;All files (*)"


class ParamEditor(QtWidgets.QWidget):
    """Base editor: `set_value` shows a stored value without emitting; `committed` on edit."""

    committed = QtCore.Signal(object)

    def __init__(self, param: Parameter, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.param = param
        self.layout_ = QtWidgets.QHBoxLayout(self)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        self.setToolTip(tooltip_for(param))

    def set_value(self, value: Any) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def set_error(self, message: str) -> None:
        """Outline the editor in red with the message as tooltip ("" clears it)."""
        self.setProperty("error", bool(message))
        self.setStyleSheet(
            "QLineEdit, QSpinBox, QComboBox { border: 1px solid #dc3535; }" if message else ""
        )
        self.setToolTip(tooltip_for(self.param) + (f"\n\n⚠ {message}" if message else ""))


class TextEditor(ParamEditor):
    def __init__(self, param: Parameter, parent=None):
        super().__init__(param, parent)
        self.edit = QtWidgets.QLineEdit()
        self.layout_.addWidget(self.edit)
        self.edit.editingFinished.connect(self._commit)

    def _commit(self) -> None:
        self.committed.emit(self.edit.text())

    def set_value(self, value: Any) -> None:
        self.edit.setText(_text(value, self.param))


class FloatEditor(TextEditor):
    """Free text so `2e-4` can be typed; a value that is not a number is still stored and then
    named by the compiler on the node."""

    def _commit(self) -> None:
        text = self.edit.text().strip()
        try:
            self.committed.emit(float(text))
        except ValueError:
            self.committed.emit(text)


class IntEditor(ParamEditor):
    def __init__(self, param: Parameter, parent=None):
        super().__init__(param, parent)
        self.spin = QtWidgets.QSpinBox()
        low = int(param.min) if param.min is not None else -INT_LIMIT
        high = int(min(param.max, INT_LIMIT)) if param.max is not None else INT_LIMIT
        self.spin.setRange(low, high)
        self.spin.setKeyboardTracking(False)  # valueChanged on Enter/focus-out/arrows only
        self.spin.setAccelerated(True)
        self.layout_.addWidget(self.spin)
        self.spin.valueChanged.connect(lambda v: self.committed.emit(int(v)))

    def set_value(self, value: Any) -> None:
        try:
            number = int(self.param.coerce(value))
        except ValueError:
            number = self.param.default
        self.spin.blockSignals(True)
        self.spin.setValue(number)
        self.spin.blockSignals(False)


class BoolEditor(ParamEditor):
    def __init__(self, param: Parameter, parent=None):
        super().__init__(param, parent)
        self.box = QtWidgets.QCheckBox()
        self.layout_.addWidget(self.box)
        self.box.toggled.connect(lambda on: self.committed.emit(bool(on)))

    def set_value(self, value: Any) -> None:
        try:
            checked = self.param.coerce(value)
        except ValueError:
            checked = False
        self.box.blockSignals(True)
        self.box.setChecked(bool(checked))
        self.box.blockSignals(False)


class ChoiceEditor(ParamEditor):
    def __init__(self, param: Parameter, parent=None):
        super().__init__(param, parent)
        self.combo = QtWidgets.QComboBox()
        self.combo.addItems(list(param.choices or ()))
        self.layout_.addWidget(self.combo)
        self.combo.activated.connect(lambda _i: self.committed.emit(self.combo.currentText()))

    def set_value(self, value: Any) -> None:
        self.combo.blockSignals(True)
        if self.combo.findText(str(value)) < 0:
            self.combo.addItem(str(value))
        self.combo.setCurrentText(str(value))
        self.combo.blockSignals(False)


class FileEditor(TextEditor):
    def __init__(self, param: Parameter, parent=None):
        super().__init__(param, parent)
        held_out = "held-out split" in param.help  # an Eval node's set: empty is allowed
        self.placeholder = "empty: the held-out split" if held_out else "path/to/data.jsonl"
        self.edit.setPlaceholderText(self.placeholder)
        button = QtWidgets.QToolButton(text="Browse…")
        button.setToolTip("Choose a .jsonl, .json, .csv or .parquet file")
        button.clicked.connect(self._browse)
        self.layout_.addWidget(button)

    def _browse(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Choose a dataset", "", DATASET_FILTER
        )
        if path:
            self.edit.setText(path)
            self._commit()

    def show_rows_from(self, source: str) -> None:
        """Say what an empty field means while an Eval node's Eval set input is connected
        (`source`: `"hold out 4" (eval)`; "" for the field's own placeholder)."""
        self.edit.setPlaceholderText(
            f"empty: the rows from {source}" if source else self.placeholder
        )


class _PickerCombo(QtWidgets.QComboBox):
    """An editable combo box that says when its list is about to open."""

    opening = QtCore.Signal()

    def showPopup(self) -> None:  # noqa: N802 - Qt's name
        self.opening.emit()
        super().showPopup()


class ModelEditor(ParamEditor):
    """A hub id, a local folder, gguf:PATH, run:RUN_ID or builtin:tiny-llama: typed, or picked
    from what this machine has (app.model_choices: the Hugging Face cache, the library's GGUFs,
    the runs that delivered a model), read in the background and again each time the list opens."""

    def __init__(self, param: Parameter, parent=None):
        super().__init__(param, parent)
        self.choices = model_choices.shared()
        self.combo = _PickerCombo(editable=True)
        self.combo.setInsertPolicy(QtWidgets.QComboBox.InsertPolicy.NoInsert)
        self.combo.setSizePolicy(
            QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Fixed
        )
        # not as wide as the longest entry: the panel would scroll sideways and cut off the lines
        # above the form (errors, the chat template in use); the list itself is wider
        self.combo.setSizeAdjustPolicy(
            QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.combo.setMinimumContentsLength(12)
        self.combo.setMaxVisibleItems(24)
        self.combo.lineEdit().setPlaceholderText("org/model, a folder, gguf:FILE or run:ID")
        self.items = QtGui.QStandardItemModel(self.combo)
        self.combo.setModel(self.items)
        self.values = QtCore.QStringListModel(self)  # typing completes values, not labels
        completer = QtWidgets.QCompleter(self.values, self.combo)
        completer.setCaseSensitivity(QtCore.Qt.CaseSensitivity.CaseInsensitive)
        completer.setFilterMode(QtCore.Qt.MatchFlag.MatchContains)
        self.combo.setCompleter(completer)
        self.layout_.addWidget(self.combo, 1)
        button = QtWidgets.QToolButton(text="Browse…")
        button.setToolTip("Choose a local model folder or a .gguf file")
        button.setPopupMode(QtWidgets.QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QtWidgets.QMenu(button)  # one button: the panel must not scroll sideways
        menu.addAction("Model folder (holding config.json)…", self._browse)
        menu.addAction("GGUF file…", self._browse_gguf)
        button.setMenu(menu)
        self.layout_.addWidget(button)
        self.combo.lineEdit().editingFinished.connect(self._commit)
        self.combo.activated.connect(self._on_activated)
        self.combo.opening.connect(self.choices.refresh)
        self.choices.updated.connect(self._fill)
        self._fill()

    def _fill(self) -> None:
        """The entries under their group's heading; what is typed stays."""
        text = self.combo.currentText()
        self.combo.blockSignals(True)
        self.items.clear()
        for group in model_choices.GROUPS:
            entries = [c for c in self.choices.choices if c.group == group]
            if not entries:
                continue
            heading = QtGui.QStandardItem(group)
            heading.setFlags(QtCore.Qt.ItemFlag.NoItemFlags)  # not a choice
            font = heading.font()
            font.setBold(True)
            heading.setFont(font)
            self.items.appendRow(heading)
            for choice in entries:
                item = QtGui.QStandardItem("    " + choice.label)
                if choice.value:
                    item.setData(choice.value, VALUE_ROLE)
                    item.setToolTip(choice.value)
                else:  # a note, e.g. that the cache holds no model
                    item.setFlags(QtCore.Qt.ItemFlag.NoItemFlags)
                self.items.appendRow(item)
        self.values.setStringList([c.value for c in self.choices.choices if c.value])
        self.combo.view().setMinimumWidth(self.combo.view().sizeHintForColumn(0) + 24)
        self.combo.setCurrentIndex(-1)
        self.combo.setEditText(text)
        self.combo.blockSignals(False)

    def _on_activated(self, index: int) -> None:
        value = self.combo.itemData(index, VALUE_ROLE)
        self.combo.setCurrentIndex(-1)
        if value:  # the edit shows what the node stores, not the entry's label
            self.combo.setEditText(str(value))
            self._commit()

    def _commit(self) -> None:
        self.committed.emit(self.combo.currentText().strip())

    def _browse(self) -> None:
        path = QtWidgets.QFileDialog.getExistingDirectory(self, "Choose a model folder")
        if path:
            self.combo.setEditText(path)
            self._commit()

    def _browse_gguf(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Choose a GGUF model", "", "GGUF models (*.gguf);;All files (*)"
        )
        if path:
            self.combo.setEditText(f"gguf:{path}")
            self._commit()

    def set_value(self, value: Any) -> None:
        self.combo.blockSignals(True)
        self.combo.setEditText(str(value or ""))
        self.combo.blockSignals(False)


class ModulesEditor(TextEditor):
    """Comma-separated module names, with a menu of the usual ones to tick."""

    def __init__(self, param: Parameter, parent=None):
        super().__init__(param, parent)
        self.edit.setPlaceholderText("auto")
        button = QtWidgets.QToolButton(text="▾")
        button.setToolTip("Pick common module names")
        button.setPopupMode(QtWidgets.QToolButton.ToolButtonPopupMode.InstantPopup)
        self.menu = QtWidgets.QMenu(button)
        for name in COMMON_MODULES:
            action = self.menu.addAction(name)
            action.setCheckable(True)
            action.toggled.connect(lambda on, n=name: self._toggle(n, on))
        self.menu.aboutToShow.connect(self._sync_menu)
        button.setMenu(self.menu)
        self.layout_.addWidget(button)

    def current(self) -> list[str]:
        return [p.strip() for p in self.edit.text().split(",") if p.strip()]

    def _commit(self) -> None:
        self.committed.emit(self.current())

    def _sync_menu(self) -> None:
        names = set(self.current())
        for action in self.menu.actions():
            action.blockSignals(True)
            action.setChecked(action.text() in names)
            action.blockSignals(False)

    def _toggle(self, name: str, on: bool) -> None:
        names = [n for n in self.current() if n != name]
        if on:
            names = (
                [name] if name in WHOLE_SETS else [n for n in names if n not in WHOLE_SETS] + [name]
            )
        self.edit.setText(", ".join(names))
        self._commit()


class MappingEditor(TextEditor):
    def __init__(self, param: Parameter, parent=None):
        super().__init__(param, parent)
        self.edit.setPlaceholderText('{"messages": "chat"}  (empty: the format\'s own names)')


EDITORS = {
    "str": TextEditor,
    "int": IntEditor,
    "float": FloatEditor,
    "bool": BoolEditor,
    "choice": ChoiceEditor,
    "file": FileEditor,
    "list": ModulesEditor,
    "mapping": MappingEditor,
}


def make_editor(param: Parameter, parent: QtWidgets.QWidget | None = None) -> ParamEditor:
    """The editor for a parameter (by widget hint first, then by type)."""
    if param.widget in ("metrics", "gguf"):  # the Eval node's
        from app.eval_widgets import make_eval_editor

        return make_eval_editor(param, parent)
    if param.widget == "space":  # the Sweep node's search space: a row per knob
        from app.space_editor import SpaceEditor

        return SpaceEditor(param, parent)
    if param.widget in ("lines", "template", "files"):  # the data nodes'
        from app.recipe_widgets import FilesEditor, MultiLineEditor

        return (FilesEditor if param.widget == "files" else MultiLineEditor)(param, parent)
    if param.widget == "model":
        return ModelEditor(param, parent)
    if param.widget == "file":
        return FileEditor(param, parent)
    return EDITORS.get(param.type, TextEditor)(param, parent)


def tooltip_for(param: Parameter) -> str:
    """Help text plus range, choices and default."""
    parts = [param.help]
    if param.min is not None or param.max is not None:
        low = _number(param.min) if param.min is not None else "…"
        high = _number(param.max) if param.max is not None else "…"
        parts.append(f"Range: {low} to {high}.")
    parts.append(f"Default: {_text(param.default, param) or '(empty)'}.")
    return "\n".join(p for p in parts if p)


def _number(value: float) -> str:
    return format_float(float(value)) if value != int(value) else str(int(value))


def _text(value: Any, param: Parameter) -> str:
    if param.type == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return format_float(float(value))
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value) if value else ""
    return "" if value is None else str(value)
