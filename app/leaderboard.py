"""The leaderboard: runs that share an origin (a sweep, duplicates) or any selection, ranked.

The table ranks the runs (their base as a baseline row, their GGUFs, where those were scored) by
the chosen score of one eval set: every metric with a bar, the eval loss, the training time and
the knobs that differ, the winner marked. Below it, each eval row's outputs stand side by side
with their scores: the smoke test, on every prompt at once. From here: open the runs in the chat
pane side by side, export the winner, continue the winner, and (when the runs are the trials of
one sweep) open that sweep's view (app.sweep_view). The board itself is
`engine.store.leaderboard.build_board`; the rows come from the run folders
(`engine.eval.run_results`), read in the bridge's command thread.
"""

from __future__ import annotations

import html

from PySide6 import QtCore, QtGui, QtWidgets

from app.run_bridge import RunBridge
from app.run_panel import ask_epochs
from app.sweep_reader import study_of
from engine.formatting import format_cell, format_duration
from engine.store.leaderboard import (
    EVAL_LOSS,
    TRAIN_TIME,
    Board,
    Entry,
    bar_fraction,
    better_is_lower,
    build_board,
)

BAR_ROLE = QtCore.Qt.ItemDataRole.UserRole + 7
WINNER_BG = QtGui.QColor(46, 84, 52)
OTHER_BG = {"base": QtGui.QColor(48, 52, 60), "gguf": QtGui.QColor(40, 46, 58)}
BAR_COLOUR = QtGui.QColor(88, 166, 110)
NAMES = {EVAL_LOSS: "eval loss", TRAIN_TIME: "training time"}
OUTPUT_WIDTH = 260
WINNER = "★"


def score_name(metric: str) -> str:
    """How a score is named in the view (`eval_loss` → `eval loss`)."""
    return NAMES.get(metric, metric)


class BarDelegate(QtWidgets.QStyledItemDelegate):
    """Draws a cell's text with a bar under it, as long as the cell's BAR_ROLE fraction."""

    def paint(self, painter: QtGui.QPainter, option, index: QtCore.QModelIndex) -> None:
        super().paint(painter, option, index)
        fraction = index.data(BAR_ROLE)
        if not fraction:
            return
        rect = option.rect.adjusted(4, 0, -4, -3)
        bar = QtCore.QRect(rect.left(), rect.bottom() - 4, int(rect.width() * fraction), 4)
        painter.fillRect(bar, BAR_COLOUR)


class Leaderboard(QtWidgets.QWidget):
    """Ranks `run_ids`; `chatRequested` carries the run ids to open in the chat pane."""

    chatRequested = QtCore.Signal(object)  # noqa: N815 - list of run ids, best first
    sweepRequested = QtCore.Signal(str)  # noqa: N815 - the study the runs are trials of
    ask_epochs = staticmethod(ask_epochs)

    def __init__(
        self, bridge: RunBridge, run_ids: list[str], parent: QtWidgets.QWidget | None = None
    ):
        super().__init__(parent)
        self.bridge = bridge
        self.run_ids = list(run_ids)
        self.data: dict = {"results": {}, "stats": {}, "times": {}}
        self.board: Board | None = None
        self._seen: dict[str, tuple] = {}
        self._job = f"leaderboard:{id(self)}"
        self.set_combo = QtWidgets.QComboBox()
        self.rank_combo = QtWidgets.QComboBox()
        self.chat_button = QtWidgets.QPushButton("Open in chat side by side")
        self.export_button = QtWidgets.QPushButton("Export the winner")
        self.continue_button = QtWidgets.QPushButton("Continue the winner…")
        self.sweep_button = QtWidgets.QPushButton("Sweep view")
        self.sweep_button.setToolTip(
            "These runs are trials of one sweep: its trials, best so far, history and importances"
        )
        self.sweep_button.hide()
        bar = QtWidgets.QHBoxLayout()
        for widget in (
            QtWidgets.QLabel("Eval set"),
            self.set_combo,
            QtWidgets.QLabel("Rank by"),
            self.rank_combo,
        ):
            bar.addWidget(widget)
        bar.addStretch(1)
        for button in (
            self.sweep_button,
            self.chat_button,
            self.export_button,
            self.continue_button,
        ):
            bar.addWidget(button)
        self.summary = QtWidgets.QLabel()
        self.summary.setTextFormat(QtCore.Qt.TextFormat.RichText)
        self.summary.setWordWrap(True)
        self.table = self._table()
        self.table.setItemDelegate(BarDelegate(self.table))
        self.outputs = self._table()
        self.outputs.setWordWrap(True)
        self.outputs.setVerticalScrollMode(QtWidgets.QAbstractItemView.ScrollMode.ScrollPerPixel)
        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        split.addWidget(self.table)
        outputs_box = QtWidgets.QWidget()
        outputs_layout = QtWidgets.QVBoxLayout(outputs_box)
        outputs_layout.setContentsMargins(0, 4, 0, 0)
        self.outputs_title = QtWidgets.QLabel()
        outputs_layout.addWidget(self.outputs_title)
        outputs_layout.addWidget(self.outputs, 1)
        split.addWidget(outputs_box)
        split.setSizes([190, 450])
        self.note = QtWidgets.QLabel()
        self.note.setObjectName("hint")
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(bar)
        layout.addWidget(self.summary)
        layout.addWidget(split, 1)
        layout.addWidget(self.note)
        self.set_combo.activated.connect(lambda _i: self.refresh())
        self.rank_combo.activated.connect(lambda _i: self.refresh())
        self.chat_button.clicked.connect(self.open_in_chat)
        self.export_button.clicked.connect(self.export_winner)
        self.continue_button.clicked.connect(self.continue_winner)
        self.sweep_button.clicked.connect(self.open_sweep)
        bridge.runsChanged.connect(self.on_runs_changed)
        bridge.commandDone.connect(self.on_job_done)
        bridge.commandFailed.connect(self.on_command_failed)
        self._connected = True
        self.fetch()
        self.refresh()

    @staticmethod
    def _table() -> QtWidgets.QTableWidget:
        table = QtWidgets.QTableWidget()
        table.verticalHeader().setVisible(False)
        table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        return table

    # -- data ------------------------------------------------------------------------------------
    def runs(self) -> list[dict]:
        """The runs on the board, as the bridge last saw them."""
        return [self.bridge.runs[rid] for rid in self.run_ids if rid in self.bridge.runs]

    def fetch(self) -> None:
        """Read the runs' rows, data statistics and training times in the command thread."""
        ids = list(self.run_ids)

        def job(store) -> dict:
            from engine.eval.run_results import run_results
            from engine.store.diff import data_stats
            from engine.store.leaderboard import training_seconds

            out: dict = {"results": {}, "stats": {}, "times": {}}
            for rid in ids:
                run = store.run_json(rid)
                out["results"][rid] = run_results(run["run_dir"])
                out["stats"][rid] = data_stats(store.events(rid, kinds="log"))
                out["times"][rid] = training_seconds(store.events(rid, kinds="status"))
            return out

        self.bridge.submit_job(self._job, "", job)

    def on_job_done(self, label: str, run_id: str, result: object) -> None:
        if label == self._job:
            self.data = dict(result or self.data)
            self.refresh()
        elif label == "export" and self.board and run_id == self.board.winner:
            self.note.setText("Exported the winner: see the Artifacts tab of its run.")

    def on_command_failed(self, action: str, run_id: str, message: str) -> None:
        if self.board and run_id == self.board.winner and action in ("export", "continue"):
            self.note.setText(f"{action} failed: {message}")

    def on_runs_changed(self, runs: list) -> None:
        mine = [r for r in runs if r["id"] in self.run_ids]
        changed = False
        for run in mine:
            seen = (run.get("state"), repr(run.get("eval")))
            changed |= self._seen.get(run["id"]) != seen
            self._seen[run["id"]] = seen
        if changed:  # a run finished or was scored: its rows and time are new
            self.fetch()
        if mine:
            self.refresh()

    # -- drawing ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Rebuild the board for the chosen set and score, and draw it."""
        runs = self.runs()
        if not runs:
            return
        self.board = board = build_board(
            runs,
            self.data["results"],
            [self.data["stats"].get(r["id"]) for r in runs],
            self.data["times"],
            self.set_combo.currentData(),
            self.rank_combo.currentData(),
        )
        _fill_combo(self.set_combo, [(s, s) for s in board.sets], board.set)
        _fill_combo(self.rank_combo, [(m, score_name(m)) for m in board.rankable], board.metric)
        self.set_combo.setEnabled(len(board.sets) > 1)
        self.fill_table(board)
        self.fill_outputs(board)
        self.fill_summary(board)
        self._update_buttons()

    def fill_summary(self, board: Board) -> None:
        winner = next((e for e in board.entries if e.run_id == board.winner), None)
        order = "lower is better" if better_is_lower(board.metric) else "higher is better"
        where = f" on <b>{html.escape(board.set)}</b>" if board.set else ""
        if winner is None:
            text = f"{len(self.run_ids)} runs{where}: no {score_name(board.metric)} yet."
        else:
            value = _text(board.metric, winner.scores.get(board.metric))
            text = (
                f"<span style='color:#f0c46e'>{WINNER}</span> Winner{where}: "
                f"<b>{html.escape(winner.label)}</b>, {score_name(board.metric)} {value} "
                f"({order}; {len(self.run_ids)} runs)"
            )
        self.summary.setText(text)

    def columns(self, board: Board) -> list[tuple[str, str]]:
        """(key, header) of each table column: rank, run, scores, then the knobs that differ."""
        scores = [*board.metrics, EVAL_LOSS, TRAIN_TIME]
        ranked = {board.metric}
        return [
            ("#", "#"),
            ("run", "Run"),
            *((m, score_name(m) + (" ▼" if m in ranked else "")) for m in scores),
            *((f"knob:{k}", label) for k, label in board.knobs),
        ]

    def fill_table(self, board: Board) -> None:
        columns = self.columns(board)
        table = self.table
        table.clear()
        table.setColumnCount(len(columns))
        table.setHorizontalHeaderLabels([h for _, h in columns])
        table.setRowCount(len(board.entries))
        bold = QtGui.QFont()
        bold.setBold(True)
        rank = 0
        for r, entry in enumerate(board.entries):
            winner = entry.kind == "run" and entry.run_id == board.winner
            rank += entry.kind == "run"
            for c, (key, _header) in enumerate(columns):
                item = QtWidgets.QTableWidgetItem(self._cell(board, entry, key, rank, winner))
                if key in entry.scores:  # a score: right-aligned, with its bar
                    values = [e.scores.get(key) for e in board.entries]
                    item.setData(BAR_ROLE, bar_fraction(key, entry.scores.get(key), values))
                    item.setTextAlignment(
                        QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter
                    )
                if winner:
                    item.setBackground(WINNER_BG)
                    item.setFont(bold)
                elif entry.kind in OTHER_BG:
                    item.setBackground(OTHER_BG[entry.kind])
                    item.setForeground(QtGui.QColor("#aab0b8"))
                item.setToolTip(f"{entry.label}: {item.text()}")
                table.setItem(r, c, item)
        table.resizeColumnsToContents()
        for c in range(2, table.columnCount()):
            table.setColumnWidth(c, max(table.columnWidth(c), 86))
        table.horizontalHeader().setStretchLastSection(True)

    @staticmethod
    def _cell(board: Board, entry: Entry, key: str, rank: int, winner: bool) -> str:
        if key == "#":
            if entry.kind != "run":
                return "baseline" if entry.kind == "base" else "GGUF"
            return f"{WINNER} {rank}" if winner else str(rank)
        if key == "run":
            return entry.label
        if key.startswith("knob:"):
            return format_cell(entry.knobs.get(key[5:])) if entry.kind != "base" else ""
        return _text(key, entry.scores.get(key))

    def fill_outputs(self, board: Board) -> None:
        shown = [e for e in board.entries if e.rows]
        table = self.outputs
        table.clear()
        if not shown or not board.prompts:
            table.setRowCount(0)
            table.setColumnCount(0)
            self.outputs_title.setText(
                "No outputs per row yet: runs with an Eval node show theirs when they finish."
            )
            return
        metric = next((m for m in (board.metric, *board.metrics) if m in _row_scores(shown)), None)
        self.outputs_title.setText(
            f"Outputs per eval row ({len(board.prompts)} rows)"
            + (f", with their {score_name(metric)}" if metric else "")
        )
        table.setColumnCount(2 + len(shown))
        table.setHorizontalHeaderLabels(
            ["Prompt", "Reference"]
            + [
                (f"{WINNER} " if e.run_id == board.winner and e.kind == "run" else "") + e.label
                for e in shown
            ]
        )
        table.setRowCount(len(board.prompts))
        for r, (prompt, reference) in enumerate(board.prompts):
            table.setItem(r, 0, QtWidgets.QTableWidgetItem(prompt))
            ref = QtWidgets.QTableWidgetItem(reference)
            ref.setForeground(QtGui.QColor("#9fd3a8"))
            table.setItem(r, 1, ref)
            row_values = [
                e.rows[r]["scores"].get(metric) if r < len(e.rows) and metric else None
                for e in shown
            ]
            for c, entry in enumerate(shown, 2):
                table.setItem(r, c, self._output_item(entry, r, metric, row_values))
        for c in range(table.columnCount()):
            table.setColumnWidth(c, OUTPUT_WIDTH if c > 1 else 220)
        table.resizeRowsToContents()

    @staticmethod
    def _output_item(
        entry: Entry, r: int, metric: str | None, values: list
    ) -> QtWidgets.QTableWidgetItem:
        if r >= len(entry.rows):
            return QtWidgets.QTableWidgetItem("")
        row = entry.rows[r]
        score = row["scores"].get(metric) if metric else None
        text = row.get("output") or ("(not generated)" if row.get("output") is None else "")
        item = QtWidgets.QTableWidgetItem(
            text + (f"\n— {score_name(metric)} {_text(metric, score)}" if metric else "")
        )
        item.setToolTip(
            "\n".join(f"{score_name(k)}: {_text(k, v)}" for k, v in row["scores"].items())
        )
        if metric and score is not None:
            shade = bar_fraction(metric, score, values)
            item.setBackground(QtGui.QColor(36, 44 + int(44 * shade), 40))
        return item

    # -- actions ---------------------------------------------------------------------------------
    def _winner_run(self) -> dict | None:
        winner = self.board.winner if self.board else None
        return self.bridge.runs.get(winner) if winner else None

    def _update_buttons(self) -> None:
        run = self._winner_run()
        done = run is not None and run.get("state") == "completed"
        self.export_button.setEnabled(done)
        self.continue_button.setEnabled(done)
        self.chat_button.setEnabled(any(r.get("state") == "completed" for r in self.runs()))
        self.sweep_button.setVisible(study_of(self.runs()) is not None)

    def open_sweep(self) -> None:
        """Ask for the view of the sweep these runs are trials of."""
        study = study_of(self.runs())
        if study:
            self.sweepRequested.emit(study)

    def open_in_chat(self) -> None:
        """Ask for the runs' GGUFs in the chat pane, best first."""
        ranked = [e.run_id for e in (self.board.entries if self.board else []) if e.kind == "run"]
        self.chatRequested.emit(ranked)

    def export_winner(self) -> None:
        run = self._winner_run()
        if run is not None:
            self.bridge.export(run["id"])
            self.note.setText(f"Exporting {run.get('name') or run['id']}…")

    def continue_winner(self) -> None:
        run = self._winner_run()
        if run is None:
            return
        epochs = self.ask_epochs(self, run.get("name") or run["id"])
        if epochs:
            self.bridge.continue_run(run["id"], epochs)
            self.note.setText(f"Continuing {run.get('name') or run['id']} for {epochs:g} epoch(s)…")

    def close_view(self) -> None:
        if self._connected:
            self._connected = False
            for signal, slot in (
                (self.bridge.runsChanged, self.on_runs_changed),
                (self.bridge.commandDone, self.on_job_done),
                (self.bridge.commandFailed, self.on_command_failed),
            ):
                signal.disconnect(slot)


def _fill_combo(
    combo: QtWidgets.QComboBox, items: list[tuple[str, str]], current: str | None
) -> None:
    """Replace a combo's items (data, text) and select `current`, without signals."""
    combo.blockSignals(True)
    combo.clear()
    for data, text in items:
        combo.addItem(text, data)
    index = combo.findData(current)
    combo.setCurrentIndex(max(index, 0))
    combo.blockSignals(False)


def _text(metric: str, value: float | None) -> str:
    if metric != TRAIN_TIME:
        return format_cell(value)
    return f"{value:.1f}s" if value is not None and value < 10 else format_duration(value)


def _row_scores(entries: list[Entry]) -> set[str]:
    return {k for e in entries for row in e.rows for k, v in row["scores"].items() if v is not None}
