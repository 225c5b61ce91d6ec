"""The library: every exported artifact (adapter ZIPs, merged folders, GGUFs, GGUF bundles) and
the datasets made from chat votes.

A table of what engine.store.library reads from `<data dir>/library/*/manifest.json` (the files
are the truth; the store only indexes them): kind, run, base model, quantization, size, date and
file, filtered by run. Open folder, export a copy to a chosen folder, install a GGUF bundle into
Ollama when `ollama` is on PATH, serve a GGUF, push a model to the Hub, and delete an artifact
after asking. Deleting a run record elsewhere never comes here: artifacts outlive their runs.

It refreshes itself: `follow(bridge)` re-reads the library when the store's events change a run's
artifacts (an export finishing, here or in another process), and so does showing the tab; a
restart reads everything on disk, runs finished while the app was closed included.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from app.chat_worker import error_text
from engine import paths
from engine.export import ollama
from engine.export.hub import PUSH_KINDS
from engine.export.job import ARTIFACT_LABELS
from engine.formatting import format_bytes
from engine.store import library
from engine.store.library import library_entries

KIND_LABELS = {**ARTIFACT_LABELS, "dataset": "Dataset"}
COLUMNS = ("Kind", "Run", "Base model", "Quant", "Size", "Created", "File")
ALL_RUNS = "All runs"
REFRESH_MS = 300  # several runs changing at once make one refresh


def install_bundle(entry: dict) -> str:
    """Unpack a GGUF bundle ZIP and `ollama create` it; returns ollama's output."""
    with tempfile.TemporaryDirectory(prefix="tunegraph-ollama-") as tmp:
        folder = library.unpack_bundle(entry, tmp)
        return ollama.install(entry.get("run_name") or entry["id"], folder)


def kind_label(entry: dict) -> str:
    """ "GGUF bundle (Ollama)", "Dataset (12 pairs)", …"""
    label = KIND_LABELS.get(entry.get("kind"), str(entry.get("kind")))
    if entry.get("kind") == "dataset" and entry.get("rows") is not None:
        pairs = entry["rows"]
        return f"{label} ({pairs} pair{'s' if pairs != 1 else ''})"
    return label


def run_label(entry: dict) -> str:
    """ "support bot · 3fa9c1": the run's name and the end of its id (two runs may share a
    name); "—" for an entry made by no run (a dataset)."""
    run_id = str(entry.get("run_id") or "")
    if not run_id:
        return "—"
    return f"{entry.get('run_name') or run_id} · {run_id[-6:]}"


# -- the tab ------------------------------------------------------------------------------------
def ask_user(parent: QtWidgets.QWidget, title: str, text: str) -> bool:
    answer = QtWidgets.QMessageBox.question(parent, title, text)
    return answer == QtWidgets.QMessageBox.StandardButton.Yes


class _InstallThread(QtCore.QThread):
    finished_ok = QtCore.Signal(str)
    failed = QtCore.Signal(str)

    def __init__(self, entry: dict, parent: QtCore.QObject):
        super().__init__(parent)
        self.entry = entry

    def run(self) -> None:
        try:
            self.finished_ok.emit(install_bundle(self.entry))
        except Exception as err:
            self.failed.emit(error_text(err))


class LibraryTab(QtWidgets.QWidget):
    """A table of artifacts and the actions on the selected one."""

    changed = QtCore.Signal()
    serveRequested = QtCore.Signal(str)  # noqa: N815 - a GGUF file to serve
    pushRequested = QtCore.Signal(dict)  # noqa: N815 - a library entry to push to the Hub

    def __init__(
        self,
        parent: QtWidgets.QWidget | None = None,
        confirm: Callable[[QtWidgets.QWidget, str, str], bool] = ask_user,
    ):
        super().__init__(parent)
        self.confirm = confirm
        self.entries: list[dict] = []
        self._install: _InstallThread | None = None
        self._seen: dict[str, tuple] = {}  # run id -> its artifact ids, as the store last said
        self._count_text = ""
        self._soon = QtCore.QTimer(self)
        self._soon.setSingleShot(True)
        self._soon.setInterval(REFRESH_MS)
        self._soon.timeout.connect(self.refresh)
        self.run_filter = QtWidgets.QComboBox()
        self.run_filter.setMinimumWidth(220)
        self.run_filter.setToolTip("Show the artifacts of one run")
        self.run_filter.addItem(ALL_RUNS, None)
        self.run_filter.currentIndexChanged.connect(self.apply_filter)
        self.table = QtWidgets.QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.setAlternatingRowColors(True)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(len(COLUMNS) - 1, QtWidgets.QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._update_buttons)

        self.refresh_button = QtWidgets.QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.open_button = QtWidgets.QPushButton("Open folder")
        self.open_button.clicked.connect(self.open_folder)
        self.export_button = QtWidgets.QPushButton("Export to…")
        self.export_button.clicked.connect(self.export_dialog)
        self.ollama_button = QtWidgets.QPushButton("Install into Ollama")
        self.ollama_button.clicked.connect(self.install_selected)
        self.delete_button = QtWidgets.QPushButton("Delete…")
        self.delete_button.clicked.connect(self.delete_selected)
        self.serve_button = QtWidgets.QPushButton("Serve")
        self.serve_button.setToolTip("An OpenAI-compatible endpoint for this GGUF")
        self.serve_button.clicked.connect(self._serve_selected)
        self.push_button = QtWidgets.QPushButton("Push to Hub…")
        self.push_button.clicked.connect(self._push_selected)
        self.status = QtWidgets.QLabel("")
        self.status.setWordWrap(True)
        self.status.setObjectName("hint")
        buttons = QtWidgets.QHBoxLayout()
        for b in (
            self.refresh_button,
            self.open_button,
            self.export_button,
            self.ollama_button,
            self.serve_button,
            self.push_button,
            self.delete_button,
        ):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(QtWidgets.QLabel("Run"))
        buttons.addWidget(self.run_filter)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status)
        self.refresh()

    # -- following the store -------------------------------------------------------------------
    def follow(self, bridge) -> None:
        """Refresh when the store says a run's artifacts changed (app.run_bridge.RunBridge)."""
        bridge.runsChanged.connect(self._on_runs_changed)
        bridge.runsRemoved.connect(lambda _ids: self._soon.start())
        self._on_runs_changed(list(bridge.runs.values()))

    def _on_runs_changed(self, runs: list) -> None:
        changed = False
        for run in runs:
            ids = tuple(sorted(str(a.get("id")) for a in run.get("artifacts") or []))
            changed |= self._seen.get(run["id"]) != ids
            self._seen[run["id"]] = ids
        if changed:
            self._soon.start()

    def showEvent(self, event: QtGui.QShowEvent) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        self._soon.start()  # datasets and copies made elsewhere show up too

    # -- the table -----------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read the library again; the selection and the run filter are kept."""
        selected = self.selected()
        self.entries = library_entries()
        self.table.setRowCount(len(self.entries))
        for row, e in enumerate(self.entries):
            base = str(e.get("base_model") or "")
            created = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.get("created_at") or 0))
            cells = (
                kind_label(e),
                run_label(e),
                Path(base).name if base.startswith(("/", "~")) else base,
                e.get("quant") or "",
                format_bytes(e.get("bytes")),
                created,
                Path(e["file"]).name,
            )
            tips = {0: e["file"], 1: str(e.get("run_id") or ""), 2: base, 6: e["file"]}
            for col, text in enumerate(cells):
                item = QtWidgets.QTableWidgetItem(text)
                item.setToolTip(tips.get(col, ""))
                if col == 4:
                    item.setTextAlignment(
                        QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter
                    )
                self.table.setItem(row, col, item)
        self._fill_run_filter()
        self.apply_filter()
        if selected:
            for row, e in enumerate(self.entries):
                if e["id"] == selected["id"] and not self.table.isRowHidden(row):
                    self.table.selectRow(row)
        shown = self.status.text()
        if not self.entries:
            self.status.setText("No artifacts yet: export a finished run to see it here.")
        elif not shown or shown == self._count_text or shown.startswith("No artifacts"):
            n = len(self.entries)  # an action's message (Deleted…, Copied to…) stays
            self._count_text = (
                f"{n} artifact{'s' if n != 1 else ''} in {paths.library_dir()}. "
                "Double-click a GGUF to chat with it."
            )
            self.status.setText(self._count_text)
        self._update_buttons()

    def _fill_run_filter(self) -> None:
        """One choice per run that has artifacts (name and short id), newest first."""
        current = self.run_filter.currentData()
        runs: dict[str, str] = {}
        for e in self.entries:
            run_id = e.get("run_id")
            if run_id and run_id not in runs:
                runs[run_id] = run_label(e)
        wanted = [(ALL_RUNS, None)] + [(label, rid) for rid, label in runs.items()]
        shown = [
            (self.run_filter.itemText(i), self.run_filter.itemData(i))
            for i in range(self.run_filter.count())
        ]
        if shown == wanted:
            return
        self.run_filter.blockSignals(True)
        self.run_filter.clear()
        for label, rid in wanted:
            self.run_filter.addItem(label, rid)
        index = self.run_filter.findData(current) if current else 0
        self.run_filter.setCurrentIndex(max(index, 0))
        self.run_filter.blockSignals(False)

    def filter_run(self, run_id: str | None) -> None:
        """Show only the artifacts of `run_id` (None: all)."""
        index = self.run_filter.findData(run_id) if run_id else 0
        self.run_filter.setCurrentIndex(max(index, 0))

    def apply_filter(self) -> None:
        run_id = self.run_filter.currentData()
        for row, e in enumerate(self.entries):
            self.table.setRowHidden(row, bool(run_id) and e.get("run_id") != run_id)
        self._update_buttons()

    def visible_entries(self) -> list[dict]:
        """The entries the table shows under the run filter, top to bottom."""
        return [e for row, e in enumerate(self.entries) if not self.table.isRowHidden(row)]

    def selected(self) -> dict | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows or rows[0].row() >= len(self.entries) or self.table.isRowHidden(rows[0].row()):
            return None
        return self.entries[rows[0].row()]

    def _update_buttons(self) -> None:
        entry = self.selected()
        for b in (self.open_button, self.export_button):
            b.setEnabled(entry is not None)
        # a dataset lives in the data directory's datasets/ folder, not in a library folder
        dataset = entry is not None and entry.get("kind") == "dataset"
        self.delete_button.setEnabled(entry is not None and not dataset)
        self.delete_button.setToolTip(
            f"A dataset is a file of the data directory: {entry['file']}" if dataset else ""
        )
        self.serve_button.setEnabled(entry is not None and entry.get("kind") == "gguf")
        self.push_button.setEnabled(entry is not None and entry.get("kind") in PUSH_KINDS)
        can_install = entry is not None and entry.get("kind") == "gguf_bundle"
        on_path = ollama.ollama_available()
        self.ollama_button.setEnabled(can_install and on_path and self._install is None)
        self.ollama_button.setToolTip("" if on_path else "Ollama is not on PATH.")

    def _serve_selected(self) -> None:
        entry = self.selected()
        if entry and entry.get("kind") == "gguf":
            self.serveRequested.emit(entry["file"])

    def _push_selected(self) -> None:
        entry = self.selected()
        if entry and entry.get("kind") in PUSH_KINDS:
            self.pushRequested.emit(entry)

    def open_folder(self) -> None:
        entry = self.selected()
        if entry:
            QtGui.QDesktopServices.openUrl(QtCore.QUrl.fromLocalFile(entry["folder"]))

    def export_dialog(self) -> None:
        entry = self.selected()
        if not entry:
            return
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Export to folder")
        if folder:
            self.export_to(entry, folder)

    def export_to(self, entry: dict, folder: str | Path) -> Path | None:
        try:
            dest = library.export_artifact(entry, folder)
        except (OSError, shutil.Error) as err:
            self.status.setText(f"Export failed: {err}")
            return None
        self.status.setText(f"Copied to {dest}")
        return dest

    def delete_selected(self) -> bool:
        entry = self.selected()
        if not entry:
            return False
        label = KIND_LABELS.get(entry.get("kind"), entry.get("kind"))
        size = format_bytes(entry.get("bytes"))
        text = (
            f"Delete the {label} of “{entry['run_name']}” ({size})?"
            f"\n\n{entry['file']}\n\nThe run itself is kept."
        )
        if not self.confirm(self, "Delete artifact", text):
            return False
        try:
            library.delete_artifact(entry)
        except (OSError, ValueError) as err:
            self.status.setText(f"Could not delete: {err}")
            return False
        self.status.setText(f"Deleted {Path(entry['file']).name}.")
        self.refresh()
        self.changed.emit()
        return True

    def install_selected(self) -> None:
        entry = self.selected()
        if not entry or self._install is not None:
            return
        self.status.setText(f"Installing {Path(entry['file']).name} into Ollama…")
        self._install = _InstallThread(entry, self)
        self._install.finished_ok.connect(self._on_installed)
        self._install.failed.connect(self._on_install_failed)
        self._install.finished.connect(self._on_install_thread_done)
        self._install.start()
        self._update_buttons()

    @QtCore.Slot(str)
    def _on_installed(self, output: str) -> None:
        lines = output.strip().splitlines()
        self.status.setText("Installed into Ollama." + (f" {lines[-1]}" if lines else ""))

    @QtCore.Slot(str)
    def _on_install_failed(self, message: str) -> None:
        self.status.setText(f"Ollama install failed: {message}")

    @QtCore.Slot()
    def _on_install_thread_done(self) -> None:
        self._install = None
        self._update_buttons()

    def shutdown(self) -> None:
        """Wait for an Ollama install in progress (call before the window closes)."""
        if self._install is not None:
            self._install.wait()
