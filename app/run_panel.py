"""The run panel: live runs (Active) above finished ones (History), one row per run (app.run_row).

Rows expand to show the run's detail (several at once, each updating on its own). Every change
arrives through the `RunBridge`; every command leaves through it, so nothing here waits on the
store or a worker.

Rows keep still under the pointer: while it is over a section, no row there moves or is inserted.
A run that would join it (a new finisher in History, a new submission in Active) waits, counted
on the section's "N new" button; it slides in when the pointer leaves, or at once on a click of
that button. Queued rows say where they stand in the queue, computed here from all the runs.

Export opens the Export dialog (app.export_dialog); the export then runs as a child process of
the bridge, its progress shown in the row and its button disabled until it ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6 import QtCore, QtWidgets

from app.export_dialog import ExportDialog
from app.run_bridge import RunBridge
from app.run_row import (  # noqa: F401 - BUTTONS and STATE_STYLE: named here too, as before
    ACTIVE_STATES,
    BUTTONS,
    STATE_STYLE,
    RunRow,
)
from app.tracking_actions import TENSORBOARD, TensorBoards
from engine.export.job import ARTIFACT_LABELS
from engine.store.timing import queue_positions, waits_for_upstream

CANCEL_TEXT = (
    "Cancel “{name}”?\n\nCancelling is not reversible: the worker is stopped at once, "
    "partial metrics are kept, and no adapter is saved. Pause keeps a checkpoint "
    "instead."
)


def confirm_cancel(parent: QtWidgets.QWidget, name: str) -> bool:
    """Ask before cancelling (not reversible). Tests replace `RunPanel.confirm`."""
    box = QtWidgets.QMessageBox(
        QtWidgets.QMessageBox.Icon.Warning,
        "Cancel run",
        CANCEL_TEXT.format(name=name),
        parent=parent,
    )
    yes = box.addButton("Cancel run", QtWidgets.QMessageBox.ButtonRole.DestructiveRole)
    box.addButton("Keep running", QtWidgets.QMessageBox.ButtonRole.RejectRole)
    box.exec()
    return box.clickedButton() is yes


def ask_epochs(parent: QtWidgets.QWidget, name: str) -> float | None:
    epochs, ok = QtWidgets.QInputDialog.getDouble(
        parent, "Continue run", f"Train “{name}” for how many more epochs?", 1.0, 0.1, 100.0, 1
    )
    return epochs if ok else None


def export_summary(result: object) -> tuple[str, str]:
    """(message, kind) for a finished `tunegraph export --json`: what it made, what the library
    held already, and its warnings (then in the error colour)."""
    if not isinstance(result, dict):
        return "Exported: see the Library.", "success"
    made = [
        ARTIFACT_LABELS.get(a.get("kind"), str(a.get("kind")))
        for a in result.get("artifacts") or []
        if a.get("kind") != "gguf"  # the bundle holds the GGUF
    ]
    kept = [
        ARTIFACT_LABELS.get(a.get("kind"), str(a.get("kind"))) for a in result.get("existing") or []
    ]
    parts = []
    if made:
        parts.append("Exported " + ", ".join(made) + " to the Library")
    if kept:
        parts.append("already there: " + ", ".join(kept))
    text = "; ".join(parts) or "Nothing new was exported"
    warnings = result.get("warnings") or []
    if warnings:
        return text + ". " + "; ".join(warnings), "error"
    return text + ".", "success"


class _Section(QtWidgets.QWidget):
    """A titled, scrolling list of rows that notices when the pointer is over it."""

    hoverLeft = QtCore.Signal()  # noqa: N815
    showNew = QtCore.Signal()  # noqa: N815 - the "N new" button was clicked

    def __init__(self, title: str, placeholder: QtWidgets.QWidget | None = None):
        super().__init__()
        self.title = title
        self.hovered = False
        self.pending: list[str] = []  # runs waiting to join while the pointer is here
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        bar = QtWidgets.QWidget()
        bar.setStyleSheet("background: #2a2d32;")
        line = QtWidgets.QHBoxLayout(bar)
        line.setContentsMargins(4, 2, 4, 2)
        self.header = QtWidgets.QLabel(title)
        self.header.setStyleSheet("font-weight: bold; padding: 2px;")
        self.new_button = QtWidgets.QPushButton()
        self.new_button.setStyleSheet(
            "QPushButton { background: #4078c0; color: white; border-radius: 8px;"
            " padding: 1px 10px; font-weight: bold; }"
        )
        self.new_button.setToolTip(
            "Runs that arrived while the pointer was over this list; they slide in when it "
            "leaves, or now with a click"
        )
        self.new_button.hide()
        self.new_button.clicked.connect(self.showNew)
        line.addWidget(self.header)
        line.addWidget(self.new_button)
        line.addStretch(1)
        layout.addWidget(bar)
        self.scroll = QtWidgets.QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.body = QtWidgets.QWidget()
        self.rows = QtWidgets.QVBoxLayout(self.body)
        self.rows.setContentsMargins(0, 0, 0, 0)
        self.rows.setSpacing(0)
        self.placeholder = placeholder
        if placeholder is not None:
            self.rows.addWidget(placeholder)
        self.rows.addStretch(1)
        self.scroll.setWidget(self.body)
        self.scroll.viewport().installEventFilter(self)
        layout.addWidget(self.scroll, 1)

    def eventFilter(self, watched: QtCore.QObject, event: QtCore.QEvent) -> bool:  # noqa: N802
        kind = event.type()
        if kind == QtCore.QEvent.Type.Enter:
            self.hovered = True
        elif kind == QtCore.QEvent.Type.Leave:
            self.hovered = False
            self.hoverLeft.emit()
        return False

    def shown(self) -> list[RunRow]:
        """The rows in the list, top to bottom."""
        out = []
        for i in range(self.rows.count()):
            w = self.rows.itemAt(i).widget()
            if isinstance(w, RunRow):
                out.append(w)
        return out

    def set_rows(self, rows: list[RunRow]) -> None:
        """Show exactly these rows in this order (rows already in place stay untouched)."""
        if self.shown() == rows:
            return
        for row in self.shown():
            self.rows.removeWidget(row)
        offset = 1 if self.placeholder is not None else 0
        for i, row in enumerate(rows):
            self.rows.insertWidget(offset + i, row)
            row.show()

    def set_counts(self, shown: int, pending: int) -> None:
        self.header.setText(f"{self.title} ({shown + pending})")
        self.new_button.setText(f"{pending} new ↑")
        self.new_button.setVisible(pending > 0)


class RunPanel(QtWidgets.QWidget):
    """Active runs above, history below; rows move between them as their state changes."""

    openRequested = QtCore.Signal(str)  # noqa: N815 - open a run's detail in a tab
    chatRequested = QtCore.Signal(str)  # noqa: N815 - "Test in chat": open the run's GGUF
    serveRequested = QtCore.Signal(str)  # noqa: N815 - "Serve": an endpoint for the run's GGUF
    pushRequested = QtCore.Signal(str)  # noqa: N815 - "Push to Hub…" the run's adapter
    confirm = staticmethod(confirm_cancel)
    ask_epochs = staticmethod(ask_epochs)

    def __init__(
        self,
        bridge: RunBridge,
        detail_factory: Callable | None = None,
        parent: QtWidgets.QWidget | None = None,
    ):
        super().__init__(parent)
        self.bridge = bridge
        self.detail_factory = detail_factory
        self.rows: dict[str, RunRow] = {}
        self.export_dialog: ExportDialog | None = None
        self.tensorboards = TensorBoards(self)  # "Open in TensorBoard" viewers
        tb = self.tensorboards
        tb.opened.connect(lambda i, url: (r := self.rows.get(i)) and r.tensorboard.show_url(url))
        tb.failed.connect(lambda i, why: (r := self.rows.get(i)) and r.show_message(why))
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.empty = QtWidgets.QLabel(
            "Runs appear here once you start them: select a Fine-Tune node and press Run (Ctrl+R)."
        )
        self.empty.setObjectName("placeholder")
        self.empty.setWordWrap(True)
        self.split = split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        self.active = _Section("Active", self.empty)
        self.history = _Section("History")
        self.parking = QtWidgets.QWidget(self)  # rows waiting to join a list (hidden)
        self.parking.hide()
        for section in (self.active, self.history):
            split.addWidget(section)
            section.hoverLeft.connect(self.arrange)
            section.showNew.connect(lambda s=section: self.arrange(force=s))
        split.setSizes([300, 200])
        layout.addWidget(split)
        bridge.runsChanged.connect(self.on_runs_changed)
        bridge.runsRemoved.connect(self.on_runs_removed)
        bridge.commandFailed.connect(self.on_command_failed)
        bridge.commandDone.connect(self.on_command_done)
        bridge.exportProgress.connect(self.on_export_progress)
        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self._tick)
        self.timer.start(1000)
        self.on_runs_changed(list(bridge.runs.values()))

    # -- rows --------------------------------------------------------------------------------
    def section_of(self, run_id: str) -> str | None:
        """ "active" or "history" for a row in that list; None for a row waiting to join one."""
        row = self.rows.get(run_id)
        if row is None or row.parent() is self.parking:
            return None
        return "active" if row.parent() is self.active.body else "history"

    def ids(self, section: str) -> list[str]:
        sec = self.active if section == "active" else self.history
        return [row.run_id for row in sec.shown()]

    def pending(self, section: str) -> list[str]:
        """The runs waiting to join a list while the pointer is over it."""
        return list((self.active if section == "active" else self.history).pending)

    def on_runs_changed(self, runs: list) -> None:
        for run in runs:
            row = self.rows.get(run["id"])
            if row is None:
                row = RunRow(run, self.detail_factory, self.parking)
                row.action.connect(self.on_action)
                row.openRequested.connect(self.openRequested)
                self.rows[run["id"]] = row
            else:
                row.update_run(run)
        self._update_queue()
        self.arrange()

    def _update_queue(self) -> None:
        runs = {rid: row.run for rid, row in self.rows.items()}
        places = queue_positions(runs)
        for rid, row in self.rows.items():
            if row.run.get("state") == "queued":
                row.set_queue(places.get(rid), waits_for_upstream(row.run, runs))

    def arrange(self, force: _Section | None = None) -> None:
        """Put every row in its list, newest first. A list under the pointer keeps its rows
        where they are (also one whose run now belongs in the other list) and holds back new
        ones, counted on its "N new" button, unless it is `force`d (that button's click)."""
        sections = (self.active, self.history)
        # an empty list has nothing to keep still (the pointer may rest there as runs arrive)
        frozen = {s: s.hovered and s is not force and bool(s.shown()) for s in sections}
        order = sorted(
            self.rows.values(),
            key=lambda r: (r.run.get("created_at") or 0, r.run_id),
            reverse=True,
        )
        home = {
            r.run_id: self.active if r.run.get("state") in ACTIVE_STATES else self.history
            for r in order
        }
        layout: dict[_Section, list[RunRow]] = {}
        held: set[str] = set()
        for s in sections:
            if frozen[s]:
                layout[s] = [r for r in s.shown() if r.run_id in self.rows]
                held |= {r.run_id for r in layout[s]}
        for s in sections:
            if not frozen[s]:
                layout[s] = [r for r in order if home[r.run_id] is s and r.run_id not in held]
        placed = {r.run_id for rows in layout.values() for r in rows}
        for s in sections:
            s.pending = [r.run_id for r in order if home[r.run_id] is s and r.run_id not in placed]
            for rid in s.pending:
                if self.rows[rid].parent() is not self.parking:
                    self.rows[rid].setParent(self.parking)
            s.set_rows(layout[s])
            s.set_counts(len(layout[s]), len(s.pending))
        self.empty.setVisible(not self.rows)

    def on_runs_removed(self, ids: list) -> None:
        for run_id in ids:
            row = self.rows.pop(run_id, None)
            if row is not None:
                row.close_row()
                row.setParent(None)
                row.deleteLater()
        self._update_queue()
        self.arrange()

    def _tick(self) -> None:
        now = time.time()
        for row in self.rows.values():
            if row.run.get("state") in ACTIVE_STATES:
                row.tick(now)

    # -- buttons -----------------------------------------------------------------------------
    def on_action(self, text: str, run_id: str) -> None:
        row = self.rows[run_id]
        name = row.run.get("name") or run_id
        if text != "Export" or not row.exporting:
            row.show_message("")
        if text == "Cancel":
            if not self.confirm(self, name):
                return
            self.bridge.control("cancel", run_id)
        elif text in ("Pause", "Resume"):
            self.bridge.control(text.lower(), run_id)
        elif text == "Stop":
            self.bridge.control("stop", run_id)
        elif text == "Test in chat":
            self.chatRequested.emit(run_id)
            return
        elif text == "Serve":
            self.serveRequested.emit(run_id)
            return
        elif text == "Push to Hub…":
            self.pushRequested.emit(run_id)
            return
        elif text == TENSORBOARD:
            self.tensorboards.open(row.run)
            return
        elif text == "Continue":
            epochs = self.ask_epochs(self, name)
            if epochs:
                self.bridge.continue_run(run_id, epochs)
        elif text == "Export":
            self.open_export(run_id)
            return
        button = row.buttons[text]
        button.setEnabled(False)  # until the supervisor answered, or 1.5 s
        QtCore.QTimer.singleShot(1500, button, lambda: button.setEnabled(True))

    # -- export --------------------------------------------------------------------------------
    def open_export(self, run_id: str) -> ExportDialog | None:
        """The Export dialog for a run (not while an export of it runs)."""
        row = self.rows.get(run_id)
        if row is None or row.exporting or self.bridge.exporting(run_id):
            return None
        if self.export_dialog is not None:
            self.export_dialog.close()
            self.export_dialog.deleteLater()
        self.export_dialog = dialog = ExportDialog(row.run, self)
        dialog.exportRequested.connect(self.start_export)
        dialog.open()
        return dialog

    def start_export(self, run_id: str, args: list) -> None:
        row = self.rows.get(run_id)
        if row is None or self.bridge.exporting(run_id):
            return
        row.set_exporting(True)
        if self.bridge.export(run_id, list(args)) is None:
            row.set_exporting(False)  # no engine: commandFailed says why

    def on_export_progress(self, run_id: str, fraction: float, message: str) -> None:
        row = self.rows.get(run_id)
        if row is None:
            return
        if not row.exporting:  # started elsewhere (the leaderboard's Export)
            row.set_exporting(True)
        row.export_progress(fraction, message)

    def on_command_failed(self, action: str, run_id: str, message: str) -> None:
        row = self.rows.get(run_id)
        if row is None:
            return
        if action == "export":
            row.set_exporting(False)
        row.show_message(f"{action} failed: {message}")

    def on_command_done(self, action: str, run_id: str, result: object) -> None:
        row = self.rows.get(run_id)
        if row is not None and action == "export":
            row.set_exporting(False)
            row.show_message(*export_summary(result))

    def close_panel(self) -> None:
        self.timer.stop()
        self.tensorboards.shutdown()
        if self.export_dialog is not None:
            self.export_dialog.close()
        for row in self.rows.values():
            row.close_row()
