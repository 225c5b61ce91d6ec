"""A layout that works (issue 20): the bottom docks open on Runs, Properties and Dataset preview
share the right column as tabs, a run's details get at least half the window's height, and the
docks and window geometry come back after a quit (a real window closed, a new one opened), with
View → Reset layout putting everything back."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6 import QtCore, QtWidgets  # noqa: E402

from app.main_window import MainWindow  # noqa: E402
from app.settings_store import SettingsStore  # noqa: E402
from app.window_layout import BOTTOM_TABS  # noqa: E402
from engine.store.index import Store  # noqa: E402
from tests.app_helpers import gc_on_the_gui_thread  # noqa: E402, F401
from tests.synthetic_runs import training_run  # noqa: E402

WAIT_MS = 5000


def open_window(qtbot, folder: Path, size: tuple[int, int] | None = None) -> MainWindow:
    win = MainWindow(settings=SettingsStore(folder / "ui.ini"))
    win.ask_quit = lambda dirty, live: "quit"
    qtbot.addWidget(win)
    if size is not None:
        win.resize(*size)
    win.show()
    win.open_initial()
    qtbot.waitExposed(win)
    qtbot.wait(50)  # the first layout pass (default dock sizes are applied once shown)
    return win


def in_front(dock: QtWidgets.QDockWidget) -> bool:
    """The dock is its tab group's current tab (the others have no visible area)."""
    return dock.isVisible() and not dock.visibleRegion().isEmpty()


def bottom_tab_order(win: MainWindow) -> list[str]:
    """The bottom tabs' titles as the tab bar shows them."""
    for bar in win.findChildren(QtWidgets.QTabBar):
        titles = [bar.tabText(i) for i in range(bar.count())]
        if bar.isVisible() and "Hardware" in titles:
            return titles
    return []


def fitting_size() -> tuple[int, int]:
    """A window size that fits the test screen (restoreGeometry clamps to the screen)."""
    free = QtWidgets.QApplication.primaryScreen().availableGeometry()
    return min(1200, int(free.width() * 0.8)), min(800, int(free.height() * 0.8))


def test_first_start_opens_on_runs_with_properties_in_front(qtbot, tmp_path):
    win = open_window(qtbot, tmp_path, size=(1600, 1000))
    assert bottom_tab_order(win) == ["Runs", "Run views", "Chat", "Library", "Hardware"]
    assert in_front(win.runs_dock)
    assert not in_front(win.tools.hardware_dock) and not in_front(win.chat_dock)
    assert win.tabifiedDockWidgets(win.properties_dock) == [win.preview_dock]
    assert in_front(win.properties_dock) and not in_front(win.preview_dock)
    # Properties has the whole right column, the canvas keeps most of the window
    assert win.properties_dock.height() >= 440  # it had 262 px beside the preview's 414
    canvas = win.canvas.widget
    assert canvas.width() > 0.5 * win.width() and canvas.height() > 0.5 * win.height()
    assert 0.25 * win.height() < win.runs_dock.height() < 0.45 * win.height()
    win.shutdown()


def test_docks_and_geometry_come_back_after_a_quit(qtbot, tmp_path):
    width, height = fitting_size()
    win = open_window(qtbot, tmp_path, size=(width, height))
    # the offscreen test screen (800 px) is narrower than the window can be, so restoreGeometry
    # pins a restored window to the left edge: start it there, vary the height and the top
    win.move(0, 40)
    win.set_dock_height(win.runs_dock, int(height * 0.45))
    win.tools.library_dock.raise_()
    win.preview_dock.raise_()
    win.palette_dock.hide()
    qtbot.wait(50)
    bottom = win.tools.library_dock.height()
    assert bottom >= int(height * 0.45)
    geometry = win.geometry()
    win.close()  # a real quit: nothing unsaved, no runs, so no question
    assert not win.isVisible()

    again = open_window(qtbot, tmp_path)
    assert again.geometry() == geometry
    assert in_front(again.tools.library_dock) and not in_front(again.runs_dock)
    assert in_front(again.preview_dock) and not again.palette_dock.isVisible()
    assert abs(again.tools.library_dock.height() - bottom) <= 4

    again.reset_layout_action.trigger()  # View → Reset layout
    qtbot.wait(50)
    assert in_front(again.runs_dock) and in_front(again.properties_dock)
    assert again.palette_dock.isVisible()
    assert bottom_tab_order(again) == ["Runs", "Run views", "Chat", "Library", "Hardware"]
    assert again.runs_dock.height() < bottom - 20
    again.shutdown()


def test_reset_layout_puts_back_docks_moved_floated_and_closed(qtbot, tmp_path):
    win = open_window(qtbot, tmp_path)  # sized after it is shown, as a user does
    win.resize(1600, 1000)
    tools, area = win.tools, QtCore.Qt.DockWidgetArea
    tools.hardware_dock.setFloating(True)
    win.addDockWidget(area.LeftDockWidgetArea, win.chat_dock)
    win.tabifyDockWidget(win.palette_dock, tools.library_dock)
    win.preview_dock.hide()
    win.findChild(QtWidgets.QToolBar, "main-toolbar").hide()
    qtbot.wait(50)

    win.reset_layout_action.trigger()
    qtbot.wait(50)
    expected = {
        "palette": area.LeftDockWidgetArea,
        "properties": area.RightDockWidgetArea,
        "preview": area.RightDockWidgetArea,
        **{name: area.BottomDockWidgetArea for name in BOTTOM_TABS},
    }
    for name, where in expected.items():
        dock = win.dock(name)
        assert dock.isVisible() and not dock.isFloating(), name
        assert win.dockWidgetArea(dock) == where, name
    assert bottom_tab_order(win) == ["Runs", "Run views", "Chat", "Library", "Hardware"]
    assert in_front(win.runs_dock) and in_front(win.properties_dock)
    assert win.findChild(QtWidgets.QToolBar, "main-toolbar").isVisible()
    win.shutdown()


def test_a_layout_saved_under_the_old_default_is_replaced(qtbot, tmp_path):
    """Windows saved before this default (Hardware in front, the preview splitting the right
    column) start with the new default once."""
    win = open_window(qtbot, tmp_path)
    win.tools.hardware_dock.raise_()
    win.shutdown()
    win.settings.save_window_layout(win.saveGeometry(), win.saveState())  # as before: version 0
    win.settings.sync()

    again = open_window(qtbot, tmp_path)
    assert in_front(again.runs_dock) and not in_front(again.tools.hardware_dock)
    again.shutdown()


def test_a_runs_details_get_half_the_window(qtbot, tmp_path):
    with Store() as store:
        done = training_run(store, "support lr 1e-3", 40, 40, state="completed")
        live = training_run(store, "support lr 5e-3", 10, 40)
    win = open_window(qtbot, tmp_path, size=(1600, 1000))
    panel = win.run_views.panel
    qtbot.waitUntil(lambda: done.id in panel.rows and live.id in panel.rows, timeout=WAIT_MS)
    assert win.runs_dock.height() < 0.45 * win.height()

    panel.rows[done.id].set_expanded(True)  # details inside the run panel, under History
    qtbot.waitUntil(lambda: win.runs_dock.height() >= 0.48 * win.height(), timeout=WAIT_MS)
    assert panel.history.height() >= 0.7 * panel.height()
    detail = panel.rows[done.id].detail
    assert detail is not None and detail.visibleRegion().boundingRect().height() >= (
        0.5 * win.runs_dock.height()
    )
    panel.rows[done.id].set_expanded(False)

    win.reset_layout()
    qtbot.wait(50)
    assert win.runs_dock.height() < 0.45 * win.height()
    views = win.run_views
    views.open_run(live.id)  # a double-click: the details in a Run views tab
    dock = views.views_dock
    qtbot.waitUntil(lambda: dock.height() >= 0.48 * win.height(), timeout=WAIT_MS)
    assert in_front(dock) and views.tabs.currentWidget().run_id == live.id
    win.shutdown()
    for run in (done, live):
        run.close()


@pytest.mark.parametrize("size", [(1600, 1000), (1920, 1080)])
def test_the_default_layout_fits_both_common_screens(qtbot, tmp_path, size):
    """Nothing is squeezed: the palette, Properties, the canvas and the run rows all get room."""
    win = open_window(qtbot, tmp_path, size=size)
    assert win.size() == QtCore.QSize(*size)
    assert 150 <= win.palette_dock.width() <= 260
    assert 380 <= win.properties_dock.width() <= 0.32 * size[0]
    assert win.canvas.widget.width() >= 0.5 * size[0]
    assert win.runs_dock.height() >= 280 and win.runs_dock.width() == size[0]
    win.shutdown()
