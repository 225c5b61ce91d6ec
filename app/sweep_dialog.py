""" "Duplicate as sweep…": pick one parameter of a module and list the values to try."""

from __future__ import annotations

from typing import Any

from PySide6 import QtWidgets

from app.duplicate import SweepParameter, parse_values
from app.param_widgets import tooltip_for
from engine.formatting import format_setting


class SweepDialog(QtWidgets.QDialog):
    """`choice()` gives (parameter, values) after the dialog was accepted."""

    def __init__(self, module_name: str, parameters: list[SweepParameter], parent=None):
        super().__init__(parent)
        self.setWindowTitle(f"Duplicate “{module_name}” as sweep")
        self.parameters = parameters
        self.values: list[Any] = []
        layout = QtWidgets.QVBoxLayout(self)
        intro = QtWidgets.QLabel(
            "One deep copy of the Fine-Tune node (with its own feeding nodes) is "
            "made per value, named after what differs from the original (e.g. “· lr 1e-4”)."
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        form = QtWidgets.QFormLayout()
        self.combo = QtWidgets.QComboBox()
        for p in parameters:
            self.combo.addItem(p.title())
        default = next((i for i, p in enumerate(parameters) if p.param.name == "learning_rate"), 0)
        self.combo.setCurrentIndex(default)
        form.addRow("Parameter", self.combo)
        self.edit = QtWidgets.QLineEdit()
        form.addRow("Values", self.edit)
        layout.addLayout(form)
        self.message = QtWidgets.QLabel()
        self.message.setWordWrap(True)
        layout.addWidget(self.message)
        buttons = QtWidgets.QDialogButtonBox(
            QtWidgets.QDialogButtonBox.StandardButton.Ok
            | QtWidgets.QDialogButtonBox.StandardButton.Cancel
        )
        self.ok = buttons.button(QtWidgets.QDialogButtonBox.StandardButton.Ok)
        self.ok.setText("Create copies")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.combo.currentIndexChanged.connect(self._on_param)
        self.edit.textChanged.connect(self._check)
        self._on_param()

    @property
    def parameter(self) -> SweepParameter:
        return self.parameters[self.combo.currentIndex()]

    def _on_param(self) -> None:
        p = self.parameter.param
        self.edit.setToolTip(tooltip_for(p))
        example = {
            "float": "1e-4, 2e-4, 5e-4",
            "int": "8, 16, 32",
            "bool": "true, false",
            "list": "q_proj,v_proj; all-linear",
        }.get(p.type, ", ".join(p.choices or ()))
        self.edit.setPlaceholderText(example or "value, value, …")
        self._check()

    def _check(self) -> None:
        try:
            self.values = parse_values(self.parameter.param, self.edit.text())
        except ValueError as e:
            self.values = []
            self.message.setText(
                f"<span style='color:#ff7b7b'>{e}</span>" if self.edit.text().strip() else ""
            )
        else:
            shown = ", ".join(format_setting(v) for v in self.values)
            self.message.setText(f"{len(self.values)} copies: {shown}")
        self.ok.setEnabled(bool(self.values))

    def choice(self) -> tuple[SweepParameter, list[Any]]:
        return self.parameter, self.values
