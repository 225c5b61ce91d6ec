"""The Sweep node's search-space editor (issue 22): rows of knob, kind and values become the lines
the engine reads and back; a bad range shows the engine's sentence under its row; a line typed by
hand that the rows cannot show survives as a text row; on the canvas, an edit is one undo step."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from PySide6 import QtWidgets  # noqa: E402

from app.canvas import Canvas  # noqa: E402
from app.properties import PropertiesPanel  # noqa: E402
from app.space_editor import KnobRow, SpaceEditor, TextRow  # noqa: E402
from app.space_lines import LOG, RANGE, STEPS, VALUES  # noqa: E402
from engine.spec import PARTS  # noqa: E402
from engine.sweep_spec import SweepSpec  # noqa: E402
from nodes.catalogue import CATALOGUE  # noqa: E402
from tests.app_helpers import gc_on_the_gui_thread  # noqa: E402, F401

SPACE = CATALOGUE["Sweep"].parameter("space")
LINES = [
    "training.learning_rate: 1e-5 .. 1e-3 log",
    "lora.r: 8 .. 64 step 8",
    "training.lr_scheduler: cosine, linear",
    "training.warmup_ratio: 0 .. 0.2",
]


@pytest.fixture
def editor(qtbot) -> SpaceEditor:
    widget = SpaceEditor(SPACE)
    qtbot.addWidget(widget)
    widget.committed_values = []
    widget.committed.connect(widget.committed_values.append)
    return widget


def pick(combo: QtWidgets.QComboBox, text: str) -> None:
    """Choose an entry as a click would (`activated` fires)."""
    index = combo.findText(text)
    assert index >= 0, text
    combo.setCurrentIndex(index)
    combo.activated.emit(index)


def type_into(edit: QtWidgets.QLineEdit, text: str) -> None:
    edit.setText(text)
    edit.textEdited.emit(text)
    edit.editingFinished.emit()


def test_rows_become_lines_and_lines_become_rows(editor):
    row = editor.add_knob()  # learning rate first, on a log scale
    assert (row.knob.key, row.kind) == ("training.learning_rate", LOG)
    assert editor.committed_values == []  # nothing stored until values are typed
    type_into(row.values, "1e-5 .. 1e-3")
    row = editor.add_knob()
    pick(row.knob_combo, "Rank (lora)")
    assert row.kind == STEPS  # a whole-number knob steps
    type_into(row.values, "8 .. 64")
    type_into(row.step, "8")
    row = editor.add_knob()
    pick(row.knob_combo, "LR scheduler (training)")
    assert row.kind == VALUES and not row.kind_combo.model().item(1).isEnabled()  # no range
    type_into(row.values, "cosine, linear")
    row = editor.add_knob()
    pick(row.knob_combo, "Warmup ratio (training)")
    pick(row.kind_combo, RANGE)
    type_into(row.values, "0 .. 0.2")
    assert editor.committed_values[-1] == LINES
    assert editor.problems() == []
    dims = SweepSpec(space=editor.committed_values[-1]).dimensions(PARTS)
    assert [d.describe() for d in dims] == [
        "lr 1e-5 .. 1e-3 log",
        "r 8 .. 64 step 8",
        "schedule cosine, linear",
        "warmup 0 .. 0.2",
    ]
    again = SpaceEditor(SPACE)  # the stored lines read back into the same rows
    again.set_value(LINES)
    assert [(r.knob.key, r.kind) for r in again.rows] == [
        ("training.learning_rate", LOG),
        ("lora.r", STEPS),
        ("training.lr_scheduler", VALUES),
        ("training.warmup_ratio", RANGE),
    ]
    assert again.rows[1].step.text() == "8" and again.lines() == LINES
    again.remove_row(again.rows[2])  # − stores the rest at once
    assert again.lines() == [LINES[0], LINES[1], LINES[3]]
    again.deleteLater()


def test_a_bad_range_shows_the_engines_sentence_under_its_row(editor):
    row = editor.add_knob()
    type_into(row.values, "1e-3 .. 1e-5")
    assert row.problem.isVisibleTo(editor)
    assert editor.problems() == [
        "The range of training.learning_rate needs low < high, but 0.001 ≥ 1e-05"
    ]
    assert editor.committed_values[-1] == ["training.learning_rate: 1e-3 .. 1e-5 log"]  # kept
    type_into(row.values, "1e-5 .. 5")  # past the field's own maximum
    assert "must be at most 1" in editor.problems()[0]
    type_into(row.values, "1e-5, 1e-3")  # a list under a range kind
    assert editor.problems() == ["A range is low .. high, e.g. 2e-5 .. 2e-3"]
    pick(row.kind_combo, VALUES)  # the list is now what the kind says
    assert editor.problems() == [] and editor.lines() == ["training.learning_rate: 1e-5, 1e-3"]
    second = editor.add_knob()
    pick(second.knob_combo, "Learning rate (training)")
    type_into(second.values, "1e-4 .. 1e-2")
    assert editor.problems() == ["training.learning_rate is listed twice: one row per knob"]


def test_a_hand_typed_line_survives_as_typed(editor):
    typed = [
        "lr: 1e-4, 1e-3",  # a short name: a knob row, its line given back as typed
        "rank_of_doom: 1, 2",  # no such knob: a text row
        "learning rate 1e-3",  # not `knob: values`: a text row
    ]
    editor.set_value("\n".join(typed))  # a graph file may hold the lines as text
    assert [type(r) for r in editor.rows] == [KnobRow, TextRow, TextRow]
    assert editor.rows[0].knob.key == "training.learning_rate"
    assert editor.lines() == typed
    assert editor.problems() == [
        "rank_of_doom is not a knob a sweep can vary",
        "A search-space line is `knob: values`. e.g. training.learning_rate: 1e-5 .. 1e-3 log, "
        "or lora.r: 8, 16, 32",
    ]
    row = editor.add_knob()  # editing elsewhere keeps the typed lines as they are
    pick(row.knob_combo, "Rank (lora)")
    type_into(row.values, "4 .. 16")  # the step is guessed: a quarter of the range
    assert editor.committed_values[-1] == [*typed, "lora.r: 4 .. 16 step 3"]
    type_into(editor.rows[1].edit, "lora.alpha: 16, 32")  # a text row fixed by hand
    assert editor.committed_values[-1][1] == "lora.alpha: 16, 32"
    assert len(editor.problems()) == 1


def test_an_edit_on_the_sweep_node_is_one_undo_step(qtbot):
    holder = QtWidgets.QWidget()
    qtbot.addWidget(holder)
    canvas = Canvas(holder)
    panel = PropertiesPanel(canvas)
    qtbot.addWidget(panel)
    node = canvas.add_node("Sweep", "search", space=LINES[:1])
    canvas.select([node])
    editor = panel.editors["space"]
    assert isinstance(editor, SpaceEditor) and editor.lines() == LINES[:1]
    row = editor.add_knob()
    pick(row.knob_combo, "Rank (lora)")
    type_into(row.values, "8 .. 64")
    type_into(row.step, "8")
    assert node.get_property("space") == LINES[:2]
    canvas.graph.undo_stack().undo()  # the step
    assert node.get_property("space") == [LINES[0], "lora.r: 8 .. 64 step 14"]
    canvas.graph.undo_stack().undo()  # the range
    assert node.get_property("space") == LINES[:1]
    assert editor.lines() == LINES[:1] and len(editor.rows) == 1  # the panel follows undo
    canvas.graph.undo_stack().redo()
    assert editor.lines() == [LINES[0], "lora.r: 8 .. 64 step 14"]
    canvas.graph.undo_stack().setClean()
