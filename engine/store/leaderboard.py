"""The leaderboard of a group of runs (a sweep, duplicates, any selection): who wins on an eval set.

`build_board` ranks the runs' adapters (and, where they were scored, the base as a baseline row
and each run's GGUF) by one score: a metric of the chosen eval set (their `eval` in the run
shape of `Store.run_json`), the training eval loss or the training time. Each entry carries its
scores, the knobs that differ between the runs (engine.store.diff), and its outputs per eval row
(engine.eval.run_results). The winner is the best run; the base and GGUF rows are ranked with
the runs but never win. `bar_fraction` sizes a score's bar, `family` finds the runs that share an
origin with one (a Fine-Tune node and its duplicates and sweep copies). Works on plain data, so
the app's view only draws it and tests need no Qt.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

from engine.eval.metrics import lower_is_better
from engine.spec import PARTS

EVAL_LOSS = "eval_loss"  # the Trainer's loss on the eval split, last value
TRAIN_TIME = "training_time"  # seconds spent in the `training` state
RUN_SCORES = (EVAL_LOSS, TRAIN_TIME)
LOWER_BETTER = {EVAL_LOSS, TRAIN_TIME}
UNIT_METRICS = ("exact", "contains", "json", "rouge_l", "judge_pairwise")  # scores in 0..1
_SECTION_PART = {"base_model": "base_model", "datasets": "dataset", "evals": "eval"}


@dataclass
class Entry:
    """One row of the board: a run's adapter, the base it started from, or a run's GGUF."""

    label: str
    kind: str  # "run" | "base" | "gguf"
    run_id: str | None
    scores: dict[str, float | None] = field(default_factory=dict)
    knobs: dict[str, Any] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)  # {"prompt", "reference", "output", "scores"}


@dataclass
class Board:
    """The ranked entries for one eval set and score, with everything the view shows."""

    sets: list[str]  # the eval sets any of the runs was scored on
    set: str | None
    metrics: list[str]  # that set's scores, in order
    metric: str  # what the entries are ranked by
    entries: list[Entry]  # best first
    winner: str | None  # the best run's id
    knobs: list[tuple[str, str]]  # (config key, short label) of the knobs that differ
    prompts: list[tuple[str, str]]  # (prompt, reference) of each eval row

    @property
    def rankable(self) -> list[str]:
        """The scores the board can be ranked by: the set's metrics, eval loss, training time."""
        return [*self.metrics, *RUN_SCORES]


def better_is_lower(metric: str) -> bool:
    """True when a smaller value of `metric` wins (loss, perplexity, eval loss, time)."""
    return metric in LOWER_BETTER or lower_is_better(metric)


def eval_sets(runs: list[dict]) -> list[str]:
    """The eval sets the runs' adapters were scored on, in order of first appearance."""
    found: dict[str, None] = {}
    for run in runs:
        for key in run.get("eval") or {}:
            if not key.endswith((" (base)", " (gguf)")):
                found[key] = None
    return list(found)


def build_board(
    runs: list[dict],
    results: dict[str, list[dict]] | None = None,
    stats: list[dict | None] | None = None,
    times: dict[str, float | None] | None = None,
    set_name: str | None = None,
    metric: str | None = None,
) -> Board:
    """Rank `runs` (run_json shape, with `spec`) on `set_name` (default: the first set) by
    `metric` (default: the set's first metric, else the eval loss). `results` holds each run's
    results row by row (engine.eval.run_results), `stats` their data statistics (for the diff)
    and `times` their training time in seconds (`training_seconds`)."""
    from engine.store.diff import compare  # the index's imports (sqlite-utils, pandas): lazily,
    # so the runs tab, which finds families here, starts without them

    results, times = results or {}, times or {}
    sets = eval_sets(runs)
    chosen = set_name if set_name in sets else (sets[0] if sets else None)
    metrics = _set_metrics(runs, chosen)
    diff = compare(runs, stats) if len(runs) > 1 else None
    keys = diff.changed_keys if diff else []
    entries: list[Entry] = []
    bases: set[str] = set()
    for index, run in enumerate(runs):
        found = _rows_of(results.get(run["id"]) or [], chosen)
        knobs = {f.key: f.values[index] for f in diff.fields if f.differs} if diff else {}
        scores = dict((run.get("eval") or {}).get(chosen) or {}) if chosen else {}
        scores[EVAL_LOSS] = (run.get("metrics") or {}).get(EVAL_LOSS)
        scores[TRAIN_TIME] = times.get(run["id"])
        name = run.get("name") or run["id"]
        entries.append(Entry(name, "run", run["id"], scores, knobs, found.get("adapter", [])))
        gguf = (run.get("eval") or {}).get(f"{chosen} (gguf)") if chosen else None
        if gguf:
            entries.append(
                Entry(f"{name} · GGUF", "gguf", run["id"], dict(gguf), knobs, found.get("gguf", []))
            )
        base = (run.get("eval") or {}).get(f"{chosen} (base)") if chosen else None
        source = ((run.get("spec") or {}).get("base_model") or {}).get("source") or "base"
        if base and source not in bases:  # one baseline row per base model
            bases.add(source)
            entries.append(
                Entry(f"base: {source}", "base", None, dict(base), {}, found.get("base", []))
            )
    wanted = metric if metric in [*metrics, *RUN_SCORES] else (metrics[0] if metrics else EVAL_LOSS)
    entries = rank_entries(entries, wanted)
    winner = next(
        (e.run_id for e in entries if e.kind == "run" and e.scores.get(wanted) is not None), None
    )
    prompts = next(([(r["prompt"], r["reference"]) for r in e.rows] for e in entries if e.rows), [])
    return Board(
        sets, chosen, metrics, wanted, entries, winner, [(k, knob_label(k)) for k in keys], prompts
    )


def rank_entries(entries: list[Entry], metric: str) -> list[Entry]:
    """Best first by `metric`; entries without that score last, ties in the given order."""
    sign = 1.0 if better_is_lower(metric) else -1.0

    def key(item: tuple[int, Entry]) -> tuple[int, float, int]:
        index, entry = item
        value = entry.scores.get(metric)
        if value is None or not math.isfinite(value):
            return (1, 0.0, index)
        return (0, sign * value, index)

    return [e for _, e in sorted(enumerate(entries), key=key)]


def bar_fraction(metric: str, value: float | None, values: list[float | None]) -> float:
    """How long the bar of `value` is (0..1, longer is better): scores in 0..1 and the judge's
    1..10 on their own scale; others (loss, perplexity, time) against the column's range."""
    if value is None or not math.isfinite(value):
        return 0.0
    if metric in UNIT_METRICS or metric.startswith(("regex:", "json:", "python:")):
        return min(max(value, 0.0), 1.0)
    if metric == "judge":
        return min(max(value / 10.0, 0.0), 1.0)
    known = [v for v in values if v is not None and math.isfinite(v)]
    low, high = min(known), max(known)
    if high == low:
        return 1.0
    good = (high - value) if better_is_lower(metric) else (value - low)
    return 0.1 + 0.9 * good / (high - low)


def training_seconds(statuses: list[dict], now: float | None = None) -> float | None:
    """Seconds a run spent in the `training` state, over all its attempts (its `status` events
    ordered by time); None before it trained."""
    total, since = 0.0, None
    for event in statuses:
        if since is not None:
            total += event["ts"] - since
            since = None
        if event.get("state") == "training":
            since = event["ts"]
    if since is not None:
        total += (now or time.time()) - since
    return total if total or any(e.get("state") == "training" for e in statuses) else None


def family(runs: list[dict], run_id: str) -> list[str]:
    """The ids of the runs sharing an origin with `run_id`: its Fine-Tune node's duplicates and
    sweep copies (and theirs), through each spec's `node_uuid` and `origin_uuid`."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    uuid_of = {}
    for run in runs:
        spec = run.get("spec") or {}
        node, origin = spec.get("node_uuid") or "", spec.get("origin_uuid") or ""
        uuid_of[run["id"]] = node or run["id"]
        if node and origin:
            parent[root(node)] = root(origin)
    mine = root(uuid_of.get(run_id, run_id))
    return [r["id"] for r in runs if root(uuid_of[r["id"]]) == mine]


def knob_label(key: str) -> str:
    """A config key's short label: `training.learning_rate` → `lr`, `datasets.1.path` →
    `data[1]` (the spec field's `short`, else its name with spaces)."""
    parts = key.split(".")
    section, name = parts[0], parts[-1]
    cls = PARTS.get(_SECTION_PART.get(section, section))
    short = name.replace("_", " ")
    if cls is not None:
        for f in dataclasses.fields(cls):
            if f.name == name:
                short = f.metadata.get("short") or short
    index = next((p for p in parts[1:-1] if p.isdigit()), None)
    return f"{short}[{index}]" if index is not None else short


def _set_metrics(runs: list[dict], chosen: str | None) -> list[str]:
    found: dict[str, None] = {}
    if chosen is None:
        return []
    for run in runs:
        for key in (chosen, f"{chosen} (base)", f"{chosen} (gguf)"):
            for metric in (run.get("eval") or {}).get(key) or {}:
                found[metric] = None
    return list(found)


def _rows_of(results: list[dict], chosen: str | None) -> dict[str, list[dict]]:
    """Rows by target ("adapter", "base", "gguf") of the latest results on the set `chosen`."""
    rows: dict[str, list[dict]] = {}
    for result in results:
        if result.get("set") != chosen:
            continue
        for target in result.get("results") or []:
            rows[target["target"]] = list(target.get("rows") or [])
    return rows
