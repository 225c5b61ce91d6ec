"""The Eval node's files as the compiler resolves and checks them: the metrics that name a file
(`python:FILE.py`, `json:SCHEMA.json`) and the judge model are resolved against the graph's
folder like a dataset path, then checked without loading a model or running the user's code
(engine.eval.metrics.check_metric compiles a scorer file, it does not import it). Relative paths
of a graph without a file are left to the worker, as for datasets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.errors import EvalError
from nodes.graphfile import resolve_file

FILE_METRICS = ("python:", "json:")  # metrics whose text after the prefix is a file path


def resolve_metric_files(metrics: list[str], base: Path | None) -> list[str]:
    """The metrics with each named file resolved against the graph folder `base`."""
    out = []
    for name in metrics:
        prefix = next((p for p in FILE_METRICS if name.startswith(p)), None)
        out.append(prefix + resolve_file(name[len(prefix) :], base) if prefix else name)
    return out


def resolve_judge(value: str, base: Path | None) -> str:
    """A judge or teacher model path resolved against the graph folder (`pypi:PACKAGE` and
    `gguf:pypi:PACKAGE` stay; `gguf:PATH` keeps its prefix)."""
    text = value.strip()
    bare = text.removeprefix("gguf:")
    if bare.startswith("pypi:"):
        return value
    resolved = resolve_file(bare, base)
    return f"gguf:{resolved}" if text.startswith("gguf:") else resolved


def metrics_problem(metrics: Any) -> str:
    """Why the metrics cannot be computed ("" when they can, or cannot be told here): an
    unknown metric, a pattern that does not compile, a scorer or schema file that is missing or
    broken (with the file and line of a syntax error)."""
    if not isinstance(metrics, list):
        return ""
    from engine.eval.metrics import check_metric

    for name in metrics:
        prefix = next((p for p in FILE_METRICS if name.startswith(p)), None)
        if prefix and not Path(name[len(prefix) :]).expanduser().is_absolute():
            continue  # no graph folder to resolve it against: the worker reads it
        try:
            check_metric(name)
        except EvalError as err:
            return _sentence(err)
    return ""


def judge_problem(value: Any) -> str:
    """Why the judge model cannot be used ("" when it can, or cannot be told here): missing, or
    not a GGUF file (checked by its first bytes, not its name)."""
    if not isinstance(value, str) or not value.strip():
        return ""
    text = value.strip().removeprefix("gguf:")
    if not text.startswith("pypi:") and not Path(text).expanduser().is_absolute():
        return ""
    from engine.eval.judge import check_judge

    try:
        check_judge(text)
    except EvalError as err:  # "judge FILE: …": the field's label already says judge
        return _sentence(err).removeprefix("judge ")
    return ""


def _sentence(err: EvalError) -> str:
    return f"{err.message}. {err.hint}" if err.hint else err.message
