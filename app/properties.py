"""The properties panel: the selected node's name and parameters, generated from its declaration,
with its compile errors, (for a duplicated Fine-Tune module) what differs from its origin, (for a
Base model node) which chat template its runs will train with and why, and (for an Eval node fed
on its Eval set input) where the rows it scores come from."""

from __future__ import annotations

import html

from PySide6 import QtCore, QtWidgets

from app.canvas import Canvas
from app.node_factory import TunegraphNode, decl_of, error_text
from app.param_widgets import FileEditor, ParamEditor, make_editor
from engine.models.template_choice import template_plan
from engine.spec import BaseModelSpec
from nodes.catalogue import CATALOGUE, FINE_TUNE
from nodes.eval_sets import EVAL_SET, source_label
from nodes.graphfile import graph_dir, resolve_model_source

BASE_MODEL = CATALOGUE["BaseModel"]
EVAL = CATALOGUE["Eval"]


class PropertiesPanel(QtWidgets.QScrollArea):
    """Edits one node at a time through `Canvas.set_param` (so every edit is one undo step)."""

    run_requested = QtCore.Signal(object)  # a Fine-Tune node

    def __init__(self, canvas: Canvas, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.canvas = canvas
        self.node: TunegraphNode | None = None
        self.editors: dict[str, ParamEditor] = {}
        self.setWidgetResizable(True)
        self.setMinimumWidth(300)
        self._empty()
        canvas.selection_changed.connect(self._on_selection)
        canvas.node_edited.connect(self._on_node_edited)
        canvas.compiled.connect(self._on_compiled)
        canvas.graph.nodes_deleted.connect(self._on_deleted)

    # -- building the form ------------------------------------------------------------------------
    def _empty(self) -> None:
        self.node, self.editors, self.run_button = None, {}, None
        label = QtWidgets.QLabel(
            "Select a node on the canvas to edit its settings.\n\n"
            "Add nodes from the palette; connect their outputs to a "
            "Fine-Tune node's inputs."
        )
        label.setWordWrap(True)
        label.setAlignment(QtCore.Qt.AlignmentFlag.AlignTop)
        label.setObjectName("hint")
        label.setContentsMargins(12, 12, 12, 12)
        self.setWidget(label)

    def set_node(self, node: TunegraphNode | None) -> None:
        """Show `node`'s settings (None: the empty hint)."""
        if node is None or decl_of(node) is None:
            self._empty()
            return
        decl = decl_of(node)
        self.node, self.editors = node, {}
        body = QtWidgets.QWidget()
        outer = QtWidgets.QVBoxLayout(body)
        title = QtWidgets.QLabel(
            f"<b style='font-size:14px'>{html.escape(decl.label)}</b>"
            f"<br><span style='color:#a8adb5'>{html.escape(decl.help)}</span>"
        )
        title.setWordWrap(True)
        outer.addWidget(title)
        self.state = QtWidgets.QLabel()
        self.state.setWordWrap(True)
        self.state.setTextFormat(QtCore.Qt.TextFormat.RichText)
        outer.addWidget(self.state)
        form = QtWidgets.QFormLayout()
        form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.name_edit = QtWidgets.QLineEdit(node.name())
        self.name_edit.setToolTip(
            "Node name; a Fine-Tune node's name is its run's name. A copy names itself after "
            "what differs from its original until you type a name; clear the name to let it "
            "name itself again."
        )
        self.name_edit.editingFinished.connect(lambda n=node: self._rename(n))
        form.addRow("Name", self.name_edit)
        for param in decl.parameters:
            editor = make_editor(param)
            editor.set_value(node.get_property(param.name))
            editor.committed.connect(lambda value, p=param.name, n=node: self._commit(n, p, value))
            label = QtWidgets.QLabel(param.label)
            label.setToolTip(editor.toolTip())
            form.addRow(label, editor)
            self.editors[param.name] = editor
        self.form = form
        self._show_relevant()
        outer.addLayout(form)
        self.run_button = None
        if decl is FINE_TUNE:
            self.run_button = QtWidgets.QPushButton("Run this node…")
            self.run_button.setToolTip("Estimate and confirm, then start this run")
            self.run_button.clicked.connect(self._on_run_clicked)
            outer.addWidget(self.run_button)
        outer.addStretch(1)
        self.setWidget(body)
        self._show_state()

    def _on_compiled(self, _result) -> None:
        self._show_state()

    def _show_relevant(self) -> None:
        """Show only the parameters that matter for the node's current values (a Fine-Tune
        node's method knobs for its method: the declaration's `visible_if`)."""
        node, decl = self.node, decl_of(self.node) if self.node is not None else None
        if decl is None:
            return
        values = {p.name: node.get_property(p.name) for p in decl.parameters}
        for param in decl.parameters:
            editor = self.editors.get(param.name)
            if editor is not None:
                self.form.setRowVisible(editor, param.visible(values))

    # -- state -----------------------------------------------------------------------------------
    def _show_state(self) -> None:
        node = self.node
        if node is None:
            return
        errors = self.canvas.errors_of(node)
        by_field = {}
        for e in errors:
            by_field.setdefault(e.field, []).append(e.message)
        for name, editor in self.editors.items():
            editor.set_error("; ".join(by_field.get(name, [])))
        parts = []
        if errors:
            items = "".join(f"<li>{html.escape(error_text(decl_of(node), e))}</li>" for e in errors)
            parts.append(
                f"<div style='color:#ff7b7b'><b>Fix before running:</b>"
                f"<ul style='margin-left:-20px'>{items}</ul></div>"
            )
        elif decl_of(node) is FINE_TUNE:
            parts.append("<span style='color:#7bd88f'>✓ Ready to run (Ctrl+R)</span>")
        if self.run_button is not None:
            self.run_button.setEnabled(self.canvas.module_ok(node))
        lineage = self.canvas.lineage.get(node.id)
        if lineage:  # every difference, one a line (the canvas label shows three)
            lines = "<br>".join(html.escape(line) for line in lineage.splitlines())
            parts.append(f"<span style='color:#f0c46e'>Δ vs origin:<br>{lines}</span>")
        if decl_of(node) is BASE_MODEL:
            parts.append(self._template_text(node))
        if decl_of(node) is EVAL:
            source = self._eval_source(node)
            if source:
                line = html.escape(f"Scores the rows from {source}")
                parts.append(f"<span style='color:#a8adb5'>{line}</span>")
            if isinstance(self.editors.get("path"), FileEditor):
                self.editors["path"].show_rows_from(source)
        self.state.setText("<br>".join(parts))
        self.state.setVisible(bool(parts))

    def _template_text(self, node: TunegraphNode) -> str:
        """Which chat template runs from this Base model node will use and why (engine's
        template_plan: a GGUF header or tokenizer files, no model loaded)."""
        source = str(node.get_property("source") or "")
        base = BaseModelSpec(
            source=resolve_model_source(source, graph_dir(self.canvas.path)),
            chat_template=str(node.get_property("chat_template") or "tokenizer"),
        )
        plan = template_plan(base)
        if plan.problem:
            return (
                "<div style='color:#f0c46e'><b>Chat template needed:</b> "
                f"{html.escape(plan.problem)}. {html.escape(plan.hint)}</div>"
            )
        return f"<span style='color:#a8adb5'>{html.escape(plan.summary)}</span>"

    @staticmethod
    def _eval_source(node: TunegraphNode) -> str:
        """The output on an Eval node's Eval set input, `"hold out 4" (eval)` ("" when none)."""
        port = node.get_input(EVAL_SET)
        ends = port.connected_ports() if port is not None else []
        if not ends:
            return ""
        source = ends[0].node()
        decl = decl_of(source)
        return source_label(source.name(), decl.kind if decl else "", ends[0].name())

    def _on_run_clicked(self) -> None:
        if self.node is not None:
            self.run_requested.emit(self.node)

    # -- edits -----------------------------------------------------------------------------------
    def _commit(self, node: TunegraphNode, name: str, value) -> None:
        # bound to the node the editor was built for: a focus-out while the panel switches to
        # another node must not write into that one
        if node.graph is not None and node.id in {n.id for n in self.canvas.nodes()}:
            self.canvas.set_param(node, name, value)

    def _rename(self, node: TunegraphNode) -> None:
        if node is not self.node:
            return
        if not self.name_edit.text().strip():  # the app names it again (nodes.autoname)
            node.set_property("auto_name", node.name(), push_undo=False)
            self.canvas.auto_names.apply()
        else:
            self.canvas.rename(node, self.name_edit.text())
        self.name_edit.setText(node.name())

    def _on_node_edited(self, node, name: str) -> None:
        if node is not self.node:
            return
        if name == "name":
            self.name_edit.setText(node.name())
        elif name in self.editors:
            self.editors[name].set_value(node.get_property(name))
            self._show_relevant()

    def _on_selection(self, nodes: list) -> None:
        node = nodes[0] if len(nodes) == 1 else None
        if node is not self.node:
            self.set_node(node)

    def _on_deleted(self, ids: list) -> None:
        if self.node is not None and self.node.id in ids:
            self._empty()
