"""What a duplicated Fine-Tune node changed compared with the node it was copied from.

A copy records its origin's uuid in `origin_uuid`. `lineage_diff` pairs the feeders of both
nodes port by port (`feeder_pairs`: datasets by file, so adding one reads `data +1 file` rather
than a change of every dataset's settings), compares the Fine-Tune node's own parameters and those
of each pair of feeders, and returns the differences most important first (model, method, data,
learning rate, rank…), e.g. `lr 2e-4 → 1e-4`. `lineage_label` makes the canvas's Δ label of it:
the three most important differences and "+N more", with all of them for the tooltip. It works on
the serialized graph dict, like the compiler, so the canvas shows it live and tests need no Qt.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, NamedTuple

from engine.formatting import format_setting
from nodes.catalogue import FINE_TUNE, InputPort, NodeDecl, Parameter, decl_for_type
from nodes.graphedit import node_pos

LABEL_CHANGES = 3  # differences on the canvas's Δ label; the tooltip has them all
VALUE_CHARS = 28  # a longer value (a prompt, a path) is cut with "…"
# parameter names (and the port-level "files", "node", "count"), most telling first; the
# others follow in declaration order
IMPORTANCE = (
    "source",
    "method",
    "files",
    "path",
    "node",
    "learning_rate",
    "full",
    "r",
    "epochs",
    "max_steps",
    "count",
    "alpha",
    "target_modules",
    "quantization",
    "micro_batch_size",
    "grad_accum",
    "max_seq_length",
    "chat_template",
    "lr_scheduler",
    "warmup_ratio",
    "dropout",
    "weight_decay",
    "format",
    "columns",
    "max_rows",
)


@dataclass(frozen=True)
class Change:
    """One setting that differs: `key` is `port.param` (e.g. `training_config.learning_rate`).

    `summary` replaces "old → new" where the values are not one setting (`+1 file`, `added`).
    """

    key: str
    label: str
    old: Any
    new: Any
    summary: str = ""

    def __str__(self) -> str:
        values = self.summary or f"{short_value(self.old)} → {short_value(self.new)}"
        return f"{self.label} {values}"

    def name_part(self) -> str:
        """The change as a copy's name states it: the new value (`lr 1e-3`, `data +1 file`)."""
        return f"{self.label} {self.summary or short_value(self.new)}"


@dataclass(frozen=True)
class Lineage:
    """A copy's origin (None when the origin node is gone) and what differs from it."""

    origin_id: str | None
    origin_name: str
    changes: tuple[Change, ...]

    def text(self) -> str:
        """Every difference, most important first, one a line (`lr 2e-4 → 1e-4`)."""
        if self.origin_id is None:
            return "copy of a deleted Fine-Tune node"
        if not self.changes:
            return f"same settings as {self.origin_name}"
        return "\n".join(str(c) for c in self.changes)


class FeederPair(NamedTuple):
    """The node feeding `port` of the origin and the one in the same place on the copy (either
    None when only one side has it); `index` counts the pairs of a port that takes several."""

    port: InputPort
    index: int
    old_id: str | None
    new_id: str | None


def lineage_label(text: str) -> tuple[str, str]:
    """The Δ label of a copy from `Lineage.text()`: (the three most important differences and
    "+N more", every difference one a line)."""
    lines = [line for line in text.splitlines() if line.strip()]
    short = ", ".join(lines[:LABEL_CHANGES])
    if len(lines) > LABEL_CHANGES:
        short += f" +{len(lines) - LABEL_CHANGES} more"
    return short, "\n".join(lines)


def short_value(value: Any) -> str:
    """A setting as lineage and names show it: `format_setting`, on one line, at most
    VALUE_CHARS characters."""
    return _cut(format_setting(value))


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


def origin_of(graph: dict, node_id: str) -> str | None:
    """The id of the Fine-Tune node `node_id` was copied from, None when it is not a copy (or
    its origin is gone)."""
    nodes = graph.get("nodes") or {}
    origin_uuid = _custom(nodes.get(node_id)).get("origin_uuid") or ""
    if not origin_uuid:
        return None
    return next(
        (
            i
            for i, n in nodes.items()
            if i != node_id and _is_fine_tune(n) and _custom(n).get("uuid") == origin_uuid
        ),
        None,
    )


def lineage_diff(graph: dict, node_id: str) -> Lineage | None:
    """The lineage of the Fine-Tune node `node_id`, or None when it is not a copy."""
    nodes = graph.get("nodes") or {}
    node = nodes.get(node_id)
    if not _is_fine_tune(node) or not _custom(node).get("origin_uuid"):
        return None
    origin_id = origin_of(graph, node_id)
    if origin_id is None:
        return Lineage(None, "", ())
    changes = module_changes(graph, origin_id, node_id)
    return Lineage(origin_id, str(nodes[origin_id].get("name") or ""), changes)


def module_changes(graph: dict, old_id: str, new_id: str, depth: int = 0) -> tuple[Change, ...]:
    """Every difference between two Fine-Tune nodes with what feeds them, most important first.

    A chained base (another Fine-Tune node's model) is compared the same way, its changes
    labelled "upstream …"."""
    nodes = graph.get("nodes") or {}
    changes = node_changes(FINE_TUNE, nodes[old_id], nodes[new_id])
    pairs = feeder_pairs(graph, old_id, new_id)
    for port in FINE_TUNE.inputs:
        mine = [p for p in pairs if p.port is port]
        if port.name == "dataset":
            changes += _dataset_changes(nodes, mine)
        elif port.multiple:
            changes += _several_changes(nodes, port, mine)
        elif mine:
            changes += _single_changes(graph, mine[0], depth)
    return tuple(by_importance(changes))


def node_changes(decl: NodeDecl, old: dict, new: dict, skip: tuple[str, ...] = ()) -> list[Change]:
    """The parameters of `decl` whose values differ between two node dicts (values compared as
    their declared types, so "0.0002" equals 2e-4), in declaration order."""
    old_custom, new_custom = _custom(old), _custom(new)
    out = []
    for param in decl.parameters:
        if param.name in skip:
            continue
        a = _coerced(param, old_custom.get(param.name, param.default_value()))
        b = _coerced(param, new_custom.get(param.name, param.default_value()))
        if a != b:
            out.append(Change(param.name, param.short, a, b))
    return out


def feeder_pairs(graph: dict, old_id: str, new_id: str) -> list[FeederPair]:
    """The feeders of two Fine-Tune nodes matched port by port: a port taking one node pairs its
    two feeders; datasets pair by file, then the rest in canvas order; evals and rewards pair in
    canvas order. What is left on either side pairs with None."""
    nodes = graph.get("nodes") or {}
    old_feeders, new_feeders = _feeders(graph, old_id), _feeders(graph, new_id)
    pairs = []
    for port in FINE_TUNE.inputs:
        olds, news = old_feeders.get(port.name, []), new_feeders.get(port.name, [])
        matched: list[tuple[str | None, str | None]] = []
        if port.name == "dataset":
            for old in list(olds):
                twin = next((n for n in news if _path(nodes[n]) == _path(nodes[old])), None)
                if twin is not None:
                    matched.append((old, twin))
                    olds, news = [o for o in olds if o != old], [n for n in news if n != twin]
        matched += [
            (olds[i] if i < len(olds) else None, news[i] if i < len(news) else None)
            for i in range(max(len(olds), len(news)))
        ]
        pairs += [FeederPair(port, i, old, new) for i, (old, new) in enumerate(matched)]
    return pairs


# -- one port's differences ---------------------------------------------------------------------
def _single_changes(graph: dict, pair: FeederPair, depth: int) -> list[Change]:
    """A port taking one node: that node's settings, or which node it is when the kinds differ
    (`base model tiny llama → sft`), or that one side has none (`export added`)."""
    nodes = graph.get("nodes") or {}
    port, old_id, new_id = pair.port.name, pair.old_id, pair.new_id
    old, new = nodes.get(old_id), nodes.get(new_id)
    what = port.replace("_", " ")
    if old is None or new is None:
        summary = "added" if old is None else "removed"
        return [Change(f"{port}.node", what, _name(old), _name(new), summary)]
    old_decl, new_decl = decl_for_type(old.get("type_")), decl_for_type(new.get("type_"))
    if old_decl is FINE_TUNE and new_decl is FINE_TUNE and old_id != new_id and depth < 4:
        return [
            Change(f"{port}.{c.key}", f"upstream {c.label}", c.old, c.new, c.summary)
            for c in module_changes(graph, old_id, new_id, depth + 1)
        ]
    if old_decl is None or old_decl is not new_decl or old_decl is FINE_TUNE:
        return [] if old_id == new_id else [Change(f"{port}.node", what, _name(old), _name(new))]
    return [
        Change(f"{port}.{c.key}", c.label, c.old, c.new) for c in node_changes(old_decl, old, new)
    ]


def _several_changes(nodes: dict, port: InputPort, pairs: list[FeederPair]) -> list[Change]:
    """Evals, rewards: how many (`eval +1`), then each pair's settings (`metrics[1] …`)."""
    olds = sum(p.old_id is not None for p in pairs)
    news = sum(p.new_id is not None for p in pairs)
    out = []
    if olds != news:
        summary = f"{news - olds:+d}".replace("-", "−")
        out.append(Change(f"{port.name}.count", port.name, olds, news, summary))
    for pair in pairs:
        old, new = nodes.get(pair.old_id), nodes.get(pair.new_id)
        decl = decl_for_type(new.get("type_")) if new else None
        if old is None or decl is None or decl is not decl_for_type(old.get("type_")):
            continue
        suffix = f"[{pair.index}]" if len(pairs) > 1 else ""
        out += [
            Change(f"{port.name}{suffix}.{c.key}", c.label + suffix, c.old, c.new)
            for c in node_changes(decl, old, new)
        ]
    return out


def _dataset_changes(nodes: dict, pairs: list[FeederPair]) -> list[Change]:
    """The files read as one change (`data a.jsonl → b.jsonl`, `data +1 file`), then the
    settings of each file both sides read (`format (a.jsonl)` when several are read)."""
    old_files = [_path(nodes[p.old_id]) for p in pairs if p.old_id is not None]
    new_files = [_path(nodes[p.new_id]) for p in pairs if p.new_id is not None]
    out = _files_change(old_files, new_files)
    for pair in pairs:
        old, new = nodes.get(pair.old_id), nodes.get(pair.new_id)
        decl = decl_for_type(new.get("type_")) if new else None
        if old is None or decl is None or decl is not decl_for_type(old.get("type_")):
            continue
        file = short_value(_path(new))
        several = len(new_files) > 1
        key = f"dataset[{file}]" if several else "dataset"
        where = f" ({file})" if several else ""
        out += [
            Change(f"{key}.{c.key}", c.label + where, c.old, c.new)
            for c in node_changes(decl, old, new, skip=("path",))
        ]
    return out


def _files_change(old_files: list[str], new_files: list[str]) -> list[Change]:
    """The paths read, compared as a set: one file for another reads `data a.jsonl → b.jsonl`
    (with their folders when the names are the same), else how many came and went."""
    added = list((Counter(new_files) - Counter(old_files)).elements())
    removed = list((Counter(old_files) - Counter(new_files)).elements())
    if not added and not removed:
        return []
    if len(added) == 1 and len(removed) == 1:
        old, new = removed[0], added[0]
        if short_value(old) != short_value(new):
            return [Change("dataset.files", "data", old, new)]
        where = [_cut("/".join(PurePath(p).parts[-2:])) for p in (old, new)]  # with the folder
        return [Change("dataset.files", "data", old, new, " → ".join(where))]
    parts = [f"+{len(added)}" if added else "", f"−{len(removed)}" if removed else ""]
    plural = len(added) + len(removed) > 1
    summary = " ".join(p for p in parts if p) + (" files" if plural else " file")
    return [Change("dataset.files", "data", tuple(removed), tuple(added), summary)]


# -- reading the graph dict ---------------------------------------------------------------------
def _feeders(graph: dict, node_id: str) -> dict[str, list[str]]:
    """{input port: the ids of the nodes feeding it, in canvas order (by position)}."""
    nodes = graph.get("nodes") or {}
    found: dict[str, list[str]] = {}
    for conn in graph.get("connections") or []:
        try:
            (src, _), (dst, port) = conn["out"], conn["in"]
        except (KeyError, TypeError, ValueError):
            continue
        if dst == node_id and src in nodes and src not in found.get(port, []):
            found.setdefault(port, []).append(src)
    for ids in found.values():
        ids.sort(key=lambda i: node_pos(nodes[i]))
    return found


def _custom(node: Any) -> dict:
    custom = node.get("custom") if isinstance(node, dict) else None
    return custom if isinstance(custom, dict) else {}


def _is_fine_tune(node: Any) -> bool:
    return isinstance(node, dict) and decl_for_type(node.get("type_")) is FINE_TUNE


def _path(node: dict) -> str:
    return str(_custom(node).get("path") or "").strip()


def _name(node: dict | None) -> str | None:
    return None if node is None else str(node.get("name") or "")


def _coerced(param: Parameter, value: Any) -> Any:
    try:
        return param.coerce(value)
    except ValueError:
        return value


def by_importance(changes: list[Change]) -> list[Change]:
    """`changes` most important first (IMPORTANCE, by the parameter each changes); the order
    among the others is kept."""

    def rank(change: Change) -> int:
        name = change.key.rsplit(".", 1)[-1]
        return IMPORTANCE.index(name) if name in IMPORTANCE else len(IMPORTANCE)

    return sorted(changes, key=rank)
