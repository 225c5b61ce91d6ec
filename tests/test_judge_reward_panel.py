"""The Reward node's properties panel (issue 21): the Judge model field appears once the scorer is
`judge` (the declaration's `visible_if`), with the Eval node's GGUF picker; a missing file is named
on that field, an existing judge clears the error, and another scorer hides the field again."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from tests.app_helpers import gc_on_the_gui_thread, main_window_session  # noqa: E402, F401


@pytest.fixture
def window(qtbot, tmp_path):
    yield from main_window_session(qtbot, tmp_path)


def type_into(panel, name: str, text: str) -> None:
    editor = panel.editors[name]
    editor.edit.setText(text)
    editor.edit.editingFinished.emit()  # what leaving the field sends


def test_the_judge_field_follows_the_scorer_and_names_a_missing_file(window, tmp_path):
    canvas, panel = window.canvas, window.properties
    reward = canvas.add_node("Reward", "judged", (0, 0), scorer="contains")
    canvas.select([reward])
    judge_row = panel.editors["judge"]
    assert not panel.form.isRowVisible(judge_row)

    type_into(panel, "scorer", "judge")
    assert reward.get_property("scorer") == "judge" and panel.form.isRowVisible(judge_row)
    assert judge_row.edit.placeholderText() == "judge.gguf"  # not "(optional)" here

    type_into(panel, "judge", str(tmp_path / "gone.gguf"))
    canvas.recompile()
    [error] = [e for e in canvas.errors_of(reward)]
    assert error.field == "judge" and "the file does not exist" in error.message

    (tmp_path / "judge.gguf").write_bytes(b"GGUF" + bytes(60))
    type_into(panel, "judge", str(tmp_path / "judge.gguf"))
    canvas.recompile()
    assert canvas.errors_of(reward) == []
    assert reward.get_property("judge") == str(tmp_path / "judge.gguf")

    type_into(panel, "scorer", "regex:^ACK")
    assert not panel.form.isRowVisible(judge_row)
