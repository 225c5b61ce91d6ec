"""A sweep's Optuna study: its storage, sampler, pruner and search space, and how trials are asked.

Studies live in Optuna's SQLite storage beside the index (`<data_dir>/sweeps.db`), so a study
survives the app and the supervisor: samplers and pruners are not stored by Optuna, and are made
again from the swept spec (`JobSpec.sweep`), which the study keeps as a user attribute with the
rest of what the supervisor needs to go on after a restart:

- study attributes: `template` (the swept spec, JSON), `state` (running, done, cancelled),
  `created_at`, `name` (the Fine-Tune node's), `node_uuid`, `estimate` (the template's, when the
  client sent one);
- trial attributes: `run_id` (set right after the ask and before the run folder is made, so a
  supervisor killed in between makes the same run, never a second one).
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine import paths
from engine.spec import PARTS, JobSpec
from engine.sweep_spec import Dimension, SweepSpec

if TYPE_CHECKING:
    import optuna

RUNNING, DONE, CANCELLED = "running", "done", "cancelled"


def storage() -> optuna.storages.RDBStorage:
    """Optuna's storage of this data directory's studies (made on first use)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{paths.sweeps_db()}"
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 30}})


def new_study_name(module: str) -> str:
    """`support-lr-3fa9c1`: the module's name as a slug, and random hex."""
    slug = re.sub(r"[^a-z0-9]+", "-", module.lower()).strip("-")[:40] or "sweep"
    return f"{slug}-{secrets.token_hex(3)}"


@dataclass
class Study:
    """One sweep: its Optuna study and the swept spec it was made from."""

    study: optuna.Study
    template: JobSpec

    @property
    def name(self) -> str:
        return self.study.study_name

    @property
    def sweep(self) -> SweepSpec:
        assert self.template.sweep is not None
        return self.template.sweep

    @property
    def dims(self) -> list[Dimension]:
        return self.sweep.dimensions(PARTS)

    @property
    def state(self) -> str:
        return self.study.user_attrs.get("state", RUNNING)

    def set_state(self, state: str) -> None:
        self.study.set_user_attr("state", state)

    @property
    def budget(self) -> int:
        """How many trials the study runs: its trials setting; a grid's size at most."""
        return self.sweep.budget(self.dims)

    def ask(self) -> optuna.trial.FrozenTrial:
        """A new trial (its number, and the values it chose by `part.field`)."""
        number = self.study.ask(distributions(self.dims)).number
        return self.trial(number)

    def trial(self, number: int) -> optuna.trial.FrozenTrial:
        """Trial `number` as the storage holds it now."""
        return self.study.get_trials(deepcopy=False)[number]

    def running(self) -> list[optuna.trial.FrozenTrial]:
        """The trials Optuna still counts as running."""
        from optuna.trial import TrialState

        return [t for t in self.study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]

    def set_run(self, trial: optuna.trial.FrozenTrial, run_id: str) -> None:
        """Name the run of a running trial (before the run folder is made)."""
        import optuna

        optuna.trial.Trial(self.study, trial._trial_id).set_user_attr("run_id", run_id)

    def note(self, trial: optuna.trial.FrozenTrial, key: str, value: Any) -> None:
        """Keep `key` = `value` with a running trial (e.g. the step it was pruned at)."""
        import optuna

        optuna.trial.Trial(self.study, trial._trial_id).set_user_attr(key, value)

    def report(self, trial: optuna.trial.FrozenTrial, step: int, value: float) -> None:
        """A running trial's eval loss at `step`, for the pruner."""
        import optuna

        optuna.trial.Trial(self.study, trial._trial_id).report(value, step)

    def tell(self, trial: optuna.trial.FrozenTrial, value: float | None, state: str = "") -> None:
        """How a trial ended: its objective `value`, or `state` PRUNED or FAIL."""
        from optuna.trial import TrialState

        if state:
            self.study.tell(trial.number, state=TrialState[state])
        else:
            self.study.tell(trial.number, value)

    def trial_spec(self, number: int, params: dict[str, Any]) -> JobSpec:
        """The run spec of trial `number`: the template with the trial's values, no sweep."""
        from engine.sweep_spec import apply_params, trial_name

        spec = apply_params(self.template, params)
        spec.sweep = None
        spec.name = trial_name(self.template.name, number, params, self.dims)
        spec.trial = {"study": self.name, "number": number, "params": params}
        return spec


def create(template: JobSpec, estimate: dict | None = None) -> Study:
    """A new study for the swept spec `template` (validated by the compiler)."""
    import optuna

    sweep = template.sweep
    assert sweep is not None
    name = new_study_name(template.name)
    study = optuna.create_study(
        study_name=name,
        storage=storage(),
        sampler=sampler(sweep, template),
        direction="minimize" if sweep.minimise() else "maximize",
    )
    study.set_user_attr("template", template.to_json())
    study.set_user_attr("state", RUNNING)
    study.set_user_attr("created_at", time.time())
    study.set_user_attr("name", template.name)
    study.set_user_attr("node_uuid", template.node_uuid)
    study.set_user_attr("estimate", estimate)
    return Study(study, template)


def load(name: str) -> Study:
    """The study called `name`, with its sampler made again from its template."""
    import optuna

    store = storage()
    attrs = optuna.load_study(study_name=name, storage=store).user_attrs
    template = JobSpec.from_json(attrs["template"])
    assert template.sweep is not None
    study = optuna.load_study(
        study_name=name, storage=store, sampler=sampler(template.sweep, template)
    )
    return Study(study, template)


def names() -> list[str]:
    """Every study of this data directory, oldest first."""
    import optuna

    if not paths.sweeps_db().exists():
        return []
    return [
        s.study_name for s in optuna.get_all_study_summaries(storage(), include_best_trial=False)
    ]


def sampler(sweep: SweepSpec, template: JobSpec) -> optuna.samplers.BaseSampler:
    """Optuna's sampler for the sweep's strategy, seeded by the sweep."""
    import optuna

    dims = sweep.dimensions(PARTS)
    if sweep.strategy == "grid":
        space = {d.key: d.grid() for d in dims}
        return optuna.samplers.GridSampler(space, seed=sweep.seed)
    if sweep.strategy == "random":
        return optuna.samplers.RandomSampler(seed=sweep.seed)
    # few random trials first, then TPE; a constant liar keeps trials asked while others run
    # from piling onto the same point
    startup = max(2, min(10, sweep.trials // 3))
    with warnings.catch_warnings():  # constant_liar is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=sweep.seed, n_startup_trials=startup, constant_liar=True
        )


def pruner(sweep: SweepSpec, max_steps: int) -> optuna.pruners.BasePruner | None:
    """Optuna's pruner for the sweep's rule, for trials of `max_steps` steps; None for none.

    No trial is pruned before `min_fraction` of its steps: Optuna's warm-up (median) or minimum
    resource (successive halving, Hyperband) is that many steps."""
    import optuna

    warm = max(1, math.ceil(sweep.min_fraction * max_steps))
    if sweep.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=warm)
    if sweep.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=warm, reduction_factor=sweep.reduction_factor
        )
    if sweep.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=warm,
            max_resource=max(warm + 1, max_steps),
            reduction_factor=sweep.reduction_factor,
        )
    return None


def distributions(dims: list[Dimension]) -> dict[str, optuna.distributions.BaseDistribution]:
    """Each dimension as Optuna's distribution, by `part.field`."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, Any] = {}
    for d in dims:
        if d.values:
            out[d.key] = CategoricalDistribution(list(d.values))
        elif d.integer:
            step = int(d.step or 1)
            high = int(d.low + (int(d.high) - int(d.low)) // step * step)
            out[d.key] = IntDistribution(int(d.low), high, log=d.log, step=step)
        else:
            high = d.high
            if d.step:  # Optuna needs high on the grid of steps
                high = d.low + math.floor((d.high - d.low) / d.step + 1e-9) * d.step
            out[d.key] = FloatDistribution(d.low, high, log=d.log, step=d.step)
    return out


def objective_value(run: dict, objective: str) -> float | None:
    """A finished trial's objective from its run (the `show --json` shape): its last eval_loss,
    or the first score of that metric among its Eval nodes' sets (not a GGUF's)."""
    if objective == "eval_loss":
        return (run.get("metrics") or {}).get("eval_loss")
    for set_name, scores in (run.get("eval") or {}).items():
        if set_name.endswith("(gguf)"):
            continue
        value = (scores or {}).get(objective)
        if isinstance(value, (int, float)):
            return float(value)
    return None


def template_estimate(study: Study) -> dict | None:
    """The estimate the client sent with the swept spec, if any."""
    value = study.study.user_attrs.get("estimate")
    if isinstance(value, str):
        return json.loads(value)
    return value
