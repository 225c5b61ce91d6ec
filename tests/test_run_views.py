"""The run views against a real store: synthetic event logs (fast) and one real tiny CPU run
driven through the supervisor. Rows move between Active and History, buttons reach the
supervisor, charts hold the right points, filters and the compare view show the right rows."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")
from PySide6 import QtCore, QtWidgets  # noqa: E402

from app.run_panel import RunPanel  # noqa: E402
from app.run_views import install_run_views  # noqa: E402
from app.runs_tab import RunsTab  # noqa: E402
from engine.store.index import Store  # noqa: E402
from tests.app_helpers import gc_on_the_gui_thread  # noqa: E402, F401
from tests.synthetic_runs import SyntheticRun, make_spec, training_run  # noqa: E402

WAIT_MS = 5000


@pytest.fixture
def views(qtbot, store):
    window = QtWidgets.QMainWindow()
    qtbot.addWidget(window)
    v = install_run_views(window, store.path)
    window.resize(1300, 800)
    yield v
    v.shutdown()
    assert not v.bridge._poller.isRunning() and not v.bridge._commands.isRunning()


def wait_rows(qtbot, panel: RunPanel, ids):
    qtbot.waitUntil(lambda: all(i in panel.rows for i in ids), timeout=WAIT_MS)


# -- run panel -----------------------------------------------------------------------------------
def test_rows_move_from_active_to_history_as_states_change(qtbot, views, store):
    live = training_run(store, "live", 30, 100)
    done = training_run(store, "done", 100, 100, state="completed")
    panel = views.panel
    wait_rows(qtbot, panel, [live.id, done.id])
    assert panel.section_of(live.id) == "active" and panel.section_of(done.id) == "history"
    row = panel.rows[live.id]
    assert row.pill.state == "training" and "training" in row.pill.text()
    assert row.progress.value() == 30 and row.progress.maximum() == 100
    assert row.epoch.text() == "Epoch 1/2" and row.loss.text().startswith("loss ")
    assert row.eta.text() == "ETA 2m 20s"
    assert row.buttons["Pause"].isVisibleTo(row) and not row.buttons["Resume"].isVisibleTo(row)
    live.metrics(40, 100, ingest=False)  # the bridge ingests live runs itself
    qtbot.waitUntil(lambda: row.progress.value() == 70, timeout=WAIT_MS)
    assert row.epoch.text() == "Epoch 2/2"
    live.status("paused")
    qtbot.waitUntil(lambda: row.pill.state == "paused", timeout=WAIT_MS)
    assert panel.section_of(live.id) == "active" and row.buttons["Resume"].isVisibleTo(row)
    live.status("failed", reason="boom")
    qtbot.waitUntil(lambda: panel.section_of(live.id) == "history", timeout=WAIT_MS)
    assert panel.ids("history") == [done.id, live.id]  # newest first
    assert "boom" in row.message.text()
    for r in (live, done):
        r.close()


def test_buttons_send_commands_and_cancel_asks_first(qtbot, views, store, monkeypatch):
    """Which command each button sends (the client is a recorder here, the runs synthetic); the
    same buttons against a real supervisor and real runs: tests/test_end_to_end_ui.py."""
    from engine.supervisor import client

    calls = []
    monkeypatch.setattr(
        client, "control", lambda _s, action, ref: calls.append((action, ref)) or {"ok": True}
    )
    monkeypatch.setattr(
        client,
        "continue_run",
        lambda _s, ref, epochs: calls.append(("continue", ref, epochs)) or {},
    )
    live = training_run(store, "live", 5, 100)
    done = training_run(store, "done", 100, 100, state="completed")
    panel = views.panel
    wait_rows(qtbot, panel, [live.id, done.id])
    row = panel.rows[live.id]
    row.buttons["Pause"].click()
    qtbot.waitUntil(lambda: ("pause", live.id) in calls, timeout=WAIT_MS)
    asked = []
    monkeypatch.setattr(RunPanel, "confirm", staticmethod(lambda _p, name: asked.append(name)))
    row.buttons["Cancel"].click()  # refused in the confirmation: nothing is sent
    assert asked == ["live"]
    monkeypatch.setattr(RunPanel, "confirm", staticmethod(lambda _p, _n: True))
    row.buttons["Cancel"].click()
    qtbot.waitUntil(lambda: ("cancel", live.id) in calls, timeout=WAIT_MS)
    monkeypatch.setattr(RunPanel, "ask_epochs", staticmethod(lambda _p, _n: 2.0))
    panel.rows[done.id].buttons["Continue"].click()
    qtbot.waitUntil(lambda: ("continue", done.id, 2.0) in calls, timeout=WAIT_MS)
    assert [c[0] for c in calls].count("cancel") == 1
    exports = []
    monkeypatch.setattr(views.bridge, "export", lambda ref, args=(): exports.append((ref, args)))
    panel.rows[done.id].buttons["Export"].click()  # opens the Export dialog: nothing sent yet
    assert panel.export_dialog is not None and exports == []
    panel.export_dialog.export_button.click()
    assert exports == [(done.id, ["--quant", "Q4_K_M", "--no-merged"])]
    row.buttons["Stop"].click()
    qtbot.waitUntil(lambda: ("stop", live.id) in calls, timeout=WAIT_MS)
    with qtbot.waitSignal(panel.chatRequested) as asked_chat:
        panel.rows[done.id].buttons["Test in chat"].click()
    assert asked_chat.args == [done.id]
    for r in (live, done):
        r.close()


def test_stop_button_says_keep_best_only_with_an_eval_split(qtbot, views, store):
    """With an eval split a stop delivers the checkpoint with the lowest eval loss, so the
    button says so; without one it is a plain "Stop" (the current weights are delivered)."""
    split = training_run(store, "split", 5, 100)  # make_spec keeps the default eval split
    plain = training_run(store, "plain", 5, 100, eval_split=0.0)
    panel = views.panel
    wait_rows(qtbot, panel, [split.id, plain.id])
    best, stop = panel.rows[split.id].buttons["Stop"], panel.rows[plain.id].buttons["Stop"]
    assert best.text() == "Stop and keep best" and "lowest eval loss" in best.toolTip()
    assert stop.text() == "Stop" and "current weights" in stop.toolTip()
    assert "no eval split" in stop.toolTip()
    assert best.isVisibleTo(panel.rows[split.id]) and stop.isVisibleTo(panel.rows[plain.id])
    for r in (split, plain):
        r.close()


def test_a_retried_run_shows_its_attempts_and_why_each_ended(qtbot, views, store):
    run = training_run(store, "crashed once", 3, 100)
    run.status("retrying", reason="interrupted: the worker exited with code -9")
    run.status("queued", reason="retrying").status("starting").status("training", device="cpu")
    first = training_run(store, "first try", 3, 100)
    wait_rows(qtbot, views.panel, [run.id, first.id])
    label = views.panel.rows[run.id].attempts
    qtbot.waitUntil(lambda: label.text() == "attempt 2", timeout=WAIT_MS)
    assert label.isVisibleTo(views.panel.rows[run.id])
    assert (
        "1. " in label.toolTip()
        and "interrupted: the worker exited with code -9" in label.toolTip()
    )
    assert "2. " in label.toolTip() and "running" in label.toolTip()
    assert not views.panel.rows[first.id].attempts.isVisibleTo(views.panel.rows[first.id])
    for r in (run, first):
        r.close()


def test_a_failed_command_shows_on_its_row(qtbot, views, store, monkeypatch):
    from engine.errors import TunegraphError
    from engine.supervisor import client

    def refuse(_s, action, ref):
        raise TunegraphError(f"cannot {action} {ref}: it is not running")

    monkeypatch.setattr(client, "control", refuse)
    run = training_run(store, "r", 5, 100)
    wait_rows(qtbot, views.panel, [run.id])
    views.panel.rows[run.id].buttons["Pause"].click()
    qtbot.waitUntil(
        lambda: "not running" in views.panel.rows[run.id].message.text(), timeout=WAIT_MS
    )
    run.close()


# -- run detail ----------------------------------------------------------------------------------
def test_detail_charts_hold_every_point_and_follow_new_ones(qtbot, views, store, tmp_path):
    run = training_run(store, "charted", 50, 100)
    run.evaluate(1.2)
    run.worker.emit("log", level="warning", message="low disk space")
    run.ingest()
    wait_rows(qtbot, views.panel, [run.id])
    detail = views.open_run(run.id)
    charts = detail.charts
    qtbot.waitUntil(lambda: charts.point_count("loss") == 50, timeout=WAIT_MS)
    assert charts.point_count("grad_norm") == 50 and charts.point_count("lr") == 50
    assert charts.point_count("eval_loss") == 1
    run.metrics(30, 100, ingest=False)
    run.evaluate(1.0)
    qtbot.waitUntil(lambda: charts.point_count("loss") == 80, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: charts.point_count("eval_loss") == 2, timeout=WAIT_MS)
    assert len(charts._epoch_lines) == 1  # 50 steps per epoch: one boundary at step 50
    qtbot.waitUntil(lambda: detail.steps.step == 80, timeout=WAIT_MS)
    assert detail.steps.total == 100 and detail.steps.epochs == [50]
    assert detail.steps.evals == [50, 80]
    assert detail.batch.text() == "E1 30/50" and "tokens/s" in detail.tokens.text()
    assert detail.config.topLevelItemCount() > 3
    # logs: level filter, search, save (fetched while the Logs or Events tab is shown)
    assert detail.logs.events == []
    detail.tabs.setCurrentWidget(detail.events)
    qtbot.waitUntil(lambda: len(detail.events.events) > 80, timeout=WAIT_MS)
    logs = detail.logs
    assert any("low disk space" in line for line in logs.lines())
    logs.filter.setCurrentText("warning")
    assert logs.lines() and all("warning" in line for line in logs.lines())
    logs.filter.setCurrentText("info")
    assert not any("low disk space" in line for line in logs.lines())
    detail.events.filter.setCurrentText("eval")
    assert len(detail.events.lines()) == 2
    detail.events.search.setText("status")
    assert detail.events.lines() == []
    logs.filter.setCurrentText("all levels")
    logs.save_to(tmp_path / "run.log")
    assert "low disk space" in (tmp_path / "run.log").read_text()
    # the same run expanded inline in the panel updates independently
    row = views.panel.rows[run.id]
    row.expand.setChecked(True)
    qtbot.waitUntil(lambda: row.detail.charts.point_count("loss") == 80, timeout=WAIT_MS)
    row.expand.setChecked(False)
    run.metrics(5, 100, ingest=False)
    qtbot.waitUntil(lambda: charts.point_count("loss") == 85, timeout=WAIT_MS)
    run.close()


def test_detail_shows_samples_and_artifacts(qtbot, views, store):
    run = training_run(store, "done", 10, 10)
    run.samples(("How do I reset?", "Hold the button for ten seconds."))
    run.artifact(size=2 * 1024 * 1024)
    run.status("completed")
    wait_rows(qtbot, views.panel, [run.id])
    detail = views.open_run(run.id)
    qtbot.waitUntil(lambda: detail.artifacts.topLevelItemCount() == 1, timeout=WAIT_MS)
    assert detail.artifacts.topLevelItem(0).text(1) == "2.0 MiB"
    assert "ten seconds" in detail.samples.toPlainText()
    assert views.open_run(run.id) is detail  # one tab per run
    run.close()


# -- runs tab ------------------------------------------------------------------------------------
def test_runs_tab_filters_searches_selects_and_deletes(qtbot, views, store, monkeypatch):
    runs = [
        training_run(store, "alpha", 5, 10, state="completed"),
        training_run(store, "beta", 5, 10, state="failed"),
        training_run(store, "gamma", 5, 10),
        training_run(store, "delta", 5, 10, state="paused"),
    ]
    tab = views.runs_tab
    qtbot.waitUntil(lambda: len(tab.items) == 4, timeout=WAIT_MS)
    assert tab.visible_ids() == [r.id for r in reversed(runs)]  # newest first
    for name, expected in (
        ("Completed", ["alpha"]),
        ("Failed", ["beta"]),
        ("Training", ["gamma"]),
        ("Paused", ["delta"]),
        ("Queued", []),
    ):
        tab.state.setCurrentText(name)
        assert [tab.items[i].text(0) for i in tab.visible_ids()] == expected
    tab.state.setCurrentText("All")
    tab.search.setText("ALP")
    assert [tab.items[i].text(0) for i in tab.visible_ids()] == ["alpha"]
    tab.search.setText("")
    tab.select([runs[0].id, runs[1].id])
    assert tab.compare_button.isEnabled() and not tab.open_button.isEnabled()
    opened = []
    tab.compareRequested.connect(opened.append)
    tab.compare_button.click()
    assert opened == [[runs[1].id, runs[0].id]]
    monkeypatch.setattr(RunsTab, "confirm", staticmethod(lambda _p, names: names == ["beta"]))
    tab.select([runs[1].id])
    tab.delete_button.click()
    qtbot.waitUntil(lambda: runs[1].id not in tab.items, timeout=WAIT_MS)
    assert runs[1].id not in views.panel.rows
    assert [r["id"] for r in store.list_runs()] == [
        r.id for r in reversed(runs) if r is not runs[1]
    ]
    tab.select([runs[2].id])  # live: the store refuses, the tab says why
    monkeypatch.setattr(RunsTab, "confirm", staticmethod(lambda _p, _n: True))
    tab.delete_button.click()
    qtbot.waitUntil(lambda: "Cancel it before deleting" in tab.note.text(), timeout=WAIT_MS)
    for r in runs:
        r.close()


# -- compare -------------------------------------------------------------------------------------
def test_compare_overlays_curves_and_shows_exactly_the_differing_fields(qtbot, views, store):
    def make(name, sha="a" * 64, **training):
        r = SyntheticRun(store, make_spec(name, **training))
        r.status("queued").status("training").data_log(sha=sha).metrics(20, 20)
        r.samples(("q", f"answer {name}")).status("completed")
        return r

    a, b, c = make("base"), make("lr", learning_rate=1e-4), make("r", sha="f" * 64, epochs=3.0)
    qtbot.waitUntil(lambda: len(views.bridge.runs) == 3, timeout=WAIT_MS)
    view = views.open_compare([a.id, b.id, c.id])
    qtbot.waitUntil(
        lambda: (
            bool(view.stats) and view.diff is not None and "datasets.0.sha256" in view.config_keys()
        ),
        timeout=WAIT_MS,
    )
    assert view.config_keys() == ["datasets.0.sha256", "training.epochs", "training.learning_rate"]
    assert view.config.rowCount() == 3
    view.only_diff.setChecked(False)
    assert view.config.rowCount() > 20
    qtbot.waitUntil(lambda: view.point_counts("loss") == [20, 20, 20], timeout=WAIT_MS)
    assert view.point_counts("lr") == [20, 20, 20]
    assert view.metrics.rowCount() == 4 and view.samples_layout.count() == 3
    assert "learning_rate 0.0002 → 0.0001" in view.summary.text()
    for r in (a, b, c):
        r.close()


# -- a real run through the supervisor -----------------------------------------------------------
def test_a_real_tiny_run_is_cancelled_from_the_panel(qtbot, views, monkeypatch, tg_home, tmp_path):
    """The real path: client.submit → supervisor → worker (CPU), shown live, cancelled by the
    Cancel button through engine.supervisor.client.control."""
    from engine.supervisor import client
    from tests.helpers import make_spec as real_spec
    from tests.helpers import stop_everything, write_chats

    monkeypatch.setenv("TUNEGRAPH_SUPERVISOR_IDLE", "5")
    monkeypatch.setenv("TUNEGRAPH_CPU_SLOTS", "1")
    store = Store(views.bridge.store_path)
    try:
        spec = real_spec(
            write_chats(tmp_path / "chats.jsonl"), "real", max_steps=2000, save_steps=0
        )
        run_id = client.submit(store, [spec])[0]["id"]
        panel = views.panel
        qtbot.waitUntil(
            lambda: run_id in panel.rows and (panel.rows[run_id].run.get("step") or 0) >= 1,
            timeout=90_000,
        )
        assert panel.section_of(run_id) == "active"
        monkeypatch.setattr(RunPanel, "confirm", staticmethod(lambda _p, _n: True))
        panel.rows[run_id].buttons["Cancel"].click()
        qtbot.waitUntil(lambda: panel.rows[run_id].run.get("state") == "cancelled", timeout=60_000)
        assert panel.section_of(run_id) == "history"
    finally:
        stop_everything(tg_home)
        store.close()


# -- installing into a window --------------------------------------------------------------------
def test_install_replaces_the_windows_runs_placeholder_and_shuts_down(qtbot, store):
    window = QtWidgets.QMainWindow()
    qtbot.addWidget(window)
    placeholder = QtWidgets.QDockWidget("Runs", window)
    placeholder.setObjectName("runs")
    placeholder.setWidget(QtWidgets.QLabel("Runs appear here"))
    window.addDockWidget(QtCore.Qt.DockWidgetArea.BottomDockWidgetArea, placeholder)
    views = install_run_views(window, store.path)
    try:
        assert views.panel_dock is placeholder and placeholder.widget() is views.panel
        assert window.findChild(QtWidgets.QDockWidget, "run_views") is views.views_dock
        assert views.tabs.widget(0) is views.runs_tab
    finally:
        views.shutdown()
    views.shutdown()  # twice is fine
    assert not views.bridge._poller.isRunning()


def test_the_run_views_import_neither_torch_nor_pyqtgraph_at_start():
    import subprocess
    import sys

    code = (
        "import sys, app.run_views; "
        "print(sorted(m for m in ('torch', 'transformers', 'pyqtgraph', 'pandas') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"},
    )
    assert out.stdout.strip() == "[]", out.stderr


def test_the_replaced_placeholder_stays_usable(qtbot, store):
    window = QtWidgets.QMainWindow()
    qtbot.addWidget(window)
    dock = QtWidgets.QDockWidget("Runs", window)
    dock.setObjectName("runs")
    old = QtWidgets.QListWidget()
    dock.setWidget(old)
    window.addDockWidget(QtCore.Qt.DockWidgetArea.BottomDockWidgetArea, dock)
    views = install_run_views(window, store.path)
    try:
        old.addItem("still alive")  # the window's own code may still touch it
        assert old.count() == 1 and not old.isVisibleTo(window)
    finally:
        views.shutdown()
