"""`install_tools(window)`: the chat pane, library, hardware view and Settings on any QMainWindow.

The chat pane fills the window's `chat_dock` when it has one (the main window's placeholder),
else gets a dock of its own; Library and Hardware are docks tabified beside it. Tools menu:
Settings… and Open GGUF…. `Tools.open_run_in_chat(run_id)` is what the run panel's "Test in chat"
calls; `serve_run`/`serve_gguf` open a Serve window (app.serve_panel; the run panel's, the
library's and the chat pane's Serve) and `push_run`/`push_entry` a "Push to Hub…" dialog
(app.push_dialog), from the run panel and the library. Call `Tools.shutdown()` before the window
goes away (it is also hooked to aboutToQuit).
"""

from __future__ import annotations

from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from app.chat_pane import ChatColumn, ChatPane
from app.hardware_view import HardwareView, Sender
from app.library_tab import LibraryTab, library_entries
from app.settings_dialog import SettingsDialog
from engine import settings as settings_mod

Area = QtCore.Qt.DockWidgetArea


def gguf_of_run(run_id: str) -> Path | None:
    """The newest GGUF file exported from `run_id`, if any."""
    for entry in library_entries():  # newest first
        if entry.get("run_id") == run_id and entry.get("kind") == "gguf":
            path = Path(entry["file"])
            if path.is_file():
                return path
    return None


def apply_theme_setting(theme: str) -> None:
    """Dark (the app's theme) or Fusion's light palette."""
    app = QtWidgets.QApplication.instance()
    if app is None:
        return
    if theme == "dark":
        from app.theme import apply_theme

        apply_theme(app)
    else:
        app.setStyle("Fusion")
        app.setPalette(app.style().standardPalette())
        app.setStyleSheet("")


class Tools(QtCore.QObject):
    """What install_tools added; the handles the rest of the app uses."""

    def __init__(self, window: QtWidgets.QMainWindow, hardware_sender: Sender | None = None):
        super().__init__(window)
        self.window = window
        self.chat = ChatPane()
        self.library = LibraryTab()
        self.hardware = HardwareView(sender=hardware_sender)
        self.chat_dock = self._chat_dock()
        self.library_dock = self._dock("Library", self.library, "library")
        self.hardware_dock = self._dock("Hardware", self.hardware, "hardware")
        window.tabifyDockWidget(self.chat_dock, self.library_dock)
        window.tabifyDockWidget(self.library_dock, self.hardware_dock)
        self.library.table.itemDoubleClicked.connect(self._library_double_clicked)
        self.library.serveRequested.connect(self.serve_gguf)
        self.chat.serveRequested.connect(self.serve_gguf)
        self.library.pushRequested.connect(self.push_entry)
        run_views = getattr(window, "run_views", None)  # the main window's (app.run_views)
        if run_views is not None:  # new artifacts appear as the store learns of them
            self.library.follow(run_views.bridge)
        self.serving: list = []  # ServeDialogs, one per endpoint
        self.pushes: list = []  # PushDialogs

        self.settings_action = QtGui.QAction("Settings…", window)
        self.settings_action.setShortcut(QtGui.QKeySequence.StandardKey.Preferences)
        self.settings_action.setMenuRole(QtGui.QAction.MenuRole.PreferencesRole)
        self.settings_action.triggered.connect(self.show_settings)
        self.open_gguf_action = QtGui.QAction("Open GGUF…", window)
        self.open_gguf_action.setToolTip("Chat with any GGUF model file")
        self.open_gguf_action.triggered.connect(self.open_gguf)
        menu = self._menu("&Tools")
        menu.addAction(self.open_gguf_action)
        menu.addSeparator()
        menu.addAction(self.settings_action)
        view = self._menu("&View", create=False)
        if view is not None:
            for dock in (self.library_dock, self.hardware_dock):
                view.addAction(dock.toggleViewAction())
        self._closed = False
        app = QtWidgets.QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)

    # -- building -----------------------------------------------------------------------------
    def _chat_dock(self) -> QtWidgets.QDockWidget:
        dock = getattr(self.window, "chat_dock", None)
        if isinstance(dock, QtWidgets.QDockWidget):
            old = dock.widget()
            dock.setWidget(self.chat)
            if old is not None:
                old.deleteLater()
            return dock
        return self._dock("Chat", self.chat, "chat")

    def _dock(self, title: str, widget: QtWidgets.QWidget, name: str) -> QtWidgets.QDockWidget:
        dock = QtWidgets.QDockWidget(title, self.window)
        dock.setObjectName(name)
        dock.setWidget(widget)
        self.window.addDockWidget(Area.BottomDockWidgetArea, dock)
        return dock

    def _menu(self, title: str, create: bool = True) -> QtWidgets.QMenu | None:
        bar = self.window.menuBar()
        plain = title.replace("&", "")
        for action in bar.actions():
            if action.menu() is not None and action.text().replace("&", "") == plain:
                return action.menu()
        return bar.addMenu(title) if create else None

    # -- actions ------------------------------------------------------------------------------
    def open_run_in_chat(self, run_id: str) -> ChatColumn | None:
        """Load the GGUF exported from `run_id` in the chat pane (a message when it has none)."""
        self.chat_dock.show()
        self.chat_dock.raise_()
        path = gguf_of_run(run_id)
        if path is None:
            self.chat.status.setText(
                f"Run {run_id} has no GGUF export; export it with GGUF "
                "turned on, or open a GGUF file."
            )
            return None
        return self.chat.add_model(path)

    def open_gguf(self, path: str | Path | None = None) -> ChatColumn | None:
        self.chat_dock.show()
        self.chat_dock.raise_()
        if path is None:
            self.chat.open_gguf_dialog()
            return None
        return self.chat.add_model(path)

    # -- serve and push -------------------------------------------------------------------------
    def serve_gguf(self, path: str | Path):
        """Open a Serve window: an OpenAI-compatible endpoint for the GGUF at `path`."""
        from app.serve_panel import ServeDialog

        dialog = ServeDialog(path, self.window)
        self.serving.append(dialog)
        dialog.show()
        return dialog

    def serve_run(self, run_id: str):
        """Serve the run's GGUF export (a message when it has none)."""
        path = gguf_of_run(run_id)
        if path is None:
            QtWidgets.QMessageBox.information(
                self.window, "Serve", f"Run {run_id} has no GGUF export yet: export it first."
            )
            return None
        return self.serve_gguf(path)

    def _push(self, target: str, title: str, is_run: bool):
        from app.push_dialog import PushDialog

        dialog = PushDialog(target, title, is_run, self.window)
        self.pushes.append(dialog)
        dialog.show()
        return dialog

    def push_run(self, run_id: str):
        """ "Push to Hub…" for a run: its adapter, and the GGUF bundle when ticked."""
        from engine.store.library import run_name

        return self._push(run_id, run_name(run_id), True)

    def push_entry(self, entry: dict):
        """ "Push to Hub…" for one library artifact."""
        return self._push(str(entry["id"]), entry.get("run_name") or str(entry["id"]), False)

    def show_settings(self) -> SettingsDialog:
        dialog = SettingsDialog(self.window)
        dialog.saved.connect(self._on_settings_saved)
        dialog.open()
        return dialog

    @QtCore.Slot(object)
    def _on_settings_saved(self, new: settings_mod.Settings) -> None:
        apply_theme_setting(new.theme)
        self.hardware.refresh()

    def _library_double_clicked(self, _item: QtWidgets.QTableWidgetItem) -> None:
        entry = self.library.selected()
        if entry and entry.get("kind") == "gguf":
            self.open_gguf(entry["file"])

    def shutdown(self) -> None:
        """End chat processes and worker threads; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.chat.close_all()
        self.hardware.shutdown()
        self.library.shutdown()
        for dialog in self.serving:  # endpoints end with the app unless "keep serving"
            dialog.shutdown()
        for dialog in self.pushes:
            dialog.shutdown()


def install_tools(window: QtWidgets.QMainWindow, hardware_sender: Sender | None = None) -> Tools:
    """Add the chat pane, library, hardware view and the Tools menu to `window`."""
    return Tools(window, hardware_sender)
