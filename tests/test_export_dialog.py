"""The run panel's Export dialog. The slow test: a real tiny run, a real supervisor and a real
export (`tunegraph export` as the bridge's child process): the dialog is preset from the run's own
Export node, names what the library already holds (with its path) and never makes it again, the
row follows the export and its button stays disabled meanwhile, and the end is said in the
success colour. The fast ones: the same rule on a library filled by `register` (the export's own
way of adding an artifact), in the dialog and in `tunegraph export`."""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")
from PySide6 import QtWidgets  # noqa: E402

from app.export_dialog import ExportDialog, export_args  # noqa: E402
from app.library_tab import LibraryTab  # noqa: E402
from app.run_row import MESSAGE_COLOURS  # noqa: E402
from app.run_views import install_run_views  # noqa: E402
from engine import paths  # noqa: E402
from engine.events import EventLog, read_events  # noqa: E402
from engine.export.job import ExportJob, library_manifests, no_progress, register  # noqa: E402
from engine.rundir import ADAPTER, WORKER_LOG  # noqa: E402
from engine.spec import ExportSpec, JobSpec  # noqa: E402
from engine.store.index import Store  # noqa: E402
from engine.supervisor import client  # noqa: E402
from tests.app_helpers import gc_on_the_gui_thread  # noqa: E402, F401
from tests.helpers import cli, cpu_estimate, make_spec, supervisor_session  # noqa: E402

RUN_MS = 120_000  # a tiny CPU run: ~5 s of imports, a few seconds of training, 2 cores shared


@pytest.fixture
def live(qtbot, monkeypatch, tg_home):
    """The run views fed by this test's data directory, and a Store to submit with."""
    session = supervisor_session(monkeypatch, tg_home, cpu_slots=1)
    store = next(session)
    window = QtWidgets.QMainWindow()
    qtbot.addWidget(window)
    views = install_run_views(window)
    window.resize(1500, 800)
    try:
        yield views, store
    finally:
        views.shutdown()
        session.close()


def kinds_of(run_id: str) -> list[str]:
    return sorted(m["kind"] for m in library_manifests(run_id))


@pytest.mark.slow  # a real run and a real export: ~30-50 s on 2 shared cores
def test_export_dialog_presets_from_the_run_and_never_repeats_an_export(qtbot, live, data):
    views, store = live
    panel = views.panel
    spec = make_spec(data, "exported once")  # its Export node: the adapter ZIP, no GGUF
    [entry] = client.submit(store, [spec], [cpu_estimate(spec)])
    run_id = entry["id"]
    qtbot.waitUntil(lambda: run_id in panel.rows, timeout=10_000)
    row = panel.rows[run_id]
    qtbot.waitUntil(lambda: row.pill.state == "completed", timeout=RUN_MS)
    assert kinds_of(run_id) == ["adapter_zip"]  # the run's own export
    [zip_entry] = library_manifests(run_id)

    library = LibraryTab()  # the Library, following the store's events
    qtbot.addWidget(library)
    library.follow(views.bridge)
    qtbot.waitUntil(lambda: len(library.entries) == 1, timeout=10_000)

    # preset from the run's Export node; the ZIP exists already: nothing to start
    row.buttons["Export"].click()
    dialog = panel.export_dialog
    assert dialog is not None and dialog.isVisible()
    assert dialog.adapter_zip.isChecked()
    assert not dialog.gguf.isChecked() and not dialog.merged.isChecked()
    assert dialog.quant.currentText() == "Q4_K_M" and not dialog.quant.isEnabled()
    assert not dialog.export_button.isEnabled()
    plan = dialog.plan_text()
    assert "Already in the library, not made again:\n• Adapter ZIP (" in plan
    assert zip_entry["file"] in dialog.plan_text() and Path(zip_entry["file"]).is_file()
    assert "Nothing new to export" in dialog.plan_text()
    dialog.accept()  # refused: nothing is started
    assert not views.bridge.exporting(run_id) and not row.exporting

    # a new option: only the merged folder is made; the row follows the export
    dialog.merged.setChecked(True)
    assert dialog.export_button.isEnabled()
    assert "Export will make: Merged 16-bit folder." in dialog.plan_text()
    assert dialog.args() == ["--no-gguf", "--merged"]
    progress, outcome = [], {}
    views.bridge.exportProgress.connect(lambda rid, f, m: progress.append((rid, f, m)))
    views.bridge.commandDone.connect(lambda a, rid, result: outcome.setdefault("done", result))
    views.bridge.commandFailed.connect(
        lambda a, rid, message: outcome.setdefault("failed", message)
    )
    dialog.export_button.click()
    assert not dialog.isVisible()
    assert row.exporting and views.bridge.exporting(run_id)
    assert not row.buttons["Export"].isEnabled()
    assert panel.open_export(run_id) is None  # no second dialog while it exports
    qtbot.waitUntil(lambda: bool(outcome), timeout=RUN_MS)
    assert "failed" not in outcome, outcome.get("failed")
    assert any(f > 0 for rid, f, _m in progress if rid == run_id)
    assert row.buttons["Export"].isEnabled() and not row.exporting
    result = outcome["done"]
    assert [a["kind"] for a in result["artifacts"]] == ["merged_dir"]
    assert [a["kind"] for a in result["existing"]] == ["adapter_zip"]
    assert row.message.text() == (
        "Exported Merged 16-bit folder to the Library; already there: Adapter ZIP."
    )
    assert MESSAGE_COLOURS["success"] in row.message.styleSheet()
    assert kinds_of(run_id) == ["adapter_zip", "merged_dir"]
    qtbot.waitUntil(lambda: store.run_json(run_id)["state"] == "completed", timeout=10_000)
    qtbot.waitUntil(lambda: len(library.entries) == 2, timeout=10_000)  # nothing pressed

    # the same options again: the dialog names both artifacts and starts nothing
    row.buttons["Export"].click()
    again = panel.export_dialog
    assert again is not dialog
    again.merged.setChecked(True)
    assert not again.export_button.isEnabled()
    for manifest in library_manifests(run_id):
        assert manifest["file"] in again.plan_text()
    again.accept()
    assert not views.bridge.exporting(run_id)
    assert kinds_of(run_id) == ["adapter_zip", "merged_dir"]

    # the command line applies the same rule
    done = cli("export", run_id, "--no-gguf", "--merged", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["artifacts"] == []
    assert sorted(a["kind"] for a in out["existing"]) == ["adapter_zip", "merged_dir"]
    assert kinds_of(run_id) == ["adapter_zip", "merged_dir"]


def test_dialog_options_and_arguments(qtbot, tg_home):
    """Defaults come from the run's frozen spec; every option maps to a `tunegraph export`
    argument; a GGUF of another quantization is a new export."""
    run = {
        "id": "20261122-190102-3fa9c1",
        "name": "bot",
        "spec": {"export": {"gguf": True, "quant": "Q8_0", "merged": False, "ollama_name": "bot"}},
    }
    dialog = ExportDialog(run)
    qtbot.addWidget(dialog)
    assert dialog.gguf.isChecked() and dialog.quant.currentText() == "Q8_0"
    assert dialog.ollama.text() == "bot" and dialog.adapter_zip.isChecked()
    assert dialog.args() == ["--quant", "Q8_0", "--no-merged", "--ollama", "bot"]
    assert "Adapter ZIP" in dialog.plan_text() and "Q8_0" in dialog.plan_text()
    assert "installed into Ollama as bot" in dialog.plan_text()
    dialog.adapter_zip.setChecked(False)
    dialog.gguf.setChecked(False)
    assert not dialog.export_button.isEnabled() and "Tick at least one" in dialog.plan_text()
    full = ExportDialog({**run, "spec": {**run["spec"], "lora": {"full": True}}})
    qtbot.addWidget(full)  # a full fine-tuning run has no adapter to zip
    assert not full.adapter_zip.isChecked() and not full.adapter_zip.isEnabled()
    assert full.args()[0] == "--no-adapter-zip"
    assert export_args(ExportSpec(adapter_zip=False, gguf=False, merged=True)) == [
        "--no-adapter-zip",
        "--no-gguf",
        "--merged",
    ]


# -- fast: a library filled the export's own way -----------------------------------------------
def exported_run(tmp_path: Path) -> tuple[str, Path, list[dict]]:
    """A completed run folder in the store, with an adapter ZIP and a Q4_K_M GGUF bundle
    registered in the library by `register` (small real files, no model)."""
    run_id = "20261122-190102-3fa9c1"
    run_dir = paths.runs_dir() / run_id
    (run_dir / ADAPTER).mkdir(parents=True)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (run_dir / ADAPTER / name).write_text("{}", encoding="utf-8")
    spec = make_spec(tmp_path / "chats.jsonl", "bot")
    spec.export = ExportSpec(adapter_zip=True, gguf=True, quant="Q4_K_M")
    spec.save(run_dir / "spec.json")
    made = []
    with EventLog(run_dir / WORKER_LOG) as log:
        log.emit("status", state="completed", warnings=[])
        work = tmp_path / "work"
        work.mkdir()
        job = ExportJob(
            run_dir, run_id, JobSpec.load(run_dir / "spec.json"), run_dir / ADAPTER, log,
            no_progress, None, work,
        )  # fmt: skip
        with zipfile.ZipFile(work / "bot-adapter.zip", "w") as zf:
            zf.write(run_dir / ADAPTER / "adapter_config.json", "adapter_config.json")
        made.append(register(job, work / "bot-adapter.zip", "adapter_zip"))
        (work / "bot-Q4_K_M-ollama.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
        made.append(register(job, work / "bot-Q4_K_M-ollama.zip", "gguf_bundle", "Q4_K_M"))
    with Store() as store:
        store.register_run(run_id, spec, run_dir)
        store.ingest(run_dir)
    return run_id, run_dir, made


def test_what_the_library_holds_is_named_and_not_exported_again(qtbot, tmp_path, capsys):
    run_id, run_dir, made = exported_run(tmp_path)
    with Store() as store:
        run = store.run_json(run_id)
    dialog = ExportDialog(run)
    qtbot.addWidget(dialog)
    assert dialog.gguf.isChecked() and dialog.quant.currentText() == "Q4_K_M"
    assert not dialog.export_button.isEnabled() and dialog.show_button.isVisibleTo(dialog)
    for artifact in made:
        assert artifact["path"] in dialog.plan_text()
    emitted = []
    dialog.exportRequested.connect(lambda rid, args: emitted.append(args))
    dialog.accept()
    assert emitted == []
    dialog.quant.setCurrentText("Q8_0")  # another quantization is a new GGUF
    assert dialog.export_button.isEnabled()
    assert "Export will make: GGUF bundle (Ollama), Q8_0." in dialog.plan_text()
    assert made[0]["path"] in dialog.plan_text() and made[1]["path"] not in dialog.plan_text()
    dialog.quant.setCurrentText("Q4_K_M")
    Path(made[1]["path"]).unlink()  # a bundle deleted by hand is made again
    dialog.update_plan()
    assert dialog.export_button.isEnabled() and "GGUF bundle (Ollama), Q4_K_M" in dialog.plan_text()
    Path(made[1]["path"]).write_bytes(b"PK\x05\x06" + b"\0" * 18)

    # `tunegraph export` with the same options: nothing made, nothing logged, both named
    from app.cli.export import add_parsers

    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    before = len(list(read_events(run_dir / WORKER_LOG)))
    args = parser.parse_args(["export", run_id, "--quant", "Q4_K_M", "--json"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["artifacts"] == [] and out["state"] == "completed"
    assert sorted(a["path"] for a in out["existing"]) == sorted(a["path"] for a in made)
    assert len(list(read_events(run_dir / WORKER_LOG))) == before  # no `exporting` at all
    assert len(library_manifests(run_id)) == 2
