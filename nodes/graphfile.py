"""Graph files: NodeGraphQt session JSON plus a top-level `"tunegraph": {"format_version": N}`.

`load_graph` / `save_graph` read and write them; `GraphBuilder` writes them from code (tests,
example scripts, the CLI) in exactly the shape `NodeGraph.serialize_session()` produces, so the
canvas opens them. Relative paths inside a graph are resolved against the graph file's folder.
"""

from __future__ import annotations

import json
import os
import random
import uuid as uuidlib
from pathlib import Path
from typing import Any

from engine.errors import TunegraphError
from nodes.catalogue import CATALOGUE, KINDS, NodeDecl

GRAPH_FORMAT_VERSION = 1

# NodeGraphQt's graph settings as serialize_session() writes them, less `accept_connection_types`
# and `reject_connection_types`: NodeGraphQt 0.6.44's deserializer replaces the model's constraint
# dict with the file's copy while the viewer keeps checking the old one, so loading a file that
# carries them leaves the canvas without connection checks. The node classes declare the
# constraints instead; load_graph and save_graph drop these keys.
CANVAS_ONLY_SETTINGS = ("accept_connection_types", "reject_connection_types")
GRAPH_SETTINGS = {
    "layout_direction": 0,
    "acyclic": True,
    "pipe_collision": False,
    "pipe_slicing": True,
    "pipe_style": 1,
}
_BORDER_COLOUR = [74, 84, 85, 255]
_TEXT_COLOUR = [255, 255, 255, 180]


class GraphFileError(TunegraphError):
    """A graph file is missing, is not valid JSON, or is not a Tunegraph graph we can read."""

    def __init__(
        self, message: str, path: str | Path, line: int | None = None, hint: str | None = None
    ):
        where = f"{path}:{line}" if line else f"{path}"
        super().__init__(f"{where}: {message}", hint)
        self.path = str(path)
        self.line = line


# -- reading and writing ------------------------------------------------------------------------
def load_graph(path: str | Path) -> dict:
    """Read a graph file; raise GraphFileError naming the file (and line) for anything wrong."""
    path = Path(path)
    if not path.exists():
        raise GraphFileError("no such graph file", path, hint="Check the path.")
    if path.is_dir():
        raise GraphFileError("is a folder, not a graph file", path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise GraphFileError(
            "is not a text file", path, hint="Graph files are JSON saved by Tunegraph."
        ) from None
    except OSError as e:
        raise GraphFileError(f"cannot be read ({e.strerror})", path) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise GraphFileError(
            f"not valid JSON: {e.msg} (column {e.colno})", path, line=e.lineno
        ) from None
    return migrate_graph(data, path)


def migrate_graph(data: Any, path: str | Path = "<graph>") -> dict:
    """Check a graph dict's shape and bring an older format_version up to the current one."""
    section = data.get("tunegraph") if isinstance(data, dict) else None
    if not isinstance(section, dict):
        raise GraphFileError(
            'is not a Tunegraph graph (no "tunegraph" section)',
            path,
            hint="Open a graph saved by Tunegraph.",
        )
    version = section.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise GraphFileError(f"has an invalid tunegraph.format_version {version!r}", path)
    if version > GRAPH_FORMAT_VERSION:
        raise GraphFileError(
            f"was saved by a newer Tunegraph (graph format {version}; this version reads up to "
            f"{GRAPH_FORMAT_VERSION})",
            path,
            hint="Update Tunegraph to open it.",
        )
    if not isinstance(data.get("nodes", {}), dict):
        raise GraphFileError('"nodes" must be an object of node id -> node', path)
    if not isinstance(data.get("connections", []), list):
        raise GraphFileError('"connections" must be a list', path)
    data = dict(data)
    data["graph"] = _settings(data.get("graph"))
    data.setdefault("nodes", {})
    data.setdefault("connections", [])  # serialize_session() drops an empty list
    data["tunegraph"] = {**section, "format_version": GRAPH_FORMAT_VERSION}
    return data


def save_graph(graph: dict, path: str | Path) -> Path:
    """Write a graph dict as a graph file (sorted keys, stamped with the format version)."""
    path = Path(path)
    data = dict(graph)
    data["graph"] = _settings(graph.get("graph"))
    data["tunegraph"] = {**(graph.get("tunegraph") or {}), "format_version": GRAPH_FORMAT_VERSION}
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _settings(settings: Any) -> dict:
    settings = dict(settings) if isinstance(settings, dict) else dict(GRAPH_SETTINGS)
    for key in CANVAS_ONLY_SETTINGS:
        settings.pop(key, None)
    return settings


# -- relative paths -----------------------------------------------------------------------------
def graph_dir(graph_path: str | Path | None) -> Path | None:
    """The folder relative paths in a graph are resolved against (None: leave them alone)."""
    return Path(graph_path).expanduser().resolve().parent if graph_path else None


def resolve_file(value: str, base: Path | None) -> str:
    """A dataset path: `~` expanded, a relative path joined to the graph's folder."""
    if not value.strip():
        return value
    path = Path(value).expanduser()
    if base is None or path.is_absolute():
        return str(path)
    return os.path.normpath(base / path)


def resolve_model_source(value: str, base: Path | None) -> str:
    """A base-model source: `builtin:` and hub ids stay; folders and `gguf:` paths are resolved.

    A relative source is taken as a folder when it exists next to the graph or clearly is a path
    (starts with `.` or `~`, or has more than one `/`); otherwise `org/name` is a hub id.
    """
    text = value.strip()
    if not text or text.startswith("builtin:"):
        return value
    if text.startswith("gguf:pypi:"):  # a GGUF shipped in an installed PyPI package
        return value
    if text.startswith("gguf:"):
        return "gguf:" + resolve_file(text[len("gguf:") :], base)
    if Path(text).expanduser().is_absolute():
        return str(Path(text).expanduser())
    looks_like_path = text.startswith((".", "~")) or "\\" in text or text.count("/") > 1
    exists = base is not None and (base / text).exists()
    if exists or looks_like_path:
        return resolve_file(text, base)
    return value


# -- building graphs from code ------------------------------------------------------------------
class GraphBuilder:
    """Builds a graph-file dict node by node, filling defaults and fresh uuids.

    Pass `seed` for reproducible node ids and uuids (the example graphs are generated that way,
    so regenerating them changes nothing).
    """

    def __init__(self, seed: int | None = None):
        self._rng = random.Random(seed) if seed is not None else random.SystemRandom()
        self._nodes: dict[str, dict] = {}
        self._connections: list[dict] = []
        self._column_count: dict[bool, int] = {}

    def add_node(
        self,
        kind: str,
        name: str,
        pos: tuple[float, float] | None = None,
        *,
        uuid: str | None = None,
        origin_uuid: str | None = None,
        **params: Any,
    ) -> str:
        """Add a node of `kind` (e.g. "Dataset"); returns its node id in the graph file.

        Parameters not given keep their declared defaults; values are stored as given, so tests
        can store the strings a canvas would. `origin_uuid` is for Fine-Tune nodes only.
        """
        decl = _decl(kind)
        unknown = sorted(set(params) - {p.name for p in decl.parameters})
        if unknown:
            raise ValueError(
                f"{kind} has no parameter {unknown[0]!r}; its parameters: "
                + ", ".join(p.name for p in decl.parameters)
            )
        if origin_uuid is not None and kind != "FineTune":
            raise ValueError("only Fine-Tune nodes have an origin_uuid")
        if any(n["name"] == name for n in self._nodes.values()):
            raise ValueError(f"a node is already named {name!r} (the canvas renames duplicates)")
        custom = decl.custom_defaults()
        custom["uuid"] = uuid or self._new_uuid()
        if origin_uuid is not None:
            custom["origin_uuid"] = origin_uuid
        custom.update(params)
        node_id = self._new_id()
        self._nodes[node_id] = node_dict(decl, name, pos or self._next_pos(decl), custom)
        return node_id

    def connect(self, out_id: str, in_id: str, in_port: str, out_port: str | None = None) -> None:
        """Connect `out_id`'s output (its only one unless `out_port` says) to `in_id`.`in_port`."""
        out_decl, in_decl = self._decl_of(out_id), self._decl_of(in_id)
        if out_port is None:
            if len(out_decl.outputs) != 1:
                raise ValueError(f"{out_decl.kind} has no single output port to connect from")
            out_port = out_decl.outputs[0].name
        if out_decl.output(out_port) is None:
            raise ValueError(f"{out_decl.kind} has no output port {out_port!r}")
        if in_decl.input(in_port) is None:
            raise ValueError(f"{in_decl.kind} has no input port {in_port!r}")
        self._connections.append({"out": [out_id, out_port], "in": [in_id, in_port]})

    def set_params(self, node_id: str, **params: Any) -> None:
        """Change parameters of a node already added."""
        decl = self._decl_of(node_id)
        for name in params:
            if decl.parameter(name) is None:
                raise ValueError(f"{decl.kind} has no parameter {name!r}")
        self._nodes[node_id]["custom"].update(params)

    def uuid_of(self, node_id: str) -> str:
        """The stable uuid of a node added earlier."""
        return self._nodes[node_id]["custom"]["uuid"]

    def to_dict(self) -> dict:
        """The graph-file dict (a deep copy; the builder can go on adding)."""
        graph = {
            "graph": dict(GRAPH_SETTINGS),
            "nodes": self._nodes,
            "connections": self._connections,
            "tunegraph": {"format_version": GRAPH_FORMAT_VERSION},
        }
        return json.loads(json.dumps(graph))

    # -- helpers --------------------------------------------------------------------------------
    def _decl_of(self, node_id: str) -> NodeDecl:
        if node_id not in self._nodes:
            raise ValueError(f"no node with id {node_id!r} in this builder")
        return _decl(self._nodes[node_id]["type_"].split(".", 1)[1])

    def _new_id(self) -> str:
        while True:  # NodeGraphQt-style ids; any unique string works
            node_id = f"0x{self._rng.getrandbits(48):012x}"
            if node_id not in self._nodes:
                return node_id

    def _new_uuid(self) -> str:
        return str(uuidlib.UUID(int=self._rng.getrandbits(128), version=4))

    def _next_pos(self, decl: NodeDecl) -> tuple[float, float]:
        feeder = bool(decl.outputs)
        row = self._column_count.get(feeder, 0)
        self._column_count[feeder] = row + 1
        return (0.0, row * 140.0) if feeder else (420.0, row * 260.0)


def node_dict(
    decl: NodeDecl, name: str, pos: tuple[float, float] | list[float], custom: dict[str, Any]
) -> dict:
    """One node as NodeGraphQt's serialize_session() writes it (keys in its order)."""
    return {
        "type_": decl.type_,
        "icon": None,
        "name": name,
        "color": [*decl.colour, 255],
        "border_color": list(_BORDER_COLOUR),
        "text_color": list(_TEXT_COLOUR),
        "disabled": False,
        "selected": False,
        "visible": True,
        "width": 160.0,
        "height": 60.0 + 20.4 * (max(len(decl.inputs), len(decl.outputs), 1) - 1),
        "pos": [float(pos[0]), float(pos[1])],
        "layout_direction": 0,
        "port_deletion_allowed": False,
        "subgraph_session": {},
        "custom": custom,
    }


def new_uuid() -> str:
    """A fresh node uuid (for the app when it creates or duplicates a node)."""
    return str(uuidlib.uuid4())


def _decl(kind: str) -> NodeDecl:
    if kind not in CATALOGUE:
        raise ValueError(f"unknown node kind {kind!r}; known kinds: " + ", ".join(KINDS))
    return CATALOGUE[kind]
