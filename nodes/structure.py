"""The shape of a serialized graph as the compiler reads it: one `GraphNode` per node entry,
positions and connection ends read defensively (a malformed entry gives a default or None, never
an exception), the text listing a node's ports, and the cycles of connections (Tarjan)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nodes.catalogue import InputPort, NodeDecl, OutputPort


@dataclass
class GraphNode:
    """One node of the graph being compiled: its declaration (None if unknown) and its values."""

    id: str
    decl: NodeDecl | None
    name: str
    uuid: str
    origin_uuid: str
    pos: tuple[float, float]
    disabled: bool
    values: dict[str, Any] = field(default_factory=dict)


def read_pos(value: Any) -> tuple[float, float]:
    """A node's `pos` as (x, y); (0, 0) when it is not a readable pair."""
    try:
        return float(value[0]), float(value[1])
    except (TypeError, ValueError, IndexError, KeyError):
        return 0.0, 0.0


def read_ends(conn: Any) -> tuple[tuple[str, str], tuple[str, str]] | None:
    """A connection's ((out node id, port), (in node id, port)); None when it is malformed."""
    if not isinstance(conn, dict):
        return None
    ends = []
    for key in ("out", "in"):
        end = conn.get(key)
        if not (
            isinstance(end, (list, tuple))
            and len(end) == 2
            and all(isinstance(x, str) for x in end)
        ):
            return None
        ends.append((end[0], end[1]))
    return ends[0], ends[1]


def ports_text(ports: tuple[InputPort, ...] | tuple[OutputPort, ...], what: str) -> str:
    """The names of a node's ports for an error message (`what` is "inputs" or "outputs")."""
    return f"its {what}: " + ", ".join(p.name for p in ports) if ports else f"it has no {what}"


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (graphs may be large)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    nodes = sorted(set(edges) | {v for targets in edges.values() for v in targets})
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                components.append(component)
    return components
