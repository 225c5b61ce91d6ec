"""The canvas: a NodeGraphQt graph of Tunegraph nodes, its file, and live compile results.

`Canvas` is the one API the window, the palette, the properties panel, Duplicate and the tests use
to build and change graphs. Every change (edit, connection, undo…) schedules a debounced
re-compile; the result is painted on the nodes (red error badge, lineage line) and emitted. Each
Dataset node's whole file is checked in the background (app.data_checks); a problem found there
is a compile error on that node, so the modules it feeds cannot start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from NodeGraphQt import NodeGraph
from PySide6 import QtCore

from app.auto_names import AutoNames
from app.data_checks import DataChecks
from app.decorations import NodeDecorations
from app.node_factory import TunegraphNode, decl_of, error_text, register_all
from app.node_placement import place_in_free_space, reveal
from nodes import compile as compile_graph
from nodes.catalogue import CATALOGUE, FINE_TUNE
from nodes.graphedit import (
    absolute_paths,
    graph_from_session,
    unique_name,
    with_declared_custom,
    with_unique_uuids,
)
from nodes.graphfile import (
    GRAPH_FORMAT_VERSION,
    graph_dir,
    load_graph,
    migrate_graph,
    new_uuid,
    save_graph,
)
from nodes.lineage import lineage_diff
from nodes.results import CompileResult

GRAPH_SUFFIX = ".tunegraph.json"
DATASET_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
COMPILE_DELAY_MS = 150


class Canvas(QtCore.QObject):
    """A NodeGraph with Tunegraph's node classes, the graph's file and its compile state."""

    compiled = QtCore.Signal(object)  # CompileResult
    selection_changed = QtCore.Signal(list)  # the selected nodes
    dirty_changed = QtCore.Signal(bool)
    path_changed = QtCore.Signal(object)  # Path | None
    node_edited = QtCore.Signal(object, str)  # node, property name
    graph_file_dropped = QtCore.Signal(str)

    def __init__(self, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.graph = NodeGraph(self)
        register_all(self.graph)
        self.graph.set_background_color(30, 32, 36)
        self.graph.set_grid_color(42, 45, 50)
        self.path: Path | None = None
        self.is_template = False  # opened from the examples: Save asks where to save
        self.result = CompileResult()
        self.lineage: dict[str, str] = {}  # Fine-Tune node id -> lineage text
        # Fine-Tune node uuid -> why its run can never start here (the confirm dialog's
        # estimate: it can never fit); shown on the node until the node is edited
        self.refusals: dict[str, str] = {}
        self._decorations: dict[str, NodeDecorations] = {}
        self._timer = QtCore.QTimer(self, singleShot=True, interval=COMPILE_DELAY_MS)
        self._timer.timeout.connect(self.recompile)
        self.data_checks = DataChecks(self)  # each dataset read whole, off the UI thread
        self.data_checks.checked.connect(self.schedule_compile)
        self.auto_names = AutoNames(self)  # copies rename themselves after what differs
        g = self.graph
        for signal in (g.port_connected, g.port_disconnected, g.nodes_deleted):
            signal.connect(self.schedule_compile)
        g.node_created.connect(self._on_node_created)
        g.property_changed.connect(self._on_property_changed)
        g.node_selection_changed.connect(self._on_selection)
        g.node_selected.connect(self._on_selection)
        g.undo_stack().indexChanged.connect(self.schedule_compile)
        # our own drop handling: palette kinds and files (NodeGraphQt would try to import any
        # dropped file as a session)
        self.viewer.data_dropped.disconnect(g._on_node_data_dropped)
        self.viewer.data_dropped.connect(self._on_drop)
        g.undo_stack().cleanChanged.connect(self._on_clean_changed)

    # -- the widget ------------------------------------------------------------------------------
    @property
    def widget(self):
        """The QWidget showing the graph."""
        return self.graph.widget

    @property
    def viewer(self):
        return self.graph.viewer()

    def view_centre(self) -> tuple[float, float]:
        """The scene position at the centre of the visible canvas."""
        viewer = self.viewer
        point = viewer.mapToScene(viewer.viewport().rect().center())
        return point.x(), point.y()

    def fit_all(self, margin: float = 40.0) -> None:
        """Zoom so every node (with its badges and lineage lines) is in view, never above 1:1."""
        views = [n.view for n in self.graph.all_nodes()]
        if not views:
            return
        viewer = self.viewer
        rect = viewer._combined_rect(views).adjusted(-margin, -margin, margin, margin)
        viewer._scene_range = rect
        viewer._update_scene()
        if viewer.get_zoom() > 0.1:
            viewer.reset_zoom(rect.center())

    # -- building --------------------------------------------------------------------------------
    def add_node(
        self,
        kind: str,
        name: str | None = None,
        pos: tuple[float, float] | None = None,
        **params: Any,
    ) -> TunegraphNode:
        """Add a node of `kind` with a fresh uuid, a unique name and `params` set; one undo step."""
        decl = CATALOGUE[kind]
        unknown = set(params) - {p.name for p in decl.parameters}
        if unknown:
            raise ValueError(f"{kind} has no parameter {sorted(unknown)[0]!r}")
        self.graph.begin_undo(f"add {decl.label}")
        node = self.graph.create_node(
            decl.type_,
            name=self.unique_name(name or decl.label),
            pos=list(pos) if pos else list(self.view_centre()),
        )
        for key, value in params.items():
            self.set_param(node, key, value)
        place_in_free_space(self, node)  # never on top of another node
        self.graph.end_undo()
        reveal(self, [node])
        return node

    def connect_nodes(self, source: TunegraphNode, target: TunegraphNode, port: str) -> None:
        """Connect `source`'s output to `target`'s input `port` (one undo step)."""
        out = source.output_ports()[0]
        out.connect_to(target.get_input(port))

    def add_graph_nodes(
        self, nodes: dict[str, dict], connections: list[dict], label: str = "add nodes"
    ) -> dict[str, TunegraphNode]:
        """Add node dicts (session shape) and the connections among them, as one undo step.

        Returns the created nodes by the ids used in `nodes`; the canvas gives them its own ids.
        """
        self.graph.begin_undo(label)
        try:
            created = {}
            for node_id, data in nodes.items():
                node = self.graph.create_node(
                    data["type_"],
                    name=data.get("name"),
                    selected=False,
                    color=tuple(data["color"]) if data.get("color") else None,
                    text_color=tuple(data["text_color"]) if data.get("text_color") else None,
                    pos=list(data.get("pos") or self.view_centre()),
                )
                for key, value in (data.get("custom") or {}).items():
                    if node.has_property(key):  # part of the node's creation: no undo step
                        node.set_property(key, value, push_undo=False)
                if data.get("disabled"):
                    node.set_property("disabled", True, push_undo=False)
                created[node_id] = node
            for conn in connections:
                (out_id, out_port), (in_id, in_port) = conn["out"], conn["in"]
                out = created[out_id].get_output(out_port)
                out.connect_to(created[in_id].get_input(in_port))
        finally:
            self.graph.end_undo()
        return created

    def set_param(self, node: TunegraphNode, name: str, value: Any) -> None:
        """Set a declared parameter (coerced to its type when possible) as one undo step."""
        param = decl_of(node).parameter(name)
        if param is None:
            raise ValueError(f"{decl_of(node).kind} has no parameter {name!r}")
        try:
            value = param.coerce(value)
        except ValueError:
            pass  # keep what the user typed; the compiler names the problem on the node
        if isinstance(value, (list, dict)):
            value = type(value)(value)
        node.set_property(name, value)

    def rename(self, node: TunegraphNode, name: str) -> None:
        """Rename a node (NodeGraphQt keeps names unique by appending a number)."""
        if name.strip() and name != node.name():
            node.set_name(name.strip())

    def unique_name(self, name: str, taken: set[str] | None = None) -> str:
        """`name`, or `name 2`, `name 3`… so no node (nor a name in `taken`) has it."""
        return unique_name(name, {n.name() for n in self.graph.all_nodes()} | (taken or set()))

    def nodes(self, kind: str | None = None) -> list[TunegraphNode]:
        """Our nodes (of one kind), ordered by position."""
        found = [
            n
            for n in self.graph.all_nodes()
            if decl_of(n) is not None and (kind is None or decl_of(n).kind == kind)
        ]
        return sorted(found, key=lambda n: (n.pos()[0], n.pos()[1]))

    def node_by_name(self, name: str) -> TunegraphNode | None:
        return self.graph.get_node_by_name(name)

    def selected(self) -> list[TunegraphNode]:
        return [n for n in self.graph.selected_nodes() if decl_of(n) is not None]

    def select(self, nodes: list) -> None:
        """Select exactly `nodes` (selection is not an undo step)."""
        for node in self.graph.all_nodes():
            node.view.setSelected(node in nodes)
        self.selection_changed.emit(self.selected())

    def delete_nodes(self, nodes: list) -> None:
        """Delete nodes as one undo step."""
        if nodes:
            self.graph.delete_nodes(nodes)

    def upstream(self, node: TunegraphNode) -> list[TunegraphNode]:
        """Every node feeding `node`, directly or not (each once)."""
        seen: dict[str, TunegraphNode] = {}
        stack = [node]
        while stack:
            current = stack.pop()
            for feeders in current.connected_input_nodes().values():
                for feeder in feeders:
                    if feeder.id not in seen and feeder is not node:
                        seen[feeder.id] = feeder
                        stack.append(feeder)
        return list(seen.values())

    def modules_of(self, nodes: list) -> list[TunegraphNode]:
        """Fine-Tune modules among `nodes` or fed by them (for "run selected")."""
        found: dict[str, TunegraphNode] = {}
        for node in nodes:
            if decl_of(node) is FINE_TUNE:
                found[node.id] = node
        for module in self.nodes(FINE_TUNE.kind):
            if any(f.id in {n.id for n in nodes} for f in self.upstream(module)):
                found[module.id] = module
        return sorted(found.values(), key=lambda n: (n.pos()[0], n.pos()[1]))

    def drop_files(self, paths: list[str], pos: tuple[float, float]) -> list[TunegraphNode]:
        """Dataset nodes for dropped data files; a dropped graph file asks to be opened."""
        created = []
        x, y = pos
        for text in paths:
            path = Path(text)
            if path.name.endswith(GRAPH_SUFFIX):
                self.graph_file_dropped.emit(str(path))
            elif path.suffix.lower() in DATASET_SUFFIXES:
                created.append(
                    self.add_node("Dataset", name=path.stem, pos=(x, y), path=str(path.resolve()))
                )
                y += 110
        return created

    def _on_drop(self, mime: QtCore.QMimeData, pos: QtCore.QPoint) -> None:
        from app.palette import kind_from_mime

        kind = kind_from_mime(mime)
        if kind is not None:
            self.add_node(kind, pos=(pos.x(), pos.y()))
        elif mime.hasUrls():
            self.drop_files(
                [u.toLocalFile() for u in mime.urls() if u.isLocalFile()], (pos.x(), pos.y())
            )

    # -- the file --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The graph as a graph-file dict (what Save writes and `nodes.compile` reads)."""
        return graph_from_session(self.graph.serialize_session())

    def load_dict(self, data: dict, path: str | Path | None = None, template: bool = False) -> None:
        """Replace the canvas with a graph dict (checked and migrated like a graph file)."""
        data = with_unique_uuids(with_declared_custom(migrate_graph(data, path or "<graph>")))
        self.graph.deserialize_session(data, clear_session=True, clear_undo_stack=True)
        self.graph.undo_stack().clear()
        self.graph.undo_stack().setClean()
        self.path = Path(path).resolve() if path else None
        self.is_template = template
        self.path_changed.emit(self.path)
        self.dirty_changed.emit(False)
        self.recompile()

    def load_file(self, path: str | Path, template: bool = False) -> None:
        """Open a graph file (raises GraphFileError naming the file)."""
        self.load_dict(load_graph(path), path, template=template)

    def new_graph(self) -> None:
        self.load_dict({"tunegraph": {"format_version": GRAPH_FORMAT_VERSION}})

    def save_file(self, path: str | Path) -> Path:
        """Save to `path`; relative dataset/model paths are rebased when the folder changes."""
        path = Path(path).resolve()
        data = self.to_dict()
        if self.path is not None and graph_dir(self.path) != graph_dir(path):
            data = absolute_paths(data, self.path)
        save_graph(data, path)
        self.path, self.is_template = path, False
        self.graph.undo_stack().setClean()
        self.path_changed.emit(self.path)
        self.dirty_changed.emit(False)
        return path

    @property
    def dirty(self) -> bool:
        return not self.graph.undo_stack().isClean()

    # -- compile ---------------------------------------------------------------------------------
    def schedule_compile(self, *args) -> None:
        self._timer.start()

    def recompile(self) -> CompileResult:
        """Compile now, paint errors and lineage on the nodes, emit `compiled`."""
        self._timer.stop()
        data = self.to_dict()
        self.result = compile_graph(data, self.path, data_check=self.data_checks.problem)
        self.lineage = {}
        for node in self.nodes(FINE_TUNE.kind):
            lineage = lineage_diff(data, node.id)
            if lineage is not None:
                self.lineage[node.id] = lineage.text()
        for node in self.nodes():
            decorations = self._decorations.get(node.id)
            if decorations is None or decorations.node is not node:
                decorations = self._decorations[node.id] = NodeDecorations(node)
            messages = [error_text(decl_of(node), e) for e in self.result.errors_for(node.id)]
            refusal = self.refusals.get(node.get_property("uuid") or "")
            if refusal:
                messages.append(f"Refused: {refusal}")
            decorations.show_errors(messages)
            decorations.show_lineage(self.lineage.get(node.id, ""))
        self.compiled.emit(self.result)
        return self.result

    def recompile_checked(self) -> CompileResult:
        """Compile once every queued data check has its answer (before runs are started: a
        file that has not been read whole yet must not start a run)."""
        result = self.recompile()  # queues a check for each file not read as it is now
        if self.data_checks.busy:
            self.data_checks.wait()  # their answers are in engine.data.check's cache now
            result = self.recompile()
        return result

    def set_refusals(self, refusals: dict[str, str]) -> None:
        """Show why these Fine-Tune nodes' runs can never start (by node uuid) on the nodes."""
        if any(self.refusals.get(uuid) != why for uuid, why in refusals.items()):
            self.refusals.update(refusals)
            self.recompile()

    def errors_of(self, node) -> list:
        return self.result.errors_for(node.id)

    def module_ok(self, node) -> bool:
        """True when a Fine-Tune module compiled to a spec (Run allowed)."""
        return any(m.node_id == node.id and m.spec is not None for m in self.result.modules)

    # -- signals ---------------------------------------------------------------------------------
    def _on_property_changed(self, node, name: str, value) -> None:
        if name in ("selected", "pos"):
            return
        self.refusals.clear()  # an edit may make it fit: the next estimate says
        self.schedule_compile()
        self.node_edited.emit(node, name)

    def _on_node_created(self, node) -> None:
        """Every new node gets its stable uuid, however it was created (palette, Tab search)."""
        if decl_of(node) is not None and not node.get_property("uuid"):
            node.set_property("uuid", new_uuid(), push_undo=False)
        self.schedule_compile()

    def _on_clean_changed(self, clean: bool) -> None:
        self.dirty_changed.emit(not clean)

    def _on_selection(self, *args) -> None:
        self.selection_changed.emit(self.selected())
