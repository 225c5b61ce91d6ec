"""What a duplicated Fine-Tune module changed compared with the module it was copied from.

A copy records its origin's uuid in `origin_uuid`. `lineage_diff` compares the effective settings
of both modules (the Fine-Tune node's own parameters and those of every node feeding it) and
returns the differences, e.g. `lr 2e-4 → 1e-4`. It works on the serialized graph dict, like the
compiler, so the canvas shows it live and tests need no Qt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from nodes.catalogue import FINE_TUNE, NodeDecl, Parameter, decl_for_type

SHORT_LABELS = {
    "learning_rate": "lr",
    "micro_batch_size": "batch",
    "grad_accum": "grad accum",
    "max_seq_length": "seq len",
    "target_modules": "targets",
    "source": "model",
    "path": "data",
    "lr_scheduler": "schedule",
    "warmup_ratio": "warmup",
    "weight_decay": "wd",
    "max_steps": "max steps",
    "eval_split": "eval split",
    "quantization": "quant",
    "gpu_count": "GPUs",
    "max_rows": "max rows",
}


@dataclass(frozen=True)
class Change:
    """One setting that differs: `key` is `port.param` (e.g. `training_config.learning_rate`)."""

    key: str
    label: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.label} {format_value(self.old)} → {format_value(self.new)}"


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
    old, new = module_settings(graph, origin_id), module_settings(graph, node_id)
    changes = []
    for key in list(old) + [k for k in new if k not in old]:
        a, b = old.get(key), new.get(key)
        if a != b:
            param = key.rsplit(".", 1)[-1]
            changes.append(Change(key, _label(key, param), a, b))
    return Lineage(origin_id, str(nodes[origin_id].get("name") or ""), tuple(changes))


def module_settings(graph: dict, node_id: str) -> dict[str, Any]:
    """A Fine-Tune module's effective settings: `param` for its own, `port.param` for feeders'
    (`dataset[i].param` when several datasets are connected), values coerced to declared types."""
    nodes = graph.get("nodes") or {}
    out: dict[str, Any] = {}
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
        out[prefix + param.name] = _coerced(param, custom.get(param.name, param.default_value()))


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


def _label(key: str, param: str) -> str:
    label = SHORT_LABELS.get(param, param.replace("_", " "))
    head = key.split(".", 1)[0]
    return f"{label}[{head.split('[')[1]}" if "[" in head else label


def format_value(value: Any) -> str:
    """A compact rendering for diffs: `2e-4`, `0.05`, `q_proj,v_proj`, `on`, a file's name."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "—"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "—"
    if value is None or value == "":
        return "—"
    text = str(value)
    if ("/" in text or "\\" in text) and PurePath(text).suffix:
        return PurePath(text).name
    return text


def format_number(value: float) -> str:
    """`2e-4` / `5e-3` for small or large numbers, `0.05` / `3` otherwise."""
    if value != 0 and (abs(value) < 0.01 or abs(value) >= 1e6):
        mantissa, exponent = f"{value:.3e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:g}"
