"""What the Dataset preview shows for a data node (Generate, Filter, Deduplicate, Mix, Split): the
file its data step wrote, once made, with what the step dropped and why (Qt-free).

A data node's step is found in the canvas's last compile (the specs' `data_steps`, by the node's
uuid): a node that feeds no Fine-Tune node, or has an error, has none yet. The step's worker
records the library artifacts it made (engine.recipes.worker); each artifact folder holds the
manifest (counts per rule) and `dropped.jsonl` (each dropped row with its rule).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from engine import paths
from engine.events import read_events, run_state
from engine.rundir import WORKER_LOG

MAX_DROPPED = 20


@dataclass
class DataNodeView:
    """A data node's step as the preview shows it."""

    step: dict | None  # None: no step (not feeding a Fine-Tune node, or an error)
    path: str = ""  # the output previewed (a Split's train part)
    made: bool = False
    state: str | None = None  # of the step's worker, when it ran
    reason: str = ""
    progress: str = ""
    counts: dict = field(default_factory=dict)
    dropped: list[dict] = field(default_factory=list)


def find_step(specs: list, node_uuid: str) -> dict | None:
    """The data step of the node `node_uuid` in compiled specs, or None."""
    for spec in specs:
        for step in spec.data_steps:
            if step.get("node_uuid") == node_uuid:
                return step
    return None


def view_of(specs: list, node_uuid: str) -> DataNodeView:
    """Where the node's data stands: not compiled, not made (queued, building, failed), or made
    (with its counts and dropped rows)."""
    step = find_step(specs, node_uuid)
    if step is None:
        return DataNodeView(None)
    port = "train" if "train" in step["outputs"] else next(iter(step["outputs"]))
    view = DataNodeView(step, path=step["outputs"][port])
    view.made = Path(view.path).is_file()
    folder = Path(view.path).parent
    if folder.is_dir():
        view.state, data = run_state(folder)
        view.reason = str(data.get("reason") or "")
        for event in read_events(folder / WORKER_LOG):
            if event.kind == "progress" and event.get("max_steps"):
                view.progress = f"{event.get('step', 0)}/{event['max_steps']} rows"
            if event.kind == "status" and event.get("state") == "completed":
                artifacts = event.get("artifacts") or []
                index = list(step["outputs"]).index(port)
                if index < len(artifacts):
                    view.counts, view.dropped = artifact_details(artifacts[index])
    return view


def artifact_details(artifact_id: str) -> tuple[dict, list[dict]]:
    """(counts, the first dropped rows) of a library dataset artifact."""
    folder = paths.library_dir() / artifact_id
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}, []
    dropped = []
    try:
        with open(folder / "dropped.jsonl", encoding="utf-8") as f:
            for line in f:
                if len(dropped) >= MAX_DROPPED:
                    break
                try:
                    dropped.append(json.loads(line))
                except ValueError:
                    continue
    except OSError:
        pass
    return manifest.get("counts") or {}, dropped


def status_text(name: str, view: DataNodeView) -> str:
    """One sentence for a data node whose rows cannot be shown yet."""
    if view.step is None:
        return (
            f"“{name}” feeds no Fine-Tune node yet (or has an error): connect it, and its rows "
            "show here once made."
        )
    if view.state in ("starting", "queued"):
        return f"“{name}” is being made" + (f": {view.progress}" if view.progress else "") + "."
    if view.state in ("failed", "cancelled"):
        return (
            f"“{name}” {view.state}: {view.reason}. Run the graph again to go on (rows already "
            "written are kept)."
        )
    return (
        f"“{name}” is not made yet: Run the graph, or `tunegraph run GRAPH --only-data`, and its "
        "rows show here."
    )


def counts_html(counts: dict) -> str:
    """`24 in · 20 kept · dropped: cut 3, near duplicate 1`."""
    if not counts:
        return ""
    dropped = counts.get("dropped") or {}
    text = f"{counts.get('in', 0):,} in · {counts.get('kept', 0):,} kept"
    if dropped:
        text += " · dropped: " + ", ".join(f"{html.escape(r)} {n:,}" for r, n in dropped.items())
    return text


def dropped_html(rows: list[dict], grey: str) -> str:
    """The dropped rows with the rule that dropped each."""
    if not rows:
        return f"<p style='color:{grey}'>Nothing was dropped.</p>"
    blocks = []
    for row in rows:
        rule = html.escape(str(row.get("rule") or row.get("reason") or "?"))
        body = {k: v for k, v in row.items() if k not in ("rule", "reason")}
        text = html.escape(json.dumps(body, ensure_ascii=False)[:600])
        blocks.append(f"<p><b>{rule}</b><br><span style='color:{grey}'>{text}</span></p>")
    return "".join(blocks)
