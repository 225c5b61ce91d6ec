"""Each data node (Generate, Filter, Deduplicate, Mix, Split) shows where its data stands on the
canvas: a card above it (app.decorations.RunCard, as a Fine-Tune node's runs) with the step's
state, rows made of rows wanted and the teacher's speed while it works, the rows kept and dropped
once made, or why it failed. Its context menu stops a step being made ("Stop making this data":
a Generate step keeps its rows, and running the graph again goes on from them).

A node's step is found in the canvas's last compile (app.data_node_preview), its progress in the
step worker's events, read every POLL_MS while the canvas has data nodes (a few small files).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from PySide6 import QtCore

from app import data_node_preview as data_view
from app.decorations import RunCard
from app.node_factory import decl_of
from app.run_row import STATE_STYLE
from engine.events import read_events
from engine.rundir import WORKER_LOG
from nodes.recipes import STEP_OF

POLL_MS = 1000
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepSummary:
    """What a data node's card says."""

    pill: str
    colour: str
    detail: str
    tone: str
    progress: float | None
    tip: str


def summarize(view: data_view.DataNodeView) -> StepSummary | None:
    """The card of a data node's step; None when there is nothing to say yet."""
    if view.step is None:
        return None
    key = view.step["key"]
    if view.made:
        counts = view.counts
        dropped = sum((counts.get("dropped") or {}).values())
        detail = f"{counts.get('kept', '?')} rows" + (f" · {dropped} dropped" if dropped else "")
        colour, icon = STATE_STYLE["completed"]
        tip = f"Made: {view.path}\n{data_view.counts_html(counts)}"
        return StepSummary(f"{icon} made", colour, detail, "normal", None, tip)
    if view.state in ("queued", "starting"):
        done, _, total = (view.progress or "").partition("/")
        wanted = total.split()[0] if total else ""
        fraction = int(done) / int(wanted) if done.isdigit() and wanted.isdigit() else None
        speed = tokens_per_s(Path(view.path).parent)
        detail = (view.progress or "waiting for a slot") + (
            f" · {speed:.0f} tok/s" if speed else ""
        )
        colour, icon = STATE_STYLE["training" if view.state == "starting" else "queued"]
        tip = f"Data step {key}: stop it from the node's menu, or tunegraph datasets --cancel {key}"
        state = "making" if view.state == "starting" else "queued"
        return StepSummary(f"{icon} {state}", colour, detail, "normal", fraction, tip)
    if view.state in ("failed", "cancelled"):
        colour, icon = STATE_STYLE[view.state]
        tone = "error" if view.state == "failed" else "muted"
        detail = view.reason or view.state
        tip = f"{detail}\nRun the graph again to go on: rows already written are kept."
        return StepSummary(f"{icon} {view.state}", colour, detail, tone, None, tip)
    return None


def tokens_per_s(folder: Path) -> float | None:
    """The teacher's speed in the step worker's last progress event."""
    speed = None
    for event in read_events(folder / WORKER_LOG):
        if event.kind == "progress" and event.get("tokens_per_s"):
            speed = float(event["tokens_per_s"])
    return speed


class DataCards(QtCore.QObject):
    """Keeps every data node's card up to date while the canvas has data nodes."""

    stopRequested = QtCore.Signal(str)  # noqa: N815 - a data step's key to stop

    def __init__(self, canvas, parent: QtCore.QObject | None = None):
        super().__init__(parent or canvas)
        self.canvas = canvas
        self.cards: dict[str, tuple[object, RunCard]] = {}  # node id -> (node, its card)
        self.shown: dict[str, StepSummary | None] = {}
        self.timer = QtCore.QTimer(self, interval=POLL_MS)
        self.timer.timeout.connect(self.sync)
        canvas.compiled.connect(self.sync)
        self.sync()

    def data_nodes(self) -> list:
        return [n for n in self.canvas.nodes() if decl_of(n) and decl_of(n).kind in STEP_OF]

    def sync(self, *_args) -> None:
        """Give each data node its card, showing where its step stands."""
        nodes = self.data_nodes()
        if nodes and not self.timer.isActive():
            self.timer.start()
        elif not nodes:
            self.timer.stop()
        alive = {n.id for n in nodes}
        self.cards = {k: v for k, v in self.cards.items() if k in alive and v[0] in nodes}
        for node in nodes:
            if node.id not in self.cards:
                card = RunCard(node.view)
                card.setVisible(False)
                self.cards[node.id] = (node, card)
            _, card = self.cards[node.id]
            view = data_view.view_of(self.canvas.result.specs, node.get_property("uuid"))
            summary = summarize(view)
            card.setVisible(summary is not None)
            if summary is not None and self.shown.get(node.id) != summary:
                card.set_content(
                    summary.pill,
                    summary.colour,
                    summary.detail,
                    summary.tone,
                    summary.progress,
                    "",
                    summary.tip,
                )
            self.shown[node.id] = summary
            if summary is not None:
                card.place()

    def step_key(self, node) -> str | None:
        """The key of a data node's step (None when it has none)."""
        step = data_view.find_step(self.canvas.result.specs, node.get_property("uuid"))
        return step["key"] if step else None


def install_data_cards(canvas, window) -> DataCards:
    """Cards on the data nodes of `canvas`, and "Stop making this data" in their context menu
    (the window's status bar says what happened)."""
    cards = DataCards(canvas, parent=window)
    menu = canvas.graph.get_context_menu("nodes")

    def stop(_graph, node) -> None:
        key = cards.step_key(node)
        if key is None:
            window.statusBar().showMessage(f"“{node.name()}” is not being made.", 5000)
            return
        cards.stopRequested.emit(key)

    from nodes.catalogue import CATALOGUE

    for kind in STEP_OF:
        menu.add_command("Stop making this data", stop, node_type=CATALOGUE[kind].type_)
    return cards
