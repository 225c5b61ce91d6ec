"""The sweep view: one study's trials as rows, the best so far, Optuna's plots, and the best
trial promoted (exported, continued, or turned into a plain Fine-Tune node on the canvas).

The data is `engine.sweep.report.report(study)`: the study in Optuna's storage joined with its
trials' runs, read off the UI thread (app.sweep_reader) every couple of seconds while the study
runs and once more when it is over. The table has a row per trial (its run, its state in the run
panel's colours, each knob's chosen value, the objective, the step it was pruned at), the best
marked; beside it Optuna's optimisation history (each finished trial's objective as a point, the
best so far as a step line), its parameter importances (PED-ANOVA) as bars, and each trial's eval
loss at its eval points, the pruned ones dashed and grey.
"""

from __future__ import annotations

import html

import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from app.leaderboard import WINNER, WINNER_BG, score_name
from app.run_bridge import RunBridge
from app.run_panel import ask_epochs
from app.run_row import STATE_STYLE
from app.sweep_reader import SweepReader
from engine.formatting import format_cell, format_setting
from engine.sweep.report import params_text

POLL_MS = 2000
PALETTE = ("#4fa3e0", "#f0a53c", "#5cc48a", "#e0607e", "#b07ee0", "#e0d35c", "#5cd0e0", "#c08a5c")
PRUNED_PEN = (150, 150, 150, 110)  # a pruned trial's curve: grey, faint, dashed
BEST_COLOUR = "#f0c46e"
BAR_COLOUR = "#58a66e"
MUTED = "#8a9099"
PRUNERS = {"successive_halving": "successive halving", "median": "median rule"}
# a trial that ended: its run's terminal state, or Optuna's own for a trial without a run
ENDED = ("completed", "failed", "cancelled", "refused", "pruned", "fail", "complete")
STOP_TEXT = (
    "Stop the sweep “{name}”?\n\nNo new trials start, and its queued and running trials are "
    "cancelled (their metrics are kept). Finished trials and the best so far stay."
)


def confirm_stop(parent: QtWidgets.QWidget, name: str) -> bool:
    """Ask before stopping a sweep (its live trials are cancelled). Tests replace
    `SweepView.confirm`."""
    answer = QtWidgets.QMessageBox.question(
        parent,
        "Stop sweep",
        STOP_TEXT.format(name=name),
        QtWidgets.QMessageBox.StandardButton.Yes | QtWidgets.QMessageBox.StandardButton.No,
        QtWidgets.QMessageBox.StandardButton.No,
    )
    return answer == QtWidgets.QMessageBox.StandardButton.Yes


def best_so_far_steps(history: list[dict]) -> tuple[list[float], list[float]]:
    """The best-so-far line of the optimisation history as steps: flat from one finished trial
    to the next, changing at the trial that improved on it."""
    xs: list[float] = []
    ys: list[float] = []
    for i, point in enumerate(history):
        if i:
            xs.append(point["number"])
            ys.append(history[i - 1]["best"])
        xs.append(point["number"])
        ys.append(point["best"])
    return xs, ys


def _plot(layout: pg.GraphicsLayoutWidget, col: int, title: str, x: str, y: str) -> pg.PlotItem:
    plot = layout.addPlot(row=0, col=col, title=title)
    plot.showGrid(x=True, y=True, alpha=0.15)
    plot.setLabel("bottom", x)
    plot.setLabel("left", y)
    plot.getAxis("left").setWidth(56)
    return plot


class SweepView(QtWidgets.QWidget):
    """One study (`study`, its name in Optuna's storage); call close_view() before dropping it."""

    openRequested = QtCore.Signal(str)  # noqa: N815 - a trial's run id
    exportRequested = QtCore.Signal(str)  # noqa: N815 - the best trial's run id: Export dialog
    promoteRequested = QtCore.Signal(object)  # noqa: N815 - {"node_uuid", "name", "params", …}
    confirm = staticmethod(confirm_stop)
    ask_epochs = staticmethod(ask_epochs)

    def __init__(self, bridge: RunBridge, study: str, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.bridge = bridge
        self.study = study
        self.report: dict | None = None
        self.reader = SweepReader(bridge.store_path, self)
        self.reader.loaded.connect(self.on_loaded)
        self.reader.failed.connect(self.on_failed)
        self.curves: dict[int, pg.PlotDataItem] = {}
        self.bars: pg.BarGraphItem | None = None
        self.bar_labels: list[str] = []  # the knobs' short names, bottom to top
        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        split.addWidget(self._build_table())
        split.addWidget(self._build_charts())
        split.setSizes([220, 300])
        self.note = QtWidgets.QLabel()
        self.note.setObjectName("hint")
        self.note.setWordWrap(True)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(self._build_top())
        layout.addWidget(split, 1)
        layout.addWidget(self.note)
        bridge.runsChanged.connect(self.on_runs_changed)
        bridge.commandDone.connect(self.on_command_done)
        bridge.commandFailed.connect(self.on_command_failed)
        self._connected = True
        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self.poll)
        self.timer.start(POLL_MS)
        self._update_buttons()
        self.poll()

    def _build_top(self) -> QtWidgets.QHBoxLayout:
        """The study in a line, the best so far, Promote best and Stop sweep."""
        self.header = QtWidgets.QLabel(f"Reading the sweep {html.escape(self.study)}…")
        self.header.setTextFormat(QtCore.Qt.TextFormat.RichText)
        self.header.setWordWrap(True)
        self.best = QtWidgets.QLabel()
        self.best.setTextFormat(QtCore.Qt.TextFormat.RichText)
        self.best.setWordWrap(True)
        self.promote_button = QtWidgets.QPushButton("Promote best ▾")
        self.promote_button.setToolTip("Export the best trial, continue it, or make it a node")
        self.promote_menu = QtWidgets.QMenu(self.promote_button)
        self.export_action = self.promote_menu.addAction("Export…", self.export_best)
        self.continue_action = self.promote_menu.addAction("Continue…", self.continue_best)
        self.canvas_action = self.promote_menu.addAction(
            "Add to canvas as a Fine-Tune node", self.add_best_to_canvas
        )
        self.canvas_action.setToolTip(
            "A copy of the swept Fine-Tune node and its inputs, without the Sweep node, with the "
            "best trial's values set"
        )
        self.promote_menu.setToolTipsVisible(True)
        self.promote_button.setMenu(self.promote_menu)
        self.stop_button = QtWidgets.QPushButton("Stop sweep")
        self.stop_button.setToolTip("No new trials; cancel the queued and running ones")
        self.stop_button.clicked.connect(self.stop_sweep)
        top = QtWidgets.QHBoxLayout()
        text = QtWidgets.QVBoxLayout()
        text.addWidget(self.header)
        text.addWidget(self.best)
        top.addLayout(text, 1)
        top.addWidget(self.promote_button, 0, QtCore.Qt.AlignmentFlag.AlignTop)
        top.addWidget(self.stop_button, 0, QtCore.Qt.AlignmentFlag.AlignTop)
        return top

    def _build_table(self) -> QtWidgets.QTableWidget:
        self.table = QtWidgets.QTableWidget()
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setToolTip("Double-click a trial to open its run")
        self.table.cellDoubleClicked.connect(self._open_row)
        return self.table

    def _build_charts(self) -> pg.GraphicsLayoutWidget:
        """Optimisation history, parameter importance, eval loss per trial, side by side."""
        self.charts = pg.GraphicsLayoutWidget()
        self.charts.setBackground("#1c1e21")
        # the key in the title: a legend box would sit on the points or the line somewhere
        history = (
            f"optimisation history: <span style='color:{PALETTE[0]}'>●</span> trial "
            f"<span style='color:{BEST_COLOUR}'>━</span> best so far"
        )
        self.history_plot = _plot(self.charts, 0, history, "trial", "objective")
        self.points = self.history_plot.plot(
            pen=None, symbol="o", symbolSize=8, symbolBrush=PALETTE[0], symbolPen=None
        )
        self.best_line = self.history_plot.plot(pen=pg.mkPen(BEST_COLOUR, width=2))
        self.importance_plot = _plot(self.charts, 1, "parameter importance", "share", "")
        self.importance_plot.setXRange(0, 1, padding=0.02)
        self.curves_plot = _plot(
            self.charts, 2, "eval loss per trial (pruned: grey dashes)", "step", "eval loss"
        )
        for col, stretch in ((0, 3), (1, 2), (2, 3)):
            self.charts.ci.layout.setColumnStretchFactor(col, stretch)
        return self.charts

    # -- data --------------------------------------------------------------------------------
    def poll(self) -> None:
        """Read the report again (not while a read is under way)."""
        self.reader.report(self.study)

    @property
    def running(self) -> bool:
        return self.report is None or self.report.get("state") == "running"

    def on_loaded(self, _key: str, report: object) -> None:
        self.report = dict(report)  # type: ignore[arg-type]
        self.fill()
        if not self.running:
            self.timer.stop()  # over: nothing changes any more

    def on_failed(self, _key: str, message: str) -> None:
        self.note.setText(f"The sweep {self.study} cannot be read: {message}")
        if self.report is None:
            self.timer.stop()

    def on_runs_changed(self, runs: list) -> None:
        self._update_buttons()  # the best trial's run may just have arrived
        if not self.timer.isActive() and self.report is not None:
            mine = {t.get("run_id") for t in self.report["trials"]}
            if any(r["id"] in mine for r in runs):  # a pruned trial resumed, a run deleted…
                self.poll()

    # -- drawing -----------------------------------------------------------------------------
    def fill(self) -> None:
        rep = self.report
        if rep is None:
            return
        self.fill_header(rep)
        self.fill_table(rep)
        self.draw_history(rep)
        self.draw_importance(rep)
        self.draw_curves(rep)
        self._update_buttons()

    def objective_text(self, rep: dict) -> str:
        order = "lower is better" if rep["direction"] == "minimize" else "higher is better"
        return f"{score_name(rep['objective'])}, {order}"

    def fill_header(self, rep: dict) -> None:
        ended = sum(1 for t in rep["trials"] if t["state"] in ENDED)
        pruned = sum(1 for t in rep["trials"] if t["state"] == "pruned")
        pruner = PRUNERS.get(rep["pruner"], rep["pruner"])
        parts = [
            f"<b style='font-size:14px'>{html.escape(rep.get('name') or rep['study'])}</b>",
            f"sweep <code>{html.escape(rep['study'])}</code>",
            f"{html.escape(rep['strategy'])}, pruning: {html.escape(pruner)}",
            f"{ended} of {rep['budget']} trials ended" + (f" ({pruned} pruned)" if pruned else ""),
            f"<b>{html.escape(rep['state'])}</b>",
        ]
        self.header.setText(" · ".join(parts))
        self.header.setToolTip("Search space:\n" + "\n".join(rep.get("space") or []))
        best = rep.get("best")
        objective = html.escape(self.objective_text(rep))
        if best is None:
            self.best.setText(f"Best so far: no finished trial yet ({objective}).")
            return
        # a trial's run is named after its values; without its run, the values themselves
        what = best.get("run_name") or params_text(best["params"], rep["knobs"])
        self.best.setText(
            f"<span style='color:{BEST_COLOUR}'>{WINNER}</span> Best so far: "
            f"<b>#{best['number']}</b> {html.escape(what)}: {score_name(rep['objective'])} "
            f"<b>{format_cell(best['value'])}</b> ({objective})"
        )

    def columns(self, rep: dict) -> list[tuple[str, str]]:
        """(key, header) of each table column: trial, run, state, each knob, objective, pruned."""
        arrow = "▼" if rep["direction"] == "minimize" else "▲"
        return [
            ("number", "#"),
            ("run", "Run"),
            ("state", "State"),
            *((f"knob:{k}", short) for k, short in rep["knobs"].items()),
            ("value", f"{score_name(rep['objective'])} {arrow}"),
            ("pruned_at", "Pruned at step"),
        ]

    def fill_table(self, rep: dict) -> None:
        columns = self.columns(rep)
        best = (rep.get("best") or {}).get("number")
        table = self.table
        table.setColumnCount(len(columns))
        table.setHorizontalHeaderLabels([h for _, h in columns])
        table.setRowCount(len(rep["trials"]))
        bold = QtGui.QFont()
        bold.setBold(True)
        for r, trial in enumerate(rep["trials"]):
            is_best = trial["number"] == best
            for c, (key, _header) in enumerate(columns):
                item = QtWidgets.QTableWidgetItem(self._cell(trial, key, is_best))
                item.setData(QtCore.Qt.ItemDataRole.UserRole, trial.get("run_id"))
                if key in ("value", "pruned_at", "number"):
                    item.setTextAlignment(
                        QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter
                    )
                if key == "state":
                    colour, _icon = STATE_STYLE.get(trial["state"], STATE_STYLE[None])
                    item.setForeground(QtGui.QColor(colour).lighter(130))
                elif trial["state"] == "pruned":
                    item.setForeground(QtGui.QColor(MUTED))
                if is_best:
                    item.setBackground(WINNER_BG)
                    item.setFont(bold)
                table.setItem(r, c, item)
        table.resizeColumnsToContents()
        header = table.horizontalHeader()
        header.setSectionResizeMode(1, QtWidgets.QHeaderView.ResizeMode.Stretch)  # the run

    @staticmethod
    def _cell(trial: dict, key: str, is_best: bool) -> str:
        if key == "number":
            return f"{WINNER} {trial['number']}" if is_best else str(trial["number"])
        if key == "run":
            return trial.get("run_name") or "—"
        if key == "state":
            _colour, icon = STATE_STYLE.get(trial["state"], STATE_STYLE[None])
            return f"{icon} {trial['state']}"
        if key.startswith("knob:"):
            value = trial["params"].get(key[5:])
            return format_setting(value) if key[5:] in trial["params"] else "—"
        if key == "value":
            return format_cell(trial.get("value"))
        return "" if trial.get("pruned_at") is None else str(trial["pruned_at"])

    def draw_history(self, rep: dict) -> None:
        history = rep.get("history") or []
        self.history_plot.setLabel("left", score_name(rep["objective"]))
        self.points.setData([p["number"] for p in history], [p["value"] for p in history])
        xs, ys = best_so_far_steps(history)
        self.best_line.setData(xs, ys)
        count = max(rep["budget"], len(rep["trials"]), 1)  # trials are whole numbers
        self.history_plot.setXRange(-0.5, count - 0.5, padding=0)
        every = max(1, count // 10)
        self.history_plot.getAxis("bottom").setTicks(
            [[(n, str(n)) for n in range(0, count, every)], []]
        )

    def draw_importance(self, rep: dict) -> None:
        importance = rep.get("importance") or {}
        plot = self.importance_plot
        if self.bars is not None:
            plot.removeItem(self.bars)
            self.bars = None
        knobs = rep["knobs"]
        if not importance:
            plot.setTitle("parameter importance (after 2 finished trials)")
            plot.getAxis("left").setTicks([[]])
            return
        finished = len(rep.get("history") or [])
        plot.setTitle(f"parameter importance (PED-ANOVA over {finished} finished trials)")
        order = sorted(importance, key=lambda k: importance[k])  # the largest on top
        widths = [importance[k] for k in order]
        self.bars = pg.BarGraphItem(
            x0=0, y=list(range(len(order))), height=0.6, width=widths, brush=BAR_COLOUR
        )
        plot.addItem(self.bars)
        self.bar_labels = [knobs.get(k, k) for k in order]
        plot.getAxis("left").setTicks([list(enumerate(self.bar_labels))])
        plot.setYRange(-0.6, len(order) - 0.4, padding=0)

    def draw_curves(self, rep: dict) -> None:
        best = (rep.get("best") or {}).get("number")
        for trial in rep["trials"]:
            points = trial.get("intermediate") or []
            number = trial["number"]
            curve = self.curves.get(number)
            if curve is None:
                curve = self.curves[number] = self.curves_plot.plot()
            pen = self.curve_pen(trial, best)
            curve.setPen(pen)
            curve.setSymbol("o")  # a trial pruned at its first eval point is one point
            curve.setSymbolSize(5)
            curve.setSymbolPen(None)
            curve.setSymbolBrush(pen.color())
            curve.setZValue(2 if number == best else 0 if trial["state"] == "pruned" else 1)
            curve.setData([p[0] for p in points], [p[1] for p in points])

    @staticmethod
    def curve_pen(trial: dict, best: int | None) -> QtGui.QPen:
        """A trial's eval-loss curve: pruned ones grey, faint and dashed; the best bold."""
        if trial["state"] == "pruned":
            return pg.mkPen(PRUNED_PEN, width=1.5, style=QtCore.Qt.PenStyle.DashLine)
        if trial["number"] == best:
            return pg.mkPen(BEST_COLOUR, width=3)
        return pg.mkPen(PALETTE[trial["number"] % len(PALETTE)], width=1.5)

    # -- what tests and the walkthrough read ---------------------------------------------------
    def history_points(self) -> int:
        data = self.points.xData
        return 0 if data is None else len(data)

    def importance_bars(self) -> dict[str, float]:
        """The bars drawn: knob short name -> its width (share)."""
        if self.bars is None:
            return {}
        opts = self.bars.opts
        return {
            self.bar_labels[int(y)]: float(w) for y, w in zip(opts["y"], opts["width"], strict=True)
        }

    def best_row(self) -> int | None:
        """The table row marked best."""
        for r in range(self.table.rowCount()):
            if self.table.item(r, 0).text().startswith(WINNER):
                return r
        return None

    # -- actions -----------------------------------------------------------------------------
    def best_run(self) -> dict | None:
        """The best trial's run as the bridge last saw it (None: no best, or its run is gone)."""
        best = (self.report or {}).get("best") or {}
        run_id = best.get("run_id")
        return self.bridge.runs.get(run_id) if run_id else None

    def _update_buttons(self) -> None:
        run = self.best_run()
        done = run is not None and run.get("state") == "completed"
        best = (self.report or {}).get("best")
        self.export_action.setEnabled(done)
        self.continue_action.setEnabled(done)
        self.canvas_action.setEnabled(best is not None)
        self.promote_button.setEnabled(best is not None)
        self.stop_button.setEnabled(self.report is not None and self.running)

    def export_best(self) -> None:
        run = self.best_run()
        if run is not None:
            self.exportRequested.emit(run["id"])

    def continue_best(self) -> None:
        run = self.best_run()
        if run is None:
            return
        name = run.get("name") or run["id"]
        epochs = self.ask_epochs(self, name)
        if epochs:
            self.bridge.continue_run(run["id"], epochs)
            self.note.setText(f"Continuing {name} for {epochs:g} epoch(s)…")

    def add_best_to_canvas(self) -> None:
        """Ask for a plain Fine-Tune node with the best trial's values (the window makes it)."""
        rep = self.report or {}
        best = rep.get("best")
        if best is None:
            return
        self.promoteRequested.emit(
            {
                "study": rep["study"],
                "node_uuid": rep.get("node_uuid"),
                "module": rep.get("name"),
                "name": best.get("run_name") or f"{rep.get('name')} #{best['number']}",
                "params": dict(best["params"]),
            }
        )

    def stop_sweep(self) -> None:
        rep = self.report
        if rep is None or not self.running:
            return
        if not self.confirm(self, rep.get("name") or self.study):
            return
        from engine.supervisor import client

        study = self.study
        self.bridge.submit_job(
            "cancel_sweep", study, lambda store: client.cancel_sweep(store, study)
        )
        self.stop_button.setEnabled(False)
        self.note.setText(f"Stopping the sweep {study}…")

    def on_command_done(self, action: str, key: str, _result: object) -> None:
        if action == "cancel_sweep" and key == self.study:
            self.note.setText("Sweep stopped: no new trials; its live trials were cancelled.")
            self.timer.start(POLL_MS)
            self.poll()

    def on_command_failed(self, action: str, key: str, message: str) -> None:
        if action == "cancel_sweep" and key == self.study:
            self.note.setText(f"Could not stop the sweep: {message}")
            self._update_buttons()
        elif action in ("continue",) and self.best_run() and key == self.best_run()["id"]:
            self.note.setText(f"continue failed: {message}")

    def _open_row(self, row: int, _col: int) -> None:
        run_id = self.table.item(row, 0).data(QtCore.Qt.ItemDataRole.UserRole)
        if run_id:
            self.openRequested.emit(run_id)

    def close_view(self) -> None:
        self.timer.stop()
        if self._connected:
            self._connected = False
            for signal, slot in (
                (self.bridge.runsChanged, self.on_runs_changed),
                (self.bridge.commandDone, self.on_command_done),
                (self.bridge.commandFailed, self.on_command_failed),
            ):
                signal.disconnect(slot)
        self.reader.wait()
