"""Watching the store for the app: which runs changed since the last look, and new metric points.

`RunWatcher.poll()` is what the app's reader thread calls a few times a second; it returns only
what changed (runs whose row differs, runs that disappeared, metric and eval points newer than the
last ones seen for each run someone subscribed to). `Series` is the growing, step-keyed arrays a
chart draws from: a resumed worker re-emits steps after its last checkpoint, and the latest attempt
replaces them, so a curve never holds duplicate points. Besides METRIC_FIELDS, batches and series
carry a column per training-method metric the run logs (TRL's `rewards/margins`, `kl`, `reward`…,
engine.events.is_method_metric). Qt-free, so it is tested with plain pytest.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.errors import TunegraphError
from engine.events import LIVE_STATES, is_method_metric

if TYPE_CHECKING:  # the store (sqlite-utils, which tries pandas) loads in the reader thread
    from engine.store.index import Store

METRIC_FIELDS = ("epoch", "loss", "grad_norm", "lr", "tokens_per_s")


@dataclass
class MetricBatch:
    """New points of one run as columns (built in the reader thread, so the GUI thread only
    copies arrays); `reset` means they replace everything seen before."""

    run_id: str
    columns: dict[str, np.ndarray]  # "step" + METRIC_FIELDS (+ method metrics), ordered by step
    evals: list[dict]
    reset: bool = False

    @property
    def metrics(self) -> list[dict]:
        """The points as dicts (for tests and small consumers)."""
        steps = self.columns["step"]
        return [
            {
                name: (
                    int(col[i]) if name == "step" else (None if np.isnan(col[i]) else float(col[i]))
                )
                for name, col in self.columns.items()
            }
            for i in range(len(steps))
        ]


@dataclass
class WatchUpdate:
    """What changed between two polls: runs changed or removed and new metric batches."""

    changed: list[dict] = field(default_factory=list)  # run_json shape + "hold"
    removed: list[str] = field(default_factory=list)
    batches: list[MetricBatch] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.changed or self.removed or self.batches)


class RunWatcher:
    """Diffs the store between polls. Use from one thread; `subscribe` may be called from any."""

    def __init__(self, store: Store, ingest: bool = True):
        self.store = store
        self.ingest = ingest  # index live runs' new events ourselves (idempotent) too
        self._runs: dict[str, dict] = {}
        self._cursors: dict[str, tuple[float, float]] = {}  # run -> (metric ts, eval ts)
        self._pending: set[str] = set()
        self._dropped: set[str] = set()
        self._lock = threading.Lock()

    def subscribe(self, run_id: str) -> None:
        """Send this run's metric points from the next poll on (all of them first, as a reset)."""
        with self._lock:
            self._pending.add(run_id)
            self._dropped.discard(run_id)

    def unsubscribe(self, run_id: str) -> None:
        """Stop sending this run's metric points."""
        with self._lock:
            self._pending.discard(run_id)
            self._dropped.add(run_id)

    def poll(self) -> WatchUpdate:
        """Everything that changed since the previous poll."""
        if self.ingest:
            for run in self._runs.values():
                if run["state"] in LIVE_STATES and run.get("run_dir"):
                    self._ingest(run["run_dir"])
        runs = self.store.list_runs()
        holds = {h["run_id"]: {"gpu": h["gpu"], "gib": h["gib"]} for h in self.store.holds()}
        update = WatchUpdate()
        current: dict[str, dict] = {}
        for run in runs:
            run["hold"] = holds.get(run["id"])
            current[run["id"]] = run
            if self._runs.get(run["id"]) != run:
                update.changed.append(run)
        update.removed = [rid for rid in self._runs if rid not in current]
        self._runs = current
        with self._lock:
            pending, self._pending = self._pending, set()
            for rid in self._dropped:
                self._cursors.pop(rid, None)
            self._dropped = set()
        for rid in update.removed:
            self._cursors.pop(rid, None)
        for rid in pending:
            if rid in current:
                self._cursors[rid] = (-1.0, -1.0)
        for rid, (m_ts, e_ts) in list(self._cursors.items()):
            batch = self._points(rid, m_ts, e_ts)
            if batch:
                update.batches.append(batch)
        return update

    def _ingest(self, run_dir: str) -> None:
        try:
            self.store.ingest(Path(run_dir))
        except (TunegraphError, OSError):
            pass  # a run folder being deleted; the next list shows it gone

    def _points(self, run_id: str, m_ts: float, e_ts: float) -> MetricBatch | None:
        # Store has no "metrics newer than ts" reader yet; its (run_id, ts) indexes serve this.
        # the training method's metrics: those its latest step logged (the run row's summary),
        # read by SQLite from each row's JSON `data` as exact doubles
        logged = ((self._runs.get(run_id) or {}).get("metrics") or {}).get("method") or {}
        method = [name for name in logged if '"' not in name]
        names = ("step", "ts") + METRIC_FIELDS + tuple(method)
        fields = ("step", "ts") + METRIC_FIELDS + ("json_extract(data, ?)",) * len(method)
        rows = self.store.db.execute(
            f"SELECT {', '.join(fields)} FROM metrics WHERE run_id = ? AND ts > ? ORDER BY step",
            (*(f'$."{name}"' for name in method), run_id, m_ts),
        ).fetchall()
        evals = [
            {"step": r[0], "ts": r[1], "eval_loss": r[2], "set_loss": _set_loss(r[3])}
            for r in self.store.db.execute(
                "SELECT step, ts, eval_loss, data FROM evals WHERE run_id = ? AND ts > ?"
                " ORDER BY step",
                (run_id, e_ts),
            ).fetchall()
        ]
        reset = m_ts < 0
        if not (rows or evals or reset):
            return None
        table = np.array(rows, dtype=float).reshape(len(rows), len(names))
        columns = {
            name: np.ascontiguousarray(table[:, i]) for i, name in enumerate(names) if name != "ts"
        }
        new_m = float(np.nanmax(table[:, 1])) if rows else m_ts
        new_e = max([e_ts] + [r["ts"] or 0.0 for r in evals])
        self._cursors[run_id] = (max(new_m, m_ts, 0.0), max(new_e, 0.0))
        return MetricBatch(run_id, columns, evals, reset)


def _set_loss(data: str | None) -> dict:
    """The Eval nodes' set losses an evaluation during training carried ({set: loss})."""
    try:
        found = json.loads(data or "{}").get("set_loss")
    except (ValueError, AttributeError):
        return {}
    return found if isinstance(found, dict) else {}


class Series:
    """One run's metric arrays keyed by step (NaN where a value is unknown), growing in place;
    the eval loss, and each Eval node set's loss, at the steps evaluated. A training-method
    metric gets its column when it first arrives (`method_names`)."""

    def __init__(self, capacity: int = 1024):
        self._n = 0
        self._cols = {name: np.full(capacity, np.nan) for name in ("step",) + METRIC_FIELDS}
        self.eval_steps: list[int] = []
        self.eval_loss: list[float] = []
        self.set_loss: dict[str, dict[int, float]] = {}  # set -> step -> loss
        self._bounds: list[int] = []

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, name: str) -> np.ndarray:
        return self._cols[name][: self._n]

    def __contains__(self, name: str) -> bool:
        return name in self._cols

    @property
    def method_names(self) -> list[str]:
        """The training-method metrics seen so far, in order of arrival."""
        return [name for name in self._cols if name != "step" and name not in METRIC_FIELDS]

    def clear(self) -> None:
        """Drop every point, keeping the arrays."""
        self._n = 0
        self.eval_steps, self.eval_loss = [], []
        self.set_loss = {}
        self._bounds = []

    def extend(self, metrics: list[dict] | dict[str, np.ndarray], evals: list[dict] = ()) -> None:
        """Add points ordered by step (dicts, or columns as MetricBatch carries them); a step at
        or before the last one replaces the points from there on."""
        if isinstance(metrics, dict):
            columns = metrics
        else:
            names = dict.fromkeys(self._cols)
            names.update((k, None) for m in metrics for k in m if is_method_metric(k))
            columns = {
                name: np.array(
                    [np.nan if m.get(name) is None else m[name] for m in metrics], dtype=float
                )
                for name in names
            }
        count = len(columns.get("step", ()))
        for name in columns:  # a method metric seen for the first time: NaN before it
            if name not in self._cols:
                self._cols[name] = np.full(len(self._cols["step"]), np.nan)
        if count:
            first = columns["step"][0]
            if self._n and first <= self._cols["step"][self._n - 1]:
                self._n = int(np.searchsorted(self["step"], first, side="left"))
                self._bounds = [b for b in self._bounds if b < first]
            start = self._n
            need = start + count
            if need > len(self._cols["step"]):
                size = max(need, 2 * len(self._cols["step"]))
                for name, col in self._cols.items():
                    grown = np.full(size, np.nan)
                    grown[:start] = col[:start]
                    self._cols[name] = grown
            for name, col in self._cols.items():
                col[start:need] = columns.get(name, np.nan)
            self._n = need
            self._add_bounds(max(start - 1, 0))
        for ev in evals:
            step, loss = int(ev["step"]), ev.get("eval_loss")
            while self.eval_steps and self.eval_steps[-1] >= step:
                self.eval_steps.pop()
                self.eval_loss.pop()
            self.eval_steps.append(step)
            self.eval_loss.append(np.nan if loss is None else float(loss))
            for name, points in self.set_loss.items():  # a resumed run replays later steps
                self.set_loss[name] = {k: v for k, v in points.items() if k < step}
            for name, value in (ev.get("set_loss") or {}).items():
                self.set_loss.setdefault(name, {})[step] = np.nan if value is None else value

    def _add_bounds(self, start: int) -> None:
        epochs = np.floor(np.nan_to_num(self["epoch"][start:], nan=0.0) + 1e-9)
        jumps = np.nonzero(np.diff(epochs) > 0)[0] + 1 + start
        self._bounds += [int(self["step"][i]) for i in jumps]

    def epoch_boundaries(self) -> list[int]:
        """Steps at which a new whole epoch began (epoch 1, 2, …)."""
        return list(self._bounds)


def batch_label(run: dict) -> str:
    """The batch monitor: "E0 450/1000" (micro batches within the current epoch), or ""."""
    step, max_steps, epoch = run.get("step"), run.get("max_steps"), run.get("epoch")
    if not step or not max_steps or not epoch:
        return ""
    training = (run.get("spec") or {}).get("training") or {}
    per_epoch = step / epoch if epoch > 0 else 0
    if not per_epoch:
        return ""
    total_epochs = max_steps / per_epoch
    index = min(int(epoch + 1e-9), max(int(np.ceil(total_epochs - 1e-9)) - 1, 0))
    accum = int(training.get("grad_accum") or 1)
    per_epoch_steps = round(per_epoch)
    within = step - index * per_epoch_steps
    return f"E{index} {within * accum}/{per_epoch_steps * accum}"


def decimate(
    x: np.ndarray,
    y: np.ndarray,
    lo: float | None = None,
    hi: float | None = None,
    max_bins: int = 2000,
) -> tuple[np.ndarray, np.ndarray]:
    """The points of (x sorted, y) within [lo, hi], peak-decimated to at most ~2 * max_bins:
    each bin of k points becomes its min and its max, so spikes survive. O(points in range)."""
    n = len(x)
    i0 = 0 if lo is None else max(int(np.searchsorted(x, lo, side="left")) - 1, 0)
    i1 = n if hi is None else min(int(np.searchsorted(x, hi, side="right")) + 1, n)
    xs, ys = x[i0:i1], y[i0:i1]
    m = len(xs)
    if m <= 2 * max_bins:
        return xs, ys
    k = -(-m // max_bins)
    bins = m // k
    head = bins * k
    xb, yb = xs[:head].reshape(bins, k), ys[:head].reshape(bins, k)
    out_x = np.empty(2 * bins + m - head)
    out_y = np.empty_like(out_x)
    out_x[0 : 2 * bins : 2], out_x[1 : 2 * bins : 2] = xb[:, 0], xb[:, -1]
    out_y[0 : 2 * bins : 2] = np.fmin.reduce(yb, axis=1)  # NaN only where a whole bin is NaN
    out_y[1 : 2 * bins : 2] = np.fmax.reduce(yb, axis=1)
    out_x[2 * bins :], out_y[2 * bins :] = xs[head:], ys[head:]
    return out_x, out_y
