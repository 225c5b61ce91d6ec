"""Transforms of a graph dict (NodeGraphQt session JSON), without Qt.

The canvas uses them on the way out (`graph_from_session`: what Save writes) and on the way in
(`with_declared_custom`, `with_unique_uuids`: what NodeGraphQt can deserialize); `absolute_paths`
rebases a graph saved elsewhere; `unique_name` and `upstream_ids` serve new nodes and Duplicate,
`free_spot` finds where a new node overlaps none. Each returns a new value and leaves its
arguments alone.
"""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path

from nodes.catalogue import decl_for_type
from nodes.eval_checks import resolve_judge, resolve_metric_files
from nodes.graphfile import (
    CANVAS_ONLY_SETTINGS,
    GRAPH_FORMAT_VERSION,
    graph_dir,
    new_uuid,
    resolve_file,
    resolve_model_source,
)
from nodes.method_checks import resolve_reward


def graph_from_session(session: dict) -> dict:
    """A graph-file dict from `NodeGraph.serialize_session()` (plain JSON, format stamped)."""
    data = json.loads(json.dumps(session, default=list))
    for key in CANVAS_ONLY_SETTINGS:
        data.get("graph", {}).pop(key, None)
    data.setdefault("connections", [])
    data["tunegraph"] = {"format_version": GRAPH_FORMAT_VERSION}
    return data


def with_declared_custom(data: dict) -> dict:
    """A copy whose Tunegraph nodes hold every declared `custom` key (defaults filled) and no other.

    NodeGraphQt's deserializer refuses a custom key the node class lacks.
    """
    data = json.loads(json.dumps(data))
    for node in data.get("nodes", {}).values():
        decl = decl_for_type(node.get("type_")) if isinstance(node, dict) else None
        if decl is None:
            continue
        custom = node.get("custom") if isinstance(node.get("custom"), dict) else {}
        node["custom"] = {k: custom.get(k, v) for k, v in decl.custom_defaults().items()}
    return data


def with_unique_uuids(data: dict) -> dict:
    """A copy where Tunegraph nodes without a uuid, or sharing one, get a fresh one.

    Nodes are taken in canvas order (by position), so the first of two sharing a uuid keeps it.
    """
    data = json.loads(json.dumps(data))
    ours = [
        n
        for n in data.get("nodes", {}).values()
        if isinstance(n, dict) and decl_for_type(n.get("type_")) is not None
    ]
    seen: set[str] = set()
    for node in sorted(ours, key=node_pos):
        custom = node.setdefault("custom", {})
        uuid = custom.get("uuid")
        if not uuid or uuid in seen:
            custom["uuid"] = uuid = new_uuid()
        seen.add(uuid)
    return data


def absolute_paths(data: dict, graph_path: str | Path) -> dict:
    """A copy whose relative file paths (datasets, eval sets and their metric files, judges,
    `gguf:` and folder bases) are made absolute
    against `graph_path`'s folder, so the graph can be saved or estimated elsewhere."""
    base = graph_dir(graph_path)
    data = json.loads(json.dumps(data))
    for node in data.get("nodes", {}).values():
        decl = decl_for_type(node.get("type_")) if isinstance(node, dict) else None
        if decl is None or not isinstance(node.get("custom"), dict):
            continue
        custom = node["custom"]
        for param in decl.parameters:
            value = custom.get(param.name)
            if param.widget == "metrics" and isinstance(value, list):
                custom[param.name] = resolve_metric_files(value, base)
            if not isinstance(value, str):
                continue
            if param.widget == "file":
                custom[param.name] = resolve_file(value, base)
            elif param.widget == "model":
                custom[param.name] = resolve_model_source(value, base)
            elif param.widget == "gguf":
                custom[param.name] = resolve_judge(value, base)
            elif param.widget == "reward":  # python:FILE.py, json:SCHEMA.json
                custom[param.name] = resolve_reward(value, base)
    return data


def unique_name(name: str, used: set[str]) -> str:
    """`name` (whitespace collapsed), or `name 2`, `name 3`… so it is not in `used`."""
    name = " ".join(name.split())
    if name not in used:
        return name
    number = 2
    while f"{name} {number}" in used:
        number += 1
    return f"{name} {number}"


def node_names(data: dict) -> set[str]:
    """The names of every node in a graph dict."""
    return {str(n.get("name")) for n in data.get("nodes", {}).values() if isinstance(n, dict)}


def upstream_ids(data: dict, node_id: str) -> list[str]:
    """Every node feeding `node_id`, directly or not, each once, nearest first (depth-first)."""
    feeders: dict[str, list[str]] = {}
    for out_id, in_id in connection_ends(data):
        feeders.setdefault(in_id, []).append(out_id)
    seen: dict[str, None] = {}
    stack = [node_id]
    while stack:
        current = stack.pop()
        for feeder in feeders.get(current, []):
            if feeder not in seen and feeder != node_id:
                seen[feeder] = None
                stack.append(feeder)
    return list(seen)


def connection_ends(data: dict) -> list[tuple[str, str]]:
    """(output node id, input node id) of every well-formed connection, in file order."""
    out = []
    for conn in data.get("connections", []):
        try:
            out.append((str(conn["out"][0]), str(conn["in"][0])))
        except (KeyError, IndexError, TypeError):
            continue
    return out


def node_pos(node: dict) -> tuple[float, float]:
    """A node dict's (x, y); (0, 0) when it has no readable position."""
    try:
        x, y = node["pos"]
        return float(x), float(y)
    except (KeyError, TypeError, ValueError):
        return 0.0, 0.0


Rect = tuple[float, float, float, float]  # x, y, width, height (scene units, y down)
NODE_GAP = 30.0  # the least room kept between a new node and the others


def free_spot(
    size: tuple[float, float], start: tuple[float, float], taken: list[Rect], gap: float = NODE_GAP
) -> tuple[float, float]:
    """The top-left corner nearest `start` where a node of `size` keeps `gap` from every rect in
    `taken`: `start` itself when it is free, else a spot beside or below the nodes in the way."""
    width, height = size
    x0, y0 = start

    def free(x: float, y: float) -> bool:
        return not any(
            x < rx + rw + gap
            and rx < x + width + gap
            and y < ry + rh + gap
            and ry < y + height + gap
            for rx, ry, rw, rh in taken
        )

    xs = {x0} | {rx + rw + gap for rx, _, rw, _ in taken} | {rx - width - gap for rx, *_ in taken}
    ys = (
        {y0}
        | {ry + rh + gap for _, ry, _, rh in taken}
        | {ry - height - gap for _, ry, *_ in taken}
    )
    for x, y in sorted(product(xs, ys), key=lambda p: (p[0] - x0) ** 2 + (p[1] - y0) ** 2):
        if free(x, y):
            return x, y
    return max((rx + rw for rx, _, rw, _ in taken), default=x0) + gap, y0  # (found above)
