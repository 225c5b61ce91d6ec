"""Graph -> JobSpecs: compile a serialized graph (a plain dict) into one spec per Fine-Tune node.

Errors are values keyed by the node the user must look at: `CompileError(node_id, field, message,
kind=...)`, `kind` one of ERROR_KINDS. A Fine-Tune module with a problem (on itself or on a node
feeding it) yields errors and no spec; valid modules of the same graph still yield theirs. Values
are checked by the spec itself (`engine.spec`: each part's fields and rules, then the rules across
parts), so whatever would fail the worker on its spec fails here, on the node and field. Files a
node names (a dataset, a `gguf:` or folder base model) must exist once resolved to an absolute
path; relative paths of a graph without a file are left to the worker. Nothing here raises on bad
input.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from engine.errors import SpecError
from engine.spec import DatasetSpec, ExportSpec, JobSpec, check_field
from nodes.catalogue import CATALOGUE, FINE_TUNE, NODE_TYPES, NodeDecl, PortRef, decl_for_type
from nodes.graphfile import graph_dir, resolve_file, resolve_model_source

ErrorKind = Literal[
    "missing_input",
    "bad_connection",
    "cycle",
    "unknown_type",
    "invalid_value",
    "file_error",
    "invalid_graph",
]
ERROR_KINDS: tuple[str, ...] = get_args(ErrorKind)


@dataclass(frozen=True)
class CompileError:
    """A problem to show on one node: `field` is a parameter or port name ("" for the node).

    `kind` says what sort of problem it is, one of ERROR_KINDS (a closed set):

    - `missing_input`: a required input port of a Fine-Tune node has no enabled node connected
      (`field` is the port);
    - `bad_connection`: a connection the graph cannot hold: from or to a node id that is not in
      the graph, a port the node does not have, a node of the wrong kind, or several nodes on an
      input that takes one (`field` is the port, or `connections` for the graph);
    - `cycle`: the node sits on a cycle of connections (`field` is "");
    - `unknown_type`: the node's `type_` is not a known kind (`field` is `type_`);
    - `invalid_value`: a parameter holds a value the spec refuses, alone or together with other
      values (a SpecError from `engine.spec`), or a Fine-Tune name is not unique (`field` is the
      parameter);
    - `file_error`: a file or folder the node names does not exist or is not what it should be
      (`field` is the parameter);
    - `invalid_graph`: the graph dict itself is malformed: no `nodes` object, `connections` not a
      list, a node entry that is not an object, a connection that is not `{"out", "in"}`.
    """

    node_id: str  # the key in graph["nodes"]; "" for a problem with the graph as a whole
    field: str
    message: str
    node_name: str = ""
    node_uuid: str = ""
    node_label: str = ""
    kind: ErrorKind = dataclasses.field(kw_only=True)

    def __post_init__(self) -> None:
        if self.kind not in ERROR_KINDS:
            raise ValueError(
                f"unknown CompileError kind {self.kind!r}; known: " + ", ".join(ERROR_KINDS)
            )

    def __str__(self) -> str:
        where = f'{self.node_label or "Node"} "{self.node_name}"' if self.node_id else "Graph"
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )

    def as_dict(self) -> dict:
        """A JSON-ready dict (for the CLI and the app)."""
        return {**dataclasses.asdict(self), "text": str(self)}


@dataclass(frozen=True)
class ModuleResult:
    """One Fine-Tune node: its spec, or None and the errors (its own and its feeders') why not."""

    node_id: str
    name: str
    node_uuid: str
    spec: JobSpec | None
    errors: tuple[CompileError, ...]


@dataclass
class CompileResult:
    """Specs of the valid modules (ordered by node position), and every error in the graph."""

    specs: list[JobSpec] = field(default_factory=list)
    errors: list[CompileError] = field(default_factory=list)
    modules: list[ModuleResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the graph has no errors at all (Run is enabled)."""
        return not self.errors

    def errors_for(self, node_id: str) -> list[CompileError]:
        """The errors to show on one node."""
        return [e for e in self.errors if e.node_id == node_id]


@dataclass
class _Node:
    id: str
    decl: NodeDecl | None
    name: str
    uuid: str
    origin_uuid: str
    pos: tuple[float, float]
    disabled: bool
    values: dict[str, Any] = field(default_factory=dict)


# The JobSpec part each Fine-Tune input fills: {"base_model": "base_model", "datasets": "dataset", …}
_PORT_OF_PART = {CATALOGUE[p.accepts[0].kind].spec_part: p.name for p in FINE_TUNE.inputs}


def compile(graph: dict, graph_path: str | Path | None = None) -> CompileResult:
    """Compile a graph-file dict into JobSpecs; relative paths resolve against `graph_path`."""
    return _Compiler(graph, graph_path).run()


class _Compiler:
    def __init__(self, graph: dict, graph_path: str | Path | None):
        self.graph = graph
        self.base = graph_dir(graph_path)
        self.graph_path = str(Path(graph_path).expanduser().resolve()) if graph_path else ""
        self.nodes: dict[str, _Node] = {}
        self.incoming: dict[str, dict[str, list[str]]] = {}
        self.edges: dict[str, set[str]] = {}
        self.result = CompileResult()
        self._seen: set[tuple[str, str, str]] = set()

    def run(self) -> CompileResult:
        nodes = self.graph.get("nodes") if isinstance(self.graph, dict) else None
        if not isinstance(nodes, dict):
            self.error(None, "nodes", "the graph has no nodes object", "invalid_graph")
            return self.result
        for node_id, data in nodes.items():
            self.read_node(str(node_id), data)
        connections = self.graph.get("connections", [])
        if not isinstance(connections, list):
            self.error(None, "connections", "must be a list", "invalid_graph")
            connections = []
        for index, conn in enumerate(connections):
            self.read_connection(index, conn)
        self.mark_cycles()
        modules = sorted(
            (n for n in self.nodes.values() if n.decl is FINE_TUNE and not n.disabled),
            key=lambda n: (n.pos, n.name, n.id),
        )
        self.check_names(modules)
        for node in modules:
            module = self.build_module(node)
            self.result.modules.append(module)
            if module.spec is not None:
                self.result.specs.append(module.spec)
        return self.result

    # -- errors ---------------------------------------------------------------------------------
    def error(self, node: _Node | None, field_name: str, message: str, kind: ErrorKind) -> None:
        """Record one error (once: a node shared by several modules is checked once)."""
        key = (node.id if node else "", field_name, message)
        if key in self._seen:
            return
        self._seen.add(key)
        self.result.errors.append(
            CompileError(
                node_id=key[0],
                field=field_name,
                message=message,
                node_name=node.name if node else "",
                node_uuid=node.uuid if node else "",
                node_label=node.decl.label if node and node.decl else "",
                kind=kind,
            )
        )

    # -- nodes ----------------------------------------------------------------------------------
    def read_node(self, node_id: str, data: Any) -> None:
        data = data if isinstance(data, dict) else {}
        custom = data.get("custom")
        custom = custom if isinstance(custom, dict) else {}
        node = _Node(
            id=node_id,
            decl=decl_for_type(data.get("type_")),
            name=str(data.get("name") or "").strip(),
            uuid=str(custom.get("uuid") or ""),
            origin_uuid=str(custom.get("origin_uuid") or ""),
            pos=_pos(data.get("pos")),
            disabled=data.get("disabled") is True,
        )
        self.nodes[node_id] = node
        if not data:
            self.error(node, "type_", "is not a node object with a type_", "invalid_graph")
            return
        if node.decl is None:
            self.error(
                node,
                "type_",
                f"unknown node type {data.get('type_')!r}; known types: " + ", ".join(NODE_TYPES),
                "unknown_type",
            )
            return
        if "custom" in data and not isinstance(data["custom"], dict):
            self.error(node, "custom", "must be an object of parameter values", "invalid_value")
        self.read_values(node, custom)

    def read_values(self, node: _Node, custom: dict) -> None:
        """Coerce, resolve and check each parameter; then the node's part as a whole and the
        files it names."""
        decl = node.decl
        assert decl is not None
        clean = True
        for param in decl.parameters:
            raw = custom.get(param.name, param.default_value())
            try:
                value = param.coerce(raw)
            except ValueError as e:
                self.error(node, param.name, str(e), "invalid_value")
                clean = False
                continue
            if param.widget == "file":
                value = resolve_file(value, self.base)
            elif param.widget == "model":
                value = resolve_model_source(value, self.base)
            try:
                check_field(decl.spec_class, param.name, value, decl.spec_part)
            except SpecError as e:
                self.error(node, param.name, _reason(e), "invalid_value")
                clean = False
            node.values[param.name] = value
        if clean and self.check_part(node):
            self.check_files(node)

    def check_part(self, node: _Node) -> bool:
        """Validate the node's spec part (its rules between fields); False when it failed."""
        decl = node.decl
        assert decl is not None
        try:
            decl.spec_class(**node.values).validate(decl.spec_part)
        except SpecError as e:
            self.error(node, e.field.split(".", 1)[-1], _reason(e), "invalid_value")
            return False
        return True

    def check_files(self, node: _Node) -> None:
        """Report a dataset file or base-model file/folder that does not exist (absolute paths
        only: a relative one has no graph folder to resolve against)."""
        assert node.decl is not None
        for param in node.decl.parameters:
            value = node.values.get(param.name)
            if param.widget == "file":
                problem = _file_problem(value)
            elif param.widget == "model":
                problem = _model_problem(value)
            else:
                continue
            if problem:
                self.error(node, param.name, problem, "file_error")

    # -- connections ----------------------------------------------------------------------------
    def read_connection(self, index: int, conn: Any) -> None:
        ends = _ends(conn)
        if ends is None:
            self.error(
                None,
                "connections",
                f'connection {index + 1} is not {{"out": [node_id, port], "in": [node_id, port]}}',
                "invalid_graph",
            )
            return
        (out_id, out_port), (in_id, in_port) = ends
        src, dst = self.nodes.get(out_id), self.nodes.get(in_id)
        if src is None and dst is None:
            self.error(
                None,
                "connections",
                f"connection {index + 1} joins node ids {out_id!r} "
                f"and {in_id!r}, which are not in the graph",
                "bad_connection",
            )
            return
        if src is None:
            self.error(
                dst,
                in_port,
                f"is connected from node id {out_id!r}, which is not in the graph",
                "bad_connection",
            )
            return
        if dst is None:
            self.error(
                src,
                out_port,
                f"is connected to node id {in_id!r}, which is not in the graph",
                "bad_connection",
            )
            return
        self.edges.setdefault(out_id, set()).add(in_id)
        if src.decl is None or dst.decl is None:
            return  # already reported as an unknown node type
        if src.decl.output(out_port) is None:
            self.error(
                src,
                out_port,
                f"{src.decl.label} nodes have no output port "
                f"{out_port!r}; " + _ports_text(src.decl.outputs, "outputs"),
                "bad_connection",
            )
            return
        port = dst.decl.input(in_port)
        if port is None:
            self.error(
                dst,
                in_port,
                f"{dst.decl.label} nodes have no input port "
                f"{in_port!r}; " + _ports_text(dst.decl.inputs, "inputs"),
                "bad_connection",
            )
            return
        if PortRef(src.decl.kind, out_port) not in port.accepts:
            wanted = " or ".join(CATALOGUE[r.kind].label for r in port.accepts)
            self.error(
                dst,
                in_port,
                f'takes a {wanted} node, not the {src.decl.label} node "{src.name}"',
                "bad_connection",
            )
            return
        sources = self.incoming.setdefault(in_id, {}).setdefault(in_port, [])
        if out_id not in sources:
            sources.append(out_id)

    def mark_cycles(self) -> None:
        """Report every node that sits on a cycle of connections."""
        for component in _strongly_connected(self.edges):
            if len(component) == 1 and component[0] not in self.edges.get(component[0], ()):
                continue
            members = sorted((self.nodes[i] for i in component), key=lambda n: (n.pos, n.name))
            names = ", ".join(f'"{n.name}"' for n in members)
            for node in members:
                message = (
                    "is connected to itself; remove that connection"
                    if len(members) == 1
                    else f"is part of a cycle of connections ({names}); remove one of them"
                )
                self.error(node, "", message, "cycle")

    # -- modules --------------------------------------------------------------------------------
    def check_names(self, modules: list[_Node]) -> None:
        seen: set[str] = set()
        for node in modules:
            if node.name and node.name in seen:
                self.error(
                    node,
                    "name",
                    f'another Fine-Tune node is already named "{node.name}"; '
                    "give each module a unique name",
                    "invalid_value",
                )
            seen.add(node.name)

    def build_module(self, node: _Node) -> ModuleResult:
        picked: dict[str, list[_Node]] = {}
        for port in FINE_TUNE.inputs:
            connected = [self.nodes[i] for i in self.incoming.get(node.id, {}).get(port.name, [])]
            active = [n for n in connected if not n.disabled]
            if not active:
                if port.required:
                    note = " (the connected one is disabled)" if connected else ""
                    self.error(
                        node, port.name, f"connect a {port.label} node{note}", "missing_input"
                    )
            elif len(active) > 1 and not port.multiple:
                names = ", ".join(f'"{n.name}"' for n in active)
                self.error(
                    node,
                    port.name,
                    f"takes one {port.label} node but {len(active)} are "
                    f"connected ({names}); keep one",
                    "bad_connection",
                )
            else:
                picked[port.name] = active
        spec = None
        if not self.module_errors(node, picked):
            spec = self.make_spec(node, picked)
        return ModuleResult(
            node_id=node.id,
            name=node.name,
            node_uuid=node.uuid,
            spec=spec,
            errors=tuple(self.module_errors(node, picked)),
        )

    def module_errors(self, node: _Node, picked: dict[str, list[_Node]]) -> list[CompileError]:
        ids = {node.id} | {n.id for feeders in picked.values() for n in feeders}
        return [e for e in self.result.errors if e.node_id in ids]

    def make_spec(self, node: _Node, picked: dict[str, list[_Node]]) -> JobSpec | None:
        def part(port: str) -> Any:
            feeder = picked[port][0]
            return feeder.decl.spec_class(**feeder.values)

        spec = JobSpec(
            name=node.name,
            base_model=part("base_model"),
            datasets=[DatasetSpec(**n.values) for n in picked["dataset"]],
            training=part("training_config"),
            lora=part("lora_config"),
            resources=FINE_TUNE.spec_class(**node.values),
            export=part("export") if "export" in picked else ExportSpec(),
            node_uuid=node.uuid,
            origin_uuid=node.origin_uuid,
            graph_path=self.graph_path,
        )
        try:
            spec.validate()
        except SpecError as e:
            owner, field_name = self.owner_of(e.field, node, picked)
            self.error(owner, field_name, _reason(e), "invalid_value")
            return None
        return spec

    def owner_of(
        self, spec_field: str, node: _Node, picked: dict[str, list[_Node]]
    ) -> tuple[_Node, str]:
        """Map a SpecError field (e.g. `datasets[1].path`) back to the node that owns it."""
        head, _, rest = spec_field.partition(".")
        part, _, index = head.partition("[")
        port = _PORT_OF_PART.get(part)
        if port is None or port not in picked:
            return node, rest or (_PORT_OF_PART.get(part) or head)
        if not rest:
            return node, port
        feeders = picked[port]
        i = int(index.rstrip("]")) if index else 0
        return (feeders[i] if i < len(feeders) else node), rest


# -- helpers ------------------------------------------------------------------------------------
def _reason(e: SpecError) -> str:
    """SpecError's sentence without its `field = value:` prefix, plus the value and hint."""
    prefix = f"{e.field} = {e.value!r}: "
    text = e.message[len(prefix) :] if e.message.startswith(prefix) else e.message
    if e.value not in ("", None, [], {}):
        text += f" (got {e.value!r})"
    return f"{text}. {e.hint}" if e.hint else text


def _file_problem(value: Any) -> str:
    """Why a resolved dataset path cannot be read ("" when it can, or cannot be told here)."""
    if not isinstance(value, str) or not value.strip() or not Path(value).is_absolute():
        return ""
    path = Path(value)
    if path.is_dir():
        return f"{path} is a folder; choose a file in it"
    if not path.is_file():
        return f"the file {path} does not exist; check the path or choose the file again"
    return ""


def _model_problem(value: Any) -> str:
    """Why a resolved base-model source naming a local file or folder cannot be used ("" when it
    can, or is a hub id, a builtin or a GGUF shipped in a package)."""
    if not isinstance(value, str):
        return ""
    text = value.strip()
    if text.startswith("gguf:"):
        location = text[len("gguf:") :]
        tail = location.replace("\\", "/").rsplit("/", 1)[-1]
        if tail.startswith("pypi:") or not Path(location).is_absolute():
            return ""
        if not Path(location).is_file():
            return f"the GGUF file {location} does not exist; choose an existing .gguf file"
        return ""
    if text.startswith("builtin:") or not Path(text).is_absolute():
        return ""
    folder = Path(text)
    if not folder.is_dir():
        return f"the model folder {folder} does not exist; check the path or choose the folder"
    if not (folder / "config.json").is_file():
        return (
            f"the folder {folder} has no config.json, so it is not a Hugging Face model "
            "folder; pick the folder that holds config.json and the weights"
        )
    return ""


def _pos(value: Any) -> tuple[float, float]:
    try:
        return float(value[0]), float(value[1])
    except (TypeError, ValueError, IndexError, KeyError):
        return 0.0, 0.0


def _ends(conn: Any) -> tuple[tuple[str, str], tuple[str, str]] | None:
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


def _ports_text(ports: tuple, what: str) -> str:
    return f"its {what}: " + ", ".join(p.name for p in ports) if ports else f"it has no {what}"


def _strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
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
