"""Names of duplicated nodes, after what differs from the node they were copied from.

A copy is "<origin's name> (copy)" while nothing differs, and names its most important
differences once something does: "support · lr 2e-3 · r 16". A value the origin's name states is
replaced rather than repeated ("train lr 1e-3" copied with lr 2e-3 becomes "train lr 2e-3"), so
a name never states a value the node does not have. A copied Fine-Tune node is named after its
whole module's differences (nodes.lineage), each copied feeder after its own.

A node follows its differences while its name is the one the app gave it, which the node keeps in
`custom["auto_name"]`; a name the user typed differs from it and is kept. Graph files from before
`auto_name` existed had copies named "<name> (copy)" or "<name> (copy) N": such names count as
given by the app.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from nodes.catalogue import FINE_TUNE, decl_for_type
from nodes.lineage import (
    Change,
    by_importance,
    feeder_pairs,
    lineage_diff,
    node_changes,
    origin_of,
    short_value,
)

NAME_CHANGES = 3  # differences a name states at most (replaced values count)
SEPARATOR = " · "
ROUNDS = 4  # passes over the copies until no name changes (renames free names others want)
_MARKER = re.compile(r"^(?P<base>.+?) \((?:copy(?: \d+)?|\d+)\)(?: \d+)?$")
_LEGACY = re.compile(r"^.+ \(copy\)(?: \d+)?$")


def copy_name(
    origin_name: str, changes: Sequence[Change], taken: set[str], current: str = ""
) -> str:
    """The name of a copy of `origin_name` that differs by `changes` (most important first), not
    in `taken`: "support (copy)", "support (copy 2)", "support · lr 2e-3 · r 16", "… (2)". A
    `current` name that is already one of these numbered forms is kept, so names do not shift
    when another copy frees a lower number. The origin's own marker ("(copy 2)", "(2)") is
    dropped first."""
    base = origin_name
    while (marked := _MARKER.match(base)) is not None:
        base = marked["base"]
    if not changes:
        return _unique(f"{base} (copy)", taken, current)
    rest = []
    for change in changes:
        replaced = _replace_value(base, change)
        if replaced is None:
            rest.append(change)
        else:
            base = replaced
    room = max(0, NAME_CHANGES - (len(changes) - len(rest)))  # values the name already states
    return _unique(SEPARATOR.join([base, *(c.name_part() for c in rest[:room])]), taken, current)


def is_auto_named(node: dict) -> bool:
    """Whether a node's name is the one the app gave it (see the module docstring)."""
    custom = node.get("custom") if isinstance(node.get("custom"), dict) else {}
    name, given = str(node.get("name") or ""), str(custom.get("auto_name") or "")
    return name == given if given else bool(_LEGACY.match(name))


def auto_names(graph: dict) -> dict[str, str]:
    """New names for the copies named by the app whose name no longer says what differs:
    {node id: name}, empty when every name is right.

    Copies of copies come after their origin, so they build on its new name; the passes repeat
    while a rename changes another's (a feeder shared with an origin renamed after it)."""
    nodes = graph.get("nodes") or {}
    names = {i: str(n.get("name") or "") for i, n in nodes.items() if isinstance(n, dict)}
    wanted = []  # (node to name, the node it copies, what differs), origins first
    for copy_id in _copies_origins_first(graph):
        lineage = lineage_diff(graph, copy_id)
        if lineage is None or lineage.origin_id is None:
            continue
        wanted.append((copy_id, lineage.origin_id, lineage.changes))
        for pair in feeder_pairs(graph, lineage.origin_id, copy_id):
            old, new = nodes.get(pair.old_id), nodes.get(pair.new_id)
            if old is None or new is None or pair.old_id == pair.new_id:
                continue
            decl = decl_for_type(new.get("type_"))
            if decl is None or decl is FINE_TUNE or decl is not decl_for_type(old.get("type_")):
                continue
            wanted.append((pair.new_id, pair.old_id, by_importance(node_changes(decl, old, new))))
    wanted = [w for w in wanted if is_auto_named(nodes[w[0]])]
    renames: dict[str, str] = {}
    for _ in range(ROUNDS):
        changed = False
        named: set[str] = set()  # a node feeding two copies is named after the first
        for node_id, origin_id, changes in wanted:
            if node_id in named:
                continue
            named.add(node_id)
            taken = {n for i, n in names.items() if i != node_id}
            name = copy_name(names[origin_id], changes, taken, names[node_id])
            if name != names[node_id]:
                renames[node_id] = names[node_id] = name
                changed = True
        if not changed:
            break
    return {i: n for i, n in renames.items() if n != str(nodes[i].get("name") or "")}


def _copies_origins_first(graph: dict) -> list[str]:
    """The Fine-Tune copies whose origin exists, a copy after the copy it was made from."""
    origins = {}
    for node_id in graph.get("nodes") or {}:
        origin = origin_of(graph, node_id)
        if origin is not None:
            origins[node_id] = origin

    def depth(node_id: str) -> int:
        seen = {node_id}
        while node_id in origins and origins[node_id] not in seen:
            node_id = origins[node_id]
            seen.add(node_id)
        return len(seen)

    return sorted(origins, key=depth)


def _replace_value(name: str, change: Change) -> str | None:
    """`name` with the change's old value replaced by the new one where the name states it
    ("train lr 1e-3" → "train lr 2e-3", "LoRA r8" → "LoRA r16"); None when it does not."""
    if change.summary:
        return None
    label, old, new = change.label, short_value(change.old), short_value(change.new)
    pattern = re.compile(rf"(?<![\w.-]){re.escape(label)}( ?){re.escape(old)}(?![\w.-])")
    replaced, count = pattern.subn(lambda m: f"{label}{m[1]}{new}", name, count=1)
    return replaced if count else None


def _unique(name: str, taken: set[str], current: str = "") -> str:
    """`name`, else "… (copy 2)" for a plain copy, "… (2)" for a named one, not in `taken`;
    `current` when it is one of those and free."""
    if current and current not in taken and (current == name or _is_numbered(current, name)):
        return current
    if name not in taken:
        return name
    number = 2
    while (candidate := _numbered(name, number)) in taken:
        number += 1
    return candidate


def _is_numbered(text: str, name: str) -> bool:
    """Whether `text` is one of `name`'s numbered forms (`_numbered`)."""
    if name.endswith(" (copy)"):
        return re.fullmatch(re.escape(name[: -len(")")]) + r" \d+\)", text) is not None
    return re.fullmatch(re.escape(name) + r" \(\d+\)", text) is not None


def _numbered(name: str, number: int) -> str:
    if name.endswith(" (copy)"):
        return f"{name[: -len(')')]} {number})"
    return f"{name} ({number})"
