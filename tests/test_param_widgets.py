"""The generated property editors: the LoRA target-modules editor's menu of common names."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from app.param_widgets import ModulesEditor  # noqa: E402
from engine.spec import LoraSpec  # noqa: E402
from nodes.catalogue import parameters_of  # noqa: E402


def modules_editor(qtbot) -> ModulesEditor:
    [param] = [p for p in parameters_of(LoraSpec) if p.name == "target_modules"]
    editor = ModulesEditor(param)
    qtbot.addWidget(editor)
    return editor


def tick(editor: ModulesEditor, name: str, on: bool = True) -> None:
    [action] = [a for a in editor.menu.actions() if a.text() == name]
    action.setChecked(on)


def test_auto_and_all_linear_each_stand_alone(qtbot):
    editor = modules_editor(qtbot)
    committed = []
    editor.committed.connect(committed.append)
    tick(editor, "q_proj")
    tick(editor, "qkv_proj")  # Phi-3's fused projection is on offer
    assert editor.current() == ["q_proj", "qkv_proj"]
    tick(editor, "auto")
    assert editor.current() == ["auto"]
    tick(editor, "v_proj")  # a named module replaces auto
    assert editor.current() == ["v_proj"]
    tick(editor, "all-linear")
    assert editor.current() == ["all-linear"]
    assert committed[-1] == ["all-linear"]
    assert editor.edit.placeholderText() == "auto"
