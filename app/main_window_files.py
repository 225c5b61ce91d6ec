"""The main window's file handling: New / Open / Save / Save As, recent files, the example
graph on first start, the last session's graph on later starts (app.session), the title, and the
unsaved-changes and quit prompts. A mixin of `MainWindow`, which provides `canvas`, `settings`,
`autosave`, `restored_draft`, `statusBar()` and `fit_view()`."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6 import QtCore, QtWidgets

from app.canvas import GRAPH_SUFFIX
from app.session import Draft, quit_message, read_draft
from engine.errors import TunegraphError

EXAMPLE_GRAPH = Path(__file__).resolve().parents[1] / "resources" / "examples" / "sweep.json"
FILE_FILTER = f"Tunegraph graphs (*{GRAPH_SUFFIX} *.json);;All files (*)"


class FileActions:
    """Graph-file commands of the main window."""

    def graph_name(self) -> str:
        path = self.canvas.path
        name = path.name if path else "Untitled"
        return name + (" (example)" if self.canvas.is_template else "")

    def _update_title(self, *_args) -> None:
        dirty = " •" if self.canvas.dirty else ""
        restored = " (unsaved changes restored)" if self.restored_draft and dirty else ""
        self.setWindowTitle(f"{self.graph_name()}{dirty}{restored} — Tunegraph")

    def _on_dirty_changed(self, dirty: bool) -> None:
        if not dirty:  # saved (or a graph loaded): the restored changes are in a file now
            self.restored_draft = False
        self._update_title()

    def _on_path_changed(self, _path) -> None:
        self.restored_draft = False
        self._update_title()

    def open_initial(self, path: str | Path | None = None) -> None:
        """What to show at start: the last session's graph (with its unsaved changes), then
        `path` if given; else the example on first start, else the most recent file. From here
        on every edit is autosaved."""
        draft = read_draft(self.autosave.file)
        if path:
            same = draft is not None and draft.path == Path(path).resolve()
            if draft is not None and draft.dirty:
                self.restore_draft(draft)  # Open then asks whether to save those changes
            if not (same and draft.dirty):
                self.open_file(path)
        elif draft is not None:
            self.restore_draft(draft)
        elif self.settings.first_start and EXAMPLE_GRAPH.exists():
            self.open_file(EXAMPLE_GRAPH, template=True)
        else:
            recent = [f for f in self.settings.recent_files() if Path(f).exists()]
            if recent:
                self.open_file(recent[0])
            else:
                self.canvas.new_graph()
        self.settings.mark_started()
        self.autosave.start()
        QtCore.QTimer.singleShot(0, self.fit_view)

    def on_second_start(self, argv: list) -> None:
        """Another `tunegraph` started on this data directory (app.single_instance): come
        forward and open the graph it was given."""
        if self.isMinimized():
            self.showNormal()
        self.show()
        self.raise_()
        self.activateWindow()
        QtWidgets.QApplication.alert(self)
        if argv:
            self.open_file(argv[0])

    def restore_draft(self, draft: Draft) -> None:
        """Show the last session's graph: from its own file when it had no unsaved changes,
        else the autosaved graph under that file's name, marked unsaved."""
        if not draft.dirty and draft.path is not None and draft.path.is_file():
            self.open_file(draft.path, template=draft.template)
            return
        try:
            self.canvas.load_dict(draft.graph, draft.path, template=draft.template)
        except TunegraphError as err:
            self.canvas.new_graph()
            self.statusBar().showMessage(f"The last session could not be restored: {err}", 10000)
            return
        if draft.dirty or draft.path is not None:  # the file does not hold this graph (any more)
            self.restored_draft = True
            self.canvas.graph.undo_stack().resetClean()  # unsaved, with nothing to undo
            when = time.strftime("%H:%M", time.localtime(draft.saved_at))
            self.statusBar().showMessage(
                f"Restored the unsaved changes to {self.graph_name()} from the last session "
                f"(autosaved at {when}).",
                10000,
            )

    def new_file(self) -> None:
        if self.maybe_save():
            self.canvas.new_graph()

    def open_file(self, path: str | Path | None = None, template: bool = False) -> bool:
        if not self.maybe_save():
            return False
        if path is None:
            start = str(self.canvas.path.parent) if self.canvas.path else ""
            path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open graph", start, FILE_FILTER)
            if not path:
                return False
        try:
            self.canvas.load_file(path, template=template or _is_example(path))
        except TunegraphError as err:
            QtWidgets.QMessageBox.warning(self, "Could not open the graph", str(err))
            return False
        if not self.canvas.is_template:
            self.settings.add_recent(path)
        QtCore.QTimer.singleShot(0, self.fit_view)
        return True

    def save(self) -> bool:
        if self.canvas.path is None or self.canvas.is_template:
            return self.save_as()
        return self._save_to(self.canvas.path)

    def save_as(self, path: str | Path | None = None) -> bool:
        if path is None:
            start = (
                str(self.canvas.path.parent / self.canvas.path.name.split(".")[0])
                if self.canvas.path and not self.canvas.is_template
                else "untitled"
            )
            path, _ = QtWidgets.QFileDialog.getSaveFileName(
                self, "Save graph", start + GRAPH_SUFFIX, FILE_FILTER
            )
            if not path:
                return False
        path = Path(path)
        if not path.name.endswith(".json"):
            path = path.with_name(path.name + GRAPH_SUFFIX)
        return self._save_to(path)

    def _save_to(self, path: Path) -> bool:
        try:
            self.canvas.save_file(path)
        except OSError as err:
            QtWidgets.QMessageBox.warning(
                self, "Could not save the graph", f"{path}: {err.strerror or err}"
            )
            return False
        self.settings.add_recent(path)
        self.statusBar().showMessage(f"Saved {path}", 4000)
        return True

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        files = self.settings.recent_files()
        for f in files:
            action = self.recent_menu.addAction(f)
            action.triggered.connect(lambda _c=False, p=f: self.open_file(p))
        if not files:
            self.recent_menu.addAction("No recent graphs").setEnabled(False)

    def ask_unsaved(self) -> str:
        """ "save", "discard" or "cancel" (tests replace this)."""
        buttons = QtWidgets.QMessageBox.StandardButton
        answer = QtWidgets.QMessageBox.question(
            self,
            "Unsaved changes",
            "The graph has unsaved changes. Save them first?",
            buttons.Save | buttons.Discard | buttons.Cancel,
            buttons.Save,
        )
        return {buttons.Save: "save", buttons.Discard: "discard"}.get(answer, "cancel")

    def ask_quit(self, dirty: bool, live: int) -> str:
        """ "save", "quit" or "cancel" when quitting with unsaved changes or live runs (tests
        replace this)."""
        buttons = QtWidgets.QMessageBox.StandardButton
        box = QtWidgets.QMessageBox(self)
        box.setIcon(QtWidgets.QMessageBox.Icon.Question)
        box.setWindowTitle("Quit Tunegraph")
        box.setText(quit_message(dirty, live, self.graph_name()))
        shown = (buttons.Save if dirty else buttons.NoButton) | buttons.Cancel
        box.setStandardButtons(shown)
        quit_button = box.addButton("Quit", QtWidgets.QMessageBox.ButtonRole.AcceptRole)
        box.setDefaultButton(quit_button)
        box.exec()
        if box.clickedButton() is quit_button:
            return "quit"
        return "save" if box.clickedButton() is box.button(buttons.Save) else "cancel"

    def maybe_save(self) -> bool:
        """True when it is fine to replace the graph (saved, discarded or not changed)."""
        if not self.canvas.dirty:
            return True
        answer = self.ask_unsaved()
        if answer == "save":
            return self.save()
        return answer == "discard"


def _is_example(path: str | Path) -> bool:
    return Path(path).resolve().parent == EXAMPLE_GRAPH.parent
