"""Helpers for the Qt tests (imported only by modules that already skip without pytest-qt)."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from app.main_window import MainWindow
from app.settings_store import SettingsStore


def main_window_session(qtbot, folder: Path):
    """Fixture body: a main window whose Run records what it would submit (`win.submitted`)
    instead of starting runs, closed and shut down afterwards."""
    submitted = []

    def fake_submit(specs, estimates):
        submitted.append((specs, estimates))
        return [{"id": f"run-{i}", "name": s.name, "state": "queued"} for i, s in enumerate(specs)]

    win = MainWindow(settings=SettingsStore(folder / "ui.ini"), submit=fake_submit)
    win.submitted = submitted
    win.ask_unsaved = lambda: "discard"
    win.ask_quit = lambda dirty, live: "quit"  # qtbot closes the window before shutdown()
    qtbot.addWidget(win)
    yield win
    win.shutdown()


def live_main_window_session(qtbot, folder: Path, monkeypatch, home: Path, cpu_slots: int = 1):
    """Fixture body: a main window whose Run submits to a REAL supervisor (started on demand by
    the client, with a short idle timeout and `cpu_slots` CPU slots), closed afterwards and the
    supervisor and any worker of `home` stopped (tests.helpers.supervisor_session does the same
    for engine tests)."""
    from tests.helpers import stop_everything

    monkeypatch.setenv("TUNEGRAPH_SUPERVISOR_IDLE", "5")
    monkeypatch.setenv("TUNEGRAPH_CPU_SLOTS", str(cpu_slots))
    win = MainWindow(settings=SettingsStore(folder / "ui.ini"))
    win.ask_unsaved = lambda: "discard"
    win.ask_quit = lambda dirty, live: "quit"
    qtbot.addWidget(win)
    try:
        yield win
    finally:
        win.shutdown()
        stop_everything(home)


@pytest.fixture(autouse=True)
def gc_on_the_gui_thread():
    """Collect only between tests, on the GUI thread: gc running in a worker thread can free Qt
    objects there and crash (shared/NOTES.md, "Threads"). Autouse in every module importing it."""
    gc.disable()
    yield
    gc.enable()
    gc.collect()
