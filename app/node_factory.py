"""NodeGraphQt node classes generated from the Qt-free declarations in `nodes.catalogue`.

Each class has `type_` = `tunegraph.<Kind>`, the declared ports (with connection constraints, so
the canvas only lets a Dataset output reach a Fine-Tune `dataset` input) and one custom property
per key of `NodeDecl.custom_defaults()` (NodeGraphQt's deserializer refuses unknown keys). The
properties are hidden from NodeGraphQt's own properties bin: `app.properties` edits them.
"""

from __future__ import annotations

from typing import Any

from NodeGraphQt import BaseNode
from NodeGraphQt.constants import PortTypeEnum

from nodes.catalogue import CATALOGUE, TYPE_PREFIX, NodeDecl

IDENTIFIER = TYPE_PREFIX.rstrip(".")


class TunegraphNode(BaseNode):
    """Base of the generated classes; `DECL` is the node kind's declaration."""

    __identifier__ = IDENTIFIER
    DECL: NodeDecl

    def __init__(self):
        super().__init__()
        decl = self.DECL
        for port in decl.inputs:
            view = self.add_input(
                port.name, multi_input=port.multiple, color=_port_colour(port.accepts[0].kind)
            ).view
            label = (
                port.label
                + ("s" if port.multiple else "")
                + ("" if port.required else " (optional)")
            )
            self._label_port(self.view._input_items, view, label)
            view.setToolTip(port.help)
        for port in decl.outputs:
            view = self.add_output(
                port.name, multi_output=port.multiple, color=_port_colour(decl.kind)
            ).view
            self._label_port(self.view._output_items, view, port.label)
        for name, value in decl.custom_defaults().items():
            self.create_property(name, _copy(value))
        for port in decl.inputs:
            for ref in port.accepts:
                self.add_accept_port_type(
                    self.get_input(port.name),
                    {
                        "port_name": ref.port,
                        "port_type": PortTypeEnum.OUT.value,
                        "node_type": ref.node_type,
                    },
                )
        self.set_color(*decl.colour)

    @staticmethod
    def _label_port(items: dict, port_view, label: str) -> None:
        """Show the port's label instead of its name (the name stays the key in graph files)."""
        text = items.get(port_view)
        if text is not None:
            text.setPlainText(label)


def _copy(value: Any) -> Any:
    return type(value)(value) if isinstance(value, (list, dict)) else value


def _port_colour(kind: str) -> tuple[int, int, int]:
    r, g, b = CATALOGUE[kind].colour
    return min(255, r + 60), min(255, g + 60), min(255, b + 60)


def _make_class(decl: NodeDecl) -> type[TunegraphNode]:
    return type(
        decl.kind,
        (TunegraphNode,),
        {"__identifier__": IDENTIFIER, "NODE_NAME": decl.label, "DECL": decl, "__doc__": decl.help},
    )


NODE_CLASSES: dict[str, type[TunegraphNode]] = {k: _make_class(d) for k, d in CATALOGUE.items()}
"""One generated class per node kind, by kind name."""


def register_all(graph) -> None:
    """Register every generated class on a NodeGraph."""
    for cls in NODE_CLASSES.values():
        graph.register_node(cls)


def decl_of(node) -> NodeDecl | None:
    """The declaration of a canvas node (None for nodes that are not ours, e.g. backdrops)."""
    return getattr(node, "DECL", None)


def field_label(decl: NodeDecl | None, field: str) -> str:
    """How the user sees a compile error's field: a parameter's or input port's label."""
    if decl is None or not field:
        return field
    param = decl.parameter(field)
    if param is not None:
        return param.label
    port = decl.input(field)
    if port is not None:
        return port.label + ("s" if port.multiple else "")
    return "Name" if field == "name" else field.replace("_", " ")


def error_text(decl: NodeDecl | None, error) -> str:
    """One compile error as shown on a node: `Learning rate: must be a number…`."""
    return f"{field_label(decl, error.field)}: {error.message}" if error.field else error.message
