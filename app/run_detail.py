"""One run in detail: live charts, step and batch monitors, config, samples, artifacts, logs.

A header names the training method and links the stages of a chain (app.run_header); beside the
loss, grad-norm and learning-rate curves stand the method's own charts (app.method_charts). The
charts draw from `engine.store.watch.Series` (fed by the bridge's metric batches) on a ~10 Hz
timer, only when new points arrived, with peak downsampling and clip-to-view so a 100k-point curve
redraws in a few milliseconds. Logs and events are fetched on the bridge's command thread.
"""

from __future__ import annotations

import html
from pathlib import Path

import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from app.event_view import EventView
from app.method_charts import MethodPlots, charts_of
from app.run_bridge import RunBridge
from app.run_header import RunHeader
from app.run_panel import STATE_STYLE
from engine.formatting import format_bytes, format_cell
from engine.models.tiny import BUILTIN_MODELS, BUILTIN_PREFIX
from engine.store.diff import flatten
from engine.store.watch import Series, batch_label, decimate

REDRAW_MS = 100
MAX_BINS = 2000
MIN_BINS = 200
COLOURS = {"loss": "#4fa3e0", "eval_loss": "#f0a53c", "grad_norm": "#b07ee0", "lr": "#5cc48a"}
LOG_KINDS = ("log", "schedule", "error")
TINY_MODEL = BUILTIN_PREFIX + BUILTIN_MODELS[0]
TINY_NOTE = (
    f"These answers come from <b>{TINY_MODEL}</b>, a tiny test model with random weights: its "
    "answers are nonsense however well the run went. It is there to try the whole pipeline "
    "quickly; pick a real base model to judge what the answers say."
)


def on_screen(widget: QtWidgets.QWidget) -> bool:
    """True when some of `widget` can be seen: shown, and not clipped away by a scroll area."""
    if not widget.isVisible():
        return False
    top = widget.window()
    rect = QtCore.QRect(widget.mapTo(top, QtCore.QPoint(0, 0)), widget.size())
    parent = widget.parentWidget()
    while parent is not None and not rect.isEmpty():
        rect = rect.intersected(QtCore.QRect(parent.mapTo(top, QtCore.QPoint(0, 0)), parent.size()))
        parent = parent.parentWidget()
    return not rect.isEmpty()


def x_window(plot: pg.PlotItem) -> tuple[float | None, float | None]:
    """The x range to draw: everything while the plot follows the data, else what is in view."""
    box = plot.getViewBox()
    if box.autoRangeEnabled()[0]:
        return None, None
    lo, hi = box.viewRange()[0]
    return lo, hi


def set_curve(curve: pg.PlotDataItem, plot: pg.PlotItem, x, y) -> None:
    """Hand pyqtgraph about two points per pixel column of the visible range (peak-decimated
    here, O(range)): its own downsampling scans every point on each setData (1.7 ms per
    100k-point curve) and drawing thousands of sub-pixel segments dominates a paint."""
    lo, hi = x_window(plot)
    bins = int(min(max(plot.getViewBox().width(), MIN_BINS), MAX_BINS))  # ~ one per pixel
    dx, dy = decimate(x, y, lo, hi, bins)
    curve.setData(dx, dy, connect="finite")


def watch_range(plot: pg.PlotItem, on_change) -> None:
    """Call on_change when the user pans or zooms (not when auto-range follows new data)."""
    box = plot.getViewBox()
    box.sigXRangeChanged.connect(lambda *_: None if box.autoRangeEnabled()[0] else on_change())


def base_source(run: dict, runs: dict[str, dict]) -> str:
    """The base model a run started from; a chained run's (`run:<id>`) is its first stage's,
    followed through the runs known here."""
    seen: set[str] = set()
    while True:
        source = str(((run.get("spec") or {}).get("base_model") or {}).get("source") or "")
        upstream = source[len("run:") :] if source.startswith("run:") else ""
        if not upstream or upstream in seen or upstream not in runs:
            return source
        seen.add(upstream)
        run = runs[upstream]


def _plot(layout: pg.GraphicsLayoutWidget, row: int, title: str, last: bool = False) -> pg.PlotItem:
    plot = layout.addPlot(row=row, col=0)
    plot.setLabel("left", title)
    plot.showGrid(x=True, y=True, alpha=0.15)
    plot.setDownsampling(auto=True, mode="peak")
    plot.setClipToView(True)
    plot.getAxis("left").setWidth(64)
    if last:
        plot.setLabel("bottom", "step")
    return plot


class RunCharts(pg.GraphicsLayoutWidget):
    """Loss (with eval loss), gradient norm and learning rate against the global step, and in a
    second column the training method's own charts (`set_method`)."""

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setBackground("#1c1e21")
        self.series = Series()
        self.loss_plot = _plot(self, 0, "loss")
        self.loss_plot.addLegend(offset=(-10, 10))
        self.grad_plot = _plot(self, 1, "grad norm")
        self.lr_plot = _plot(self, 2, "learning rate", last=True)
        for plot in (self.grad_plot, self.lr_plot):
            plot.setXLink(self.loss_plot)
        self.curves = {
            "loss": self.loss_plot.plot(pen=pg.mkPen(COLOURS["loss"]), name="train"),
            "eval_loss": self.loss_plot.plot(
                pen=pg.mkPen(COLOURS["eval_loss"]),
                symbol="o",
                symbolSize=7,
                name="eval",
                symbolBrush=COLOURS["eval_loss"],
            ),
            "grad_norm": self.grad_plot.plot(pen=pg.mkPen(COLOURS["grad_norm"])),
            "lr": self.lr_plot.plot(pen=pg.mkPen(COLOURS["lr"])),
        }
        self.set_curves: dict[str, pg.PlotDataItem] = {}  # an Eval node's set: its loss
        self.method_plots: MethodPlots | None = None
        self._epoch_lines: list[list[tuple[pg.PlotItem, pg.InfiniteLine]]] = []
        self._max_steps: int | None = None
        self.dirty = False
        watch_range(self.loss_plot, self._range_changed)
        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self.redraw)
        self._stale: list[str] = []
        self.timer.start(REDRAW_MS // 3)

    def _range_changed(self) -> None:
        self.dirty = True

    def set_max_steps(self, max_steps: int | None) -> None:
        """Fix the step axis to the planned steps, so it does not re-tick (and re-render its
        labels, the largest part of a paint) at every new point; y still follows the data."""
        if max_steps and max_steps != self._max_steps:
            self._max_steps = max_steps
            self.loss_plot.setXRange(0, max_steps, padding=0.01)

    def set_method(self, method: str | None) -> None:
        """Add the training method's charts (once; none for sft and pretrain)."""
        charts = charts_of(method)
        if self.method_plots is None and charts:
            column = self.addLayout(row=0, col=1, rowspan=3)
            column.setContentsMargins(12, 0, 0, 0)  # level with the loss column's plots
            for col in (0, 1):
                self.ci.layout.setColumnStretchFactor(col, 1)
            self.method_plots = MethodPlots(column, charts, self.loss_plot)
            self._draw_epochs([])  # drawn again on every plot, the new ones included
            self.dirty = True

    def add(self, metrics, evals: list[dict], reset: bool = False) -> None:
        if reset:
            self.series.clear()
        self.series.extend(metrics, evals)
        self.dirty = True

    def redraw(self, force: bool = False) -> None:
        """One chart per tick (3 ticks per 100 ms) so each paint covers a third of the view
        (pyqtgraph views repaint only what changed); hidden charts wait until they are seen."""
        if self.dirty:
            self.dirty = False
            self._stale = ["loss", "grad_norm", "lr"] + (["method"] if self.method_plots else [])
        if not self._stale or not (force or on_screen(self)):
            return
        s = self.series
        steps = s["step"]
        plots = {"loss": self.loss_plot, "grad_norm": self.grad_plot, "lr": self.lr_plot}
        for name in list(self._stale) if force else [self._stale[0]]:
            self._stale.remove(name)
            if name == "method":
                self.method_plots.draw(s, set_curve)
                continue
            set_curve(self.curves[name], plots[name], steps, s[name])
            if name == "loss":
                self.curves["eval_loss"].setData(s.eval_steps, s.eval_loss)
                self._draw_set_losses()
                self._draw_epochs(s.epoch_boundaries())

    def _draw_set_losses(self) -> None:
        """Each Eval node set's loss at the eval steps, dashed, beside the split's eval loss."""
        for name, points in self.series.set_loss.items():
            curve = self.set_curves.get(name)
            if curve is None:
                pen = pg.mkPen(COLOURS["eval_loss"], style=QtCore.Qt.PenStyle.DashLine)
                curve = self.loss_plot.plot(pen=pen, symbol="t", symbolSize=6, name=f"eval: {name}")
                self.set_curves[name] = curve
            steps = sorted(points)
            curve.setData(steps, [points[k] for k in steps])

    def _draw_epochs(self, bounds: list[int]) -> None:
        plots = [self.loss_plot, self.grad_plot, self.lr_plot]
        plots += self.method_plots.plots if self.method_plots else []
        while len(self._epoch_lines) > len(bounds):
            for plot, line in self._epoch_lines.pop():
                plot.removeItem(line)
        pen = pg.mkPen("#8a8f98", width=1, style=QtCore.Qt.PenStyle.DashLine)
        for step in bounds[len(self._epoch_lines) :]:
            lines = []
            for plot in plots:
                line = pg.InfiniteLine(step, angle=90, movable=False, pen=pen)
                plot.addItem(line, ignoreBounds=True)
                lines.append((plot, line))
            self._epoch_lines.append(lines)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        QtCore.QTimer.singleShot(0, self, self.redraw)

    def point_count(self, name: str) -> int:
        """Points the curve of a metric holds (a method metric's too), drawn now if pending."""
        self.redraw(force=True)
        if name not in self.curves:
            return self.method_plots.point_count(name) if self.method_plots else 0
        data = self.curves[name].xData
        return 0 if data is None else len(data)

    def stop(self) -> None:
        self.timer.stop()


class StepMonitor(QtWidgets.QWidget):
    """current/total steps as a bar, epoch boundaries as ticks, eval points as dots."""

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.step, self.total = 0, 0
        self.epochs: list[int] = []
        self.evals: list[int] = []
        self.setMinimumHeight(26)
        self.setSizePolicy(
            QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Fixed
        )

    def set_values(self, step: int, total: int, epochs: list[int], evals: list[int]) -> None:
        values = (step, total, list(epochs), list(evals))
        if values != (self.step, self.total, self.epochs, self.evals):
            self.step, self.total, self.epochs, self.evals = values
            self.update()

    def text(self) -> str:
        return f"step {self.step}/{self.total or '?'}"

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt override
        p = QtGui.QPainter(self)
        p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
        rect = self.rect().adjusted(1, 7, -1, -7)
        p.setPen(QtCore.Qt.PenStyle.NoPen)
        p.setBrush(QtGui.QColor("#2c3036"))
        p.drawRoundedRect(rect, 4, 4)
        total = max(self.total, 1)
        if self.step:
            done = QtCore.QRectF(rect)
            done.setWidth(rect.width() * min(self.step / total, 1.0))
            p.setBrush(QtGui.QColor(STATE_STYLE["training"][0]))
            p.drawRoundedRect(done, 4, 4)
        p.setPen(QtGui.QPen(QtGui.QColor("#d8dce2"), 2))
        for step in self.epochs:  # ticks above and below the bar, clear of the text
            x = rect.left() + rect.width() * step / total
            p.drawLine(QtCore.QPointF(x, rect.top() - 6), QtCore.QPointF(x, rect.top() + 3))
            p.drawLine(QtCore.QPointF(x, rect.bottom() - 3), QtCore.QPointF(x, rect.bottom() + 6))
        p.setPen(QtCore.Qt.PenStyle.NoPen)
        p.setBrush(QtGui.QColor(COLOURS["eval_loss"]))
        for step in self.evals:
            x = rect.left() + rect.width() * step / total
            p.drawEllipse(QtCore.QPointF(x, rect.center().y()), 4, 4)
        p.setPen(QtGui.QColor("white"))
        text_rect = p.fontMetrics().boundingRect(self.text()).adjusted(-6, -1, 6, 1)
        text_rect.moveCenter(rect.center())
        p.setBrush(QtGui.QColor(28, 30, 33, 200))
        p.setPen(QtCore.Qt.PenStyle.NoPen)
        p.drawRoundedRect(text_rect, 3, 3)
        p.setPen(QtGui.QColor("white"))
        p.drawText(rect, QtCore.Qt.AlignmentFlag.AlignCenter, self.text())
        p.end()


class RunDetail(QtWidgets.QWidget):
    """Everything about one run; call close_detail() before dropping it. `openRequested` asks
    for another run's detail (a chain link in the header)."""

    openRequested = QtCore.Signal(str)  # noqa: N815

    def __init__(self, bridge: RunBridge, run_id: str, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.bridge = bridge
        self.run_id = run_id
        self.run: dict = {}
        self._job = f"events:{run_id}:{id(self)}"
        self._events_after: float | None = None
        self._fetching = False
        self._refetch = False
        self._samples: list = []
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.header = RunHeader()
        self.header.openRequested.connect(self.openRequested)
        layout.addWidget(self.header)
        top = QtWidgets.QHBoxLayout()
        self.steps = StepMonitor()
        self.batch = QtWidgets.QLabel()
        self.tokens = QtWidgets.QLabel()
        for label in (self.batch, self.tokens):
            label.setMinimumWidth(110)
        top.addWidget(self.steps, 1)
        top.addWidget(self.batch)
        top.addWidget(self.tokens)
        layout.addLayout(top)
        self.tabs = QtWidgets.QTabWidget()
        layout.addWidget(self.tabs, 1)
        self.charts = RunCharts()
        self.tabs.addTab(self.charts, "Charts")
        self.config = QtWidgets.QTreeWidget()
        self.config.setHeaderLabels(["setting", "value"])
        self.config.setColumnWidth(0, 260)
        self.tabs.addTab(self.config, "Config")
        self.samples = QtWidgets.QTextBrowser()
        self.tabs.addTab(self.samples, "Samples")
        art = QtWidgets.QWidget()
        art_layout = QtWidgets.QVBoxLayout(art)
        self.artifacts = QtWidgets.QTreeWidget()
        self.artifacts.setHeaderLabels(["kind", "size", "path"])
        self.artifacts.setColumnWidth(0, 120)
        self.open_folder = QtWidgets.QPushButton("Open folder")
        self.open_folder.clicked.connect(self.open_selected_folder)
        art_layout.addWidget(self.artifacts)
        art_layout.addWidget(self.open_folder, 0, QtCore.Qt.AlignmentFlag.AlignRight)
        self.tabs.addTab(art, "Artifacts")
        self.logs = EventView(LOG_KINDS)
        self.tabs.addTab(self.logs, "Logs")
        self.events = EventView(None)
        self.tabs.addTab(self.events, "Events")
        bridge.pointsArrived.connect(self.on_points)
        bridge.runsChanged.connect(self.on_runs_changed)
        bridge.runsRemoved.connect(self.on_runs_removed)
        bridge.commandDone.connect(self.on_job_done)
        self.tabs.currentChanged.connect(lambda _i: self.fetch_events())
        bridge.subscribe(run_id)
        self._subscribed = True
        if run_id in bridge.runs:
            self.update_run(bridge.runs[run_id])

    # -- inputs ------------------------------------------------------------------------------
    def on_points(self, batches: list) -> None:
        for batch in batches:
            if batch.run_id == self.run_id:
                self.charts.add(batch.columns, batch.evals, batch.reset)
                self._update_monitor()

    def on_runs_changed(self, runs: list) -> None:
        linked = {self.header.upstream, *self.header.downstream}
        for run in runs:
            if run["id"] == self.run_id:
                self.update_run(run)
                self.fetch_events()
            elif self.run and (run["id"] in linked or run.get("upstream") == self.run_id):
                self.header.set_run(self.run, self.bridge.runs)  # a stage renamed, added…

    def on_runs_removed(self, ids: list) -> None:
        if self.run and {self.header.upstream, *self.header.downstream} & set(ids):
            self.header.set_run(self.run, self.bridge.runs)

    def update_run(self, run: dict) -> None:
        first = not self.run
        self.run = run
        if first:
            self._fill_config(run.get("spec") or {})
            self.charts.set_method(run.get("method"))
        self.header.set_run(run, self.bridge.runs)
        self.charts.set_max_steps(run.get("max_steps"))
        self.batch.setText(batch_label(run) or "E— —")
        tps = (run.get("metrics") or {}).get("tokens_per_s")
        self.tokens.setText(f"{tps:,.0f} tokens/s" if tps else "— tokens/s")
        self._update_monitor()
        samples = run.get("samples") or []
        if first or samples != self._samples:
            self._samples = samples
            self._fill_samples(samples)
        self._fill_artifacts(run.get("artifacts") or [])

    def _update_monitor(self) -> None:
        s = self.charts.series
        step = self.run.get("step") or (int(s["step"][-1]) if len(s) else 0)
        self.steps.set_values(
            step, self.run.get("max_steps") or 0, s.epoch_boundaries(), s.eval_steps
        )

    def _fill_config(self, spec: dict) -> None:
        self.config.clear()
        groups: dict[str, QtWidgets.QTreeWidgetItem] = {}
        for key, value in flatten(spec).items():
            head, _, rest = key.partition(".")
            if not rest:
                self.config.addTopLevelItem(QtWidgets.QTreeWidgetItem([key, format_cell(value)]))
                continue
            if head not in groups:
                groups[head] = QtWidgets.QTreeWidgetItem([head, ""])
                self.config.addTopLevelItem(groups[head])
            groups[head].addChild(QtWidgets.QTreeWidgetItem([rest, format_cell(value)]))
        self.config.expandAll()

    def _fill_samples(self, samples: list[dict]) -> None:
        if not samples:
            self.samples.setPlainText(
                "The three inference samples appear after the final evaluation."
            )
            return
        parts = []
        if base_source(self.run, self.bridge.runs) == TINY_MODEL:
            parts.append(f"<p style='color:#e0c070'>{TINY_NOTE}</p><hr>")
        for i, s in enumerate(samples, 1):
            parts.append(
                f"<p><b>{i}. Prompt</b><br>{html.escape(s.get('prompt') or '')}</p>"
                f"<p style='color:#9fd3a8'><b>Response</b><br>"
                f"{html.escape(s.get('response') or '')}</p><hr>"
            )
        self.samples.setHtml("".join(parts))

    def _fill_artifacts(self, artifacts: list[dict]) -> None:
        if self.artifacts.topLevelItemCount() == len(artifacts):
            return
        self.artifacts.clear()
        for a in artifacts:
            item = QtWidgets.QTreeWidgetItem(
                [a.get("kind") or "", format_bytes(a.get("bytes")), a.get("path") or ""]
            )
            self.artifacts.addTopLevelItem(item)

    def open_selected_folder(self) -> None:
        item = self.artifacts.currentItem() or self.artifacts.topLevelItem(0)
        path = Path(item.text(2)) if item else Path(self.run.get("run_dir") or ".")
        folder = path if path.is_dir() else path.parent
        QtGui.QDesktopServices.openUrl(QtCore.QUrl.fromLocalFile(str(folder)))

    # -- logs and events, fetched on the command thread --------------------------------------
    def fetch_events(self, force: bool = False) -> None:
        """Fetch new log lines and events, only while the Logs or Events tab is shown."""
        if not force and self.tabs.currentWidget() not in (self.logs, self.events):
            return
        if self._fetching:
            self._refetch = True
            return
        self._fetching = True
        run_id, after = self.run_id, self._events_after
        self.bridge.submit_job(self._job, run_id, lambda store: store.events(run_id, after=after))

    def on_job_done(self, label: str, _run_id: str, result: object) -> None:
        if label != self._job:
            return
        self._fetching = False
        events = result or []
        if events:
            self._events_after = events[-1]["ts"]
            self.logs.add(events)
            self.events.add(events)
        if self._refetch:
            self._refetch = False
            QtCore.QTimer.singleShot(500, self, self.fetch_events)

    def close_detail(self) -> None:
        self.charts.stop()
        if self._subscribed:
            self._subscribed = False
            self.bridge.unsubscribe(self.run_id)
            for signal, slot in (
                (self.bridge.pointsArrived, self.on_points),
                (self.bridge.runsChanged, self.on_runs_changed),
                (self.bridge.runsRemoved, self.on_runs_removed),
                (self.bridge.commandDone, self.on_job_done),
            ):
                signal.disconnect(slot)
