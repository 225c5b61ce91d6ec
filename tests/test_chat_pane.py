"""The chat pane with a real GGUF exported from the tiny model: streaming, Stop, a broken file that
leaves the window alive, and two models side by side replaying a saved prompt set."""

from __future__ import annotations

import json
import os
import shutil

import psutil
import pytest

pytest.importorskip("pytestqt")

from app.chat_pane import ChatPane, list_prompt_sets  # noqa: E402
from tests.app_helpers import gc_on_the_gui_thread  # noqa: E402, F401
from tests.test_export import build_exported_run  # noqa: E402

LOAD_MS = 60000
ANSWER_MS = 60000


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory, tiny_model_dir):
    return build_exported_run(tmp_path_factory.getbasetemp(), tiny_model_dir).artifact("gguf")


@pytest.fixture
def pane(qtbot):
    pane = ChatPane(n_threads=1)
    qtbot.addWidget(pane)
    yield pane
    pane.close_all()


def _children() -> list[psutil.Process]:
    return [
        p for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE
    ]


def _load(qtbot, pane, path):
    column = pane.add_model(path)
    with qtbot.waitSignal(column.idle, timeout=LOAD_MS):
        pass
    return column


def test_prompt_streams_an_answer_then_stop_ends_one_early(qtbot, pane, gguf_path):
    column = _load(qtbot, pane, gguf_path)
    assert column.ready, column.error
    assert column.template_label.text().startswith("Template: ")
    assert "chat_template" in column.template_label.text()

    pieces = []
    column.model.piece.connect(pieces.append)
    pane.temperature.setValue(0.0)
    pane.max_tokens.setValue(24)
    pane.system.setText("Be brief.")
    with qtbot.waitSignal(pane.all_idle, timeout=ANSWER_MS):
        assert pane.ask("Hello, can you help me with my bill?")
    assert len(pieces) > 1 and "".join(pieces) == column.answer
    assert column.answer.strip()
    assert column.stats["completion_tokens"] <= 24
    assert "tokens" in column.stats_label.text()
    assert "Hello, can you help me with my bill?" in column.transcript.toPlainText()
    assert [m["role"] for m in column.history] == ["user", "assistant"]
    column.copy_answer()
    from PySide6 import QtWidgets

    assert QtWidgets.QApplication.clipboard().text() == column.answer

    pane.max_tokens.setValue(1500)
    pieces.clear()

    def stop_after_two(_text):
        if len(pieces) == 2:
            pane.stop()

    column.model.piece.connect(stop_after_two)
    with qtbot.waitSignal(pane.all_idle, timeout=ANSWER_MS):
        assert pane.ask("My router keeps restarting.")
        assert pane.stop_button.isEnabled()
    assert column.stats["stop_reason"] == "interrupted"
    assert column.stats["completion_tokens"] < 1500
    assert "stopped" in column.stats_label.text()
    assert pane.send_button.isEnabled() and not pane.stop_button.isEnabled()

    pane.clear()
    assert column.history == [] and not column.transcript.toPlainText()


@pytest.mark.parametrize("kind", ["noise", "truncated"])
def test_a_broken_file_shows_a_message_and_the_window_lives(qtbot, gguf_path, tmp_path, kind):
    from PySide6 import QtWidgets

    bad = tmp_path / f"{kind}.gguf"
    if kind == "noise":
        bad.write_bytes(os.urandom(50_000))
    else:
        bad.write_bytes(gguf_path.read_bytes()[:200_000])
    window = QtWidgets.QMainWindow()
    qtbot.addWidget(window)
    pane = ChatPane(n_threads=1)
    window.setCentralWidget(pane)
    window.show()
    column = _load(qtbot, pane, bad)
    assert not column.ready
    assert str(bad) in column.error
    assert "Could not load" in column.template_label.text()
    assert str(bad) in column.transcript.toPlainText()
    assert window.isVisible()
    assert not pane.ask("Hello")  # nothing to answer, and no crash
    pane.remove_model(column)
    assert pane.columns == [] and pane.empty.isVisibleTo(pane)
    assert not _children(), "the chat process of the broken file is still running"
    pane.close_all()


def test_two_models_side_by_side_replay_a_prompt_set(qtbot, pane, gguf_path, tmp_path):
    other = tmp_path / "variant-b.gguf"
    shutil.copyfile(gguf_path, other)
    first = pane.add_model(gguf_path)
    second = pane.add_model(other)
    for column in (first, second):
        if not column.ready:
            with qtbot.waitSignal(column.idle, timeout=LOAD_MS):
                pass
        assert column.ready, column.error
    assert pane.splitter.indexOf(first) < pane.splitter.indexOf(second)

    pane.max_tokens.setValue(6)
    pane.temperature.setValue(0.0)
    with qtbot.waitSignal(pane.all_idle, timeout=ANSWER_MS):
        pane.ask("Hello there")
    assert first.answer and second.answer
    assert first.answer == second.answer  # same weights, greedy: the columns agree

    prompts = ["What is the price of the new plan?", "My router keeps restarting."]
    pane.save_set("support basics", prompts)
    assert list_prompt_sets() == {"support basics": prompts}
    from engine import paths

    saved = json.loads((paths.data_dir() / "prompt_sets" / "support-basics.json").read_text())
    assert saved["prompts"] == prompts

    with qtbot.waitSignal(pane.replay_finished, timeout=2 * ANSWER_MS):
        pane.replay_selected()
    for column in (first, second):
        text = column.transcript.toPlainText()
        assert all(p in text for p in prompts)
        assert "Hello there" not in text  # a replay starts from a clean page
        assert [m["content"] for m in column.history if m["role"] == "user"] == prompts[-1:]
    assert pane.sent_prompts == prompts
    assert pane.status.text() == "Replay finished."


def test_at_most_four_models(qtbot, pane, gguf_path, monkeypatch):
    import app.chat_pane as chat_pane

    monkeypatch.setattr(chat_pane, "MAX_MODELS", 1)
    first = _load(qtbot, pane, gguf_path)
    assert first.ready
    assert pane.add_model(gguf_path) is None
    assert "At most 1" in pane.status.text()
    assert not pane.open_button.isEnabled() and pane.columns == [first]
