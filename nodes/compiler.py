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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import SpecError
from engine.fields import check_field
from engine.spec import DatasetSpec, JobSpec
from nodes.assemble import Picked, assemble_spec, owner_of
from nodes.catalogue import CATALOGUE, FINE_TUNE, NODE_TYPES, PortRef, decl_for_type
from nodes.checks import document_problem, file_problem, model_problem, spec_reason
from nodes.eval_checks import (
    judge_problem,
    metrics_problem,
    resolve_judge,
    resolve_metric_files,
)
from nodes.eval_sets import EvalSets
from nodes.graphfile import graph_dir, resolve_file, resolve_model_source
from nodes.method_checks import data_problem, resolve_reward, reward_problem
from nodes.recipes import RecipeSteps, is_data_node, ordered
from nodes.results import CompileError, CompileResult, ErrorKind, ModuleResult
from nodes.structure import GraphNode, ports_text, read_ends, read_pos, strongly_connected

# why a Dataset node's file cannot train a run of a method ("" when it can): engine.data.check
DataCheck = Callable[[DatasetSpec, str], str]


def compile(
    graph: dict, graph_path: str | Path | None = None, data_check: DataCheck | None = None
) -> CompileResult:
    """Compile a graph-file dict into JobSpecs; relative paths resolve against `graph_path`.

    `data_check` reads each Dataset node's whole file (engine.data.check.check_dataset, or the
    canvas's cached background check): a problem it finds is an error on the Dataset node, so
    the module does not run. Without it only the file's first row is looked at."""
    return _Compiler(graph, graph_path, data_check).run()


class _Compiler(RecipeSteps, EvalSets):
    """One walk over a graph: nodes, then connections and cycles, then each Fine-Tune module
    (with the data steps its datasets and eval sets need: nodes.recipes, nodes.eval_sets)."""

    def __init__(
        self, graph: dict, graph_path: str | Path | None, data_check: DataCheck | None = None
    ) -> None:
        """Start a walk of `graph`, read from the file `graph_path` (None for an unsaved graph)."""
        self.graph = graph
        self.data_check = data_check
        self.base = graph_dir(graph_path)
        self.graph_path = str(Path(graph_path).expanduser().resolve()) if graph_path else ""
        self.nodes: dict[str, GraphNode] = {}
        self.incoming: dict[str, dict[str, list[str]]] = {}
        self.sources: dict[str, dict[str, list[tuple[str, str]]]] = {}
        self.edges: dict[str, set[str]] = {}
        # node id -> input port -> ids of enabled nodes of unknown type connected to it
        self.unknown_feeders: dict[str, dict[str, list[str]]] = {}
        self.result = CompileResult()
        self._seen: set[tuple[str, str, str]] = set()
        self.built: dict[str, ModuleResult] = {}  # Fine-Tune node id -> its module, once built

    def run(self) -> CompileResult:
        """Walk the whole graph once and return its specs, modules and errors."""
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
            module = self.module_of(node)
            self.result.modules.append(module)
            if module.spec is not None:
                self.result.specs.append(module.spec)
        self.result.specs = upstream_first(self.result.specs)
        return self.result

    def module_of(self, node: GraphNode) -> ModuleResult:
        """The module of Fine-Tune `node`, built once (a chained module builds its upstream's
        first: it starts from that module's base model)."""
        if node.id not in self.built:
            self.built[node.id] = self.build_module(node)
        return self.built[node.id]

    # -- errors ---------------------------------------------------------------------------------
    def error(self, node: GraphNode | None, field_name: str, message: str, kind: ErrorKind) -> None:
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
        """Record one node entry of the graph and report what is wrong with it."""
        data = data if isinstance(data, dict) else {}
        custom = data.get("custom")
        custom = custom if isinstance(custom, dict) else {}
        node = GraphNode(
            id=node_id,
            decl=decl_for_type(data.get("type_")),
            name=str(data.get("name") or "").strip(),
            uuid=str(custom.get("uuid") or ""),
            origin_uuid=str(custom.get("origin_uuid") or ""),
            pos=read_pos(data.get("pos")),
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
                f"unknown node type {data.get('type_')!r} (a typo, or a node from a newer "
                "version of Tunegraph); known types: " + ", ".join(NODE_TYPES),
                "unknown_type",
            )
            return
        if "custom" in data and not isinstance(data["custom"], dict):
            self.error(node, "custom", "must be an object of parameter values", "invalid_value")
        self.read_values(node, custom)

    def read_values(self, node: GraphNode, custom: dict) -> None:
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
            elif param.widget == "files":
                value = [resolve_file(v, self.base) for v in value]
            elif param.widget == "model":
                value = resolve_model_source(value, self.base)
            elif param.widget == "gguf":
                value = resolve_judge(value, self.base)
            elif param.widget == "metrics":
                value = resolve_metric_files(value, self.base)
            elif param.widget == "reward":
                value = resolve_reward(value, self.base)
            cls, part = decl.part_of(param.name)
            try:
                check_field(cls, param.name, value, part)
            except SpecError as e:
                self.error(node, param.name, spec_reason(e), "invalid_value")
                clean = False
            node.values[param.name] = value
        if clean and self.check_part(node):
            self.check_files(node)

    def check_part(self, node: GraphNode) -> bool:
        """Validate the node's spec part (its rules between fields); False when it failed."""
        decl = node.decl
        assert decl is not None
        try:
            for cls, part in decl.parts:
                cls(**decl.part_values(node.values, cls)).validate(part)
        except SpecError as e:
            self.error(node, e.field.split(".", 1)[-1], spec_reason(e), "invalid_value")
            return False
        return True

    def check_files(self, node: GraphNode) -> None:
        """Report a dataset file or base-model file/folder that does not exist, a judge model
        that is no GGUF, a metric that cannot be computed (absolute paths only: a relative one
        has no graph folder to resolve against)."""
        assert node.decl is not None
        for param in node.decl.parameters:
            if not param.visible(node.values):  # hidden, so unused (a Reward node's judge)
                continue
            value = node.values.get(param.name)
            if param.widget == "file":
                problem = file_problem(value)
            elif param.widget == "files":
                problem = next((p for p in map(document_problem, value) if p), "")
            elif param.widget == "model":
                problem = model_problem(value)
            elif param.widget == "gguf":
                problem = judge_problem(value)
            elif param.widget == "metrics":
                problem = metrics_problem(value)
            elif param.widget == "reward":
                problem = reward_problem(value)
            else:
                continue
            if problem:
                self.error(node, param.name, problem, "file_error")
        if node.decl.spec_part == "base_model":
            self.check_chat_template(node)

    def check_chat_template(self, node: GraphNode) -> None:
        """A base without a chat template whose node picks none (or a pick its vocabulary cannot
        take) is an error on the node, so the run is refused before it starts."""
        from engine.models.template_choice import template_plan
        from engine.spec import BaseModelSpec

        known = {f.name for f in dataclasses.fields(BaseModelSpec)}
        try:
            base = BaseModelSpec(**{k: v for k, v in node.values.items() if k in known})
            plan = template_plan(base)
        except Exception:  # an unreadable source is reported by the file checks above
            return
        if plan.problem:
            self.error(node, "chat_template", f"{plan.problem}. {plan.hint}", "invalid_value")

    # -- connections ----------------------------------------------------------------------------
    def read_connection(self, index: int, conn: Any) -> None:
        """Record connection number `index` (from 0) and report what is wrong with it."""
        ends = read_ends(conn)
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
            # already reported as an unknown node type; the module it would feed (directly, or
            # through an Eval or data node) is refused
            if src.decl is None and dst.decl is not None and not src.disabled:
                self.unknown_feeders.setdefault(in_id, {}).setdefault(in_port, []).append(out_id)
            return
        if not self.check_ports(src, out_port, dst, in_port):
            return
        sources = self.incoming.setdefault(in_id, {}).setdefault(in_port, [])
        if out_id not in sources:
            sources.append(out_id)
        ends = self.sources.setdefault(in_id, {}).setdefault(in_port, [])
        if (out_id, out_port) not in ends:
            ends.append((out_id, out_port))

    def check_ports(self, src: GraphNode, out_port: str, dst: GraphNode, in_port: str) -> bool:
        """Report ports the two nodes lack or an input that refuses the output; True if none."""
        assert src.decl is not None and dst.decl is not None
        if src.decl.output(out_port) is None:
            self.error(
                src,
                out_port,
                f"{src.decl.label} nodes have no output port "
                f"{out_port!r}; " + ports_text(src.decl.outputs, "outputs"),
                "bad_connection",
            )
            return False
        port = dst.decl.input(in_port)
        if port is None:
            self.error(
                dst,
                in_port,
                f"{dst.decl.label} nodes have no input port "
                f"{in_port!r}; " + ports_text(dst.decl.inputs, "inputs"),
                "bad_connection",
            )
            return False
        if PortRef(src.decl.kind, out_port) not in port.accepts:
            wanted = " or ".join(dict.fromkeys(CATALOGUE[r.kind].label for r in port.accepts))
            self.error(
                dst,
                in_port,
                f'takes a {wanted} node, not the {src.decl.label} node "{src.name}"',
                "bad_connection",
            )
            return False
        return True

    def mark_cycles(self) -> None:
        """Report every node that sits on a cycle of connections."""
        for component in strongly_connected(self.edges):
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
    def check_names(self, modules: list[GraphNode]) -> None:
        """Report each Fine-Tune node whose name an earlier module already has."""
        seen: set[str] = set()
        for node in modules:
            if node.name and node.name in seen:
                self.error(
                    node,
                    "name",
                    f'another Fine-Tune node is already named "{node.name}"; '
                    "give each Fine-Tune node a unique name",
                    "invalid_value",
                )
            seen.add(node.name)

    def build_module(self, node: GraphNode) -> ModuleResult:
        """Pick the enabled nodes on each input of Fine-Tune `node`; its spec if nothing is wrong."""
        picked: Picked = {}
        for port in FINE_TUNE.inputs:
            connected = [self.nodes[i] for i in self.incoming.get(node.id, {}).get(port.name, [])]
            active = [n for n in connected if not n.disabled]
            if not active:
                if port.required and not self.unknown_feeders.get(node.id, {}).get(port.name):
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

    def module_errors(self, node: GraphNode, picked: Picked) -> list[CompileError]:
        """The errors so far on a module's node, on the nodes picked to feed it and on the nodes
        of unknown type connected to it (a module never runs without a node it was given)."""
        feeders = [n for nodes in picked.values() for n in nodes]
        feeders += [
            d for n in picked.get("dataset", []) if is_data_node(n) for d in self.data_deps(n)
        ]
        feeders += self.eval_deps(picked.get("eval", []))
        # an upstream Fine-Tune node answers for itself: make_spec says when it cannot run
        ids = {node.id} | {n.id for n in feeders if n.decl is not FINE_TUNE}
        ids |= {
            i
            for fed in [node, *feeders]
            if fed.decl is not FINE_TUNE or fed is node
            for unknown in self.unknown_feeders.get(fed.id, {}).values()
            for i in unknown
        }
        return [e for e in self.result.errors if e.node_id in ids]

    def make_spec(self, node: GraphNode, picked: Picked) -> JobSpec | None:
        """The module's validated JobSpec; None, with the error on the node that owns it, if not."""
        upstream = None
        feeder = picked["base_model"][0]
        if feeder.decl is FINE_TUNE:  # a chain: this run starts from that run's result
            upstream = self.module_of(feeder).spec
            if upstream is None:
                self.error(
                    node,
                    "base_model",
                    f'starts from the Fine-Tune node "{feeder.name}", which cannot run: fix '
                    "its errors first",
                    "invalid_value",
                )
                return None
        datasets, steps = self.module_datasets(node)
        evals, eval_steps = self.module_evals(picked.get("eval", []))
        if datasets is None or evals is None:
            return None
        spec = assemble_spec(node, picked, self.graph_path, upstream, datasets, evals)
        spec.data_steps = ordered(steps + eval_steps)  # the training data's first, each once
        try:
            spec.validate()
        except SpecError as e:
            owner, field_name = owner_of(e.field, node, picked)
            self.error(owner, field_name, spec_reason(e), "invalid_value")
            return None
        fits = True
        for feeder, ds in zip(picked["dataset"], spec.datasets, strict=True):
            if is_data_node(feeder):  # made by its data steps before the run starts
                continue
            problem = data_problem(ds, spec.method.method, spec.rewards)
            if not problem and self.data_check is not None:
                problem = self.data_check(ds, spec.method.method)
            if problem:  # on the Dataset node: its file is what does not fit the method
                self.error(feeder, "path", problem, "invalid_value")
                fits = False
        return spec if fits else None

    def module_datasets(self, node: GraphNode) -> tuple[list[DatasetSpec] | None, list[dict]]:
        """The datasets of Fine-Tune `node` (a data node's as its output file) and the data steps
        that make them, in order; None when a data node on the way has an error."""
        datasets: list[DatasetSpec] = []
        steps: list[dict] = []
        for source_id, port in self.sources.get(node.id, {}).get("dataset", []):
            source = self.nodes[source_id]
            if source.disabled:
                continue
            if not is_data_node(source):
                datasets.append(DatasetSpec(**source.values))
                continue
            path, before, _ = self.feed(source, port)
            if path is None:
                return None, []
            datasets.append(DatasetSpec(path=path))
            steps += before
        return datasets, ordered(steps)

    def data_deps(self, node: GraphNode) -> list[GraphNode]:
        """Every node data node `node` reads from, recursively (their errors stop the module)."""
        out = []
        for source_id, _ in self.sources.get(node.id, {}).get("dataset", []):
            source = self.nodes[source_id]
            if not source.disabled:
                out.append(source)
                if is_data_node(source):
                    out += self.data_deps(source)
        return out


def upstream_first(specs: list[JobSpec]) -> list[JobSpec]:
    """`specs` in their order, except that a chained run comes after the run it starts from (so
    a submission knows the upstream's run id when it reaches the chained run)."""
    by_uuid = {s.node_uuid: s for s in specs if s.node_uuid}
    ordered: list[JobSpec] = []
    placed: set[int] = set()

    def place(spec: JobSpec) -> None:
        if id(spec) in placed:
            return
        placed.add(id(spec))
        upstream = by_uuid.get(spec.upstream_node)
        if upstream is not None:
            place(upstream)
        ordered.append(spec)

    for spec in specs:
        place(spec)
    return ordered
