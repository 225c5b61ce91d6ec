"""The run panel's Export dialog: the Export node's options (adapter ZIP, GGUF bundle and its
quantization, merged 16-bit folder, Ollama name) for one finished run, preset from that run's own
Export node (its frozen spec.json).

What the library already holds for the run with the same options is named, with its path, and not
made again (engine.export.job.skip_existing, the rule `tunegraph export` applies too); when
everything asked for exists, Export stays disabled. Accepting emits `exportRequested(run_id,
args)`, the `tunegraph export` arguments the run panel hands to the bridge.
"""

from __future__ import annotations

import dataclasses
import html
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from engine.export.job import ARTIFACT_LABELS, EXPORT_PARTS, nothing_to_make, skip_existing
from engine.export.ollama import model_name
from engine.formatting import format_bytes
from engine.spec import GGUF_QUANTS, ExportSpec

PATH_COLOUR = "#9aa0a8"  # the theme's hint grey


def spec_help(name: str) -> str:
    """The help text ExportSpec declares for one of its fields."""
    for f in dataclasses.fields(ExportSpec):
        if f.name == name:
            return str(f.metadata.get("help") or "")
    return ""


def run_export_spec(run: dict) -> ExportSpec:
    """The Export settings the run was submitted with (defaults when it had no Export node)."""
    data = ((run.get("spec") or {}).get("export")) or {}
    known = {f.name for f in dataclasses.fields(ExportSpec)}
    spec = ExportSpec(**{k: v for k, v in data.items() if k in known})
    if spec.quant not in GGUF_QUANTS:
        spec.quant = ExportSpec().quant
    return spec


def full_finetune(run: dict) -> bool:
    """Whether the run trained the whole model (LoRA config `full`): it has no adapter."""
    return bool(((run.get("spec") or {}).get("lora") or {}).get("full"))


def export_args(options: ExportSpec) -> list[str]:
    """`tunegraph export` arguments for exactly these options."""
    args = [] if options.adapter_zip else ["--no-adapter-zip"]
    args += ["--quant", options.quant] if options.gguf else ["--no-gguf"]
    args += ["--merged"] if options.merged else ["--no-merged"]
    if options.gguf and options.ollama_name.strip():
        args += ["--ollama", options.ollama_name.strip()]
    return args


def part_text(part: str, options: ExportSpec) -> str:
    """ "GGUF bundle (Ollama), Q4_K_M", "Adapter ZIP", …"""
    label = ARTIFACT_LABELS[EXPORT_PARTS[part]]
    return f"{label}, {options.quant}" if part == "gguf" else label


class ExportDialog(QtWidgets.QDialog):
    """Export one run; shows what exists already and what an export would make."""

    exportRequested = QtCore.Signal(str, object)  # noqa: N815 - run id, list of CLI args

    def __init__(self, run: dict, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.run_id = run["id"]
        self.name = run.get("name") or run["id"]
        self.existing: list[dict] = []
        self.setWindowTitle(f"Export {self.name}")
        defaults = run_export_spec(run)
        title = QtWidgets.QLabel(f"Export “{self.name}”  ·  {self.run_id[-6:]}")
        title.setStyleSheet("font-weight: bold; font-size: 13px;")
        title.setToolTip(self.run_id)
        source = QtWidgets.QLabel("Preset from the run's own Export node.")
        source.setObjectName("hint")

        self.adapter_zip = QtWidgets.QCheckBox("Adapter ZIP")
        self.adapter_zip.setChecked(defaults.adapter_zip)
        self.adapter_zip.setToolTip(spec_help("adapter_zip"))
        if full_finetune(run):  # engine.export.pipeline exports its model folder instead
            self.adapter_zip.setChecked(False)
            self.adapter_zip.setEnabled(False)
            self.adapter_zip.setToolTip(
                "A full fine-tuning run has no adapter: export the merged folder or the GGUF."
            )
        self.gguf = QtWidgets.QCheckBox("GGUF bundle for Ollama")
        self.gguf.setChecked(defaults.gguf)
        self.gguf.setToolTip(spec_help("gguf"))
        self.quant = QtWidgets.QComboBox()
        self.quant.addItems(list(GGUF_QUANTS))
        self.quant.setCurrentText(defaults.quant)
        self.quant.setToolTip(spec_help("quant"))
        self.merged = QtWidgets.QCheckBox("Merged 16-bit Hugging Face folder")
        self.merged.setChecked(defaults.merged)
        self.merged.setToolTip(spec_help("merged"))
        self.ollama = QtWidgets.QLineEdit(defaults.ollama_name)
        self.ollama.setPlaceholderText("not installed (optional)")
        self.ollama.setToolTip(spec_help("ollama_name"))

        form = QtWidgets.QFormLayout()
        form.addRow(self.adapter_zip)
        gguf_line = QtWidgets.QHBoxLayout()
        gguf_line.addWidget(self.gguf)
        gguf_line.addStretch(1)
        gguf_line.addWidget(QtWidgets.QLabel("Quantization"))
        gguf_line.addWidget(self.quant)
        form.addRow(gguf_line)
        form.addRow(self.merged)
        form.addRow("Ollama name", self.ollama)

        self.plan = QtWidgets.QLabel()
        self.plan.setTextFormat(QtCore.Qt.TextFormat.RichText)
        self.plan.setWordWrap(True)
        self.plan.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.plan.setMinimumWidth(460)
        self.buttons = QtWidgets.QDialogButtonBox()
        self.export_button = self.buttons.addButton(
            "Export", QtWidgets.QDialogButtonBox.ButtonRole.AcceptRole
        )
        self.show_button = self.buttons.addButton(
            "Show in folder", QtWidgets.QDialogButtonBox.ButtonRole.ActionRole
        )
        self.buttons.addButton(QtWidgets.QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.show_button.clicked.connect(self.show_existing)

        layout = QtWidgets.QVBoxLayout(self)
        layout.setSizeConstraint(QtWidgets.QLayout.SizeConstraint.SetMinimumSize)
        layout.addWidget(title)
        layout.addWidget(source)
        layout.addLayout(form)
        layout.addWidget(self.plan)
        layout.addWidget(self.buttons)
        for box in (self.adapter_zip, self.gguf, self.merged):
            box.toggled.connect(self.update_plan)
        self.quant.currentTextChanged.connect(self.update_plan)
        self.ollama.textChanged.connect(self.update_plan)
        self.update_plan()

    def options(self) -> ExportSpec:
        """The options as ticked."""
        return ExportSpec(
            adapter_zip=self.adapter_zip.isChecked(),
            gguf=self.gguf.isChecked(),
            quant=self.quant.currentText(),
            merged=self.merged.isChecked(),
            ollama_name=self.ollama.text().strip(),
        )

    def args(self) -> list[str]:
        """The `tunegraph export` arguments for the options as ticked."""
        return export_args(self.options())

    def plan_text(self) -> str:
        """What the plan says, as plain text."""
        doc = QtGui.QTextDocument()
        doc.setHtml(self.plan.text())
        return doc.toPlainText()

    def update_plan(self) -> None:
        """Say what exists already (with where) and what Export would make; Export is enabled
        only when it would make something."""
        asked = self.options()
        self.quant.setEnabled(asked.gguf)
        self.ollama.setEnabled(asked.gguf)
        todo, self.existing = skip_existing(self.run_id, asked)
        lines = []
        if nothing_to_make(asked):
            lines.append("Tick at least one thing to export.")
        if self.existing:
            lines.append("<b>Already in the library, not made again:</b>")
        for entry in self.existing:
            size = format_bytes(entry.get("bytes"))
            quant = f", {entry['quant']}" if entry.get("quant") else ""
            label = ARTIFACT_LABELS.get(str(entry.get("kind")), str(entry.get("kind")))
            lines.append(
                f"• {label}{quant} ({size})<br>"
                f"&nbsp;&nbsp;<span style='color: {PATH_COLOUR};'>{html.escape(entry['file'])}</span>"
            )
        if self.existing and not todo.gguf and asked.gguf and asked.ollama_name:
            lines.append(
                f"To install it into Ollama as {model_name(asked.ollama_name)}, use Install into "
                "Ollama in the Library."
            )
        parts = [part_text(p, todo) for p in EXPORT_PARTS if getattr(todo, p)]
        if parts:
            extra = ""
            if todo.gguf and asked.ollama_name:
                extra = f", installed into Ollama as {model_name(asked.ollama_name)}"
            lines.append("<b>Export will make:</b> " + ", ".join(parts) + extra + ".")
        elif not nothing_to_make(asked):
            lines.append("Nothing new to export with these options.")
        self.plan.setText("<br>".join(lines))
        if self.isVisible():  # the plan's lines come and go: the dialog grows with them
            QtCore.QTimer.singleShot(0, self, self.adjustSize)
        self.export_button.setEnabled(bool(parts))
        self.show_button.setVisible(bool(self.existing))

    def accept(self) -> None:
        if not self.export_button.isEnabled():
            return
        self.exportRequested.emit(self.run_id, self.args())
        super().accept()

    def show_existing(self) -> None:
        """Open the folder of the first existing artifact named."""
        if self.existing:
            folder = Path(self.existing[0]["folder"])
            QtGui.QDesktopServices.openUrl(QtCore.QUrl.fromLocalFile(str(folder)))
