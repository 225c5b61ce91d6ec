"""The scoreboard: an eval's results, its ranking, its JSON shape and its table.

`EvalResult.as_json()` is exactly DESIGN.md's `eval --json` shape. Targets are ranked by the first
metric named (higher is better, except loss and perplexity); a target without that score ranks
last, and ties keep the order the targets were given in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from engine.eval.metrics import lower_is_better


@dataclass
class RowResult:
    """One eval row for one target: its prompt, reference, output and scores."""

    prompt: str
    reference: str
    output: str | None
    scores: dict[str, float | None] = field(default_factory=dict)

    def as_json(self) -> dict:
        """`{"prompt", "reference", "output", "scores"}`."""
        return {
            "prompt": self.prompt,
            "reference": self.reference,
            "output": self.output,
            "scores": dict(self.scores),
        }


@dataclass
class TargetResult:
    """One target's mean scores and rows."""

    target: str
    kind: str  # "run" | "base" | "gguf"
    scores: dict[str, float | None] = field(default_factory=dict)
    rows: list[RowResult] = field(default_factory=list)

    def as_json(self) -> dict:
        """`{"target", "kind", "scores", "rows"}`."""
        return {
            "target": self.target,
            "kind": self.kind,
            "scores": dict(self.scores),
            "rows": [r.as_json() for r in self.rows],
        }


@dataclass
class EvalResult:
    """What an eval found: the set, the scores' names, each target's results, the ranking."""

    set: str
    rows: int
    metrics: list[str]
    results: list[TargetResult]
    warnings: list[str] = field(default_factory=list)

    @property
    def ranking(self) -> list[str]:
        """Target names, best first by the first metric."""
        return rank(self.results, self.metrics[0] if self.metrics else None)

    def as_json(self) -> dict:
        """DESIGN.md's `eval --json` shape."""
        return {
            "set": self.set,
            "rows": self.rows,
            "metrics": list(self.metrics),
            "results": [r.as_json() for r in self.results],
            "ranking": self.ranking,
        }


def mean(values: list[float | None]) -> float | None:
    """The mean of the finite values, or None when there is none."""
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return sum(kept) / len(kept) if kept else None


def rank(results: list[TargetResult], metric: str | None) -> list[str]:
    """Target names ordered best first by `metric` (missing scores last, ties in given order)."""
    if metric is None:
        return [r.target for r in results]
    sign = 1.0 if lower_is_better(metric) else -1.0

    def key(item: tuple[int, TargetResult]) -> tuple[int, float, int]:
        index, result = item
        value = result.scores.get(metric)
        if value is None:
            return (1, 0.0, index)
        return (0, sign * value, index)

    return [r.target for _, r in sorted(enumerate(results), key=key)]


def format_value(value: float | None) -> str:
    """A score for the table: 4 significant digits, '-' when missing."""
    if value is None:
        return "-"
    return f"{value:.4g}"


def format_table(result: EvalResult) -> str:
    """The ranked table `tunegraph eval` prints: rank, target, kind and every score."""
    by_name = {r.target: r for r in result.results}
    headers = ["#", "TARGET", "KIND", *result.metrics]
    lines = [
        [
            str(i),
            name,
            by_name[name].kind,
            *(format_value(by_name[name].scores.get(m)) for m in result.metrics),
        ]
        for i, name in enumerate(result.ranking, 1)
    ]
    widths = [max(len(row[c]) for row in [headers, *lines]) for c in range(len(headers))]

    def fmt(row: list[str]) -> str:
        cells = [
            cell.rjust(w) if c in (0,) or c >= 3 else cell.ljust(w)
            for c, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    first = result.metrics[0] if result.metrics else ""
    order = "lower is better" if lower_is_better(first) else "higher is better"
    head = f"Eval set {result.set}: {result.rows} rows; ranked by {first} ({order})"
    return "\n".join([head, fmt(headers), *(fmt(row) for row in lines)])
