"""What a duplicated Fine-Tune module changed compared with the module it was copied from.

A copy records its origin's uuid in `origin_uuid`. `lineage_diff` compares the effective settings
of both modules (the Fine-Tune node's own parameters and those of every node feeding it) and
returns the differences, e.g. `lr 2e-4 → 1e-4`. It works on the serialized graph dict, like the
compiler, so the canvas shows it live and tests need no Qt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from engine.formatting import format_setting
from nodes.catalogue import FINE_TUNE, NodeDecl, Parameter, decl_for_type


@dataclass(frozen=True)
class Change:
    """One setting that differs: `key` is `port.param` (e.g. `training_config.learning_rate`)."""

    key: str
    label: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.label} {format_setting(self.old)} → {format_setting(self.new)}"


@dataclass(frozen=True)
class Lineage:
    """A copy's origin (None when the origin node is gone) and what differs from it."""

    origin_id: str | None
    origin_name: str
    changes: tuple[Change, ...]

    def text(self) -> str:
        """One line for the node, e.g. `lr 2e-4 → 1e-4, r 8 → 16`."""
        if self.origin_id is None:
            return "copy of a deleted module"
        if not self.changes:
            return f"same settings as {self.origin_name}"
        return ", ".join(str(c) for c in self.changes)


def lineage_diff(graph: dict, node_id: str) -> Lineage | None:
    """The lineage of the Fine-Tune node `node_id`, or None when it is not a copy."""
    nodes = graph.get("nodes") or {}
    node = nodes.get(node_id)
    if not isinstance(node, dict) or decl_for_type(node.get("type_")) is not FINE_TUNE:
        return None
    origin_uuid = str((node.get("custom") or {}).get("origin_uuid") or "")
    if not origin_uuid:
        return None
    origin_id = next(
        (
            i
            for i, n in nodes.items()
            if i != node_id
            and isinstance(n, dict)
            and decl_for_type(n.get("type_")) is FINE_TUNE
            and (n.get("custom") or {}).get("uuid") == origin_uuid
        ),
        None,
    )
    if origin_id is None:
        return Lineage(None, "", ())
    old, new = _module_values(graph, origin_id), _module_values(graph, node_id)
    changes = []
    for key in list(old) + [k for k in new if k not in old]:
        a, b = old.get(key), new.get(key)
        old_value, new_value = a.value if a else None, b.value if b else None
        if old_value != new_value:
            changes.append(Change(key, _label(key, (a or b).param), old_value, new_value))
    return Lineage(origin_id, str(nodes[origin_id].get("name") or ""), tuple(changes))


def module_settings(graph: dict, node_id: str) -> dict[str, Any]:
    """A Fine-Tune module's effective settings: `param` for its own, `port.param` for feeders'
    (`dataset[i].param` when several datasets are connected), values coerced to declared types."""
    return {key: s.value for key, s in _module_values(graph, node_id).items()}


class _Setting(NamedTuple):
    param: Parameter
    value: Any


def _module_values(graph: dict, node_id: str) -> dict[str, _Setting]:
    """`module_settings`, each value with the parameter it belongs to."""
    nodes = graph.get("nodes") or {}
    out: dict[str, _Setting] = {}
    _add_values(out, "", FINE_TUNE, nodes[node_id])
    feeders: dict[str, list[str]] = {}
    for conn in graph.get("connections") or []:
        try:
            (src, _), (dst, port) = conn["out"], conn["in"]
        except (KeyError, TypeError, ValueError):
            continue
        if dst == node_id and src in nodes and src not in feeders.get(port, []):
            feeders.setdefault(port, []).append(src)
    for port in FINE_TUNE.inputs:
        ids = sorted(feeders.get(port.name, []), key=lambda i: _pos(nodes[i]))
        for index, feeder_id in enumerate(ids):
            decl = decl_for_type(nodes[feeder_id].get("type_"))
            if decl is None:
                continue
            prefix = f"{port.name}[{index}]." if len(ids) > 1 else f"{port.name}."
            _add_values(out, prefix, decl, nodes[feeder_id])
    return out


def _add_values(out: dict, prefix: str, decl: NodeDecl, node: dict) -> None:
    custom = node.get("custom") or {}
    for param in decl.parameters:
        value = _coerced(param, custom.get(param.name, param.default_value()))
        out[prefix + param.name] = _Setting(param, value)


def _coerced(param: Parameter, value: Any) -> Any:
    try:
        return param.coerce(value)
    except ValueError:
        return value


def _pos(node: dict) -> tuple[float, float]:
    try:
        return float(node["pos"][0]), float(node["pos"][1])
    except (KeyError, TypeError, ValueError, IndexError):
        return 0.0, 0.0


def _label(key: str, param: Parameter) -> str:
    """The parameter's short label, with the feeder's index when several share a port."""
    head = key.split(".", 1)[0]
    return f"{param.short}[{head.split('[')[1]}" if "[" in head else param.short
