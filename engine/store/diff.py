"""What differs between runs: their frozen configs, their data, their final metrics and their eval
scores (`eval` of the run shape).

Works on the run shape `Store.run_json` returns (with its `spec`), plus the data statistics each
worker logs once ("Data: {...}"), so the compare view and `tunegraph diff` share one answer and it
is tested without Qt. `compare(runs)` gives a `RunDiff`; `format_diff` prints it as text, each
value through `engine.formatting.format_cell` as the compare view shows it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from engine.errors import TunegraphError
from engine.formatting import format_cell, format_delta
from engine.spec import JobSpec
from engine.store.index import Store

# spec sections in the order they are shown; identity fields are left out (they always differ)
SECTIONS = ("base_model", "method", "datasets", "training", "lora", "resources", "export")
SKIPPED = (
    "name",
    "node_uuid",
    "origin_uuid",
    "upstream_node",
    "graph_path",
    "format_version",
    "data_steps",  # shown as one line, `data.recipe`
)
FINAL_METRICS = ("loss", "eval_loss", "grad_norm", "tokens_per_s")
DATA_PREFIX = "Data: "
MISSING = None


@dataclass(frozen=True)
class FieldDiff:
    """One config field across the runs: `key` is dotted (`training.learning_rate`)."""

    key: str
    values: tuple[Any, ...]

    @property
    def differs(self) -> bool:
        first = self.values[0]
        return any(not _same(first, v) for v in self.values[1:])


@dataclass(frozen=True)
class MetricDelta:
    """A final metric per run and each run's change against the first run."""

    name: str
    values: tuple[float | None, ...]

    @property
    def deltas(self) -> tuple[float | None, ...]:
        base = self.values[0]
        return tuple(None if base is None or v is None else v - base for v in self.values)


@dataclass
class RunDiff:
    """Runs side by side: names, every config field, final metrics and samples."""

    ids: list[str]
    names: list[str]
    fields: list[FieldDiff] = field(default_factory=list)
    metrics: list[MetricDelta] = field(default_factory=list)
    samples: list[list[dict]] = field(default_factory=list)

    def rows(self, differences_only: bool = False) -> list[FieldDiff]:
        """The config rows, all or only those whose values differ between runs."""
        return [f for f in self.fields if f.differs or not differences_only]

    @property
    def changed_keys(self) -> list[str]:
        return [f.key for f in self.fields if f.differs]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    return a == b


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict/list as dotted keys (`datasets.0.path`); lists of scalars stay one value."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for key in value:
            out.update(flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}.{i}"))
    else:
        out[prefix] = tuple(value) if isinstance(value, list) else value
    return out


def data_stats(events: list[dict]) -> dict | None:
    """The data statistics a worker logged ("Data: {json}" log line), or None before it did."""
    for event in reversed(events):
        message = event.get("message") or ""
        if event.get("kind") == "log" and message.startswith(DATA_PREFIX):
            try:
                return json.loads(message[len(DATA_PREFIX) :])
            except ValueError:
                return None
    return None


def config_of(run: dict, stats: dict | None = None) -> dict[str, Any]:
    """A run's comparable settings as dotted keys: its spec sections, plus data rows and hashes."""
    spec = with_defaults(run.get("spec") or {})
    out: dict[str, Any] = {}
    for section in SECTIONS:
        if section in spec:
            out.update(flatten(spec[section], section))
        if section == "datasets" and stats:
            for i, ds in enumerate(stats.get("datasets") or []):
                out[f"datasets.{i}.rows"] = ds.get("rows")
                out[f"datasets.{i}.sha256"] = ds.get("sha256")
            out["datasets.train_rows"] = stats.get("train_rows")
            out["datasets.eval_rows"] = stats.get("eval_rows")
    for key, value in spec.items():
        if key not in SECTIONS and key not in SKIPPED:
            out.update(flatten(value, key))
    if spec.get("data_steps"):
        out["data.recipe"] = recipe_line(spec["data_steps"])
    return out


def recipe_line(steps: list[dict]) -> str:
    """A run's data steps on one line: `generate "synthetic" (24 rows, teacher X.gguf, seed 1)
    → dedup "near dups" (near 0.8) → split "hold out" (4 eval rows)`."""
    parts = []
    for step in steps:
        spec = step.get("spec") or {}
        what = []
        if step.get("step") == "generate":
            teacher = str(spec.get("teacher") or "").replace("\\", "/").rsplit("/", 1)[-1]
            what = [f"{spec.get('rows')} rows", f"teacher {teacher}", f"seed {spec.get('seed')}"]
        elif step.get("step") == "dedup":
            what = [f"near {spec.get('near_threshold')}"]
        elif step.get("step") == "split":
            rows = spec.get("eval_rows")
            what = [f"{rows} eval rows" if rows else f"eval {spec.get('eval_fraction')}"]
        elif step.get("step") == "mix":
            what = [spec.get("ratios") or spec.get("counts") or "all rows"]
        detail = f" ({', '.join(map(str, what))})" if what else ""
        parts.append(f'{step.get("step")} "{step.get("name")}"{detail}')
    return " → ".join(parts)


def with_defaults(spec: dict) -> dict:
    """`spec` with the defaults of the fields it was written without (a spec.json from before
    they existed), so an old run and a new one differ only where their settings do."""
    try:
        return JobSpec.from_dict(spec).to_dict()
    except (TunegraphError, TypeError, ValueError):
        return spec


def compare(runs: list[dict], stats: list[dict | None] | None = None) -> RunDiff:
    """Compare runs (run_json shape, first run is the baseline); `stats` are their data_stats."""
    stats = stats or [None] * len(runs)
    configs = [config_of(r, s) for r, s in zip(runs, stats, strict=True)]
    keys: list[str] = []
    seen: set[str] = set()
    for config in configs:
        for key in config:
            if key not in seen:
                seen.add(key)
                keys.append(key)
    fields = [FieldDiff(k, tuple(c.get(k, MISSING) for c in configs)) for k in keys]
    metrics = [
        MetricDelta(m, tuple((r.get("metrics") or {}).get(m) for r in runs)) for m in FINAL_METRICS
    ]
    metrics += [  # the training method's own, when the runs share a method: "rewards/margins", …
        MetricDelta(
            name, tuple(((r.get("metrics") or {}).get("method") or {}).get(name) for r in runs)
        )
        for name in shared_method_metrics(runs)
    ]
    metrics += [  # the eval scores: "set.jsonl: rouge_l", "set.jsonl (base): loss", …
        MetricDelta(
            f"{name}: {metric}",
            tuple(((r.get("eval") or {}).get(name) or {}).get(metric) for r in runs),
        )
        for name, metric in _eval_scores(runs)
    ]
    return RunDiff(
        ids=[r["id"] for r in runs],
        names=[r.get("name") or r["id"] for r in runs],
        fields=fields,
        metrics=metrics,
        samples=[list(r.get("samples") or []) for r in runs],
    )


def shared_method_metrics(runs: list[dict]) -> list[str]:
    """The training-method metrics (`metrics.method` of the run shape) of runs that share one
    method, in order of first appearance; none when their methods differ."""
    if len({r.get("method") for r in runs}) != 1:
        return []
    names = (name for r in runs for name in ((r.get("metrics") or {}).get("method") or {}))
    return list(dict.fromkeys(names))


def _eval_scores(runs: list[dict]) -> list[tuple[str, str]]:
    """(eval set, metric) of every score any of the runs has, in order of first appearance."""
    seen: dict[tuple[str, str], None] = {}
    for run in runs:
        for name, scores in (run.get("eval") or {}).items():
            for metric in scores or {}:
                seen[(name, metric)] = None
    return list(seen)


def format_diff(
    runs: list[dict], stats: list[dict | None] | None = None, differences_only: bool = True
) -> str:
    """`tunegraph diff` as text: the runs, the differing config fields, final metrics, deltas."""
    diff = compare(runs, stats)
    headers = ["field"] + [f"{n} ({i})" for n, i in zip(diff.names, diff.ids, strict=True)]
    table = [[f.key] + [format_cell(v) for v in f.values] for f in diff.rows(differences_only)]
    if not table:
        table = [["(no config differences)"] + [""] * len(runs)]
    table.append([""] * len(headers))
    for m in diff.metrics:
        cells = []
        for value, delta in zip(m.values, m.deltas, strict=True):
            text = format_cell(value)
            d = format_delta(delta)
            cells.append(f"{text} ({d})" if d else text)
        table.append([f"final {m.name}"] + cells)
    widths = [max(len(row[c]) for row in [headers] + table) for c in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [headers] + table
    ]
    return "\n".join(lines)


def diff_json(
    runs: list[dict], stats: list[dict | None] | None = None, differences_only: bool = True
) -> dict:
    """`tunegraph diff --json`: ids, names, config fields (key -> values per run), final metrics
    with their deltas against the first run."""
    diff = compare(runs, stats)
    return {
        "ids": diff.ids,
        "names": diff.names,
        "fields": {f.key: list(f.values) for f in diff.rows(differences_only)},
        "metrics": {
            m.name: {"values": list(m.values), "deltas": list(m.deltas)} for m in diff.metrics
        },
    }


def diff_runs(store: Store, refs: list[str]) -> tuple[list[dict], list[dict | None]]:
    """Resolve run references (id, prefix or name) and read each run and its data statistics."""
    runs = [store.run_json(store.resolve(ref)) for ref in refs]
    return runs, [data_stats(store.events(run["id"], kinds="log")) for run in runs]
