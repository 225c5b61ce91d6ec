"""Deep duplicate of a Fine-Tune module, and sweeps (one deep copy per value of one parameter).

NodeGraphQt's own `duplicate_nodes` keeps a copy wired to the original feeders, so editing the
copy's training config would change the original's. Here `nodes.duplicate.deep_duplicate` copies
the module and every node feeding it on the graph dict (fresh ids and uuids, unique names, placed
right of the graph, where nothing is, only the connections inside that set), and the canvas adds
the result through NodeGraphQt's public API, inside one undo macro, and scrolls to it. Copies
(a sweep's too) are named after what differs from the original (app.auto_names).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.auto_names import rename_copies
from app.canvas import Canvas
from app.node_factory import TunegraphNode, decl_of
from app.node_placement import reveal
from engine.formatting import format_setting
from nodes.catalogue import FINE_TUNE, Parameter
from nodes.duplicate import deep_duplicate as duplicate_graph

SWEEP_TYPES = ("int", "float", "choice", "str", "bool", "file", "list")


def deep_duplicate(
    canvas: Canvas, module: TunegraphNode, x_offset: float | None = None
) -> TunegraphNode:
    """Copy `module` and all its feeders; returns the new Fine-Tune node (one undo step)."""
    canvas.graph.begin_undo(f'duplicate "{module.name()}"')
    try:
        copy, created = _duplicate(canvas, module, x_offset)
    finally:
        canvas.graph.end_undo()
    canvas.select([copy])
    canvas.recompile()
    reveal(canvas, created)
    return copy


def _duplicate(
    canvas: Canvas, module: TunegraphNode, x_offset: float | None
) -> tuple[TunegraphNode, list[TunegraphNode]]:
    """The new Fine-Tune node and every node made with it."""
    copy = duplicate_graph(canvas.to_dict(), module.id, x_offset=x_offset)
    for node in canvas.graph.all_nodes():
        node.view.setSelected(False)
    created = canvas.add_graph_nodes(copy.nodes, copy.connections, f'copy "{module.name()}"')
    return created[copy.module_id], list(created.values())


# -- sweeps ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepParameter:
    """A parameter a sweep can vary: `port` is "" for the Fine-Tune node's own parameters."""

    port: str
    param: Parameter
    current: Any

    @property
    def key(self) -> str:
        return f"{self.port}.{self.param.name}" if self.port else self.param.name

    @property
    def short(self) -> str:
        return self.param.short

    def title(self) -> str:
        where = f" ({self.port.replace('_', ' ')})" if self.port else ""
        return f"{self.param.label}{where} — now {format_setting(self.current)}"


def sweep_parameters(canvas: Canvas, module: TunegraphNode) -> list[SweepParameter]:
    """The parameters of `module` and of its directly connected feeders (single ones)."""
    out = [
        SweepParameter("", p, module.get_property(p.name))
        for p in FINE_TUNE.parameters
        if p.type in SWEEP_TYPES
    ]
    for port, feeders in module.connected_input_nodes().items():
        if len(feeders) != 1 or decl_of(feeders[0]) is None:
            continue
        feeder = feeders[0]
        out += [
            SweepParameter(port.name(), p, feeder.get_property(p.name))
            for p in decl_of(feeder).parameters
            if p.type in SWEEP_TYPES
        ]
    order = {"training_config": 0, "lora_config": 1, "": 2}
    return sorted(out, key=lambda s: order.get(s.port, 3))


def parse_values(param: Parameter, text: str) -> list[Any]:
    """Comma- or space-separated values (";" for lists), each checked against the type."""
    if param.type == "list":  # each value is itself a comma list: separate values with ";"
        parts = [p.strip() for p in text.split(";") if p.strip()]
    else:
        parts = text.replace(";", ",").replace(",", " ").split()
    if not parts:
        raise ValueError("give at least one value")
    values = []
    for part in parts:
        value = param.coerce(part.strip())
        if param.choices and value not in param.choices:
            raise ValueError(f"{part!r} is not one of {', '.join(param.choices)}")
        values.append(value)
    return values


def duplicate_as_sweep(
    canvas: Canvas, module: TunegraphNode, sweep: SweepParameter, values: list[Any]
) -> list[TunegraphNode]:
    """One deep copy of `module` per value, each named after what differs, e.g. "support · lr
    1e-4" (one undo step for all)."""
    copies, created = [], []
    canvas.graph.begin_undo(f'sweep {sweep.short} of "{module.name()}"')
    try:
        for value in values:
            copy, nodes = _duplicate(canvas, module, None)
            target = copy
            if sweep.port:
                target = copy.connected_input_nodes()[copy.get_input(sweep.port)][0]
            canvas.set_param(target, sweep.param.name, value)
            rename_copies(canvas)  # now: the next copy takes a name this one no longer needs
            copies.append(copy)
            created += nodes
    finally:
        canvas.graph.end_undo()
    canvas.select(copies)
    canvas.recompile()
    reveal(canvas, created)
    return copies
