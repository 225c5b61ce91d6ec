"""The properties panel shows a Fine-Tune node's method knobs only for the chosen method (the
declarations' `visible_if`), follows a method change and its undo, and the Reward node is on the
canvas like every other node (issue 21)."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from tests.app_helpers import gc_on_the_gui_thread, main_window_session  # noqa: E402, F401

BASE = {"device", "gpu_count", "target", "share_base", "method"}


@pytest.fixture
def window(qtbot, tmp_path):
    yield from main_window_session(qtbot, tmp_path)


def shown(panel) -> set[str]:
    return {name for name, editor in panel.editors.items() if panel.form.isRowVisible(editor)}


def choose(panel, name: str, value: str) -> None:
    combo = panel.editors[name].combo
    combo.setCurrentText(value)
    combo.activated.emit(combo.currentIndex())  # what a click on the item sends


def test_the_panel_shows_only_the_knobs_of_the_chosen_method(window):
    canvas, panel = window.canvas, window.properties
    ft = canvas.add_node("FineTune", "ft", (0, 0))
    canvas.select([ft])
    assert panel.node is ft and shown(panel) == BASE
    assert {"beta", "num_generations", "kl_coef"} <= set(panel.editors)  # built, hidden

    choose(panel, "method", "dpo")
    assert ft.get_property("method") == "dpo"
    assert shown(panel) == BASE | {"beta", "loss_type"}
    choose(panel, "method", "grpo")
    assert shown(panel) == BASE | {
        "num_generations",
        "max_completion_length",
        "temperature",
        "kl_coef",
    }
    canvas.graph.undo_stack().undo()  # back to dpo: the panel follows
    assert ft.get_property("method") == "dpo" and shown(panel) == BASE | {"beta", "loss_type"}

    reward = canvas.add_node("Reward", "vowels", (0, 200), scorer="regex:[aeiou]")
    canvas.select([reward])
    assert panel.node is reward and shown(panel) == {"scorer", "weight"}
    assert reward.type_ == "tunegraph.Reward"
