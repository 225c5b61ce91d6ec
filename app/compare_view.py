"""Compare two or more runs: overlaid curves, the config diff (with "differences only"), final
metric deltas and the samples side by side. The diff itself is `engine.store.diff.compare`.

Each run's column names its training method; when the runs share one, a second row of charts
overlays the method's headline metrics (the rewards' margin, the accuracy, KL, the GRPO reward…)
and the final metrics list the method's own beside the loss. The curves of a pruned run (a sweep's
loser, stopped early) stay, drawn faint and dashed."""

from __future__ import annotations

import html

import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from app.method_charts import charts_of
from app.run_bridge import RunBridge
from app.run_detail import on_screen, set_curve, watch_range
from engine.formatting import format_cell, format_delta
from engine.store.diff import RunDiff, compare, data_stats
from engine.store.watch import Series

PALETTE = ("#4fa3e0", "#f0a53c", "#5cc48a", "#e0607e", "#b07ee0", "#e0d35c", "#5cd0e0", "#c08a5c")
CHARTS = (("loss", "loss"), ("grad_norm", "grad norm"), ("lr", "learning rate"))
CHANGED_BG = QtGui.QColor(120, 90, 30)
LOWER_IS_BETTER = ("loss", "eval_loss", "grad_norm")
HIGHER_IS_BETTER = ("rewards/margins", "rewards/accuracies", "reward")
REDRAW_MS = 100
PRUNED_ALPHA = 110  # of 255: a pruned run's curves stay, faint


def run_pen(colour: str, state: str | None) -> QtGui.QPen:
    """A run's curve: its colour; a pruned run's faint and dashed."""
    if state != "pruned":
        return pg.mkPen(colour)
    faint = QtGui.QColor(colour)
    faint.setAlpha(PRUNED_ALPHA)
    return pg.mkPen(faint, width=1, style=QtCore.Qt.PenStyle.DashLine)


class CompareView(QtWidgets.QWidget):
    def __init__(
        self, bridge: RunBridge, run_ids: list[str], parent: QtWidgets.QWidget | None = None
    ):
        super().__init__(parent)
        self.bridge = bridge
        self.run_ids = list(run_ids)
        self.series = {rid: Series() for rid in self.run_ids}
        self.stats: dict[str, dict | None] = {}
        self.diff: RunDiff | None = None
        self.states: dict[str, str | None] = {}  # the state each run's pen was drawn for
        self._job = f"compare:{id(self)}"
        self.dirty = False
        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.summary = QtWidgets.QLabel()
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(QtCore.Qt.TextFormat.RichText)
        layout.addWidget(self.summary)
        layout.addWidget(split, 1)
        self.plots = pg.GraphicsLayoutWidget()
        self.plots.setBackground("#1c1e21")
        self.curves: dict[str, dict[str, pg.PlotDataItem]] = {}
        self.plot_items: dict[str, pg.PlotItem] = {}
        self._max_steps = 0
        self.method = self.shared_method()
        method_charts = [(c.headline.key, c.headline.key) for c in charts_of(self.method)]
        first = None
        for i, (key, title) in enumerate(list(CHARTS) + method_charts):
            row, col = divmod(i, len(CHARTS))
            plot = self.plots.addPlot(row=row, col=col, title=title)
            plot.showGrid(x=True, y=True, alpha=0.15)
            plot.setDownsampling(auto=True, mode="peak")
            plot.setClipToView(True)
            self.plot_items[key] = plot
            if first is None:
                first = plot
                plot.addLegend(offset=(-10, 10))
                watch_range(plot, self._range_changed)
            else:
                plot.setXLink(first)
            for i, rid in enumerate(self.run_ids):
                name = self._name(rid)
                self.curves.setdefault(key, {})[rid] = plot.plot(
                    pen=pg.mkPen(PALETTE[i % len(PALETTE)]), name=name if plot is first else None
                )
        self.style_curves()
        split.addWidget(self.plots)
        self.tabs = QtWidgets.QTabWidget()
        split.addWidget(self.tabs)
        split.setSizes([330, 420])
        cfg = QtWidgets.QWidget()
        cfg_layout = QtWidgets.QVBoxLayout(cfg)
        cfg_layout.setContentsMargins(2, 2, 2, 2)
        self.only_diff = QtWidgets.QCheckBox("Differences only")
        self.only_diff.setChecked(True)
        self.only_diff.toggled.connect(self.fill_config)
        cfg_layout.addWidget(self.only_diff)
        self.config = QtWidgets.QTableWidget()
        self.config.verticalHeader().setVisible(False)
        self.config.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        cfg_layout.addWidget(self.config)
        self.tabs.addTab(cfg, "Config diff")
        self.metrics = QtWidgets.QTableWidget()
        self.metrics.verticalHeader().setVisible(False)
        self.metrics.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.tabs.addTab(self.metrics, "Final metrics")
        self.samples = QtWidgets.QWidget()
        self.samples_layout = QtWidgets.QHBoxLayout(self.samples)
        self.tabs.addTab(self.samples, "Samples")
        bridge.pointsArrived.connect(self.on_points)
        bridge.runsChanged.connect(self.on_runs_changed)
        bridge.commandDone.connect(self.on_job_done)
        for rid in self.run_ids:
            bridge.subscribe(rid)
        self._subscribed = True
        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self.redraw)
        self._stale: list[str] = []
        self.timer.start(REDRAW_MS // len(CHARTS))
        self.fetch_stats()
        self.refresh()

    def _name(self, run_id: str) -> str:
        run = self.bridge.runs.get(run_id) or {}
        return run.get("name") or run_id

    def style_curves(self) -> None:
        """Each run's pen for its state: a run pruned since is greyed, in the legend too."""
        for i, rid in enumerate(self.run_ids):
            state = (self.bridge.runs.get(rid) or {}).get("state")
            if self.states.get(rid, "?") == state:
                continue
            self.states[rid] = state
            pen = run_pen(PALETTE[i % len(PALETTE)], state)
            for curves in self.curves.values():
                curves[rid].setPen(pen)
            legend = self.plot_items["loss"].legend
            if legend is not None:
                for _sample, label in legend.items:
                    if label.text in (self._name(rid), f"{self._name(rid)} (pruned)"):
                        pruned = " (pruned)" if state == "pruned" else ""
                        label.setText(self._name(rid) + pruned)

    def shared_method(self) -> str | None:
        """The training method all compared runs share (None when they differ or are unknown)."""
        methods = {(self.bridge.runs.get(rid) or {}).get("method") for rid in self.run_ids}
        return methods.pop() if len(methods) == 1 else None

    # -- data --------------------------------------------------------------------------------
    def fetch_stats(self) -> None:
        ids = list(self.run_ids)

        def job(store):
            return {rid: data_stats(store.events(rid, kinds="log")) for rid in ids}

        self.bridge.submit_job(self._job, "", job)

    def on_job_done(self, label: str, _run_id: str, result: object) -> None:
        if label == self._job:
            self.stats = dict(result or {})
            self.refresh()

    def on_runs_changed(self, runs: list) -> None:
        if any(r["id"] in self.series for r in runs):
            self.style_curves()
            self.refresh()

    def on_points(self, batches: list) -> None:
        for batch in batches:
            series = self.series.get(batch.run_id)
            if series is not None:
                if batch.reset:
                    series.clear()
                series.extend(batch.columns, batch.evals)
                self.dirty = True

    def redraw(self, force: bool = False) -> None:
        """One chart per tick (3 ticks per 100 ms), so each paint covers a third of the view:
        the view repaints only what changed (MinimalViewportUpdate)."""
        if self.dirty:
            self.dirty = False
            self._stale = list(self.plot_items)
        if not self._stale or not (force or on_screen(self.plots)):
            return
        for key in list(self._stale) if force else [self._stale[0]]:
            self._stale.remove(key)
            for rid, curve in self.curves[key].items():
                s = self.series[rid]
                if key in s:  # a method metric appears with the run's first step
                    set_curve(curve, self.plot_items[key], s["step"], s[key])

    def _range_changed(self) -> None:
        self.dirty = True

    def point_counts(self, key: str = "loss") -> list[int]:
        """Points held by each run's curve of one chart (drawn now if pending)."""
        self.redraw(force=True)
        return [0 if c.xData is None else len(c.xData) for c in self.curves[key].values()]

    def refresh(self) -> None:
        runs = [self.bridge.runs.get(rid) for rid in self.run_ids]
        if any(r is None for r in runs):
            return
        top = max((r.get("max_steps") or 0) for r in runs)
        if top and top != self._max_steps:  # a fixed step axis: see RunCharts.set_max_steps
            self._max_steps = top
            self.plot_items["loss"].setXRange(0, top, padding=0.01)
        old = self.diff
        self.diff = compare(runs, [self.stats.get(rid) for rid in self.run_ids])
        if old is None or old.fields != self.diff.fields:
            self.fill_config()
        self.fill_metrics()
        if old is None or old.samples != self.diff.samples:
            self.fill_samples()
        self.fill_summary()

    # -- tables ------------------------------------------------------------------------------
    def _headers(self, first: str) -> list[str]:
        """The first column's title, then each run's name with its training method."""
        methods = [(self.bridge.runs.get(rid) or {}).get("method") for rid in self.diff.ids]
        return [first] + [
            f"{name} · {method}" if method else name
            for name, method in zip(self.diff.names, methods, strict=True)
        ]

    def fill_summary(self) -> None:
        d = self.diff
        parts = []
        for i in range(1, len(d.ids)):
            changes = [
                f"{f.key.split('.')[-1]} {format_cell(f.values[0])} → {format_cell(f.values[i])}"
                for f in d.fields
                if not _eq(f.values[0], f.values[i])
            ]
            loss = next(m for m in d.metrics if m.name == "loss").deltas[i]
            colour = PALETTE[i % len(PALETTE)]
            what = ", ".join(changes[:4]) + ("…" if len(changes) > 4 else "") or "no changes"
            effect = f" ⇒ final loss {format_delta(loss) or '±0'}" if loss is not None else ""
            parts.append(
                f"<span style='color:{colour}'>■</span> <b>{html.escape(d.names[i])}"
                f"</b>: {html.escape(what)}{html.escape(effect)}"
            )
        base = (
            f"<span style='color:{PALETTE[0]}'>■</span> baseline <b>{html.escape(d.names[0])}</b>"
        )
        self.summary.setText(" &nbsp; ".join([base] + parts))

    def config_keys(self) -> list[str]:
        """The keys shown in the config table, in order."""
        return [f.key for f in self.diff.rows(self.only_diff.isChecked())]

    def fill_config(self) -> None:
        if self.diff is None:
            return
        rows = self.diff.rows(self.only_diff.isChecked())
        table = self.config
        table.clear()
        table.setColumnCount(1 + len(self.diff.ids))
        table.setHorizontalHeaderLabels(self._headers("setting"))
        table.setRowCount(len(rows))
        bold = QtGui.QFont()
        bold.setBold(True)
        for r, f in enumerate(rows):
            cells = [f.key] + [format_cell(v) for v in f.values]
            for c, text in enumerate(cells):
                item = QtWidgets.QTableWidgetItem(text)
                item.setToolTip(text)
                if f.differs:
                    item.setBackground(CHANGED_BG)
                    item.setFont(bold)
                table.setItem(r, c, item)
        table.resizeColumnsToContents()
        table.horizontalHeader().setStretchLastSection(True)

    def fill_metrics(self) -> None:
        table = self.metrics
        ms = self.diff.metrics
        table.clear()
        table.setColumnCount(1 + len(self.diff.ids))
        table.setHorizontalHeaderLabels(self._headers("final metric"))
        table.setRowCount(len(ms))
        for r, m in enumerate(ms):
            table.setItem(r, 0, QtWidgets.QTableWidgetItem(m.name))
            for c, (value, delta) in enumerate(zip(m.values, m.deltas, strict=True), 1):
                d = format_delta(delta)
                item = QtWidgets.QTableWidgetItem(format_cell(value) + (f"  ({d})" if d else ""))
                if d and m.name in LOWER_IS_BETTER + HIGHER_IS_BETTER:
                    better = delta < 0 if m.name in LOWER_IS_BETTER else delta > 0
                    item.setForeground(QtGui.QColor("#7fd08a" if better else "#f08a7a"))
                table.setItem(r, c, item)
        table.resizeColumnsToContents()
        table.horizontalHeader().setStretchLastSection(True)

    def fill_samples(self) -> None:
        while self.samples_layout.count():
            w = self.samples_layout.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        for i, (name, samples) in enumerate(zip(self.diff.names, self.diff.samples, strict=True)):
            view = QtWidgets.QTextBrowser()
            colour = PALETTE[i % len(PALETTE)]
            body = (
                "".join(
                    f"<p><b>Prompt</b><br>{html.escape(s.get('prompt') or '')}</p>"
                    f"<p style='color:#9fd3a8'>{html.escape(s.get('response') or '')}"
                    "</p><hr>"
                    for s in samples
                )
                or "<p>No samples yet.</p>"
            )
            view.setHtml(f"<h3 style='color:{colour}'>{html.escape(name)}</h3>{body}")
            self.samples_layout.addWidget(view)

    def close_view(self) -> None:
        self.timer.stop()
        if self._subscribed:
            self._subscribed = False
            for rid in self.run_ids:
                self.bridge.unsubscribe(rid)
            for signal, slot in (
                (self.bridge.pointsArrived, self.on_points),
                (self.bridge.runsChanged, self.on_runs_changed),
                (self.bridge.commandDone, self.on_job_done),
            ):
                signal.disconnect(slot)


def _eq(a, b) -> bool:
    return a == b
