"""Sessions survive (issue 20): every edit is autosaved to the data directory, so the last graph
comes back after a quit or a crash (an Untitled one too, a saved one from its own file with its
unsaved edits on top); the quit prompt says how many runs keep training; a second start on the
same data directory hands its graph to the first window and exits, another data directory gets
a window of its own."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6 import QtCore, QtWidgets  # noqa: E402

from app.main_window import MainWindow  # noqa: E402
from app.session import SESSION_FILE, Draft, read_draft, write_draft  # noqa: E402
from app.settings_store import SettingsStore  # noqa: E402
from app.single_instance import SingleInstance, server_name  # noqa: E402
from engine.store.index import Store  # noqa: E402
from tests.app_helpers import gc_on_the_gui_thread  # noqa: E402, F401
from tests.synthetic_runs import training_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "resources" / "examples" / "sweep.json"


def open_window(qtbot, folder: Path) -> MainWindow:
    """A main window whose settings and session live in `folder`, started as the app does."""
    win = MainWindow(settings=SettingsStore(folder / "ui.ini"))
    win.ask_quit = lambda dirty, live: "quit"  # a failed test's teardown must not wait on a box
    qtbot.addWidget(win)
    win.open_initial()
    return win


def wait_autosave(qtbot, win: MainWindow) -> dict:
    """Wait for the debounced autosave; returns the session file's content."""
    with qtbot.waitSignal(win.autosave.written, timeout=5000):
        pass
    return json.loads(win.autosave.file.read_text(encoding="utf-8"))


def crash(win: MainWindow, into: Path) -> None:
    """What a crash leaves for the next start: the data directory's files as they are now (the
    window is then torn down without writing anything more)."""
    into.mkdir()
    shutil.copy(win.autosave.file, into / SESSION_FILE)
    win.autosave.active = False  # nothing after the "crash" reaches the disk
    win.autosave.timer.stop()
    win.shutdown()


def names(win: MainWindow) -> set[str]:
    return {n.name() for n in win.canvas.nodes()}


# -- autosave and reopen -------------------------------------------------------------------------
def test_an_unsaved_untitled_graph_comes_back_after_a_crash(qtbot, tmp_path):
    win = open_window(qtbot, tmp_path / "a")
    win.new_file()
    model = win.canvas.add_node("BaseModel", name="my model")
    data = win.canvas.add_node("Dataset", name="my data")
    win.canvas.set_param(data, "path", "chats.jsonl")
    saved = wait_autosave(qtbot, win)
    assert saved["dirty"] is True and saved["path"] is None
    assert model.name() in json.dumps(saved["graph"])
    crash(win, tmp_path / "b")

    again = open_window(qtbot, tmp_path / "b")
    assert names(again) == {"my model", "my data"}
    assert again.canvas.node_by_name("my data").get_property("path") == "chats.jsonl"
    assert again.canvas.path is None and again.canvas.dirty
    assert again.windowTitle() == "Untitled • (unsaved changes restored) — Tunegraph"
    again.shutdown()


def test_a_saved_graph_reopens_from_its_file_with_the_unsaved_edits_on_top(qtbot, tmp_path):
    win = open_window(qtbot, tmp_path / "a")  # first start: the example
    assert win.canvas.is_template
    graph = tmp_path / "support.tunegraph.json"
    assert win.save_as(graph)
    train = win.canvas.node_by_name("train lr 1e-3")
    win.canvas.set_param(train, "learning_rate", 0.004)
    saved = wait_autosave(qtbot, win)
    assert saved["dirty"] and saved["path"] == str(graph.resolve())
    crash(win, tmp_path / "b")

    again = open_window(qtbot, tmp_path / "b")
    assert again.canvas.path == graph.resolve() and not again.canvas.is_template
    edited = again.canvas.node_by_name("train lr 1e-3")
    assert edited.get_property("learning_rate") == pytest.approx(0.004)
    on_disk = json.loads(graph.read_text())
    assert "0.004" not in json.dumps(on_disk)  # the file still holds what was saved
    assert again.windowTitle() == (
        "support.tunegraph.json • (unsaved changes restored) — Tunegraph"
    )
    assert "Restored the unsaved changes" in again.statusBar().currentMessage()
    assert again.save()  # to its own file: the title no longer says "restored"
    assert again.windowTitle() == "support.tunegraph.json — Tunegraph"
    assert "0.004" in graph.read_text()
    again.shutdown()


def test_a_clean_graph_reopens_from_its_own_file_after_a_quit(qtbot, tmp_path):
    folder = tmp_path / "data"
    win = open_window(qtbot, folder)
    graph = tmp_path / "g.tunegraph.json"
    assert win.save_as(graph)
    win.close()  # nothing unsaved, no runs: no question
    assert not win.isVisible() and read_draft(folder / SESSION_FILE).dirty is False
    changed = json.loads(graph.read_text())  # edited elsewhere after the quit
    node = next(n for n in changed["nodes"].values() if n["name"] == "train lr 5e-3")
    node["name"] = "renamed on disk"
    graph.write_text(json.dumps(changed))

    again = open_window(qtbot, folder)
    assert again.canvas.path == graph.resolve() and not again.canvas.dirty
    assert "renamed on disk" in names(again)  # read from the file, not from the autosave
    assert again.windowTitle() == "g.tunegraph.json — Tunegraph"
    again.shutdown()


def test_quit_keeps_the_unsaved_changes_for_the_next_start(qtbot, tmp_path):
    folder = tmp_path / "data"
    win = open_window(qtbot, folder)
    win.show()
    win.canvas.add_node("Dataset", name="added before quitting")
    asked = []
    win.ask_quit = lambda dirty, live: asked.append((dirty, live)) or "cancel"
    win.close()
    assert win.isVisible() and asked == [(True, 0)]  # Cancel: still open
    win.ask_quit = lambda dirty, live: "quit"
    win.close()  # the pending autosave is written on the way out
    assert not win.isVisible()

    again = open_window(qtbot, folder)
    assert "added before quitting" in names(again) and again.canvas.is_template
    assert again.windowTitle() == "sweep.json (example) • (unsaved changes restored) — Tunegraph"
    again.shutdown()


def test_the_session_file_is_replaced_whole_or_not_at_all(tmp_path):
    """Written atomically: no temporary file left, an unreadable file is ignored at start."""
    file = tmp_path / SESSION_FILE
    write_draft(file, Draft({"tunegraph": {"format_version": 1}}, None, False, True, 1.0))
    assert [p.name for p in tmp_path.iterdir()] == [SESSION_FILE]
    assert read_draft(file).dirty
    file.write_text('{"version": 1, "graph": {"tunegraph"')  # cut short by hand
    assert read_draft(file) is None


# -- the quit prompt -----------------------------------------------------------------------------
def test_the_quit_prompt_says_how_many_runs_keep_training(qtbot, tmp_path):
    with Store() as store:
        runs = [
            training_run(store, "a", 10, 100),
            training_run(store, "b", 0, 100, state="queued"),
            training_run(store, "done", 100, 100, state="completed"),
        ]
    win = open_window(qtbot, tmp_path / "data")
    del win.ask_quit  # the real prompt
    win.show()
    seen = []

    def answer_the_prompt():
        box = QtWidgets.QApplication.activeModalWidget()
        seen.append((box.windowTitle(), box.text(), [b.text() for b in box.buttons()]))
        box.button(QtWidgets.QMessageBox.StandardButton.Cancel).click()

    QtCore.QTimer.singleShot(0, answer_the_prompt)
    win.close()  # the graph is unchanged: only the runs make it ask
    assert win.isVisible()
    title, text, buttons = seen[0]
    assert title == "Quit Tunegraph"
    assert "2 runs keep training in the background" in text and "unsaved" not in text
    assert sorted(buttons) == ["Cancel", "Quit"]
    win.shutdown()
    for run in runs:
        run.close()


# -- one window per data directory -------------------------------------------------------------
def test_a_second_start_on_the_same_data_directory_hands_over_and_is_refused(qtbot, tmp_path):
    first = SingleInstance(tmp_path / "data")
    assert first.claim([])
    second = SingleInstance(tmp_path / "data")
    with qtbot.waitSignal(first.message_received, timeout=5000) as message:
        assert not second.claim(["/graphs/support.tunegraph.json"])
    assert message.args == [["/graphs/support.tunegraph.json"]]
    other = SingleInstance(tmp_path / "other data")  # another data directory: its own window
    assert other.name != first.name and other.claim([])
    for instance in (first, second, other):
        instance.close()


@pytest.mark.skipif(sys.platform == "win32", reason="named pipes leave no file behind")
def test_a_name_left_by_a_crashed_window_is_taken_over(tmp_path):
    name = server_name(tmp_path / "data")
    stale = Path(QtCore.QDir.tempPath()) / name
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(stale))  # bound, never listening, never removed: what a crash leaves
    dead.close()
    assert stale.exists()
    instance = SingleInstance(tmp_path / "data")
    assert instance.claim([])
    assert SingleInstance(tmp_path / "data").forward(["ping"])  # it answers on that name now
    instance.close()


def test_a_second_process_brings_the_first_window_forward_with_its_graph(qtbot, tmp_path, tg_home):
    """`tunegraph GRAPH` while a window is open on the same data directory: the process exits 0
    and the open window shows GRAPH."""
    win = open_window(qtbot, tmp_path / "data")
    win.show()
    first = SingleInstance(tg_home)
    assert first.claim([])
    first.message_received.connect(win.on_second_start)
    graph = tmp_path / "asked.tunegraph.json"
    shutil.copy(EXAMPLE, graph)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "TUNEGRAPH_HOME": str(tg_home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", str(graph)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        qtbot.waitUntil(lambda: win.canvas.path == graph.resolve(), timeout=60_000)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert f"Tunegraph is already open on {tg_home}" in out
    assert win.windowTitle() == "asked.tunegraph.json — Tunegraph"
    first.close()
    win.shutdown()
