"""The compiler's checks for the training methods: a Reward node's scorer (resolved against the
graph's folder like a dataset path and checked without running the user's code) and whether a
Dataset node's file fits the Fine-Tune node's method (its first row's columns, read without
torch: engine.data.method_formats)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.data.method_formats import dataset_problem
from engine.spec import REFERENCE_REWARDS, DatasetSpec, RewardSpec
from nodes.eval_checks import metrics_problem, resolve_metric_files


def resolve_reward(value: Any, base: Path | None) -> Any:
    """A reward scorer with the file it names (`python:`, `json:`) resolved against `base`."""
    if not isinstance(value, str):
        return value
    return resolve_metric_files([value], base)[0]


def reward_problem(value: Any) -> str:
    """Why a reward scorer cannot be built ("" when it can, or cannot be told here): its file is
    missing or does not compile (length:N, and an empty one, are checked by the spec: a Reward
    node must name a scorer, a Filter node's empty scorer means none)."""
    if not isinstance(value, str) or not value.strip() or value.strip().startswith("length:"):
        return ""
    return metrics_problem([value.strip()])


def data_problem(ds: DatasetSpec, method: str, rewards: list[RewardSpec]) -> str:
    """Why a dataset cannot feed a module of `method` ("" when it can, or cannot be told before
    the worker reads it): the columns the method needs that the file lacks, or, for grpo with a
    reward that compares with the row's answer, a file with no answer."""
    needs_answer = any(r.scorer.strip() in REFERENCE_REWARDS for r in rewards)
    return dataset_problem(ds.path, ds.columns, method, needs_answer)
