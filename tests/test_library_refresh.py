"""The Library tab refreshes itself from the store's events (issue 20): an artifact registered
by an export appears without pressing anything, with its kind, run, base model, size, date and
file; the list filters by run; a tab opened after a restart finds what was made meanwhile; and a
dataset entry gets no model actions.

A real store and the real bridge thread (which ingests a live run's event log itself, as it does
for a worker's export); the artifacts are registered by `register`, the export's own way."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from app.library_tab import LibraryTab  # noqa: E402
from app.run_bridge import RunBridge  # noqa: E402
from engine.export.job import ExportJob, no_progress, register  # noqa: E402
from engine.spec import JobSpec  # noqa: E402
from tests.app_helpers import gc_on_the_gui_thread  # noqa: E402, F401
from tests.synthetic_runs import training_run  # noqa: E402

WAIT_MS = 5000


@pytest.fixture
def bridge(qtbot, store):
    b = RunBridge(store.path)
    b.start()
    yield b
    b.stop()


def export_artifact(run, tmp_path: Path, kind: str = "adapter_zip", quant=None) -> dict:
    """Register a small file as `kind` the way an export does: into library/<id>/ with a
    manifest, announced by an `artifact` event in the run's worker log."""
    work = tmp_path / f"work-{run.id}-{kind}"
    work.mkdir()
    src = work / f"{run.id[-6:]}-{kind}.zip"
    src.write_bytes(b"PK\x05\x06" + b"\0" * 4000)
    job = ExportJob(
        run.dir, run.id, JobSpec.load(run.dir / "spec.json"), run.dir, run.worker,
        no_progress, None, work,
    )  # fmt: skip
    return register(job, src, kind, quant)


def test_an_exported_artifact_appears_without_pressing_refresh(qtbot, bridge, store, tmp_path):
    tab = LibraryTab()
    qtbot.addWidget(tab)
    tab.follow(bridge)
    assert tab.entries == [] and "No artifacts yet" in tab.status.text()
    run = training_run(store, "support bot", 10, 10)
    run.status("exporting")  # the worker's export phase: the bridge ingests its log itself
    qtbot.waitUntil(
        lambda: bridge.runs.get(run.id, {}).get("state") == "exporting", timeout=WAIT_MS
    )
    made = export_artifact(run, tmp_path)
    qtbot.waitUntil(lambda: len(tab.entries) == 1, timeout=WAIT_MS)
    cells = [tab.table.item(0, c).text() for c in range(tab.table.columnCount())]
    assert cells[0] == "Adapter ZIP" and cells[1] == f"support bot · {run.id[-6:]}"
    assert cells[2] == "builtin:tiny-llama" and cells[4].endswith("KiB")
    assert cells[5] == time.strftime("%Y-%m-%d %H:%M", time.localtime(made["created_at"]))
    assert cells[6] == Path(made["path"]).name
    assert tab.table.item(0, 1).toolTip() == run.id
    assert tab.status.text().startswith("1 artifact in ")

    run.status("completed")
    other = training_run(store, "second bot", 10, 10)
    other.status("exporting")
    export_artifact(other, tmp_path, "gguf_bundle", "Q4_K_M")
    qtbot.waitUntil(lambda: len(tab.entries) == 2, timeout=WAIT_MS)
    assert tab.status.text().startswith("2 artifacts in ")

    # filter by run: one choice per run with artifacts, by name and short id
    labels = [tab.run_filter.itemText(i) for i in range(tab.run_filter.count())]
    assert labels == ["All runs", f"second bot · {other.id[-6:]}", f"support bot · {run.id[-6:]}"]
    tab.filter_run(run.id)
    assert [e["id"] for e in tab.visible_entries()] == [made["id"]]
    export_artifact(run, tmp_path, "merged_dir")  # `tunegraph export` of the finished run,
    run.ingest()  # which indexes its log when it ends: it shows under the filter
    qtbot.waitUntil(lambda: len(tab.entries) == 3, timeout=WAIT_MS)
    assert tab.run_filter.currentData() == run.id
    assert sorted(e["kind"] for e in tab.visible_entries()) == ["adapter_zip", "merged_dir"]
    tab.filter_run(None)
    assert len(tab.visible_entries()) == 3
    for r in (run, other):
        r.close()


def test_a_tab_opened_after_a_restart_finds_runs_finished_meanwhile(qtbot, store, tmp_path):
    """No app and no bridge while the run finished and exported: the next start shows it."""
    run = training_run(store, "overnight", 10, 10)
    run.status("exporting")
    made = export_artifact(run, tmp_path)
    run.status("completed")
    tab = LibraryTab()  # the app starting again
    qtbot.addWidget(tab)
    assert [e["id"] for e in tab.entries] == [made["id"]]
    assert tab.table.item(0, 1).text() == f"overnight · {run.id[-6:]}"
    run.close()


def test_a_dataset_entry_shows_as_a_dataset_without_model_actions(qtbot):
    """A preference dataset voted in the chat pane (engine.data.preferences) is listed as a
    dataset: no run, no Serve, Push, Ollama or Delete (its file is not a library folder)."""
    from engine.data.preferences import append_pairs, dataset_path, pairs_from_vote

    prompt = [{"role": "user", "content": "My router blinks red."}]
    pairs, _ = pairs_from_vote(prompt, "Restart it.", [("a.gguf", "Buy a new one."), ("b", "?")])
    append_pairs(dataset_path("support votes"), pairs)
    tab = LibraryTab()
    qtbot.addWidget(tab)
    assert [tab.table.item(0, c).text() for c in (0, 1, 2, 6)] == [
        "Dataset (2 pairs)",
        "—",
        "",
        "support-votes.jsonl",
    ]
    tab.table.selectRow(0)
    assert tab.selected()["kind"] == "dataset"
    assert tab.open_button.isEnabled() and tab.export_button.isEnabled()
    assert not tab.serve_button.isEnabled() and not tab.push_button.isEnabled()
    assert not tab.ollama_button.isEnabled() and not tab.delete_button.isEnabled()
    assert [tab.run_filter.itemText(i) for i in range(tab.run_filter.count())] == ["All runs"]
