"""Metric names: which exist, which are the defaults, which need a judge, and the scorer of each.

A metric is named as on the command line (DESIGN.md "The command line"): `loss`, `exact`,
`contains`, `regex:PATTERN`, `json`, `json:SCHEMA.json`, `rouge_l`, `python:FILE.py`, `judge` and
`judge_pairwise`. `check_metrics` turns the names asked for into the list an eval computes (the
defaults when none is asked; `judge_pairwise` added to `judge` when two or more targets compete),
building every text scorer once so a bad pattern or file fails before any model is loaded.
`score_names` is what the results report: `loss` also reports `perplexity` (exp of the loss).
"""

from __future__ import annotations

from engine.errors import EvalError
from engine.eval.pyscore import PythonScorer, check_source
from engine.eval.scorers import FunctionScorer, RougeL, Scorer, contains, exact, json_scorer
from engine.eval.scorers import regex_scorer as regex

DEFAULT_METRICS = ("loss", "rouge_l")
# computed by the runner with a model, not from two texts
MODEL_METRICS = ("loss", "judge", "judge_pairwise")
KNOWN = (
    "loss",
    "exact",
    "contains",
    "regex:PATTERN",
    "json",
    "json:SCHEMA.json",
    "rouge_l",
    "python:FILE.py",
    "judge",
    "judge_pairwise",
)
LOWER_IS_BETTER = frozenset({"loss", "perplexity"})


def make_scorer(name: str) -> Scorer:
    """The scorer of a text metric; EvalError for an unknown name, a pattern that does not
    compile, or a bad schema or Python file."""
    name = name.strip()
    if name == "exact":
        return FunctionScorer("exact", exact)
    if name == "contains":
        return FunctionScorer("contains", contains)
    if name == "rouge_l":
        return RougeL()
    if name == "json":
        return json_scorer()
    if name.startswith("json:"):
        return json_scorer(name[len("json:") :])
    if name.startswith("regex:"):
        return regex(name[len("regex:") :])
    if name.startswith("python:"):
        return PythonScorer(name[len("python:") :])
    raise EvalError(f"unknown metric {name!r}", "Metrics: " + ", ".join(KNOWN) + ".")


def check_metric(name: str) -> None:
    """Check one metric name without running user code (a Python scorer file is compiled, not
    imported): EvalError for an unknown name, a pattern that does not compile, a missing or
    broken schema file, or a Python file that is missing or has a syntax error (file and line)."""
    name = name.strip()
    if name in MODEL_METRICS or name in ("exact", "contains", "rouge_l", "json"):
        return
    if name.startswith("python:"):
        check_source(name[len("python:") :])
        return
    make_scorer(name)


def check_metrics(names: list[str] | tuple[str, ...], targets: int, judge: bool) -> list[str]:
    """The metrics an eval computes, in order, without repeats: `names` (the defaults when
    empty), `judge` added when a judge is given but no judge metric is named, and
    `judge_pairwise` after `judge` when two or more targets compete. EvalError for a bad metric,
    a judge metric without a judge, or judge_pairwise with one target."""
    wanted = list(dict.fromkeys(n.strip() for n in names if n.strip())) or list(DEFAULT_METRICS)
    if judge and not {"judge", "judge_pairwise"} & set(wanted):
        wanted.append("judge")
    for name in wanted:
        if name in MODEL_METRICS:
            continue
        make_scorer(name)  # builds it: a bad pattern or file fails here
    needs_judge = [n for n in wanted if n in ("judge", "judge_pairwise")]
    if needs_judge and not judge:
        raise EvalError(
            f"metric {needs_judge[0]} needs a judge model", "Give one with --judge JUDGE.gguf."
        )
    if "judge_pairwise" in wanted and targets < 2:
        raise EvalError(
            "metric judge_pairwise compares targets: it needs two or more",
            "Name more targets, or use the judge metric.",
        )
    if "judge" in wanted and targets >= 2 and "judge_pairwise" not in wanted:
        wanted.insert(wanted.index("judge") + 1, "judge_pairwise")
    return wanted


def score_names(metrics: list[str]) -> list[str]:
    """The scores results report for `metrics`: each metric, with `perplexity` after `loss`."""
    out: list[str] = []
    for name in metrics:
        out.append(name)
        if name == "loss":
            out.append("perplexity")
    return out


def lower_is_better(metric: str) -> bool:
    """True for scores where a smaller value wins (loss, perplexity)."""
    return metric in LOWER_IS_BETTER
