"""The runs tab: every run, newest start first, with a state filter, text search, multi-select,
open, compare, the leaderboard (of the selected runs, or of one run's family: the runs sharing its
origin), the sweeps (the selected trials' study, or any study of this data folder, read off the UI
thread by app.sweep_reader) and delete (the run record and folder; library artifacts stay).

The order keeps still under the pointer: while it is over the list, a new run is added at the
bottom and a run that starts keeps its place; the "N new" button above the list (or the pointer
leaving it) sorts them in. "Training" is the time spent starting, training and evaluating
(engine.store.timing); the wall time is in its tooltip."""

from __future__ import annotations

import time

from PySide6 import QtCore, QtGui, QtWidgets

from app.run_bridge import RunBridge
from app.run_row import STATE_STYLE, elapsed
from app.sweep_reader import SweepReader, study_of, trial_of
from engine.formatting import format_duration
from engine.store.leaderboard import family
from engine.store.timing import training_seconds

FILTERS = {  # shown name -> states (None: all)
    "All": None,
    "Training": ("starting", "training", "evaluating", "exporting", "retrying"),
    "Queued": ("queued",),
    "Paused": ("paused",),
    "Completed": ("completed",),
    "Failed": ("failed", "refused"),
    "Pruned": ("pruned",),
    "Cancelled": ("cancelled",),
}
COLUMNS = ("Name", "State", "Started", "Step", "Loss", "Eval loss", "Training", "Device", "Id")
TRAINING_COL, ID_COL = COLUMNS.index("Training"), COLUMNS.index("Id")
SORT_ROLE = QtCore.Qt.ItemDataRole.UserRole + 1
DELETE_TEXT = (
    "Delete {n} run record(s)?\n\n{names}\n\nThe run folders (logs, checkpoints) are "
    "deleted. Exported artifacts in the library stay."
)


class _Item(QtWidgets.QTreeWidgetItem):
    def __lt__(self, other: QtWidgets.QTreeWidgetItem) -> bool:
        return (self.data(0, SORT_ROLE) or 0) < (other.data(0, SORT_ROLE) or 0)


def confirm_delete(parent: QtWidgets.QWidget, names: list[str]) -> bool:
    """Ask before deleting run records. Tests replace `RunsTab.confirm`."""
    shown = "\n".join(names[:10]) + ("\n…" if len(names) > 10 else "")
    answer = QtWidgets.QMessageBox.question(
        parent,
        "Delete runs",
        DELETE_TEXT.format(n=len(names), names=shown),
        QtWidgets.QMessageBox.StandardButton.Yes | QtWidgets.QMessageBox.StandardButton.No,
        QtWidgets.QMessageBox.StandardButton.No,
    )
    return answer == QtWidgets.QMessageBox.StandardButton.Yes


class RunsTab(QtWidgets.QWidget):
    openRequested = QtCore.Signal(str)  # noqa: N815
    compareRequested = QtCore.Signal(object)  # noqa: N815 - list of run ids
    leaderboardRequested = QtCore.Signal(object)  # noqa: N815 - list of run ids
    sweepRequested = QtCore.Signal(str)  # noqa: N815 - a study's name
    confirm = staticmethod(confirm_delete)

    def __init__(self, bridge: RunBridge, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.bridge = bridge
        self.items: dict[str, _Item] = {}
        bar = QtWidgets.QHBoxLayout()
        self.state = QtWidgets.QComboBox()
        self.state.addItems(list(FILTERS))
        self.search = QtWidgets.QLineEdit()
        self.search.setPlaceholderText("Search name, id, model…")
        self.search.setClearButtonEnabled(True)
        self.open_button = QtWidgets.QPushButton("Open")
        self.compare_button = QtWidgets.QPushButton("Compare")
        self.leaderboard_button = QtWidgets.QPushButton("Leaderboard")
        self.leaderboard_button.setToolTip(
            "Rank the selected runs (one run: it and the runs sharing its origin, such as its "
            "sweep) by their eval scores, with their outputs side by side"
        )
        self.sweeps_button = QtWidgets.QPushButton("Sweeps ▾")
        self.sweeps_button.setToolTip(
            "The sweeps of this data folder (a Sweep node's studies): their trials, best so far "
            "and plots; first the sweep of the selected trials"
        )
        self.sweeps_menu = QtWidgets.QMenu(self.sweeps_button)
        self.sweeps_menu.aboutToShow.connect(self._on_sweeps_menu)
        self.sweeps_button.setMenu(self.sweeps_menu)
        self.sweeps: list[dict] | None = None  # engine.sweep.report.summaries, once read
        self.reader = SweepReader(bridge.store_path, self)
        self.reader.loaded.connect(self._on_sweeps)
        self.reader.failed.connect(lambda _key, why: self.note.setText(f"Sweeps not read: {why}"))
        self.delete_button = QtWidgets.QPushButton("Delete…")
        self.new_button = QtWidgets.QPushButton()
        self.new_button.setToolTip(
            "Runs added or started while the pointer was over the list; they are sorted in "
            "when it leaves, or now with a click"
        )
        self.new_button.hide()
        self.unsorted: set[str] = set()  # runs waiting to be sorted in while the list is hovered
        self.hovered = False  # the pointer is over the list
        for w in (
            QtWidgets.QLabel("State"),
            self.state,
            self.search,
            self.open_button,
            self.compare_button,
            self.leaderboard_button,
            self.sweeps_button,
            self.delete_button,
            self.new_button,
        ):
            bar.addWidget(w, 1 if w is self.search else 0)
        self.tree = QtWidgets.QTreeWidget()
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setRootIsDecorated(False)
        self.tree.setAlternatingRowColors(True)
        self.tree.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.ExtendedSelection)
        self.tree.setColumnWidth(0, 220)
        self.tree.setColumnWidth(1, 110)
        self.tree.setColumnWidth(2, 130)
        self.tree.viewport().installEventFilter(self)
        self.note = QtWidgets.QLabel()
        self.note.setObjectName("hint")
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(bar)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.note)
        self.state.currentIndexChanged.connect(self.apply_filter)
        self.search.textChanged.connect(self.apply_filter)
        self.tree.itemSelectionChanged.connect(self._update_buttons)
        self.tree.itemDoubleClicked.connect(
            lambda item, _c: self.openRequested.emit(item.text(ID_COL))
        )
        self.open_button.clicked.connect(self._open)
        self.compare_button.clicked.connect(lambda: self.compareRequested.emit(self.selected()))
        self.leaderboard_button.clicked.connect(
            lambda: self.leaderboardRequested.emit(self.leaderboard_ids())
        )
        self.delete_button.clicked.connect(self.delete_selected)
        self.new_button.clicked.connect(self.sort_in)
        self.timer = QtCore.QTimer(self)  # the live runs' training time
        self.timer.timeout.connect(self._tick)
        self.timer.start(1000)
        bridge.runsChanged.connect(self.on_runs_changed)
        bridge.runsRemoved.connect(self.on_runs_removed)
        bridge.commandFailed.connect(self._on_failed)
        self.on_runs_changed(list(bridge.runs.values()))
        self._update_buttons()

    def on_runs_changed(self, runs: list) -> None:
        moved = set()
        for run in runs:
            item = self.items.get(run["id"])
            if item is None:
                item = self.items[run["id"]] = _Item()
                self.tree.addTopLevelItem(item)
            before = (
                item.data(0, SORT_ROLE),
                (item.data(0, QtCore.Qt.ItemDataRole.UserRole) or {}).get("state"),
            )
            self._fill(item, run)
            if before != (item.data(0, SORT_ROLE), run.get("state")):
                moved.add(run["id"])
        if moved:  # a new run, a start or a state change: metric updates keep the order
            if self.hovered:
                self.unsorted |= moved
                self._show_unsorted()
            else:
                self.sort_in()
            self.apply_filter()

    def eventFilter(self, watched: QtCore.QObject, event: QtCore.QEvent) -> bool:  # noqa: N802
        if event.type() == QtCore.QEvent.Type.Enter:
            self.hovered = True
        elif event.type() == QtCore.QEvent.Type.Leave:
            self.hovered = False
            if self.unsorted:
                self.sort_in()
        return False

    def sort_in(self) -> None:
        """Sort every run into its place (newest start first)."""
        self.tree.sortItems(0, QtCore.Qt.SortOrder.DescendingOrder)
        self.unsorted = set()
        self._show_unsorted()

    def _show_unsorted(self) -> None:
        self.unsorted &= set(self.items)
        self.new_button.setText(f"{len(self.unsorted)} new ↓")
        self.new_button.setVisible(bool(self.unsorted))

    def _tick(self) -> None:
        now = time.time()
        for item in self.items.values():
            run = item.data(0, QtCore.Qt.ItemDataRole.UserRole)
            if run.get("training_since") is not None:
                self._fill_time(item, run, now)

    @staticmethod
    def _fill_time(item: QtWidgets.QTreeWidgetItem, run: dict, now: float) -> None:
        item.setText(TRAINING_COL, format_duration(training_seconds(run, now)))
        item.setToolTip(
            TRAINING_COL,
            f"Wall time {format_duration(elapsed(run, now))} since it first started "
            "(the queue, pauses, retries and exports included)",
        )

    def _fill(self, item: _Item, run: dict) -> None:
        started = run.get("started_at") or run.get("created_at") or 0
        metrics = run.get("metrics") or {}
        cells = [
            run.get("name") or run["id"],
            run.get("state") or "new",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(started)) if started else "—",
            f"{run.get('step') or 0}/{run.get('max_steps') or '?'}",
            _num(metrics.get("loss")),
            _num(metrics.get("eval_loss")),
            "",
            run.get("device") or "—",
            run["id"],
        ]
        for col, text in enumerate(cells):
            item.setText(col, text)
        self._fill_time(item, run, time.time())
        colour, icon = STATE_STYLE.get(run.get("state"), STATE_STYLE[None])
        item.setText(1, f"{icon} {cells[1]}")
        item.setForeground(1, QtGui.QBrush(QtGui.QColor(colour).lighter(130)))
        item.setData(0, SORT_ROLE, started)
        item.setData(0, QtCore.Qt.ItemDataRole.UserRole, run)

    def on_runs_removed(self, ids: list) -> None:
        for run_id in ids:
            item = self.items.pop(run_id, None)
            if item is not None:
                self.tree.takeTopLevelItem(self.tree.indexOfTopLevelItem(item))
        self._update_buttons()

    def apply_filter(self) -> None:
        states = FILTERS[self.state.currentText()]
        needle = self.search.text().strip().lower()
        for item in self.items.values():
            run = item.data(0, QtCore.Qt.ItemDataRole.UserRole)
            spec = run.get("spec") or {}
            hay = " ".join(
                [
                    run["id"],
                    run.get("name") or "",
                    (spec.get("base_model") or {}).get("source") or "",
                    trial_of(run).get("study") or "",
                ]
            ).lower()
            hidden = (states is not None and run.get("state") not in states) or (
                bool(needle) and needle not in hay
            )
            item.setHidden(hidden)
        self._update_buttons()

    def visible_ids(self) -> list[str]:
        out = []
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            if not item.isHidden():
                out.append(item.text(ID_COL))
        return out

    def selected(self) -> list[str]:
        order = {rid: i for i, rid in enumerate(self.visible_ids())}
        ids = [item.text(ID_COL) for item in self.tree.selectedItems() if not item.isHidden()]
        return sorted(ids, key=lambda rid: order.get(rid, 0))

    def select(self, ids: list[str]) -> None:
        self.tree.clearSelection()
        for run_id in ids:
            self.items[run_id].setSelected(True)

    def leaderboard_ids(self) -> list[str]:
        """The selected runs; with one selected, it and the runs sharing its origin."""
        ids = self.selected()
        if len(ids) == 1:
            runs = [self.items[i].data(0, QtCore.Qt.ItemDataRole.UserRole) for i in self.items]
            kin = family(runs, ids[0])
            order = {rid: i for i, rid in enumerate(self.visible_ids())}
            ids = sorted(kin, key=lambda rid: order.get(rid, len(order)))
        return ids

    def _update_buttons(self) -> None:
        n = len(self.selected())
        self.open_button.setEnabled(n == 1)
        self.compare_button.setEnabled(n >= 2)
        self.leaderboard_button.setEnabled(n >= 2 or (n == 1 and len(self.leaderboard_ids()) >= 2))
        self.delete_button.setEnabled(n >= 1)
        self.note.setText(
            f"{len(self.visible_ids())} of {len(self.items)} runs"
            + (f", {n} selected" if n else "")
        )

    # -- sweeps ----------------------------------------------------------------------------------
    def selected_study(self) -> str | None:
        """The study the selected runs are all trials of, if any."""
        ids = self.selected()
        runs = [self.items[i].data(0, QtCore.Qt.ItemDataRole.UserRole) for i in ids]
        return study_of(runs) if runs else None

    def _on_sweeps_menu(self) -> None:
        self.show_sweeps()
        self.reader.summaries()  # read again: the entries follow when it is done

    def show_sweeps(self) -> None:
        """The selected trials' sweep, then every study as last read."""
        menu = self.sweeps_menu
        menu.clear()
        study = self.selected_study()
        if study:
            menu.addAction(
                f"Sweep of the selected trials: {study}", lambda: self._open_sweep(study)
            )
            menu.addSeparator()
        if self.sweeps is None:
            menu.addAction("Reading the sweeps…").setEnabled(False)
        elif not self.sweeps:
            menu.addAction(
                "No sweep yet: connect a Sweep node to a Fine-Tune node and run it"
            ).setEnabled(False)
        for line in self.sweeps or []:
            menu.addAction(sweep_line(line), lambda s=line["study"]: self._open_sweep(s))

    def _on_sweeps(self, key: str, result: object) -> None:
        if key == "summaries":
            self.sweeps = list(result or [])  # type: ignore[call-overload]
            if self.sweeps_menu.isVisible():
                self.show_sweeps()

    def _open_sweep(self, study: str) -> None:
        self.sweepRequested.emit(study)

    def _open(self) -> None:
        for run_id in self.selected()[:1]:
            self.openRequested.emit(run_id)

    def delete_selected(self) -> None:
        ids = self.selected()
        if not ids:
            return
        names = [self.items[i].text(0) for i in ids]
        if not self.confirm(self, names):
            return
        for run_id in ids:
            self.bridge.submit_job(
                "delete", run_id, lambda store, rid=run_id: store.delete_run(rid)
            )

    def _on_failed(self, action: str, run_id: str, message: str) -> None:
        if action == "delete":
            self.note.setText(f"Not deleted: {message}")

    def close_view(self) -> None:
        """Stop the clock and wait for a sweep read under way (the window is closing)."""
        self.timer.stop()
        self.reader.wait()


def sweep_line(line: dict) -> str:
    """One study in the Sweeps menu: `support · support-3fa9c1 — done, 8/8 trials, best eval
    loss 6.66`."""
    best = "" if line.get("best") is None else f", best {score_label(line)} {line['best']:.4g}"
    trials = f"{line.get('trials') or 0}/{line.get('budget') or '?'} trials"
    name = line.get("name") or "sweep"
    return f"{name} · {line['study']} — {line.get('state')}, {trials}{best}"


def score_label(line: dict) -> str:
    return str(line.get("objective") or "").replace("_", " ")


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"
