"""The main window's file handling: New / Open / Save / Save As, recent files, the example
graph on first start, the title, and the unsaved-changes prompt. A mixin of `MainWindow`, which
provides `canvas`, `settings`, `statusBar()` and `fit_view()`."""

from __future__ import annotations

from pathlib import Path

from PySide6 import QtCore, QtWidgets

from app.canvas import GRAPH_SUFFIX
from engine.errors import TunegraphError

EXAMPLE_GRAPH = Path(__file__).resolve().parents[1] / "resources" / "examples" / "sweep.json"
FILE_FILTER = f"Tunegraph graphs (*{GRAPH_SUFFIX} *.json);;All files (*)"


class FileActions:
    """Graph-file commands of the main window."""

    def _update_title(self, *_args) -> None:
        path = self.canvas.path
        name = path.name if path else "Untitled"
        if self.canvas.is_template:
            name += " (example)"
        self.setWindowTitle(f"{name}{' •' if self.canvas.dirty else ''} — Tunegraph")

    def open_initial(self, path: str | Path | None = None) -> None:
        """What to show at start: `path`, else the example on first start, else the last file."""
        if path:
            self.open_file(path)
        elif self.settings.first_start and EXAMPLE_GRAPH.exists():
            self.open_file(EXAMPLE_GRAPH, template=True)
        else:
            recent = [f for f in self.settings.recent_files() if Path(f).exists()]
            if recent:
                self.open_file(recent[0])
            else:
                self.canvas.new_graph()
        self.settings.mark_started()
        QtCore.QTimer.singleShot(0, self.fit_view)

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
