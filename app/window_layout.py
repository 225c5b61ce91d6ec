"""The main window's docks and their layout: building them, the default arrangement (View → Reset
layout), saving and restoring it with the window geometry, and room for a run's details when they
open.

Default: Nodes on the left; Properties and Dataset preview as tabs on the right (Properties in
front); the bottom tabs in the order Runs, Run views, Chat, Library, Hardware with Runs in front,
a third of the window high. A mixin of `MainWindow`, which provides `canvas`, `settings` and
`run_views`.
"""

from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets

from app.dataset_preview import DatasetPreview
from app.palette import Palette
from app.properties import PropertiesPanel

# the version passed to saveState/restoreState: a layout saved under another default is dropped
LAYOUT_VERSION = 2
BOTTOM_TABS = ("runs", "run_views", "chat", "library", "hardware")
RIGHT_TABS = ("properties", "preview")
LEFT_WIDTH = 190
RIGHT_SHARE = 0.27  # of the window width
BOTTOM_SHARE = 0.34  # of the window height
DETAILS_SHARE = 0.5  # the bottom docks' height, at least, while a run's details are open
DETAIL_SECTION_SHARE = 0.8  # of the run panel, for the section holding an expanded run

Area = QtCore.Qt.DockWidgetArea
Vertical = QtCore.Qt.Orientation.Vertical
Horizontal = QtCore.Qt.Orientation.Horizontal


def first_start_size(screen: QtGui.QScreen | None) -> QtCore.QSize:
    """1600×1000, or nine tenths of a smaller screen's free area."""
    if screen is None:
        return QtCore.QSize(1600, 1000)
    free = screen.availableGeometry()
    return QtCore.QSize(min(1600, int(free.width() * 0.9)), min(1000, int(free.height() * 0.9)))


class LayoutActions:
    """Layout commands of the main window."""

    def _dock(
        self, title: str, widget: QtWidgets.QWidget, area: Area, name: str
    ) -> QtWidgets.QDockWidget:
        dock = QtWidgets.QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def build_docks(self) -> None:
        """The window's own docks (run views and tools add theirs), in their default areas."""
        area = Area
        self.palette = Palette()
        self.palette_dock = self._dock("Nodes", self.palette, area.LeftDockWidgetArea, "palette")
        self.properties = PropertiesPanel(self.canvas)
        self.properties_dock = self._dock(
            "Properties", self.properties, area.RightDockWidgetArea, "properties"
        )
        self.preview = DatasetPreview(self.canvas)
        self.preview_dock = self._dock(
            "Dataset preview", self.preview, area.RightDockWidgetArea, "preview"
        )
        self.runs_panel = QtWidgets.QWidget()
        runs_layout = QtWidgets.QVBoxLayout(self.runs_panel)
        runs_label = QtWidgets.QLabel(
            "Runs appear here once you start them: select a Fine-Tune node and press Run (Ctrl+R)."
        )
        runs_label.setObjectName("placeholder")
        runs_label.setWordWrap(True)
        runs_layout.addWidget(runs_label)
        self.runs_dock = self._dock("Runs", self.runs_panel, area.BottomDockWidgetArea, "runs")
        chat_label = QtWidgets.QLabel("Chat with finished models appears here.")
        chat_label.setObjectName("placeholder")
        self.chat_dock = self._dock("Chat", chat_label, area.BottomDockWidgetArea, "chat")

    def _bottom_docks(self) -> list[QtWidgets.QDockWidget]:
        return [
            d for d in self.findChildren(QtWidgets.QDockWidget) if d.objectName() in BOTTOM_TABS
        ]

    def dock(self, name: str) -> QtWidgets.QDockWidget:
        """The dock with objectName `name`."""
        found = self.findChild(QtWidgets.QDockWidget, name)
        if found is None:
            raise KeyError(f"the window has no dock named {name!r}")
        return found

    def restore_layout(self) -> bool:
        """Window geometry and docks as they were at the last quit; False when nothing usable
        was saved (first start, or a layout from an older default)."""
        geometry, state = self.settings.window_layout()
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(first_start_size(self.screen()))
        return state is not None and self.restoreState(state, LAYOUT_VERSION)

    def save_layout(self) -> None:
        self.settings.save_window_layout(self.saveGeometry(), self.saveState(LAYOUT_VERSION))

    def arrange_default_docks(self) -> None:
        """Arrange the docks as they start (called once, before the window is shown) and keep
        that arrangement as a saved state: Reset layout restores it, which rebuilds every
        dock group at once whatever the user moved, floated or closed since."""
        groups = (
            ([self.dock("palette")], Area.LeftDockWidgetArea),
            ([self.dock(n) for n in RIGHT_TABS], Area.RightDockWidgetArea),
            ([self.dock(n) for n in BOTTOM_TABS], Area.BottomDockWidgetArea),
        )
        for docks, area in groups:
            for dock in docks:
                self.removeDockWidget(dock)
            self.addDockWidget(area, docks[0])
            for before, dock in zip(docks, docks[1:], strict=False):
                self.tabifyDockWidget(before, dock)
            for dock in docks:
                dock.show()
            docks[0].raise_()
        self.default_state = self.saveState(LAYOUT_VERSION)

    def reset_layout(self) -> None:
        """Put every dock and toolbar back where it starts (View → Reset layout)."""
        self.restoreState(self.default_state, LAYOUT_VERSION)
        for widget in self.findChildren(QtWidgets.QToolBar) + self.findChildren(
            QtWidgets.QDockWidget
        ):
            if widget.parent() is self:
                widget.show()
        for name in ("palette", RIGHT_TABS[0], BOTTOM_TABS[0]):
            self.dock(name).raise_()
        self.apply_default_sizes()

    def apply_default_sizes(self) -> None:
        """Dock sizes of the default layout, for the window's current size."""
        size = self.size()
        self.resizeDocks(
            [self.dock("palette"), self.dock(RIGHT_TABS[0])],
            [LEFT_WIDTH, int(size.width() * RIGHT_SHARE)],
            Horizontal,
        )
        self.set_dock_height(self.dock(BOTTOM_TABS[0]), int(size.height() * BOTTOM_SHARE))

    def set_dock_height(self, dock: QtWidgets.QDockWidget, height: int) -> None:
        """Make `dock` `height` pixels high: resizeDocks sizes the whole dock area, of which a tab
        group's tab bar takes its share, so ask again for the difference."""
        asked = height
        for _ in range(2):
            self.resizeDocks([dock], [asked], Vertical)
            self.layout().activate()
            if dock.height() >= height:
                return
            asked += height - dock.height()

    def watch_run_details(self) -> None:
        """Give a run's details room when they open: in a Run views tab, or expanded inside the
        run panel (its rows build their details through this wrapper of the panel's factory)."""
        views = self.run_views
        views.tabs.currentChanged.connect(self._on_run_view_tab)
        build = views.panel.detail_factory

        def detail_with_room(run_id: str) -> QtWidgets.QWidget:
            detail = build(run_id)
            QtCore.QTimer.singleShot(0, self, lambda: self.give_run_details_room(run_id))
            return detail

        views.panel.detail_factory = detail_with_room

    def _on_run_view_tab(self, index: int) -> None:
        if index > 0:  # a run's details, a comparison or a leaderboard (tab 0 is All runs)
            QtCore.QTimer.singleShot(0, self, self.give_run_details_room)  # once it is in front

    def give_run_details_room(self, run_id: str | None = None) -> None:
        """A run's details just opened: the bottom docks get at least half the window's height,
        and when they opened inside the run panel, its section holding that run gets most of
        the panel."""
        dock = next((d for d in self._bottom_docks() if _in_front(d)), self.dock(BOTTOM_TABS[0]))
        wanted = int(self.height() * DETAILS_SHARE)
        if not dock.isFloating() and dock.height() < wanted:
            self.set_dock_height(dock, wanted)
        panel = self.run_views.panel
        section = panel.section_of(run_id) if run_id else None
        if section is not None:
            total = sum(panel.split.sizes())
            big = int(total * DETAIL_SECTION_SHARE)
            sizes = [big, total - big] if section == "active" else [total - big, big]
            panel.split.setSizes(sizes)


def _in_front(dock: QtWidgets.QDockWidget) -> bool:
    """The dock shows (it is its tab group's current tab)."""
    return dock.isVisible() and not dock.visibleRegion().isEmpty()
