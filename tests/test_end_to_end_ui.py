"""The run panel's buttons and the hardware view's suspend switch against a REAL supervisor and
real tiny runs: Pause, Resume, Stop, Continue and Export are clicked on the rows, and each test
checks what really became of the runs in the store (states, checkpoints, holds, artifacts in the
library). Only the dialogs that would block (Continue's epochs question) have their answer
patched; everything after the click is the product's own path: bridge thread, client, supervisor,
worker."""

from __future__ import annotations

import os
import signal
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")
from PySide6 import QtWidgets  # noqa: E402

from app.run_views import install_run_views  # noqa: E402
from engine import paths  # noqa: E402
from engine import settings as settings_mod  # noqa: E402
from engine.supervisor import client  # noqa: E402
from engine.training.checkpoints import has_checkpoint  # noqa: E402
from tests.app_helpers import gc_on_the_gui_thread  # noqa: E402, F401
from tests.helpers import (  # noqa: E402
    GPU_RUN,
    cpu_estimate,
    gpu_of_holds,
    make_spec,
    supervisor_session,
    worker_pid,
)

RUN_MS = 120_000  # a tiny CPU run: ~5 s of imports, a few seconds of training, 2 cores shared


@pytest.fixture
def live(qtbot, monkeypatch, tg_home):
    """The run views in a window, fed by the store of this test's data directory, and a Store to
    submit with; the supervisor (2 CPU slots) starts on demand. Afterwards the views shut down
    and the supervisor and every worker are stopped."""
    session = supervisor_session(monkeypatch, tg_home, cpu_slots=2)
    store = next(session)
    window = QtWidgets.QMainWindow()
    qtbot.addWidget(window)
    views = install_run_views(window)
    window.resize(1300, 800)
    try:
        yield views, store
    finally:
        views.shutdown()
        session.close()  # stop_everything(tg_home), then the store is closed


def row_of(qtbot, views, run_id: str):
    qtbot.waitUntil(lambda: run_id in views.panel.rows, timeout=10_000)
    return views.panel.rows[run_id]


def wait_row(qtbot, row, condition, what: str, timeout: int = RUN_MS) -> None:
    """Wait until `condition()` holds for a row; on a timeout, fail with where the run is."""
    try:
        qtbot.waitUntil(condition, timeout=timeout)
    except qtbot.TimeoutError:
        run = row.run
        pytest.fail(
            f"run {run.get('name')} is {run.get('state')} at step {run.get('step')}, not {what}, "
            f"after {timeout / 1000:.0f} s: {row.message.text()}"
        )


def wait_state(qtbot, row, state: str, timeout: int = RUN_MS) -> None:
    wait_row(qtbot, row, lambda: row.pill.state == state, state, timeout)


def wait_step(qtbot, row, step: int) -> None:
    wait_row(qtbot, row, lambda: (row.run.get("step") or 0) >= step, f"at step {step}")


def click_and_wait(qtbot, views, button, action: str, run_id: str, timeout: int = 60_000):
    """Click a row's button and wait for the bridge's answer to that command on that run (not
    another command's); returns the result, or fails the test with the command's error."""
    outcome: dict = {}

    def done(label: str, ref: str, result: object) -> None:
        if (label, ref) == (action, run_id):
            outcome["done"] = result

    def failed(label: str, ref: str, message: str) -> None:
        if (label, ref) == (action, run_id):
            outcome["failed"] = message

    views.bridge.commandDone.connect(done)
    views.bridge.commandFailed.connect(failed)
    try:
        button.click()
        qtbot.waitUntil(lambda: bool(outcome), timeout=timeout)
    finally:
        views.bridge.commandDone.disconnect(done)
        views.bridge.commandFailed.disconnect(failed)
    assert "failed" not in outcome, f"{action} failed: {outcome['failed']}"
    return outcome["done"]


def test_pause_resume_and_stop_from_the_panel(qtbot, live, data):
    """Two real runs at once. Pause: the run ends `paused` with a checkpoint and no hold; Resume:
    the same run id trains on from that checkpoint to `completed` with one whole curve. Stop: a
    long run ends early as `completed`, delivering its adapter (and the adapter ZIP its export
    settings ask for), with the early stop as a warning."""
    views, store = live
    pausing = make_spec(data, "paused", max_steps=60)
    stopping = make_spec(data, "stopped", max_steps=2000)
    entries = client.submit(store, [pausing, stopping], [cpu_estimate(pausing)] * 2)
    paused_id, stopped_id = (e["id"] for e in entries)
    paused_row, stopped_row = row_of(qtbot, views, paused_id), row_of(qtbot, views, stopped_id)

    # Pause. The worker is frozen as soon as the row says it trains, and stays frozen while the
    # request travels (button, bridge thread, supervisor, control.json): a 60-step run cannot
    # finish before the pause lands.
    wait_state(qtbot, paused_row, "training")
    assert paused_row.buttons["Pause"].isVisibleTo(paused_row)
    pid = worker_pid(paused_row.run["run_dir"])
    os.kill(pid, signal.SIGSTOP)
    try:
        answer = click_and_wait(qtbot, views, paused_row.buttons["Pause"], "pause", paused_id)
        assert answer == {"id": paused_id, "ok": True}
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_state(qtbot, paused_row, "paused")
    run = store.run_json(paused_id)
    pause_step = run["step"]
    assert run["state"] == "paused" and 1 <= pause_step < 60
    assert has_checkpoint(run["run_dir"])
    qtbot.waitUntil(lambda: paused_id not in {h["run_id"] for h in store.holds()}, timeout=10_000)
    assert views.panel.section_of(paused_id) == "active"
    assert paused_row.buttons["Resume"].isVisibleTo(paused_row)
    assert not paused_row.buttons["Pause"].isVisibleTo(paused_row)

    # Stop, on the other run (it has an eval split: the button says it keeps the best)
    wait_step(qtbot, stopped_row, 2)
    stop = stopped_row.buttons["Stop"]
    assert stop.text() == "Stop and keep best" and stop.isVisibleTo(stopped_row)
    assert click_and_wait(qtbot, views, stop, "stop", stopped_id)["ok"]

    # Resume: the same run id, from its checkpoint, to completed
    answer = click_and_wait(qtbot, views, paused_row.buttons["Resume"], "resume", paused_id)
    assert answer["state"] == "queued"
    wait_state(qtbot, paused_row, "completed")
    run = store.run_json(paused_id)
    assert run["id"] == paused_id and run["step"] == 60
    assert [m["step"] for m in store.metrics(paused_id)] == list(range(1, 61))
    assert f"Resuming from checkpoint-{pause_step}" in "\n".join(store.logs(paused_id))
    assert [a["reason"] for a in run["attempts"]][-1] == "completed"
    assert len(run["attempts"]) == 2 and paused_row.attempts.text() == "attempt 2"
    assert views.panel.section_of(paused_id) == "history"

    wait_state(qtbot, stopped_row, "completed")
    run = store.run_json(stopped_id)
    assert 2 <= run["step"] < 2000
    assert any(w.startswith("stopped early by the user at step") for w in run["warnings"])
    assert "stopped early by the user" in stopped_row.message.text()
    kinds = {a["kind"]: a for a in run["artifacts"]}
    adapter = Path(kinds["adapter_dir"]["path"])
    assert (adapter / "adapter_model.safetensors").is_file()
    assert Path(kinds["adapter_zip"]["path"]).is_relative_to(paths.library_dir())
    qtbot.waitUntil(lambda: not store.holds(), timeout=10_000)


def test_continue_and_export_from_the_panel(qtbot, live, data, monkeypatch):
    """A run trained by epochs, exporting nothing itself. Continue (asked "how many more
    epochs?", answered 1) makes a child run whose `parent` is the run, which starts from the
    parent's final checkpoint and completes. Export puts the parent's adapter ZIP into the
    library (it had none before the click)."""
    views, store = live
    spec = make_spec(data, "by epochs", max_steps=0, epochs=1.0)
    spec.export.adapter_zip = False
    [entry] = client.submit(store, [spec], [cpu_estimate(spec)])
    parent_id = entry["id"]
    row = row_of(qtbot, views, parent_id)
    wait_state(qtbot, row, "completed")
    parent = store.run_json(parent_id)
    final = parent["step"]
    assert final == parent["max_steps"] and has_checkpoint(parent["run_dir"])
    assert [a["kind"] for a in parent["artifacts"]] == ["adapter_dir"]  # nothing exported yet

    # Continue: only the epochs question's answer is patched; ask_epochs itself runs
    asked = []

    def answer(_parent, title, label, *args):
        asked.append((title, label))
        return 1.0, True

    monkeypatch.setattr(QtWidgets.QInputDialog, "getDouble", staticmethod(answer))
    assert row.buttons["Continue"].isVisibleTo(row)
    child_entry = click_and_wait(qtbot, views, row.buttons["Continue"], "continue", parent_id)
    assert asked == [("Continue run", "Train “by epochs” for how many more epochs?")]
    assert child_entry["parent"] == parent_id and child_entry["state"] == "queued"
    child_row = row_of(qtbot, views, child_entry["id"])

    # Export the parent while the child trains
    assert row.buttons["Export"].isVisibleTo(row)
    row.buttons["Export"].click()  # the Export dialog, preset from the run's Export node
    dialog = views.panel.export_dialog
    assert not dialog.adapter_zip.isChecked()
    dialog.adapter_zip.setChecked(True)
    click_and_wait(qtbot, views, dialog.export_button, "export", parent_id, timeout=RUN_MS)
    assert row.message.text() == "Exported Adapter ZIP to the Library."
    store.ingest(parent["run_dir"])
    zips = [a for a in store.artifacts(parent_id) if a["kind"] == "adapter_zip"]
    assert len(zips) == 1
    path = Path(zips[0]["path"])
    assert path.is_relative_to(paths.library_dir()) and (path.parent / "manifest.json").is_file()
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
    assert {"adapter_model.safetensors", "adapter_config.json"} <= names
    assert store.run_json(parent_id)["state"] == "completed"  # back where it was

    wait_state(qtbot, child_row, "completed")
    child = store.run_json(child_entry["id"])
    assert child["parent"] == parent_id and child["name"] == "by epochs (+1 ep)"
    assert child["step"] == child["max_steps"] > final
    assert store.metrics(child["id"])[0]["step"] == final + 1  # from the checkpoint, not step 0
    assert f"Resuming from checkpoint-{final}" in "\n".join(store.logs(child["id"]))
    assert store.run_json(parent_id)["parent"] is None
    qtbot.waitUntil(lambda: not store.holds(), timeout=10_000)


# -- the hardware view's suspend switch --------------------------------------------------------
def test_a_gpu_suspended_in_the_hardware_view_gets_no_new_run_until_resumed(
    qtbot, sup, data, monkeypatch
):
    """Two fake 24 GiB GPUs and a live supervisor. A first 15 GiB run goes to GPU 0. Ticking
    "Suspended" on GPU 1's card saves the choice in settings and tells the supervisor: a second
    15 GiB run, which only GPU 1 could take, then waits saying GPU 1 is suspended. Unticking it
    places the waiting run on GPU 1 at once."""
    from app.hardware_view import HardwareView

    monkeypatch.setenv("TUNEGRAPH_FAKE_GPUS", "24,24")
    store = sup
    view = HardwareView(interval_ms=200)  # the real sender: commands go to the supervisor
    qtbot.addWidget(view)
    try:
        qtbot.waitUntil(lambda: sorted(view.cards) == [0, 1], timeout=10_000)
        first = make_spec(data, "first", device="auto", max_steps=2000)
        [a] = client.submit(store, [first], [GPU_RUN])
        qtbot.waitUntil(lambda: gpu_of_holds(store) == {a["id"]: "0"}, timeout=10_000)
        qtbot.waitUntil(lambda: "first (15.0 GiB)" in view.cards[0].holders.text(), timeout=5000)

        with qtbot.waitSignal(view.command_sent, timeout=30_000) as sent:
            view.cards[1].suspend.setChecked(True)
        assert sent.args == ["suspend_gpu", 1]
        assert settings_mod.load().suspended_gpus == [1]
        assert "GPU 1 suspended" in view.status.text()

        second = make_spec(data, "second", device="auto", max_steps=2000)
        [b] = client.submit(store, [second], [GPU_RUN])  # taken after the suspend command
        # the supervisor answers a submission before it places runs in the same tick; its
        # answer to one more command (the suspension again: no change) comes from a later tick
        assert client.send(store, "suspend_gpu", gpu=1) == {"ok": True}
        run = store.run_json(b["id"])
        assert b["state"] == run["state"] == "queued"
        assert "GPU 1 is suspended" in run["reason"] and "needs 15.0 GiB" in run["reason"]
        assert gpu_of_holds(store) == {a["id"]: "0"}
        assert store.events(b["id"], kinds="schedule") == []

        with qtbot.waitSignal(view.command_sent, timeout=30_000) as sent:
            view.cards[1].suspend.setChecked(False)
        assert sent.args == ["unsuspend_gpu", 1] and settings_mod.load().suspended_gpus == []
        qtbot.waitUntil(lambda: gpu_of_holds(store) == {a["id"]: "0", b["id"]: "1"}, timeout=10_000)
        # the hold is written a moment before the placement's event
        qtbot.waitUntil(lambda: bool(store.events(b["id"], kinds="schedule")), timeout=10_000)
        [placed] = store.events(b["id"], kinds="schedule")
        assert "placed on GPU 1 with hold 15.0 GiB" in placed["message"]
        qtbot.waitUntil(lambda: "second (15.0 GiB)" in view.cards[1].holders.text(), timeout=5000)
        for run_id in (a["id"], b["id"]):
            client.control(store, "cancel", run_id)
        qtbot.waitUntil(lambda: not store.holds(), timeout=20_000)
    finally:
        view.shutdown()
