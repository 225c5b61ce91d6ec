"""Run rows a person can scan (issue 20): columns that line up, an order that keeps still under
the pointer ("N new" instead of rows jumping), queue places instead of stale ETAs, the start time
and short id, and the training time apart from the wall time.

Against a real store fed with synthetic event logs (the real codec, no worker), read by the real
bridge thread; the pointer is moved with QTest, so the lists get the Enter and Leave events a
real pointer gives them."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("pytestqt")
from PySide6 import QtCore, QtGui, QtWidgets  # noqa: E402

from app.run_row import RunRow  # noqa: E402
from app.run_views import install_run_views  # noqa: E402
from engine.store.timing import ordinal, queue_positions, training_clock  # noqa: E402
from tests.app_helpers import gc_on_the_gui_thread  # noqa: E402, F401
from tests.synthetic_runs import SyntheticRun, make_spec, training_run  # noqa: E402

WAIT_MS = 5000


@pytest.fixture
def views(qtbot, store):
    window = QtWidgets.QMainWindow()
    qtbot.addWidget(window)
    v = install_run_views(window, store.path)
    window.resize(1500, 800)
    QtGui.QCursor.setPos(0, 0)  # the pointer starts off the lists (windows open at 2, 2) …
    window.show()
    qtbot.waitExposed(window)
    yield v
    v.shutdown()
    QtGui.QCursor.setPos(0, 0)  # … and is left there: a later test's lists are not hovered


def wait_rows(qtbot, panel, ids):
    qtbot.waitUntil(lambda: all(i in panel.rows for i in ids), timeout=WAIT_MS)


def hover(qtbot, widget: QtWidgets.QWidget) -> None:
    qtbot.mouseMove(widget, QtCore.QPoint(20, 20))
    QtWidgets.QApplication.processEvents()


def queued_run(store, name: str, created_at: float, upstream: str = "", **data) -> SyntheticRun:
    spec = make_spec(name)
    spec.upstream = upstream  # a chained run starts from that run's result
    return SyntheticRun(store, spec, created_at=created_at).status("queued", **data)


# -- the order keeps still under the pointer -------------------------------------------------------
def test_history_keeps_its_order_while_hovered_and_new_finishers_wait_on_a_bar(qtbot, views, store):
    panel = views.panel
    old = training_run(store, "old", 10, 10, state="completed")
    done = training_run(store, "done", 10, 10, state="completed")
    first = training_run(store, "first", 3, 10)
    second = training_run(store, "second", 3, 10)
    wait_rows(qtbot, panel, [old.id, done.id, first.id, second.id])
    assert panel.ids("history") == [done.id, old.id]
    assert panel.ids("active") == [second.id, first.id]

    hover(qtbot, panel.history.scroll.viewport())  # the pointer rests on History
    assert panel.history.hovered
    row_under_pointer = panel.rows[done.id].geometry()
    first.status("completed")  # newer than both: would land on top, under the pointer
    bar = panel.history.new_button
    qtbot.waitUntil(lambda: bar.isVisibleTo(panel), timeout=WAIT_MS)
    assert bar.text() == "1 new ↑"
    assert panel.ids("history") == [done.id, old.id]  # nothing moved
    assert panel.rows[done.id].geometry() == row_under_pointer
    assert panel.pending("history") == [first.id] and panel.section_of(first.id) is None
    assert panel.ids("active") == [second.id]  # it left Active, which is not hovered
    assert panel.history.header.text() == "History (3)"

    bar.click()  # "1 new": slides in now, although the pointer is still there
    assert panel.ids("history") == [first.id, done.id, old.id]
    assert not bar.isVisibleTo(panel) and panel.pending("history") == []

    second.status("completed")  # again while hovered; then the pointer leaves the list
    qtbot.waitUntil(lambda: panel.pending("history") == [second.id], timeout=WAIT_MS)
    assert panel.ids("history") == [first.id, done.id, old.id]
    hover(qtbot, panel.active.scroll.viewport())
    assert not panel.history.hovered
    assert panel.ids("history") == [second.id, first.id, done.id, old.id]
    assert not bar.isVisibleTo(panel)
    for r in (old, done, first, second):
        r.close()


def test_active_keeps_a_finished_row_in_place_while_hovered(qtbot, views, store):
    """A run finishing under the pointer stays in Active (its pill says completed) until the
    pointer leaves; a new submission meanwhile waits on Active's bar."""
    panel = views.panel
    a = training_run(store, "a", 3, 10)
    b = training_run(store, "b", 3, 10)
    wait_rows(qtbot, panel, [a.id, b.id])
    hover(qtbot, panel.active.scroll.viewport())
    a.status("completed")
    row = panel.rows[a.id]
    qtbot.waitUntil(lambda: row.pill.state == "completed", timeout=WAIT_MS)
    assert panel.ids("active") == [b.id, a.id] and panel.section_of(a.id) == "active"
    c = queued_run(store, "c", time.time())
    qtbot.waitUntil(lambda: panel.pending("active") == [c.id], timeout=WAIT_MS)
    assert panel.active.new_button.text() == "1 new ↑"
    assert panel.ids("active") == [b.id, a.id]
    hover(qtbot, panel.history.scroll.viewport())
    assert panel.ids("active") == [c.id, b.id] and panel.ids("history") == [a.id]
    for r in (a, b, c):
        r.close()


def test_runs_tab_sorts_new_runs_in_only_when_the_pointer_leaves(qtbot, views, store):
    tab = views.runs_tab
    views.tabs.setCurrentWidget(tab)
    views.views_dock.show()
    views.views_dock.raise_()
    a = training_run(store, "a", 3, 10, state="completed")
    b = training_run(store, "b", 3, 10, state="completed")
    qtbot.waitUntil(lambda: len(tab.items) == 2, timeout=WAIT_MS)
    assert tab.visible_ids() == [b.id, a.id]
    hover(qtbot, tab.tree.viewport())
    assert tab.hovered
    c = training_run(store, "c", 3, 10)
    qtbot.waitUntil(lambda: c.id in tab.items, timeout=WAIT_MS)
    assert tab.visible_ids() == [b.id, a.id, c.id]  # added at the bottom: nothing shifts
    assert tab.new_button.isVisibleTo(tab) and tab.new_button.text() == "1 new ↓"
    tab.new_button.click()
    assert tab.visible_ids() == [c.id, b.id, a.id] and not tab.new_button.isVisibleTo(tab)
    for r in (a, b, c):
        r.close()


# -- what a row says ---------------------------------------------------------------------------
def test_queued_rows_show_their_place_in_the_queue_and_no_eta(qtbot, views, store):
    panel = views.panel
    now = time.time()
    live = training_run(store, "live", 3, 10)
    retried = training_run(store, "retried", 5, 10)  # has an ETA from its first attempt
    retried.status("retrying", reason="interrupted: the worker exited with code -9")
    retried.status("queued", reason="retrying")
    second = queued_run(store, "second", now + 1)
    third = queued_run(store, "third", now + 2)
    waiting = f"waiting for live ({live.id}) to complete"
    chained = queued_run(store, "chained", now + 3, upstream=live.id, reason=waiting)
    ids = [live.id, retried.id, second.id, third.id, chained.id]
    wait_rows(qtbot, panel, ids)
    rows = panel.rows
    assert rows[live.id].eta.text().startswith("ETA ")
    assert rows[retried.id].run["eta_s"] is not None  # the store still has the stale one
    assert rows[retried.id].eta.text() == "next in queue"
    assert rows[second.id].eta.text() == "2nd in queue"
    assert rows[third.id].eta.text() == "3rd in queue"
    assert rows[chained.id].eta.text() == "waiting for live"
    assert rows[chained.id].eta.toolTip() == waiting
    assert "retrying" in rows[retried.id].eta.toolTip()
    retried.status("starting").status("training", device="cpu")  # the queue moves up
    qtbot.waitUntil(lambda: rows[second.id].eta.text() == "next in queue", timeout=WAIT_MS)
    assert rows[third.id].eta.text() == "2nd in queue"
    assert rows[retried.id].eta.text().startswith("ETA ")
    live.status("completed")  # the chained run now waits for a place like the others
    qtbot.waitUntil(lambda: rows[chained.id].eta.text() == "3rd in queue", timeout=WAIT_MS)
    for r in (live, retried, second, third, chained):
        r.close()


def test_start_time_and_short_id_tell_two_runs_of_one_name_apart(qtbot, views, store):
    panel = views.panel
    a = training_run(store, "support", 3, 10, state="completed")
    b = training_run(store, "support", 3, 10)
    wait_rows(qtbot, panel, [a.id, b.id])
    texts = {rid: panel.rows[rid].started.text() for rid in (a.id, b.id)}
    for rid, text in texts.items():
        clock = time.strftime("%H:%M", time.localtime(panel.rows[rid].run["started_at"]))
        assert text == f"started {clock} · {rid[-6:]}"
        assert rid in panel.rows[rid].started.toolTip()
    assert texts[a.id] != texts[b.id]
    q = queued_run(store, "support", time.time())
    wait_rows(qtbot, panel, [q.id])
    assert panel.rows[q.id].started.text().startswith("queued ")
    for r in (a, b, q):
        r.close()


def test_columns_line_up_across_rows_and_sections(qtbot, views, store):
    panel = views.panel
    long_name = "a much longer run name that would push the columns"
    runs = [
        training_run(store, "a", 3, 10),
        training_run(store, long_name, 3, 10),
        training_run(store, "done", 10, 10, state="completed"),
        training_run(store, "broken", 4, 10, state="failed"),
    ]
    runs[1].status("retrying", reason="interrupted").status("queued", reason="retrying")
    runs[1].status("starting").status("training", device="cpu")  # "attempt 2" shows
    wait_rows(qtbot, panel, [r.id for r in runs])
    qtbot.waitUntil(lambda: panel.rows[runs[1].id].attempts.text() == "attempt 2", timeout=WAIT_MS)
    QtWidgets.QApplication.processEvents()
    for column in ("name", "pill", "progress", "epoch", "loss", "eta", "elapsed", "gpu", "started"):
        xs = {
            getattr(row, column).mapTo(panel, QtCore.QPoint(0, 0)).x()
            for row in panel.rows.values()
        }
        assert len(xs) == 1, f"{column} starts at {sorted(xs)}"
    name = panel.rows[runs[1].id].name
    assert name.text().endswith("…") and name.toolTip().startswith(long_name)
    for r in runs:
        r.close()


def test_training_time_counts_only_starting_training_and_evaluating():
    statuses = [
        {"ts": 100.0, "state": "queued"},
        {"ts": 160.0, "state": "starting"},
        {"ts": 170.0, "state": "training"},
        {"ts": 230.0, "state": "paused"},  # 70 s of work
        {"ts": 900.0, "state": "queued"},
        {"ts": 950.0, "state": "starting"},
        {"ts": 955.0, "state": "training"},
        {"ts": 1000.0, "state": "evaluating"},
        {"ts": 1010.0, "state": "exporting"},  # + 60 s
        {"ts": 1300.0, "state": "completed"},
    ]
    assert training_clock(statuses) == {"training_s": 130.0, "training_since": None}
    assert training_clock(statuses[:7]) == {"training_s": 70.0, "training_since": 950.0}
    assert training_clock(statuses[:1]) == {"training_s": None, "training_since": None}
    runs = {
        "b": {"id": "b", "state": "queued", "created_at": 2.0},
        "a": {"id": "a", "state": "queued", "created_at": 1.0},
        "c": {"id": "c", "state": "queued", "created_at": 0.5, "upstream": "x"},
        "x": {"id": "x", "state": "training", "created_at": 0.1},
    }
    assert queue_positions(runs) == {"a": 1, "b": 2}
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st",
    ]  # fmt: skip


def test_the_row_shows_training_time_and_the_wall_time_in_its_tooltip(qtbot, views, store):
    """Through the bridge: a run paused for a while shows less training than wall time."""
    panel = views.panel
    run = training_run(store, "paused a while", 3, 10)
    run.status("paused")
    time.sleep(1.2)
    run.status("queued").status("starting").status("training", device="cpu")
    wait_rows(qtbot, panel, [run.id])
    row = panel.rows[run.id]
    qtbot.waitUntil(lambda: row.run.get("training_since") is not None, timeout=WAIT_MS)
    assert row.run["training_s"] is not None and row.run["training_s"] < 1.0
    row.tick(row.run["started_at"] + 10.0)
    assert row.elapsed.text().startswith("train ")
    assert "Wall time 10s" in row.elapsed.toolTip()
    trained = row.run["training_s"] + row.run["started_at"] + 10.0 - row.run["training_since"]
    assert trained < 9.0  # the pause is not training time
    alone = RunRow(
        {
            "id": "20261122-190102-3fa9c1",
            "name": "done",
            "state": "completed",
            "started_at": 1000.0,
            "finished_at": 1600.0,
            "training_s": 125.0,
            "training_since": None,
        }
    )
    qtbot.addWidget(alone)
    alone.tick(5000.0)
    assert alone.elapsed.text() == "train 2m 05s"
    assert "Wall time 10m 00s" in alone.elapsed.toolTip()
    run.close()
