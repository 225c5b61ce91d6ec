"""Adds the run views to a main window: the run panel dock and a "Run views" dock of tabs (all
runs, run details, comparisons, leaderboards, sweeps), fed by one `RunBridge`.

    views = install_run_views(window)        # after the window built its docks
    ...
    views.shutdown()                          # in the window's shutdown / closeEvent

If the window already has a dock named "runs" (a placeholder), the panel replaces its widget.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6 import QtCore, QtWidgets

from app.run_bridge import RunBridge
from app.run_panel import RunPanel
from app.runs_tab import RunsTab

if TYPE_CHECKING:  # the chart views (pyqtgraph: ~1 s of imports) load when first opened
    from app.compare_view import CompareView
    from app.leaderboard import Leaderboard
    from app.run_detail import RunDetail
    from app.sweep_view import SweepView


def gui_garbage_collector(parent: QtCore.QObject, interval_ms: int = 1000) -> QtCore.QTimer:
    """Disable automatic gc and collect on a GUI-thread timer instead, generation by generation
    when its count passes the usual threshold (pyqtgraph's GarbageCollector does the same, but
    importing it loads all of pyqtgraph at start-up)."""
    thresholds = gc.get_threshold()
    gc.disable()

    def collect() -> None:
        counts = gc.get_count()
        for generation in (2, 1, 0):
            if counts[generation] > thresholds[generation]:
                gc.collect(generation)
                return

    timer = QtCore.QTimer(parent)
    timer.timeout.connect(collect)
    timer.start(interval_ms)
    return timer


class RunViews(QtCore.QObject):
    """The run panel, the runs tab and any opened detail / compare tabs of one window.
    `promoteRequested` carries a sweep's best trial to turn into a Fine-Tune node on the canvas
    (app.sweep_view; the window, which owns the canvas, makes it)."""

    promoteRequested = QtCore.Signal(object)  # noqa: N815

    def __init__(
        self,
        window: QtWidgets.QMainWindow,
        store_path: Path | str | None = None,
        start: bool = True,
        gui_gc: bool = True,
    ):
        super().__init__(window)
        self.window = window
        self.gc: QtCore.QTimer | None = None
        if gui_gc:  # gc in the bridge's threads could free Qt objects there (NOTES.md)
            self.gc = gui_garbage_collector(self)
        self.bridge = RunBridge(store_path, parent=self)
        self.panel = RunPanel(self.bridge, detail_factory=self._inline_detail)
        self.runs_tab = RunsTab(self.bridge)
        self.tabs = QtWidgets.QTabWidget()
        self.tabs.setTabsClosable(True)
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.runs_tab, "All runs")
        self.tabs.tabBar().setTabButton(0, QtWidgets.QTabBar.ButtonPosition.RightSide, None)
        self.tabs.tabCloseRequested.connect(self.close_tab)
        area = QtCore.Qt.DockWidgetArea.BottomDockWidgetArea
        self.panel_dock = window.findChild(QtWidgets.QDockWidget, "runs")
        if self.panel_dock is None:
            self.panel_dock = QtWidgets.QDockWidget("Runs", window)
            self.panel_dock.setObjectName("runs")
            window.addDockWidget(area, self.panel_dock)
        old = self.panel_dock.widget()
        self.panel_dock.setWidget(self.panel)
        if old is not None:  # kept (hidden), not deleted: the window may still hold references
            old.setParent(self.panel)
            old.hide()
        self.views_dock = QtWidgets.QDockWidget("Run views", window)
        self.views_dock.setObjectName("run_views")
        self.views_dock.setWidget(self.tabs)
        window.addDockWidget(area, self.views_dock)
        window.tabifyDockWidget(self.panel_dock, self.views_dock)
        self.panel_dock.raise_()
        self.panel.openRequested.connect(self.open_run)
        self.runs_tab.openRequested.connect(self.open_run)
        self.runs_tab.compareRequested.connect(self.open_compare)
        self.runs_tab.leaderboardRequested.connect(self.open_leaderboard)
        self.runs_tab.sweepRequested.connect(self.open_sweep)
        self._stopped = False
        app = QtWidgets.QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)
        if start:
            self.bridge.start()

    def _inline_detail(self, run_id: str) -> RunDetail:
        from app.run_detail import RunDetail

        detail = RunDetail(self.bridge, run_id)
        detail.openRequested.connect(self.open_run)  # a chain link: the other stage's tab
        return detail

    def open_run(self, run_id: str) -> RunDetail:
        """Show a run's detail in a tab (the existing one if it is open)."""
        from app.run_detail import RunDetail

        for i in range(self.tabs.count()):
            w = self.tabs.widget(i)
            if isinstance(w, RunDetail) and w.run_id == run_id:
                self.tabs.setCurrentIndex(i)
                return w
        detail = RunDetail(self.bridge, run_id)
        detail.openRequested.connect(self.open_run)  # a chain link: the other stage's tab
        name = (self.bridge.runs.get(run_id) or {}).get("name") or run_id
        self.tabs.setCurrentIndex(self.tabs.addTab(detail, name))
        self.views_dock.show()
        self.views_dock.raise_()
        return detail

    def open_compare(self, run_ids: list[str]) -> CompareView | None:
        if len(run_ids) < 2:
            return None
        from app.compare_view import CompareView

        view = CompareView(self.bridge, run_ids)
        self.tabs.setCurrentIndex(self.tabs.addTab(view, f"Compare ({len(run_ids)})"))
        self.views_dock.show()
        self.views_dock.raise_()
        return view

    def open_leaderboard(self, run_ids: list[str]) -> Leaderboard | None:
        """Rank the runs in a tab; its "Open in chat" asks the run panel's chat for each run."""
        if len(run_ids) < 2:
            return None
        from app.leaderboard import Leaderboard

        view = Leaderboard(self.bridge, run_ids)
        view.chatRequested.connect(self._chat_runs)
        view.sweepRequested.connect(self.open_sweep)
        self.tabs.setCurrentIndex(self.tabs.addTab(view, f"Leaderboard ({len(run_ids)})"))
        self.views_dock.show()
        self.views_dock.raise_()
        return view

    def open_sweep(self, study: str) -> SweepView:
        """Show a sweep's trials, best and plots in a tab (the existing one if it is open)."""
        from app.sweep_view import SweepView

        for i in range(self.tabs.count()):
            w = self.tabs.widget(i)
            if isinstance(w, SweepView) and w.study == study:
                self.tabs.setCurrentIndex(i)
                return w
        view = SweepView(self.bridge, study)
        view.openRequested.connect(self.open_run)
        view.exportRequested.connect(self.panel.open_export)
        view.promoteRequested.connect(self.promoteRequested)
        self.tabs.setCurrentIndex(self.tabs.addTab(view, f"Sweep {study}"))
        self.views_dock.show()
        self.views_dock.raise_()
        return view

    def _chat_runs(self, run_ids: list) -> None:
        for run_id in run_ids:  # each GGUF becomes a column of the chat pane
            self.panel.chatRequested.emit(run_id)

    def close_tab(self, index: int) -> None:
        w = self.tabs.widget(index)
        if w is self.runs_tab:
            return
        self._close_widget(w)
        self.tabs.removeTab(index)
        w.deleteLater()

    @staticmethod
    def _close_widget(w: QtWidgets.QWidget) -> None:
        for close in ("close_detail", "close_view"):  # RunDetail; the other views
            if hasattr(w, close):
                getattr(w, close)()

    def shutdown(self) -> None:
        """Stop timers, the bridge's threads and export children; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        if self.gc is not None:
            self.gc.stop()
        self.panel.close_panel()
        for i in range(self.tabs.count()):
            self._close_widget(self.tabs.widget(i))
        self.bridge.stop()


def install_run_views(
    window: QtWidgets.QMainWindow,
    store_path: Path | str | None = None,
    start: bool = True,
    gui_gc: bool = True,
) -> RunViews:
    """Add the run panel and the run-views dock to `window`; returns the object that owns them
    (keep it, and call its `shutdown()` when the window closes). With `gui_gc`, automatic
    garbage collection is disabled and done on a GUI-thread timer instead (pyqtgraph's
    GarbageCollector), so no collection runs in the bridge's threads."""
    views = RunViews(window, store_path, start=start, gui_gc=gui_gc)
    window.run_views = views  # keeps it alive with the window
    return views
