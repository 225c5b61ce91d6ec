"""The Eval node's editors in the properties panel: the metrics list (ticked built-ins, added
metrics with arguments, a value that is a list so a pattern keeps its commas) and the judge's
GGUF file field, as the panel builds them from the node's declaration."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")
from PySide6 import QtCore  # noqa: E402

from app.eval_widgets import GgufEditor, MetricsEditor  # noqa: E402
from app.param_widgets import make_editor  # noqa: E402
from nodes.catalogue import CATALOGUE  # noqa: E402

EVAL = CATALOGUE["Eval"]


def test_the_panel_builds_the_eval_editors_from_the_declaration(qtbot):
    editors = {p.name: make_editor(p) for p in EVAL.parameters}
    for editor in editors.values():
        qtbot.addWidget(editor)
    assert isinstance(editors["metrics"], MetricsEditor)
    assert isinstance(editors["judge"], GgufEditor)
    assert editors["path"].edit.placeholderText() == "empty: the held-out split"


def test_metrics_are_ticked_added_and_committed_as_a_list(qtbot):
    editor = MetricsEditor(EVAL.parameter("metrics"))
    qtbot.addWidget(editor)
    editor.set_value(["loss", "regex:^(a|b), then"])
    assert editor.names() == ["loss", "regex:^(a|b), then"]  # the comma stays in the pattern
    committed = []
    editor.committed.connect(committed.append)
    rouge = editor.list.findItems("rouge_l", QtCore.Qt.MatchFlag.MatchExactly)[0]
    rouge.setCheckState(QtCore.Qt.CheckState.Checked)
    assert committed[-1] == ["loss", "rouge_l", "regex:^(a|b), then"]
    editor.extra.setText("python:score.py")
    editor.add_from_line()
    assert committed[-1][-1] == "python:score.py" and editor.extra.text() == ""
    editor.set_value("loss, exact")  # text, as a hand-written graph may hold
    assert editor.names() == ["loss", "exact"]
    editor.set_error("metric regex:(: the pattern does not compile")
    assert "dc3535" in editor.list.styleSheet() and "does not compile" in editor.toolTip()
