"""Each Fine-Tune node shows its runs on the canvas, and Run / Duplicate buttons on hover.

A run records the uuid of the Fine-Tune node it came from (its spec's `node_uuid`), so the runs
the `RunBridge` already polls are grouped by node here: no second reader of the store. Above each
Fine-Tune node, a card (app.decorations.RunCard) shows the node's newest run: its state pill in
the run panel's colours, the step and latest loss with a progress bar while it lives, the last
result once it ended ("loss 1.23 · eval 1.31", the reason it failed, or the step a sweep pruned
it at), and how many earlier runs the node has (for a sweep's trials, how many it has made).
Double-clicking the node or its card asks for that run (`openRequested`).

While the pointer is over a Fine-Tune node, two buttons beside its title ask the window to run it
(`runRequested`) or duplicate it (`duplicateRequested`); the window connects both to its own
actions, so they behave exactly like the node's context menu.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from PySide6 import QtCore

from app.decorations import HoverButtons, OwnClicks, RunCard
from app.node_factory import decl_of
from app.run_row import STATE_STYLE, queue_text, short_id
from engine.events import LIVE_STATES
from engine.store.timing import queue_positions, waits_for_upstream
from nodes.catalogue import FINE_TUNE

# a file path in a message: only its file name is shown on the node (the tooltip has it all)
PATH = re.compile(r"(?<![\w.-])(?:[A-Za-z]:)?[\\/](?:[^\s:\\/]+[\\/])+([^\s:\\/]+)")


@dataclass(frozen=True)
class RunSummary:
    """What a Fine-Tune node says about its newest run."""

    run_id: str
    state: str | None
    pill: str  # icon and state: "▶ training"
    colour: str  # the state's colour in the run panel
    detail: str  # "step 12/40 · loss 1.87" or "loss 1.23 · eval 1.31" or "failed: <reason>"
    tone: str  # "normal", "error" or "muted" (the detail's colour)
    progress: float | None  # 0-1 while the run lives and its total is known
    tip: str


def node_uuid(run: dict) -> str:
    """The uuid of the Fine-Tune node a run was started from ("" when unknown)."""
    return str((run.get("spec") or {}).get("node_uuid") or "")


def runs_by_node(runs: Iterable[dict]) -> dict[str, list[dict]]:
    """Runs grouped by their Fine-Tune node's uuid, newest first in each group."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        uuid = node_uuid(run)
        if uuid:
            groups.setdefault(uuid, []).append(run)
    for group in groups.values():
        group.sort(key=lambda r: (r.get("created_at") or 0, r["id"]), reverse=True)
    return groups


def number(value: float) -> str:
    """A loss as a person reads it: three significant digits."""
    return f"{value:.3g}"


def failure(run: dict) -> str:
    """Why a run failed or was refused, in its own words (the error's message, else the reason)."""
    error = run.get("error") or {}
    return str(error.get("message") or run.get("reason") or "no reason recorded")


def short(text: str) -> str:
    """A message with each file path cut to its file name (`/a/b/chats.jsonl:4` → `chats.jsonl:4`)."""
    return PATH.sub(r"\1", text)


def summarize(run: dict, queue: str | None = None) -> RunSummary:
    """A run as its Fine-Tune node shows it; `queue` is where a queued run stands, as the run
    panel says it ("2nd in queue", "waiting for sft": app.run_row.queue_text)."""
    state = run.get("state")
    colour, icon = STATE_STYLE.get(state, STATE_STYLE[None])
    metrics = run.get("metrics") or {}
    loss, eval_loss = metrics.get("loss"), metrics.get("eval_loss")
    step, total = run.get("step") or 0, run.get("max_steps")
    scores = [f"loss {number(loss)}"] if loss is not None else []
    scores += [f"eval {number(eval_loss)}"] if eval_loss is not None else []
    tone, progress = "normal", None
    if state in ("failed", "refused"):
        detail = short(failure(run))
        tone = "error"
    elif state == "queued":
        detail = queue or str(run.get("reason") or "waiting for a free slot")
    elif state in LIVE_STATES or state == "paused":
        where = f"step {step}/{total}" if total else f"step {step}" if step else ""
        detail = " · ".join(filter(None, [where] + scores[:1]))
        if state == "retrying" and run.get("reason"):
            detail += f" · {run['reason']}"
        progress = step / total if total else 0.0
    elif state == "cancelled":
        detail = f"at step {step}" + (f"/{total}" if total else "")
        tone = "muted"
    elif state is None:  # made, being handed to the supervisor
        detail = "submitting…"
        tone = "muted"
    elif state == "pruned":  # a sweep's loser, stopped at an eval point
        detail = " · ".join([f"pruned at step {step}" + (f"/{total}" if total else "")] + scores)
        tone = "muted"
    else:  # completed
        detail = " · ".join(scores) or "no loss logged"
        if run.get("warnings"):
            detail += f" · ⚠ {len(run['warnings'])} warning" + "s" * (len(run["warnings"]) > 1)
    return RunSummary(
        run_id=run["id"],
        state=state,
        pill=f"{icon} {state or 'new'}",
        colour=colour,
        detail=detail,
        tone=tone,
        progress=progress,
        tip=tooltip(run, detail),
    )


def tooltip(run: dict, detail: str) -> str:
    lines = [f"{run.get('name') or 'run'} · {short_id(run['id'])}: {run.get('state')}"]
    lines.append(failure(run) if run.get("state") in ("failed", "refused") else detail)
    error = run.get("error") or {}
    if error.get("hint"):
        lines.append(str(error["hint"]))
    lines += [f"⚠ {w}" for w in run.get("warnings") or []]
    lines.append("Double-click to open this run.")
    return "\n".join(lines)


def earlier_text(count: int) -> str:
    return f"+{count} earlier" if count else ""


def others_text(runs: list[dict]) -> str:
    """What the card says of the node's other runs: "+N earlier", or for a sweep's trial how many
    trials its sweep has made so far ("trial 4 of a sweep")."""
    study = ((runs[0].get("spec") or {}).get("trial") or {}).get("study")
    if not study:
        return earlier_text(len(runs) - 1)
    trials = sum(
        1 for r in runs if ((r.get("spec") or {}).get("trial") or {}).get("study") == study
    )
    return f"trial {trials} of a sweep"


class _NodeItems:
    """The card and the hover buttons of one Fine-Tune node."""

    def __init__(self, node, owner: NodeRuns):
        self.node = node
        self.card = RunCard(node.view)
        self.card.setVisible(False)
        self.card.openRequested.connect(lambda: owner.open_node(node))
        self.buttons = HoverButtons(node.view)
        self.buttons.run.clicked.connect(lambda: owner.runRequested.emit(node))
        self.buttons.duplicate.clicked.connect(lambda: owner.duplicateRequested.emit(node))
        self.summary: RunSummary | None = None


class NodeRuns(QtCore.QObject):
    """Keeps every Fine-Tune node's run card and hover buttons up to date."""

    runRequested = QtCore.Signal(object)  # noqa: N815 - a Fine-Tune node to run
    duplicateRequested = QtCore.Signal(object)  # noqa: N815 - a Fine-Tune node to duplicate
    openRequested = QtCore.Signal(str)  # noqa: N815 - a run id to open

    def __init__(self, canvas, bridge, parent: QtCore.QObject | None = None):
        super().__init__(parent or canvas)
        self.canvas = canvas
        self.bridge = bridge
        self.groups: dict[str, list[dict]] = {}
        self.queue: dict[str, str] = {}  # queued run id -> where it stands
        self._items: dict[str, _NodeItems] = {}  # node id -> its items
        self.own_clicks = OwnClicks(canvas.graph.scene())  # a press on a card is not on a pipe
        canvas.compiled.connect(self.sync)
        canvas.graph.node_double_clicked.connect(self.open_node)
        bridge.runsChanged.connect(self.on_runs)
        bridge.runsRemoved.connect(self.on_runs)
        self.on_runs()

    def runs_of(self, node) -> list[dict]:
        """The runs started from a Fine-Tune node, newest first."""
        return self.groups.get(node.get_property("uuid") or "", [])

    def items_of(self, node) -> _NodeItems | None:
        items = self._items.get(node.id)
        return items if items is not None and items.node is node else None

    def on_runs(self, *_args) -> None:
        runs = self.bridge.runs
        self.groups = runs_by_node(runs.values())
        places = queue_positions(runs)
        self.queue = {
            rid: queue_text(places.get(rid), waits_for_upstream(run, runs), run.get("reason"))
            for rid, run in runs.items()
            if run.get("state") == "queued"
        }
        self.sync()

    def sync(self, *_args) -> None:
        """Give every Fine-Tune node its items and show its newest run."""
        nodes = self.canvas.nodes(FINE_TUNE.kind)
        self._items = {n.id: self.items_of(n) or _NodeItems(n, self) for n in nodes}
        for node in nodes:
            self._show(node, self._items[node.id])

    def _show(self, node, items: _NodeItems) -> None:
        buttons = items.buttons
        buttons.watch(node.view)  # again: a node taken out of the scene (undo) loses its filters
        buttons.watch(items.card)
        ok = self.canvas.module_ok(node)
        buttons.run.set_enabled(ok, "fix the errors marked on it first")
        buttons.place(node.view, beside_badge=bool(self.canvas.errors_of(node)))
        runs = self.runs_of(node)
        items.card.setVisible(bool(runs))
        if not runs:
            items.summary = None
            return
        summary = summarize(runs[0], self.queue.get(runs[0]["id"]))
        earlier = others_text(runs)
        if (summary, earlier) != (items.summary, items.card.earlier):
            items.summary = summary
            items.card.set_content(
                summary.pill,
                summary.colour,
                summary.detail,
                summary.tone,
                summary.progress,
                earlier,
                summary.tip,
            )
        items.card.place()

    def open_node(self, node) -> None:
        """Ask for the newest run of a Fine-Tune node (nothing for other nodes, or no runs)."""
        if node is None or decl_of(node) is not FINE_TUNE:
            return
        runs = self.runs_of(node)
        if runs:
            self.openRequested.emit(runs[0]["id"])


def install_node_runs(canvas, views) -> NodeRuns:
    """Show each Fine-Tune node's runs from `views.bridge`; a double-click opens the run in
    `views` (app.run_views.RunViews). The caller connects runRequested and duplicateRequested."""
    node_runs = NodeRuns(canvas, views.bridge, parent=views)
    node_runs.openRequested.connect(views.open_run)
    return node_runs
