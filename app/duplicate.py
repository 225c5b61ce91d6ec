"""Deep duplicate of a Fine-Tune module, sweeps (one deep copy per value of one parameter), and a
Sweep node's best trial made a plain module again (`promote_trial`).

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
from nodes.catalogue import FINE_TUNE, Parameter, decl_for_type
from nodes.duplicate import deep_duplicate as duplicate_graph

SWEEP_TYPES = ("int", "float", "choice", "str", "bool", "file", "list")
# the Fine-Tune input whose node holds a swept part's fields (`method.*`: the Fine-Tune node)
PART_PORTS = {"training": "training_config", "lora": "lora_config", "base_model": "base_model"}


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


# -- a sweep's trial as a plain module --------------------------------------------------------------
def promote_trial(
    canvas: Canvas, module: TunegraphNode, params: dict[str, Any], name: str
) -> TunegraphNode:
    """A deep copy of the swept `module` and its feeders without its Sweep node, with a trial's
    chosen values (`params` by `part.field`) set where the module keeps them: `training.*` on the
    Training config node, `lora.*` on the LoRA config node, `base_model.*` on the Base model
    node, `method.*` on the Fine-Tune node; named `name`. One undo step. ValueError (one sentence)
    when a value has no node to go to (e.g. `base_model.*` on a module chained to another)."""
    for key in params:  # every value has a node to go to, before anything is made
        part, field = key.split(".", 1)
        if part == "method":
            continue
        port = PART_PORTS.get(part)
        feeders = module.connected_input_nodes().get(module.get_input(port)) if port else None
        if (
            not feeders
            or decl_of(feeders[0]) is None
            or decl_of(feeders[0]).parameter(field) is None
        ):
            raise ValueError(
                f"{key} cannot be set on a copy of “{module.name()}”: no node on its "
                f"{(port or part).replace('_', ' ')} input holds {field}"
            )
    copy = duplicate_graph(canvas.to_dict(), module.id)
    sweeps = {node_id for node_id, node in copy.nodes.items() if _is_sweep(node)}
    nodes = {i: n for i, n in copy.nodes.items() if i not in sweeps}
    connections = [c for c in copy.connections if c["out"][0] not in sweeps]
    for node in canvas.graph.all_nodes():
        node.view.setSelected(False)
    targets: dict[str, TunegraphNode] = {}
    canvas.graph.begin_undo(f'add "{name}" from its sweep')
    try:
        created = canvas.add_graph_nodes(nodes, connections, f'copy "{module.name()}"')
        new = created[copy.module_id]
        for key, value in params.items():
            part, field = key.split(".", 1)
            target = new if part == "method" else targets.get(part)
            if target is None:
                target = targets[part] = new.connected_input_nodes()[
                    new.get_input(PART_PORTS[part])
                ][0]
            canvas.set_param(target, field, value)
        canvas.rename(new, canvas.unique_name(name))
    finally:
        canvas.graph.end_undo()
    canvas.select([new])
    canvas.recompile()
    reveal(canvas, list(created.values()))
    return new


def swept_module(canvas: Canvas, node_uuid: str | None) -> TunegraphNode | None:
    """The Fine-Tune node on the canvas a sweep's trials came from (their spec's node_uuid)."""
    if not node_uuid:
        return None
    return next(
        (n for n in canvas.nodes(FINE_TUNE.kind) if n.get_property("uuid") == node_uuid), None
    )


def _is_sweep(node: dict) -> bool:
    decl = decl_for_type(node.get("type_"))
    return decl is not None and decl.kind == "Sweep"
