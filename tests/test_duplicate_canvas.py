"""Duplicates on the canvas: they rename themselves as knobs change until the user types a name,
their Δ label holds three differences (all in the tooltip), and new nodes and copies land in free
space, in view. The example sweep graph, through the UI's own API."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6 import QtCore, QtWidgets  # noqa: E402

from app.canvas import Canvas  # noqa: E402
from app.duplicate import deep_duplicate, duplicate_as_sweep, sweep_parameters  # noqa: E402
from app.node_placement import node_rect  # noqa: E402
from app.properties import PropertiesPanel  # noqa: E402
from tests.app_helpers import gc_on_the_gui_thread  # noqa: E402,F401

SWEEP = Path(__file__).resolve().parents[1] / "resources" / "examples" / "sweep.json"


@pytest.fixture
def canvas(qtbot):
    """The example sweep graph on a shown 1200×800 canvas, all of it in view."""
    holder = QtWidgets.QWidget()
    qtbot.addWidget(holder)
    canvas = Canvas(holder)
    canvas.widget.setParent(holder)
    holder.resize(1200, 800)
    canvas.widget.resize(1200, 800)
    holder.show()
    canvas.load_file(SWEEP, template=True)
    canvas.fit_all()
    yield canvas
    canvas.graph.undo_stack().setClean()


def feeder(module, port: str):
    return module.connected_input_nodes()[module.get_input(port)][0]


def settled(qtbot, canvas: Canvas) -> None:
    """Wait for the renames after an edit (next turn of the event loop) and the compile."""
    qtbot.waitUntil(lambda: not canvas.auto_names._timer.isActive(), timeout=2000)
    canvas.recompile()


def overlapping(canvas: Canvas, node) -> list[str]:
    mine = QtCore.QRectF(*node_rect(node))
    return [
        n.name()
        for n in canvas.graph.all_nodes()
        if n is not node and mine.intersects(QtCore.QRectF(*node_rect(n)))
    ]


def in_view(canvas: Canvas, nodes: list) -> bool:
    viewer = canvas.viewer
    visible = viewer.mapToScene(viewer.viewport().rect()).boundingRect()
    return all(visible.contains(QtCore.QRectF(*node_rect(n))) for n in nodes)


def test_a_copy_renames_itself_until_the_user_names_it(canvas, qtbot):
    original = canvas.node_by_name("support lr 1e-3")
    copy = deep_duplicate(canvas, original)
    train, lora = feeder(copy, "training_config"), feeder(copy, "lora_config")
    assert (copy.name(), train.name()) == ("support lr 1e-3 (copy)", "train lr 1e-3 (copy)")

    canvas.set_param(train, "learning_rate", "2e-3")
    canvas.set_param(lora, "r", 16)
    settled(qtbot, canvas)
    assert copy.name() == "support lr 2e-3 · r 16"
    assert (train.name(), lora.name()) == ("train lr 2e-3", "LoRA r16")  # no stale "lr 1e-3"
    assert {s.name for s in canvas.result.specs} >= {"support lr 2e-3 · r 16", "support lr 1e-3"}

    canvas.set_param(lora, "r", 8)  # renames again when a knob changes
    settled(qtbot, canvas)
    assert (copy.name(), lora.name()) == ("support lr 2e-3", "LoRA r8 (copy)")
    canvas.graph.undo_stack().undo()  # undo the knob: the name follows
    settled(qtbot, canvas)
    assert copy.name() == "support lr 2e-3 · r 16"

    panel = PropertiesPanel(canvas)
    qtbot.addWidget(panel)
    panel.set_node(copy)
    panel.name_edit.setText("bigger steps")  # the user types a name: it is theirs from now on
    panel.name_edit.editingFinished.emit()
    canvas.set_param(train, "epochs", 5.0)
    settled(qtbot, canvas)
    assert copy.name() == "bigger steps"
    assert train.name() == "train lr 2e-3 · epochs 5"  # the feeders still follow
    saved = canvas.to_dict()["nodes"]
    assert saved[copy.id]["custom"]["auto_name"] != "bigger steps"  # the fact, in the file

    panel.name_edit.setText("")  # cleared: the app names it again
    panel.name_edit.editingFinished.emit()
    assert copy.name() == "support lr 2e-3 · r 16 · epochs 5"
    assert panel.name_edit.text() == copy.name()


def test_the_delta_label_holds_three_differences_and_the_tooltip_all(canvas, qtbot):
    copy = deep_duplicate(canvas, canvas.node_by_name("support lr 1e-3"))
    train = feeder(copy, "training_config")
    for name, value in (("learning_rate", 2e-3), ("epochs", 3.0), ("warmup_ratio", 0.1)):
        canvas.set_param(train, name, value)
    canvas.set_param(feeder(copy, "lora_config"), "alpha", 64)
    canvas.set_param(feeder(copy, "lora_config"), "r", 32)
    settled(qtbot, canvas)
    label = canvas._decorations[copy.id].lineage
    assert label.toPlainText() == "Δ lr 1e-3 → 2e-3, r 8 → 32, epochs 1 → 3 +2 more"
    tooltip = label.toolTip()
    for change in ("lr 1e-3 → 2e-3", "r 8 → 32", "epochs 1 → 3", "alpha 16 → 64", "warmup"):
        assert change in tooltip
    assert label.boundingRect().width() <= 262  # wraps inside the node's label width


def test_a_new_node_and_a_duplicate_land_in_free_space_in_view(canvas, qtbot):
    module = canvas.node_by_name("support lr 5e-3")
    x, y = module.pos()
    node = canvas.add_node("Dataset", pos=(x + 10, y + 10))  # asked for on top of a module
    assert overlapping(canvas, node) == []
    assert in_view(canvas, [node])
    assert abs(node.pos()[0] - x) + abs(node.pos()[1] - y) < 600  # near where it was asked for

    for _ in range(3):  # each further right, past the view's edge
        copy = deep_duplicate(canvas, module)
        made = [copy, *canvas.upstream(copy)]
        assert all(overlapping(canvas, n) == [] for n in made)
        assert in_view(canvas, [copy])  # scrolled to it

    choice = next(p for p in sweep_parameters(canvas, module) if p.short == "r")
    copies = duplicate_as_sweep(canvas, module, choice, [4, 8, 32])
    assert [c.name() for c in copies] == [
        "support lr 5e-3 · r 4",
        "support lr 5e-3 (copy 4)",  # r 8 is the original's own value: nothing differs
        "support lr 5e-3 · r 32",
    ]
    assert all(overlapping(canvas, n) == [] for n in copies)
    assert in_view(canvas, copies)  # zoomed out just enough when they do not fit


def test_an_older_graph_file_s_stale_copy_names_are_fixed_on_opening(canvas, qtbot, tmp_path):
    """Saved before copies named themselves: "train lr 1e-3 (copy)" that trains at 2e-3."""
    from nodes import load_graph, save_graph
    from nodes.duplicate import deep_duplicate as duplicate_graph

    graph = load_graph(SWEEP)
    module = next(i for i, n in graph["nodes"].items() if n["name"] == "support lr 1e-3")
    dup = duplicate_graph(graph, module)
    graph = dup.merged_into(graph)
    for node_id in dup.nodes:
        graph["nodes"][node_id]["custom"].pop("auto_name")
        if graph["nodes"][node_id]["name"] == "train lr 1e-3 (copy)":
            graph["nodes"][node_id]["custom"]["learning_rate"] = 2e-3
    save_graph(graph, tmp_path / "old.tunegraph.json")

    canvas.load_file(tmp_path / "old.tunegraph.json")
    settled(qtbot, canvas)
    names = {n.name() for n in canvas.nodes()}
    assert {"support lr 2e-3", "train lr 2e-3"} <= names
    assert "train lr 1e-3 (copy)" not in names
    assert not canvas.dirty  # renaming is no edit of the user's
