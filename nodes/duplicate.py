"""Deep duplicate of a Fine-Tune module on the graph dict (DESIGN "The flow of one run", step 1).

The copy holds the Fine-Tune node and every node feeding it, directly or not, with fresh node ids
and uuids, names "<name> (copy)" (made unique: "(copy 2)"), placed to the right of the whole
graph; only the connections inside that set are copied, so editing the copy never changes the
original. The copied Fine-Tune node records the original's uuid in `origin_uuid` (its lineage).
Every copied node records its name as given by the app (`auto_name`), so it renames itself after
what differs once a setting changes (nodes.autoname) until the user types a name.
The canvas adds the result with NodeGraphQt's public API; tests and scripts use `merged_into`.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

from nodes.autoname import copy_name
from nodes.catalogue import FINE_TUNE, decl_for_type
from nodes.graphedit import node_names, node_pos, unique_name, upstream_ids
from nodes.graphfile import new_uuid

GAP = 120.0  # between the graph's right edge and the copy
DEFAULT_WIDTH = 160.0  # a node dict without `width` (hand-written graphs)


@dataclass(frozen=True)
class Duplicate:
    """A deep copy of a module: new nodes by new id, their connections, the new Fine-Tune's id."""

    nodes: dict[str, dict]
    connections: list[dict]
    module_id: str
    ids: dict[str, str]  # original node id -> the copy's node id

    def merged_into(self, graph: dict) -> dict:
        """A copy of `graph` with these nodes and connections added."""
        data = json.loads(json.dumps(graph))
        data.setdefault("nodes", {}).update(json.loads(json.dumps(self.nodes)))
        data.setdefault("connections", []).extend(json.loads(json.dumps(self.connections)))
        return data


def deep_duplicate(
    graph: dict, module_id: str, suffix: str | None = None, x_offset: float | None = None
) -> Duplicate:
    """Copy the Fine-Tune node `module_id` and every node feeding it (see the module docstring).

    `suffix` names the copies "<name><suffix>" instead of "<name> (copy)"; `x_offset` moves the
    copy right by that much; by default it starts GAP right of the graph.
    """
    nodes = graph.get("nodes", {})
    module = nodes.get(module_id)
    if not isinstance(module, dict):
        raise ValueError(f"the graph has no node {module_id!r}")
    if decl_for_type(module.get("type_")) is not FINE_TUNE:
        raise ValueError("only Fine-Tune nodes are duplicated with their feeders")
    members = [module_id, *upstream_ids(graph, module_id)]
    if x_offset is None:
        x_offset = _right_edge(graph) + GAP - min(node_pos(nodes[i])[0] for i in members)

    taken_ids = set(nodes)
    used_names = node_names(graph)
    ids: dict[str, str] = {}
    copies: dict[str, dict] = {}
    for old_id in members:
        node = json.loads(json.dumps(nodes[old_id]))
        new_id = ids[old_id] = _new_id(taken_ids)
        taken_ids.add(new_id)
        name = str(node.get("name") or "")
        if suffix is None:
            node["name"] = copy_name(name, (), used_names)
        else:
            node["name"] = unique_name(f"{name}{suffix}", used_names)
        used_names.add(node["name"])
        x, y = node_pos(node)
        node["pos"] = [x + x_offset, y]
        node["selected"] = False
        custom = node.setdefault("custom", {})
        if old_id == module_id:
            custom["origin_uuid"] = module.get("custom", {}).get("uuid", "")
        custom["uuid"] = new_uuid()
        custom["auto_name"] = node["name"]
        copies[new_id] = node

    connections = []
    for conn in graph.get("connections", []):
        try:
            (out_id, out_port), (in_id, in_port) = conn["out"], conn["in"]
        except (KeyError, TypeError, ValueError):
            continue
        if out_id in ids and in_id in ids:
            connections.append({"out": [ids[out_id], out_port], "in": [ids[in_id], in_port]})
    return Duplicate(copies, connections, ids[module_id], ids)


def _right_edge(graph: dict) -> float:
    edges = [
        node_pos(n)[0] + float(n.get("width") or DEFAULT_WIDTH)
        for n in graph.get("nodes", {}).values()
        if isinstance(n, dict)
    ]
    return max(edges, default=0.0)


def _new_id(taken: set[str]) -> str:
    while True:  # NodeGraphQt-style ids; the canvas gives its own nodes their own
        node_id = f"0x{secrets.randbits(48):012x}"
        if node_id not in taken:
            return node_id
