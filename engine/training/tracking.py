"""Experiment tracking for a run (`report_to` in the Training config): a copy of the metrics in
TensorBoard, MLflow or W&B through transformers' own `report_to` integrations; the run's events
stay the source of truth.

`report_to(spec, run_dir)` sets up the chosen tracker in this (the worker's) environment and
returns TrainingArguments' `report_to`: TensorBoard event files go to `<run dir>/tensorboard`;
MLflow logs to MLFLOW_TRACKING_URI, else `sqlite:///<data dir>/mlflow.db` (its file store is
legacy), experiment "tunegraph", tagged with the run id; W&B logs to project "tunegraph" and
offline when Tunegraph's offline mode is on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from engine import paths, settings
from engine.plan.requirements import check_tracking
from engine.rundir import TENSORBOARD
from engine.spec import JobSpec

MLFLOW_DB = "mlflow.db"
EXPERIMENT = "tunegraph"


def default_mlflow_uri() -> str:
    """MLflow's tracking URI when the user set none: a SQLite store in the data directory."""
    return f"sqlite:///{(paths.data_dir() / MLFLOW_DB).as_posix()}"


def tracking_env(spec: JobSpec, run_dir: Path, env: dict[str, str] | None = None) -> dict:
    """The environment variables the chosen tracker reads (the user's own settings win where
    they are theirs to make: tracking URI, experiment, project)."""
    env = dict(os.environ if env is None else env)
    choice = spec.training.report_to
    out: dict[str, str] = {}
    if choice == "tensorboard":
        out["TENSORBOARD_LOGGING_DIR"] = str(run_dir / TENSORBOARD)
    elif choice == "mlflow":
        out["MLFLOW_TRACKING_URI"] = env.get("MLFLOW_TRACKING_URI") or default_mlflow_uri()
        out["MLFLOW_EXPERIMENT_NAME"] = env.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
        out["MLFLOW_TAGS"] = json.dumps({"tunegraph.run_id": run_dir.name})
        out["MLFLOW_FLATTEN_PARAMS"] = "TRUE"
    elif choice == "wandb":
        out["WANDB_PROJECT"] = env.get("WANDB_PROJECT") or EXPERIMENT
        out["WANDB_DIR"] = str(run_dir)
        out["WANDB_RUN_GROUP"] = env.get("WANDB_RUN_GROUP") or spec.name
        if settings.is_offline():
            out["WANDB_MODE"] = "offline"
    return out


def report_to(spec: JobSpec, run_dir: Path) -> list[str] | str:
    """Set up the spec's tracker in this process (SpecError when its package is missing) and
    return the value for TrainingArguments(report_to=…)."""
    choice = spec.training.report_to
    if choice == "none":
        return "none"
    check_tracking(spec)
    os.environ.update(tracking_env(spec, run_dir))
    if choice == "tensorboard":
        (run_dir / TENSORBOARD).mkdir(parents=True, exist_ok=True)
    return [choice]
