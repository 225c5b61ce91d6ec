"""What a sweep holds, as plain data for `tunegraph sweep` and the app's sweep view.

`report(name, store)` joins the study (Optuna's storage) with the trials' runs (the index), keys
always present, unknown values None:

    {"study", "name", "node_uuid", "state" (running, done, cancelled), "created_at",
     "strategy", "pruner", "objective", "direction" (minimize or maximize), "budget",
     "space": ["lr 1e-5 .. 1e-3 log", …], "knobs": {"training.learning_rate": "lr", …},
     "trials": [{"number", "run_id", "run_name", "state" (the run's state; the trial's own
                 when it has no run), "params": {knob: value}, "value" (the objective),
                 "pruned_at" (step), "intermediate": [[step, eval_loss], …]}, …],
     "best": null or {"number", "run_id", "run_name", "params", "value"},
     "importance": {knob: share} (Optuna's PED-ANOVA importances, which need no scikit-learn;
                   {} before 2 finished trials),
     "history": [{"number", "value", "best"}, …] (finished trials in order, best so far)}
"""

from __future__ import annotations

import logging
import math
from typing import Any

from engine.store.index import Store
from engine.sweep import study as studies

log = logging.getLogger("tunegraph.sweep")


def report(name: str, store: Store) -> dict:
    """The study called `name` with its trials' runs (see the module docstring)."""
    from optuna.trial import TrialState

    study = studies.load(name)
    sweep = study.sweep
    dims = study.dims
    attrs = study.study.user_attrs
    runs = runs_of(store, name)
    minimise = sweep.minimise()
    trials, history = [], []
    best_value: float | None = None
    best = None
    for t in study.study.get_trials(deepcopy=False):
        run_id = t.user_attrs.get("run_id")
        run = runs.get(run_id or "", {})
        value = t.value if t.state == TrialState.COMPLETE else None
        steps = sorted(t.intermediate_values.items())
        trials.append(
            {
                "number": t.number,
                "run_id": run_id if run else None,
                "run_name": run.get("name"),
                "state": run.get("state") or t.state.name.lower(),
                "params": dict(t.params),
                "value": value,
                "pruned_at": pruned_at(t, steps),
                "intermediate": [[step, v] for step, v in steps],
            }
        )
        if value is None:
            continue
        if best_value is None or (value < best_value if minimise else value > best_value):
            best_value = value
            best = {
                "number": t.number,
                "run_id": run_id if run else None,
                "run_name": run.get("name"),
                "params": dict(t.params),
                "value": value,
            }
        history.append({"number": t.number, "value": value, "best": best_value})
    return {
        "study": name,
        "name": attrs.get("name"),
        "node_uuid": attrs.get("node_uuid"),
        "state": study.state,
        "created_at": attrs.get("created_at"),
        "strategy": sweep.strategy,
        "pruner": sweep.pruner,
        "objective": sweep.objective,
        "direction": "minimize" if minimise else "maximize",
        "budget": study.budget,
        "space": [d.describe() for d in dims],
        "knobs": {d.key: d.short for d in dims},
        "trials": trials,
        "best": best,
        "importance": importance(study),
        "history": history,
    }


def pruned_at(trial: Any, steps: list) -> int | None:
    """The eval step a pruned trial lost at (its last report, for a study from before the
    supervisor noted it)."""
    from optuna.trial import TrialState

    if trial.state != TrialState.PRUNED:
        return None
    return trial.user_attrs.get("pruned_at") or (steps[-1][0] if steps else None)


def summaries(store: Store) -> list[dict]:
    """One line per study, newest first: {"study", "name", "state", "trials" (ended), "budget",
    "best" (value or None), "objective", "created_at"}."""
    out = []
    for name in reversed(studies.names()):
        try:
            rep = report(name, store)
        except (KeyError, ValueError) as err:
            log.warning("sweep %s cannot be read: %s", name, err)
            continue
        out.append(
            {
                "study": name,
                "name": rep["name"],
                "state": rep["state"],
                "trials": sum(1 for t in rep["trials"] if t["state"] not in LIVE),
                "budget": rep["budget"],
                "best": rep["best"]["value"] if rep["best"] else None,
                "objective": rep["objective"],
                "created_at": rep["created_at"],
            }
        )
    return out


LIVE = ("running", "queued", "starting", "training", "evaluating", "exporting", "retrying")


def runs_of(store: Store, name: str) -> dict[str, dict]:
    """The runs of study `name`'s trials, by id (the `runs --json` shape)."""
    return {
        r["id"]: r
        for r in store.list_runs()
        if ((r.get("spec") or {}).get("trial") or {}).get("study") == name
    }


def importance(study: studies.Study) -> dict[str, float]:
    """Optuna's parameter importances (PED-ANOVA) over the finished trials; {} with fewer than
    2 (a single knob's share is 1.0)."""
    import warnings

    import optuna
    from optuna.trial import TrialState

    done = [t for t in study.study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(done) < 2:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            values = optuna.importance.get_param_importances(study.study, evaluator=evaluator)
    except (RuntimeError, ValueError, ZeroDivisionError) as err:  # e.g. every value equal
        log.info("no importances for %s: %s", study.name, err)
        return {}
    return {k: float(v) for k, v in values.items() if math.isfinite(v)}


def params_text(params: dict[str, Any], knobs: dict[str, str]) -> str:
    """A trial's chosen values as a user reads them: `lr 2e-4, r 16`."""
    from engine.formatting import format_setting

    return ", ".join(f"{knobs.get(k, k)} {format_setting(v)}" for k, v in params.items())
