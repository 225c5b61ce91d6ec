"""The canvas (issue 5): graphs built through the UI's own API, deep duplicate and sweeps with
lineage, live compile errors on nodes, save/reopen, the run confirmation, the properties panel."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6 import QtCore, QtWidgets  # noqa: E402

from app.canvas import Canvas  # noqa: E402
from app.confirm_dialog import ConfirmRunsDialog  # noqa: E402
from app.dataset_preview import rows_html  # noqa: E402
from app.duplicate import deep_duplicate, duplicate_as_sweep, parse_values, sweep_parameters  # noqa: E402
from app.main_window import MainWindow  # noqa: E402
from app.main_window_files import EXAMPLE_GRAPH  # noqa: E402
from app.settings_store import SettingsStore  # noqa: E402
from nodes import compile as compile_graph  # noqa: E402
from nodes import load_graph  # noqa: E402
from tests.app_helpers import (  # noqa: E402
    gc_on_the_gui_thread,  # noqa: F401
    live_main_window_session,
    main_window_session,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "resources" / "datasets" / "support_chats.jsonl"


@pytest.fixture
def window(qtbot, tmp_path):
    yield from main_window_session(qtbot, tmp_path)


@pytest.fixture
def live_window(qtbot, tmp_path, monkeypatch, tg_home):
    """A main window whose Start submits to a real supervisor, stopped afterwards."""
    yield from live_main_window_session(qtbot, tmp_path, monkeypatch, tg_home)


def build_module(
    canvas: Canvas, prefix: str = "", x: float = 0, lr: float = 2e-4, base: bool = True
):
    """One Fine-Tune module wired from five feeders, as a user would build it."""
    nodes = {
        "data": canvas.add_node("Dataset", f"{prefix}data", (x, 120), path=str(DATA)),
        "train": canvas.add_node(
            "TrainingConfig", f"{prefix}train", (x, 240), learning_rate=lr, epochs=1.0
        ),
        "lora": canvas.add_node("LoraConfig", f"{prefix}lora", (x, 360), r=8),
        "ft": canvas.add_node("FineTune", f"{prefix}ft", (x + 400, 150)),
    }
    if base:
        nodes["model"] = canvas.add_node("BaseModel", f"{prefix}model", (x, 0))
        canvas.connect_nodes(nodes["model"], nodes["ft"], "base_model")
    for key, port in (("data", "dataset"), ("train", "training_config"), ("lora", "lora_config")):
        canvas.connect_nodes(nodes[key], nodes["ft"], port)
    canvas.recompile()
    return nodes


def feeder(module, port: str):
    return module.connected_input_nodes()[module.get_input(port)][0]


# -- duplicate, lineage, sweep -------------------------------------------------------------------
def test_deep_duplicate_edit_copy_leaves_original_and_shows_lineage(canvas):
    nodes = build_module(canvas)
    original = nodes["ft"]
    assert canvas.result.ok and len(canvas.result.specs) == 1
    copy = deep_duplicate(canvas, original)
    assert copy.name() == "ft (copy)"
    assert copy.get_property("origin_uuid") == original.get_property("uuid")
    assert copy.get_property("uuid") != original.get_property("uuid")
    copied_train = feeder(copy, "training_config")
    assert copied_train is not nodes["train"]
    assert copied_train.name() == "train (copy)"
    assert copy.pos()[0] > max(n.pos()[0] for n in nodes.values())  # placed to the right
    assert len({n.get_property("uuid") for n in canvas.nodes()}) == len(canvas.nodes()) == 10

    canvas.set_param(copied_train, "learning_rate", "1e-4")
    canvas.recompile()
    assert nodes["train"].get_property("learning_rate") == 2e-4
    assert copied_train.get_property("learning_rate") == 1e-4
    assert canvas.lineage[copy.id] == "lr 2e-4 → 1e-4"
    decorations = canvas._decorations[copy.id]
    assert decorations.lineage.isVisible()
    assert "lr 2e-4 → 1e-4" in decorations.lineage.toPlainText()
    specs = {s.name: s for s in canvas.result.specs}
    assert specs["ft"].training.learning_rate == 2e-4
    assert specs["ft (copy)"].training.learning_rate == 1e-4
    assert specs["ft (copy)"].origin_uuid == original.get_property("uuid")


def test_duplicate_is_one_undo_step(canvas):
    nodes = build_module(canvas)
    before = len(canvas.nodes())
    deep_duplicate(canvas, nodes["ft"])
    assert len(canvas.nodes()) == 2 * before
    canvas.graph.undo_stack().undo()
    assert len(canvas.nodes()) == before
    canvas.graph.undo_stack().redo()
    assert len(canvas.nodes()) == 2 * before


def test_sweep_makes_one_named_copy_per_value(canvas):
    nodes = build_module(canvas)
    choice = next(
        p for p in sweep_parameters(canvas, nodes["ft"]) if p.key == "training_config.learning_rate"
    )
    copies = duplicate_as_sweep(
        canvas, nodes["ft"], choice, parse_values(choice.param, "1e-4, 2e-4 5e-4")
    )
    # named after what differs (nodes.autoname): the copy at the original's value differs in nothing
    assert [c.name() for c in copies] == ["ft · lr 1e-4", "ft (copy)", "ft · lr 5e-4"]
    assert [feeder(c, "training_config").get_property("learning_rate") for c in copies] == [
        1e-4,
        2e-4,
        5e-4,
    ]
    assert canvas.lineage[copies[0].id] == "lr 2e-4 → 1e-4"
    assert canvas.lineage[copies[1].id] == "same settings as ft"
    assert len(canvas.result.specs) == 4
    canvas.graph.undo_stack().undo()
    assert len(canvas.nodes(kind="FineTune")) == 1


def test_parse_values_checks_types():
    from nodes.catalogue import CATALOGUE

    lr = CATALOGUE["TrainingConfig"].parameter("learning_rate")
    assert parse_values(lr, "1e-4; 3e-4") == [1e-4, 3e-4]
    with pytest.raises(ValueError):
        parse_values(lr, "fast")
    scheduler = CATALOGUE["TrainingConfig"].parameter("lr_scheduler")
    with pytest.raises(ValueError, match="not one of"):
        parse_values(scheduler, "cosine, zigzag")


# -- files ---------------------------------------------------------------------------------------
def test_save_reopen_compiles_to_the_same_specs(canvas, tmp_path, qtbot):
    nodes = build_module(canvas)
    deep_duplicate(canvas, nodes["ft"])
    path = tmp_path / "mine.tunegraph.json"
    canvas.save_file(path)
    assert not canvas.dirty
    saved = json.loads(path.read_text())
    assert saved["tunegraph"] == {"format_version": 1}
    assert "accept_connection_types" not in saved["graph"]
    assert {n["type_"] for n in saved["nodes"].values()} == {
        "tunegraph.FineTune",
        "tunegraph.BaseModel",
        "tunegraph.Dataset",
        "tunegraph.TrainingConfig",
        "tunegraph.LoraConfig",
    }
    before = compile_graph(canvas.to_dict(), path)
    from_file = compile_graph(load_graph(path), path)
    holder = QtWidgets.QWidget()
    qtbot.addWidget(holder)
    reopened = Canvas(holder)
    reopened.load_file(path)
    after = reopened.result
    assert (
        [s.to_dict() for s in before.specs]
        == [s.to_dict() for s in from_file.specs]
        == [s.to_dict() for s in after.specs]
    )
    assert len(after.specs) == 2
    assert reopened.lineage == {
        m.id: "same settings as ft" for m in reopened.nodes("FineTune") if m.name() == "ft (copy)"
    }


def test_example_sweep_opens_and_compiles(canvas):
    canvas.load_file(EXAMPLE_GRAPH, template=True)
    assert canvas.result.ok
    assert [s.name for s in canvas.result.specs] == ["support lr 1e-3", "support lr 5e-3"]
    assert canvas.lineage[canvas.node_by_name("support lr 5e-3").id] == "lr 1e-3 → 5e-3"


def test_save_elsewhere_rebases_relative_dataset_paths(canvas, tmp_path):
    canvas.load_file(EXAMPLE_GRAPH, template=True)
    target = tmp_path / "elsewhere" / "copy.tunegraph.json"
    target.parent.mkdir()
    canvas.save_file(target)
    result = compile_graph(load_graph(target), target)
    assert result.ok
    assert Path(result.specs[0].datasets[0].path) == DATA


def test_dropping_a_data_file_adds_a_dataset_node(canvas, tmp_path):
    created = canvas.drop_files([str(DATA), str(tmp_path / "notes.txt")], (10.0, 20.0))
    assert len(created) == 1
    node = created[0]
    assert node.name() == "support_chats"
    assert node.get_property("path") == str(DATA)
    assert node.get_property("uuid")


# -- compile errors on nodes ---------------------------------------------------------------------
def test_error_badge_appears_without_base_model_and_goes_when_connected(canvas, qtbot):
    nodes = build_module(canvas, base=False)
    module = nodes["ft"]
    badge = canvas._decorations[module.id].badge
    assert badge.isVisible()
    assert "Base model: connect a Base model node" in badge.toolTip()
    assert not canvas.module_ok(module)
    model = canvas.add_node("BaseModel", "model", (0, 0))
    with qtbot.waitSignal(canvas.compiled, timeout=3000):  # live, debounced re-compile
        canvas.connect_nodes(model, module, "base_model")
    assert not badge.isVisible()
    assert canvas.module_ok(module)


def test_run_is_disabled_for_a_module_with_errors(window, qtbot):
    canvas = window.canvas
    nodes = build_module(canvas, base=False)
    canvas.select([nodes["ft"]])
    assert not window.run_action.isEnabled()
    assert not window.run_all_action.isEnabled()
    assert window.run_modules([nodes["ft"]]) is None
    model = canvas.add_node("BaseModel", "model", (0, 0))
    canvas.connect_nodes(model, nodes["ft"], "base_model")
    canvas.recompile()
    canvas.select([nodes["ft"]])
    assert window.run_action.isEnabled()


# -- properties panel ----------------------------------------------------------------------------
def test_int_and_float_edits_round_trip(window, tmp_path, qtbot):
    canvas = window.canvas
    nodes = build_module(canvas)
    train = nodes["train"]
    canvas.select([train])
    panel = window.properties
    assert panel.node is train
    spin = panel.editors["micro_batch_size"].spin
    spin.setValue(16)  # what arrows / Enter commit (keyboard tracking off)
    assert train.get_property("micro_batch_size") == 16
    lr_edit = panel.editors["learning_rate"].edit
    assert lr_edit.text() == "2e-4"
    lr_edit.setText("3e-4")
    lr_edit.editingFinished.emit()
    assert train.get_property("learning_rate") == 3e-4
    canvas.graph.undo_stack().undo()
    assert train.get_property("learning_rate") == 2e-4
    assert lr_edit.text() == "2e-4"  # the panel follows undo
    canvas.graph.undo_stack().redo()
    path = tmp_path / "edited.tunegraph.json"
    window.save_as(path)
    custom = next(
        n["custom"] for n in json.loads(path.read_text())["nodes"].values() if n["name"] == "train"
    )
    assert custom["micro_batch_size"] == 16 and isinstance(custom["micro_batch_size"], int)
    assert custom["learning_rate"] == 3e-4 and isinstance(custom["learning_rate"], float)
    spec = compile_graph(load_graph(path), path).specs[0]
    assert (spec.training.micro_batch_size, spec.training.learning_rate) == (16, 3e-4)


def test_bad_float_text_shows_the_compile_error_on_the_field(window):
    canvas = window.canvas
    nodes = build_module(canvas)
    canvas.select([nodes["train"]])
    editor = window.properties.editors["learning_rate"]
    editor.edit.setText("fast")
    editor.edit.editingFinished.emit()
    canvas.recompile()
    assert canvas._decorations[nodes["train"].id].badge.isVisible()
    assert "must be a number" in editor.toolTip()


# -- run confirmation ----------------------------------------------------------------------------
def _estimate(rows: int, mode: str = "lora") -> dict:
    return {
        "params": 494_032_768,
        "trainable_params": 1_081_344,
        "vram_gib": {"bf16": 5.2, "4bit": 2.9},
        "vram_parts_gib": {
            "weights": 0.92,
            "lora": 0.02,
            "activations": 2.1,
            "logits": 1.45,
            "context_and_slack": 0.71,
        },
        "mode": mode,
        "mode_reason": "16-bit fits: needs ~5.2 GiB of 24 GiB"
        if mode == "lora"
        else "16-bit would not fit",
        "device": "cuda:0",
        "time_s": {"low": 120.0, "high": 400.0},
        "dataset_rows": rows,
        "warnings": ["only 300 examples: fewer than 1,000 rows rarely teach a model much"]
        if rows < 1000
        else [],
    }


def test_confirmation_lists_estimates_for_two_modules(canvas, qtbot, monkeypatch):
    monkeypatch.setenv("TUNEGRAPH_FAKE_GPUS", "RTX 4090:24")
    build_module(canvas, "a ")
    nodes_b = build_module(canvas, "b ", x=900)
    canvas.set_param(feeder(nodes_b["ft"], "lora_config"), "quantization", "4bit")
    result = canvas.recompile()
    modules = result.modules
    estimates = [
        {"name": m.name, "node_uuid": m.node_uuid, "estimate": est}
        for m, est in zip(modules, (_estimate(300), _estimate(5000, "qlora")), strict=True)
    ]
    dialog = ConfirmRunsDialog(modules, [], canvas.to_dict(), estimates=estimates)
    qtbot.addWidget(dialog)
    text = dialog.body.toPlainText()
    for name in ("a ft", "b ft"):
        assert name in text
    assert "494 M (1.08 M trainable with LoRA)" in text
    assert "~5.2 GiB on cuda:0 (RTX 4090, 24 GiB)" in text
    assert "~2.9 GiB on cuda:0" in text
    assert (
        "weights 0.92, LoRA 0.02, activations 2.1, logits 1.45, CUDA context + slack 0.71 GiB"
        in text
    )
    assert "yes — 16-bit would not fit" in text
    assert "no — 16-bit fits" in text
    assert "2 min – 7 min" in text
    assert "300 rows ⚠ under 1,000 examples" in text
    assert "5,000 rows" in text
    assert "adapter ZIP" in text
    assert (
        "builtin:tiny-llama on support_chats.jsonl; 1 epoch(s), lr 2e-4, batch 4×1; "
        "LoRA r8/α32 on auto" in text
    )
    assert dialog.start_button.isEnabled() and dialog.start_button.text() == "Start 2 runs"
    with qtbot.waitSignal(dialog.start_requested) as signal:
        dialog.start_button.click()
    specs, ests = signal.args
    assert [s.name for s in specs] == ["a ft", "b ft"]
    assert [e["dataset_rows"] for e in ests] == [300, 5000]


def test_a_run_that_can_never_fit_is_refused(canvas, qtbot, monkeypatch):
    monkeypatch.setenv("TUNEGRAPH_FAKE_GPUS", "8")
    build_module(canvas)
    module = canvas.result.modules[0]
    huge = _estimate(5000) | {"vram_gib": {"bf16": 40.0, "4bit": 12.0}}
    dialog = ConfirmRunsDialog(
        [module],
        [],
        canvas.to_dict(),
        estimates=[{"name": "ft", "node_uuid": module.node_uuid, "estimate": huge}],
    )
    qtbot.addWidget(dialog)
    assert "Refused: needs ~40.0 GiB (12.0 GiB in 4-bit)" in dialog.body.toPlainText()
    assert not dialog.start_button.isEnabled()
    # the node says so too, until it is edited (the next estimate decides again)
    canvas.set_refusals(dialog.refusal_texts())
    ft = canvas.node_by_name("ft")
    badge = canvas._decorations[ft.id].badge
    assert badge.isVisible() and "Refused: needs ~40.0 GiB" in badge.toolTip()
    canvas.set_param(ft, "device", "cpu")
    canvas.recompile()
    assert not badge.isVisible()


def test_confirmation_runs_the_real_estimate_and_start_submits(window, qtbot):
    """The estimate is real; Start hands the specs to the window's submit, a recorder here (the
    real submission to a supervisor: test_run_and_start_train_a_real_run_until_the_panel_…)."""
    window.open_file(EXAMPLE_GRAPH)
    dialog = window.run_all()
    assert dialog is not None and dialog.estimating
    assert not dialog.start_button.isEnabled()
    qtbot.waitUntil(lambda: not dialog.estimating, timeout=90_000)
    text = dialog.body.toPlainText()
    assert not dialog.estimate_error, dialog.estimate_error
    assert text.count("Parameters") == 2
    assert "1.97 M" in text and "300 rows ⚠ under 1,000" in text
    dialog.start_button.click()
    qtbot.waitUntil(lambda: len(window.last_submitted) == 2, timeout=10_000)
    for thread in list(window.submit_threads):
        thread.wait()
    ((specs, estimates),) = window.submitted
    assert [s.name for s in specs] == ["support lr 1e-3", "support lr 5e-3"]
    assert all(e["dataset_rows"] == 300 for e in estimates)
    first = window.last_submitted[0]
    assert (first["state"], first["name"]) == ("queued", "support lr 1e-3")


def test_run_and_start_train_a_real_run_until_the_panel_shows_it_completed(
    live_window, qtbot, tmp_path
):
    """No fake submit: the Run action opens the confirmation, which runs the real estimate in a
    helper process; Start hands the run to a real supervisor (started on demand), whose worker
    trains the tiny model; the run panel follows the run to completed, and the adapter ZIP the
    graph's Export node asks for is in the library."""
    from engine import paths
    from engine.store.index import Store
    from engine.training.launch import read_submission
    from tests.helpers import make_graph

    window = live_window
    window.open_file(make_graph(tmp_path, {"tiny e2e": {"max_steps": 4}}))
    window.canvas.select([window.canvas.node_by_name("tiny e2e")])
    assert window.run_action.isEnabled()
    window.run_action.trigger()
    dialog = window.confirm_dialog
    assert dialog is not None and dialog.estimating and not dialog.start_button.isEnabled()
    qtbot.waitUntil(lambda: not dialog.estimating, timeout=90_000)
    assert not dialog.estimate_error, dialog.estimate_error
    text = dialog.body.toPlainText()
    assert text.count("Parameters") == 1 and "1.97 M" in text and "40 rows" in text
    assert "adapter ZIP" in text
    assert dialog.start_button.isEnabled() and dialog.start_button.text() == "Start 1 run"
    dialog.start_button.click()  # the dialog closes (and is deleted): not touched again
    qtbot.waitUntil(lambda: len(window.last_submitted) == 1, timeout=60_000)
    [entry] = window.last_submitted
    assert (entry["name"], entry["state"]) == ("tiny e2e", "queued")
    panel = window.run_views.panel
    qtbot.waitUntil(lambda: entry["id"] in panel.rows, timeout=10_000)
    row = panel.rows[entry["id"]]
    qtbot.waitUntil(lambda: row.pill.state == "completed", timeout=120_000)
    assert panel.section_of(entry["id"]) == "history"
    assert row.progress.format() == "4/4" and row.loss.text().startswith("loss ")
    assert row.buttons["Export"].isVisibleTo(row) and not row.buttons["Pause"].isVisibleTo(row)
    with Store() as store:
        run = store.run_json(entry["id"])
        qtbot.waitUntil(lambda: not store.holds(), timeout=10_000)  # the worker has exited
    assert (run["state"], run["step"], run["device"]) == ("completed", 4, "cpu")
    submitted = read_submission(Path(run["run_dir"]))["estimate"]  # the dialog's, sent by Start
    assert submitted["dataset_rows"] == 40 and run["estimate"] == submitted
    zips = [a for a in run["artifacts"] if a["kind"] == "adapter_zip"]
    assert len(zips) == 1 and Path(zips[0]["path"]).is_relative_to(paths.library_dir())
    assert Path(zips[0]["path"]).is_file()


def test_cancel_submits_nothing(window, qtbot):
    canvas = window.canvas
    build_module(canvas)
    module = canvas.result.modules[0]
    dialog = window.run_modules(
        canvas.nodes("FineTune"),
        estimates=[
            {"name": module.name, "node_uuid": module.node_uuid, "estimate": _estimate(300)}
        ],
    )
    dialog.reject()
    assert window.submitted == [] and window.submit_threads == []


# -- window --------------------------------------------------------------------------------------
def test_first_start_opens_the_example_and_remembers_recent_files(qtbot, tmp_path):
    settings = SettingsStore(tmp_path / "ui.ini")
    win = MainWindow(settings=settings)
    qtbot.addWidget(win)
    win.open_initial()
    assert win.canvas.path == EXAMPLE_GRAPH and win.canvas.is_template
    assert "(example)" in win.windowTitle()
    saved = tmp_path / "sweep-copy.tunegraph.json"
    assert win.save_as(saved)
    win.shutdown()
    again = MainWindow(settings=SettingsStore(tmp_path / "ui.ini"))
    qtbot.addWidget(again)
    again.open_initial()
    assert again.canvas.path == saved.resolve()
    assert again.settings.recent_files()[0] == str(saved.resolve())
    again.shutdown()


def test_close_asks_about_unsaved_changes(window, qtbot):
    window.show()
    window.add_node("Dataset")
    assert window.canvas.dirty and "•" in window.windowTitle()
    window.ask_quit = lambda dirty, live: "cancel"
    window.close()
    assert window.isVisible()
    window.ask_quit = lambda dirty, live: "quit"
    window.close()
    assert not window.isVisible()


def test_delete_removes_the_selected_nodes(window):
    canvas = window.canvas
    nodes = build_module(canvas)
    canvas.select([nodes["lora"], nodes["data"]])
    window.delete_action.trigger()
    assert {n.name() for n in canvas.nodes()} == {"model", "train", "ft"}


def test_ctrl_d_duplicates_the_selected_module(window):
    canvas = window.canvas
    nodes = build_module(canvas)
    canvas.select([nodes["ft"]])
    assert window.duplicate_action.isEnabled()
    assert window.duplicate_action.shortcut().toString() == "Ctrl+D"
    window.duplicate_action.trigger()
    assert {n.name() for n in canvas.nodes("FineTune")} == {"ft", "ft (copy)"}


def test_palette_adds_nodes(window):
    window.palette.search.setText("lora")
    visible = [
        window.palette.list.item(i).text()
        for i in range(window.palette.list.count())
        if not window.palette.list.item(i).isHidden()
    ]
    assert visible == ["LoRA config"]
    window.palette.search.returnPressed.emit()
    node = window.canvas.nodes("LoraConfig")[0]
    assert window.properties.node is node  # the new node is selected and shown
    assert node.get_property("target_modules") == ["auto"]


def test_dataset_preview_renders_trained_tokens():
    html = rows_html(
        [
            {
                "segments": [
                    ["<|im_start|>user\nhi<|im_end|>\n", False],
                    ["hello!<|im_end|>", True],
                ],
                "tokens": 12,
                "truncated": True,
            }
        ]
    )
    assert "background:#1f5130" in html and "hello!&lt;|im_end|&gt;" in html
    assert "truncated" in html


def test_dataset_preview_from_the_helper_process(window, qtbot):
    window.open_file(EXAMPLE_GRAPH)
    preview = window.preview
    window.canvas.select([window.canvas.node_by_name("support chats")])
    qtbot.waitUntil(lambda: preview.process.is_running(), timeout=3000)
    qtbot.waitUntil(lambda: not preview.process.is_running(), timeout=60_000)
    stats = preview.stats.text()
    assert "<b>300</b> rows · format <b>messages</b>" in stats
    assert "fewer than 1,000" in stats
    assert "tiny llama" not in preview.title.text() and "builtin:tiny-llama" in preview.title.text()
    rows = preview.rows.toPlainText()
    assert "Green = trained tokens" in rows
    assert rows.count("Example ") == 3 and "Anything else?" in rows
    assert preview.report["preview"][0]["segments"][1][1] is True  # the answer is trained


def test_ui_process_never_imports_torch():
    code = (
        "import sys; import app.main_window, app.main, app.dataset_preview; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, "
        "[m for m in sys.modules if m.startswith(('torch', 'transformers'))]"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=ROOT,
        timeout=60,
        env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"},
    )


def test_no_thread_outlives_shutdown(window):
    """No QThread outlives a window's shutdown."""
    window.shutdown()
    assert not [t for t in window.findChildren(QtCore.QThread) if t.isRunning()]


def test_ports_only_accept_their_kind(canvas):
    nodes = build_module(canvas)
    viewer = canvas.viewer
    data_out = nodes["data"].output_ports()[0].view
    ft = nodes["ft"]
    assert viewer._validate_accept_connection(data_out, ft.get_input("dataset").view)
    assert not viewer._validate_accept_connection(data_out, ft.get_input("base_model").view)
    assert ft.get_input("dataset").view.multi_connection  # several datasets may connect


def test_an_eval_node_scores_a_split_s_eval_part_and_the_panel_says_so(window, qtbot):
    canvas, panel = window.canvas, window.properties
    nodes = build_module(canvas)
    split = canvas.add_node("Split", "hold out 4", (0, 480), eval_rows=4)
    ev = canvas.add_node("Eval", "scores", (200, 480))
    lora_out = nodes["lora"].output_ports()[0].view
    eval_set = ev.get_input("eval_set")
    assert canvas.viewer._validate_accept_connection(split.get_output("eval").view, eval_set.view)
    assert not canvas.viewer._validate_accept_connection(lora_out, eval_set.view)
    assert not eval_set.view.multi_connection  # one eval set per Eval node
    canvas.connect_nodes(nodes["data"], split, "dataset")
    canvas.connect_nodes(ev, nodes["ft"], "eval")
    canvas.select([ev])
    path = panel.editors["path"]
    assert path.edit.placeholderText() == "empty: the held-out split"
    assert "Scores the rows" not in panel.state.text()

    with qtbot.waitSignal(canvas.compiled, timeout=3000):  # live, debounced re-compile
        split.get_output("eval").connect_to(eval_set)
    assert "Scores the rows from &quot;hold out 4&quot; (eval)" in panel.state.text()
    assert not panel.state.isHidden()
    assert path.edit.placeholderText() == 'empty: the rows from "hold out 4" (eval)'
    (spec,) = canvas.result.specs
    assert spec.evals[0].name == "hold out 4 (eval)" and spec.evals[0].path.endswith("eval.jsonl")

    with qtbot.waitSignal(canvas.compiled, timeout=3000):
        split.get_output("eval").disconnect_from(eval_set)
    assert "Scores the rows" not in panel.state.text()
    assert path.edit.placeholderText() == "empty: the held-out split"


def test_nodes_created_by_nodegraphqt_itself_get_a_uuid(canvas):
    node = canvas.graph.create_node("tunegraph.Export", pos=(0, 0))  # e.g. from Tab search
    assert node.get_property("uuid")


def test_run_button_in_properties_opens_the_confirmation(window):
    canvas = window.canvas
    nodes = build_module(canvas)
    canvas.select([nodes["ft"]])
    button = window.properties.run_button
    assert button is not None and button.isEnabled()
    button.click()
    dialog = window.confirm_dialog
    assert dialog is not None and [m.name for m in dialog.modules] == ["ft"]
    dialog.reject()


def test_sweep_dialog_parses_and_validates_values(window):
    from app.sweep_dialog import SweepDialog

    canvas = window.canvas
    nodes = build_module(canvas)
    dialog = SweepDialog("ft", sweep_parameters(canvas, nodes["ft"]), window)
    assert dialog.parameter.key == "training_config.learning_rate"  # the usual first choice
    dialog.edit.setText("1e-4, nope")
    assert not dialog.ok.isEnabled() and "must be a number" in dialog.message.text()
    dialog.edit.setText("1e-4, 5e-4")
    assert dialog.ok.isEnabled()
    parameter, values = dialog.choice()
    assert (parameter.key, values) == ("training_config.learning_rate", [1e-4, 5e-4])
    dialog.reject()


def test_drops_from_the_palette_and_the_file_manager(canvas):
    from app.palette import mime_for

    canvas._on_drop(mime_for("LoraConfig"), QtCore.QPoint(5, 5))
    mime = QtCore.QMimeData()
    mime.setUrls([QtCore.QUrl.fromLocalFile(str(DATA))])
    canvas._on_drop(mime, QtCore.QPoint(5, 200))
    assert [decl.kind for decl in (n.DECL for n in canvas.nodes())] == ["LoraConfig", "Dataset"]


def test_node_context_menu_run_follows_errors(window):
    canvas = window.canvas
    nodes = build_module(canvas, base=False)
    window._on_context_menu(None, nodes["ft"])
    assert window.node_run_actions and not any(a.isEnabled() for a in window.node_run_actions)
    model = canvas.add_node("BaseModel", "model", (0, 0))
    canvas.connect_nodes(model, nodes["ft"], "base_model")
    canvas.recompile()
    window._on_context_menu(None, nodes["ft"])
    assert all(a.isEnabled() for a in window.node_run_actions)
    window._ctx_duplicate(canvas.graph, nodes["ft"])
    assert {n.name() for n in canvas.nodes("FineTune")} == {"ft", "ft (copy)"}


def test_preview_report_names_a_missing_file(tmp_path):
    from engine.plan.preview import empty_report, histogram, run

    answer = run(
        {
            "dataset": {"path": str(tmp_path / "missing.jsonl")},
            "base_model": {"source": "builtin:tiny-llama"},
        }
    )
    assert set(answer) == set(empty_report())
    assert "missing.jsonl" in answer["error"]["message"]
    assert histogram([10, 20, 95], 128, bins=4) == [[0, 2], [24, 0], [48, 0], [72, 1]]
