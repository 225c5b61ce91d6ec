"""The training method's own charts: which of TRL's metrics each method plots, and how.

Declared once as data (`METHOD_CHARTS`) and drawn by `MethodPlots` beside a run's loss, grad-norm
and learning-rate curves (run detail) or across runs of one method (compare view). Preference
methods (DPO, ORPO, SimPO) chart the rewards of the chosen and the rejected answers with their
margin, and the accuracy; KTO its rewards and KL; GRPO the reward mean with a ± std band and one
line per reward function, and the completion length. SFT and pretrain have none.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyqtgraph as pg
from PySide6 import QtCore, QtGui

from engine.store.watch import Series

GRPO_FUNCTION = ("rewards/", "/mean")  # rewards/<function>/mean: one reward function's mean
FUNCTION_COLOURS = ("#e0d35c", "#5cd0e0", "#e0607e", "#c08a5c", "#8ad05c", "#d05cc0")


@dataclass(frozen=True)
class Line:
    """One curve: a metric by its TRL name, its legend label and colour."""

    key: str
    label: str
    colour: str


@dataclass(frozen=True)
class Chart:
    """One plot of a method: its curves, optionally a ± std band around the first curve
    (`band` names the std metric) and one curve per GRPO reward function."""

    title: str
    lines: tuple[Line, ...]
    band: str | None = None
    per_function: bool = False
    y_range: tuple[float, float] | None = None  # fixed, e.g. an accuracy's 0..1

    @property
    def headline(self) -> Line:
        """The one line a comparison of runs overlays (the rewards' margin, the reward mean…)."""
        return self.lines[-1]


REWARDS = Chart(
    "rewards",
    (
        Line("rewards/chosen", "chosen", "#5cc48a"),
        Line("rewards/rejected", "rejected", "#e0607e"),
        Line("rewards/margins", "margin", "#4fa3e0"),
    ),
)
ACCURACY = Chart(
    "accuracy", (Line("rewards/accuracies", "accuracy", "#f0a53c"),), y_range=(0.0, 1.0)
)
PREFERENCE = (REWARDS, ACCURACY)
METHOD_CHARTS: dict[str, tuple[Chart, ...]] = {
    "dpo": PREFERENCE,
    "orpo": PREFERENCE,
    "simpo": PREFERENCE,
    "kto": (REWARDS, Chart("KL", (Line("kl", "KL", "#b07ee0"),))),
    "grpo": (
        Chart("reward", (Line("reward", "mean ± std", "#4fa3e0"),), "reward_std", True),
        Chart("completion length", (Line("completions/mean_length", "mean", "#5cc48a"),)),
    ),
}


def charts_of(method: str | None) -> tuple[Chart, ...]:
    """The charts of a training method (none for sft, pretrain or an unknown method)."""
    return METHOD_CHARTS.get(method or "", ())


def function_name(key: str) -> str | None:
    """The reward function of a GRPO `rewards/<function>/mean` metric, else None."""
    head, tail = GRPO_FUNCTION
    if key.startswith(head) and key.endswith(tail) and len(key) > len(head) + len(tail):
        return key[len(head) : -len(tail)]
    return None


class MethodPlots:
    """The plots of one method's charts stacked in `layout` (a pyqtgraph GraphicsLayout), drawn
    from a Series with `draw(series, set_curve)`; `x_link` is the plot whose steps they follow."""

    def __init__(self, layout: pg.GraphicsLayout, charts: tuple[Chart, ...], x_link: pg.PlotItem):
        self.charts = charts
        self.plots: list[pg.PlotItem] = []
        self.curves: dict[str, pg.PlotDataItem] = {}  # metric -> its curve (all charts)
        self.functions: list[str] = []  # the GRPO reward functions' metrics, as they appear
        self._bands: dict[int, tuple[pg.PlotDataItem, pg.PlotDataItem]] = {}
        for i, chart in enumerate(charts):
            plot = layout.addPlot(row=i, col=0)
            plot.setLabel("left", chart.title)
            plot.showGrid(x=True, y=True, alpha=0.15)
            plot.setClipToView(True)
            plot.getAxis("left").setWidth(64)
            plot.setXLink(x_link)
            if chart.y_range:
                plot.setYRange(*chart.y_range, padding=0.05)
                plot.getViewBox().setMouseEnabled(y=False)
            if i == len(charts) - 1:
                plot.setLabel("bottom", "step")
            if len(chart.lines) > 1 or chart.band or chart.per_function:
                plot.addLegend(offset=(10, 10), brush=pg.mkBrush(28, 30, 33, 190))
            if chart.band:
                colour = QtGui.QColor(chart.lines[0].colour)
                edge = pg.mkPen(colour.darker(150), width=1)
                low, high = plot.plot(pen=edge), plot.plot(pen=edge)
                colour.setAlpha(60)
                plot.addItem(pg.FillBetweenItem(low, high, brush=pg.mkBrush(colour)))
                self._bands[i] = (low, high)
            for line in chart.lines:
                self.curves[line.key] = plot.plot(
                    pen=pg.mkPen(line.colour, width=2), name=line.label
                )
            self.plots.append(plot)

    def draw(self, series: Series, set_curve) -> None:
        """Hand every curve its points (a reward function seen for the first time gets its
        curve first)."""
        steps = series["step"]
        for i, (chart, plot) in enumerate(zip(self.charts, self.plots, strict=True)):
            keys = [line.key for line in chart.lines]
            if chart.per_function:
                self._add_functions(plot, series)
                keys += self.functions
            for key in keys:
                if key in series:
                    set_curve(self.curves[key], plot, steps, series[key])
            if i in self._bands and chart.band in series and keys[0] in series:
                mean, std = series[keys[0]], series[chart.band]
                low, high = self._bands[i]
                set_curve(low, plot, steps, mean - std)
                set_curve(high, plot, steps, mean + std)

    def _add_functions(self, plot: pg.PlotItem, series: Series) -> None:
        for key in series.method_names:
            name = function_name(key)
            if name is None or key in self.curves:
                continue
            colour = FUNCTION_COLOURS[len(self.functions) % len(FUNCTION_COLOURS)]
            pen = pg.mkPen(colour, width=1.5, style=QtCore.Qt.PenStyle.DashLine)
            self.curves[key] = plot.plot(pen=pen, name=name)
            self.functions.append(key)

    def point_count(self, key: str) -> int:
        """Points the curve of one metric holds now (0 when it has none)."""
        curve = self.curves.get(key)
        data = None if curve is None else curve.xData
        return 0 if data is None else len(data)
