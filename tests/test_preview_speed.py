"""The dataset preview shows its first rows at once (issue 20): the head of the file is read in
the UI process with plain json/csv (engine.plan.preview.head, no tokenizer), before the helper
process loads the tokenizer for the tokenized view and the stats. The times are measured by
bench/bench_preview.py, not asserted here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")


from app.dataset_preview import DatasetPreview  # noqa: E402
from engine.data.formats import read_rows  # noqa: E402
from engine.plan import preview  # noqa: E402
from engine.spec import DatasetSpec  # noqa: E402
from tests.app_helpers import gc_on_the_gui_thread  # noqa: E402, F401

DATA = Path(__file__).resolve().parents[1] / "resources" / "datasets" / "support_chats.jsonl"


def test_the_preview_shows_the_first_rows_before_the_stats(qtbot, canvas):
    node = canvas.add_node("Dataset", name="support chats", path=str(DATA))
    view = DatasetPreview(canvas)
    qtbot.addWidget(view)
    view.show_node(node)  # no event loop turn: the rows are there when it returns
    assert view.process.is_running() and view.report is None
    assert "Counting tokens with builtin:tiny-llama's tokenizer" in view.stats.text()
    raw = view.raw.toPlainText()
    assert raw.startswith("The first 20 rows as they are in the file (format messages).")
    first = json.loads(DATA.read_text(encoding="utf-8").splitlines()[0])["messages"]
    assert f"user: {first[1]['content']}" in raw and f"assistant: {first[2]['content']}" in raw
    assert "Row 20" in raw and "Row 21" not in raw
    assert view.views.currentWidget() is view.raw and view.views.isVisibleTo(view)

    with qtbot.waitSignal(view.process.finished, timeout=120_000):
        pass
    assert "<b>300</b> rows · format <b>messages</b>" in view.stats.text()
    assert view.rows.toPlainText().count("Example ") == 3
    assert view.views.currentWidget() is view.rows  # the tokenized view once it is ready
    assert view.raw.toPlainText() == raw  # the rows as in the file stay one tab away
    view.stop()


def test_a_malformed_line_among_the_first_rows_is_shown_at_once_without_a_helper(
    qtbot, canvas, tmp_path
):
    bad = tmp_path / "bad.jsonl"
    good = json.dumps({"text": "fine"})
    bad.write_text(f"{good}\n{{not json\n{good}\n", encoding="utf-8")
    node = canvas.add_node("Dataset", name="broken", path=str(bad))
    view = DatasetPreview(canvas)
    qtbot.addWidget(view)
    view.show_node(node)
    assert not view.process.is_running()
    assert f"broken: {bad}:2: invalid JSON" in view.title.text()
    assert not view.views.isVisibleTo(view)


def test_the_head_reads_only_the_first_rows_with_the_column_mapping(tmp_path):
    path = tmp_path / "chats.jsonl"
    rows = [{"chat": [{"role": "user", "content": f"q{i}"}]} for i in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n", encoding="utf-8")
    ds = DatasetSpec(path=str(path), columns={"messages": "chat"})
    head = preview.head(ds, n=2)  # the broken fourth line is never read
    assert head["error"] is None and head["more"] is True
    assert head["rows"] == [{"messages": r["chat"]} for r in rows[:2]]
    whole = preview.head(ds, n=10)
    assert whole["rows"] == [] and f"{path}:4: invalid JSON" in whole["error"]["message"]
    missing = preview.head(DatasetSpec(path=str(path), columns={"messages": "talk"}))
    assert "the column mapping names talk" in missing["error"]["message"]


def test_a_large_json_array_is_left_to_the_helper(tmp_path, monkeypatch):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"text": "a"}, {"text": "b"}]), encoding="utf-8")
    assert preview.head(DatasetSpec(path=str(path)))["rows"] == [{"text": "a"}, {"text": "b"}]
    monkeypatch.setattr(preview, "HEAD_WHOLE_FILE_BYTES", 10)
    assert preview.head(DatasetSpec(path=str(path))) == {
        "rows": [],
        "format": None,
        "more": False,
        "error": None,
    }


def test_the_plain_reader_gives_the_rows_hf_datasets_gave():
    ds = DatasetSpec(path=str(DATA), max_rows=250)
    assert preview.read_all(ds) == read_rows(ds)
