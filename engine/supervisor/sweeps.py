"""Sweeps in the supervisor: each running study asks Optuna for trials as slots free, starts them as
ordinary runs, reports their eval losses, prunes the losers and tells Optuna how each ended.

A client submits the swept spec (`sweep` command); the study (engine.sweep.study) lives in Optuna's
storage, so a restarted supervisor picks every running study up again (`reconcile_sweeps`): trials
whose runs still live are re-adopted with the runs, a trial asked just before the supervisor
stopped gets its run now (under the run id it was given), and the trial budget counts every trial
ever asked, so nothing is lost or run twice. Once per tick (`drive_sweeps`), for each study:

- a trial whose run completed is told its objective; a pruned one is told pruned; one that failed,
  was cancelled or refused is told failed (it counts against the budget; resuming it later does
  not reopen the trial);
- a training trial's new eval points are reported, and from `min_fraction` of its steps on, the
  study's pruner decides: a loser gets the `prune` control action (it saves a checkpoint, ends as
  `pruned` and its hold is released);
- while trials are left in the budget, none of the study's trials waits in the queue and a run of
  the template's size would be placed now, one more trial is asked (several at once when trials
  of its base can share one copy of it and a group of them fits: engine.supervisor.groups).
"""

from __future__ import annotations

import logging
import subprocess
from typing import Any

from engine import hardware, paths
from engine.errors import SpecError, TunegraphError
from engine.events import TERMINAL_STATES as TERMINAL
from engine.rundir import SPEC_FILE
from engine.spec import JobSpec
from engine.store.index import Store
from engine.supervisor import scheduler
from engine.sweep import study as studies
from engine.sweep_spec import MEMORY_KNOBS
from engine.training.executors import Executor
from engine.training.launch import create_run

log = logging.getLogger("tunegraph.supervisor")
WAITING = (None, "queued")  # not placed yet (None: made, not submitted)
PRUNER_NAMES = {
    "median": "the median rule",
    "successive_halving": "successive halving",
    "hyperband": "Hyperband",
}


class SweepStudies:
    """Mixed into engine.supervisor.service.Supervisor (it provides emit, state, handle, held,
    executor, placements, runs_at_once, …)."""

    store: Store
    procs: dict[str, Executor]
    estimating: dict[str, tuple[subprocess.Popen, int, float]]
    placements: dict[str, scheduler.Placement]
    suspended: set[int]
    studies: dict[str, studies.Study]
    pruning: dict[str, str]  # trial run -> why it was pruned (asked, not ended yet)

    # -- commands --------------------------------------------------------------------------------
    def submit_sweep(self, args: dict) -> dict:
        """Start a study for the swept spec; its trials start from the next tick."""
        try:
            template = JobSpec.from_dict(args["spec"])
            template.validate()
        except (SpecError, KeyError, TypeError) as err:
            return {"ok": False, "state": "refused", "error": f"the sweep cannot run: {err}"}
        if template.sweep is None:
            return {"ok": False, "state": "refused", "error": "the spec has no sweep"}
        study = studies.create(template, args.get("estimate"))
        self.studies[study.name] = study
        log.info("sweep %s: %d trials", study.name, study.budget)
        return {"ok": True, "state": "queued", "study": study.name, "budget": study.budget}

    def cancel_sweep(self, name: str) -> dict:
        """End a study: no new trials; its queued and running trials are cancelled."""
        try:
            study = self.studies.pop(name, None) or studies.load(name)
        except (KeyError, ValueError) as err:
            return {"ok": False, "error": f"no sweep {name!r}: {err}"}
        study.set_state(studies.CANCELLED)
        for trial in study.running():
            run_id = trial.user_attrs.get("run_id")
            if run_id and self.state(run_id) not in (None, *TERMINAL):
                self.cancel(run_id)
            study.tell(trial, None, "FAIL")
        return {"ok": True}

    def reconcile_sweeps(self) -> None:
        """After a (re)start: drive every study that was running when the supervisor stopped."""
        for name in studies.names():
            try:
                study = studies.load(name)
            except (ValueError, KeyError, TunegraphError) as err:
                log.warning("sweep %s cannot be read: %s", name, err)
                continue
            if study.state == studies.RUNNING:
                self.studies[name] = study

    # -- each tick -------------------------------------------------------------------------------
    def drive_sweeps(self) -> bool:
        """One round over the running studies; True while any has work in flight."""
        busy = False
        for name, study in list(self.studies.items()):
            try:
                busy |= self.drive(study)
            except Exception:  # one study's trouble must not stop the others or the supervisor
                log.exception("sweep %s: tick failed", name)
                busy = True
        return busy

    def drive(self, study: studies.Study) -> bool:
        """Settle, report and prune the study's trials, ask for more, and end it when its budget
        is spent and every trial has ended. True while trials are in flight (not paused)."""
        waiting = live = paused = 0
        for trial in study.running():
            state = self.follow_trial(study, trial)
            waiting += state in WAITING
            live += state not in TERMINAL
            paused += state == "paused"
        asked = len(study.study.get_trials(deepcopy=False))
        if asked < study.budget and not waiting:
            estimate = studies.template_estimate(study) or self.known_trial_estimate(study)
            if self.slot_free(study, estimate):
                for _ in range(self.runs_at_once(study.template, estimate, study.budget - asked)):
                    self.ask_trial(study)  # together: trials of one base may share it
                return True
        if asked >= study.budget and not live:
            study.set_state(studies.DONE)
            del self.studies[study.name]
            log.info("sweep %s: done after %d trials", study.name, asked)
            return False
        return live > paused  # a study whose trials are all paused lets the supervisor rest

    def follow_trial(self, study: studies.Study, trial: Any) -> str | None:
        """Bring one running trial forward; its run's state (None: not submitted yet)."""
        run_id = trial.user_attrs.get("run_id")
        if not run_id or not (paths.runs_dir() / run_id / SPEC_FILE).exists():
            # asked, then the supervisor stopped before its run was made: make it now
            run_id = self.start_trial(study, trial, run_id)
            return self.state(run_id) if run_id else "failed"
        state = self.state(run_id)
        if state is None:  # made, then the supervisor stopped before submitting it
            if run_id not in self.estimating:
                self.submit_trial(study, run_id)
            return self.state(run_id)
        if state in TERMINAL:
            # its worker may have ended since the round's ingest: the index (its state, results
            # and evals) must agree with what Optuna is told
            self.store.ingest(paths.runs_dir() / run_id)
        if state in ("training", "evaluating", "exporting", "completed"):
            self.report_evals(study, trial, run_id, prune=state == "training")
        if state == "completed":
            self.tell_completed(study, trial, run_id)
        elif state == "pruned":
            study.tell(trial, None, "PRUNED")
        elif state in ("failed", "cancelled", "refused"):
            study.tell(trial, None, "FAIL")
        return state

    def ask_trial(self, study: studies.Study) -> None:
        """Ask Optuna for the next trial and start its run."""
        self.start_trial(study, study.ask(), None)

    def start_trial(self, study: studies.Study, trial: Any, run_id: str | None) -> str | None:
        """Make and submit the run of `trial` (under `run_id` when it was named before)."""
        run_id = run_id or paths.new_run_id()
        study.set_run(trial, run_id)
        params = dict(trial.params)
        spec = study.trial_spec(trial.number, params)
        try:
            spec.validate()
        except SpecError as err:  # a combination the module cannot train with (e.g. 4-bit on cpu)
            log.info("sweep %s: trial %d cannot run: %s", study.name, trial.number, err)
            study.tell(trial, None, "FAIL")
            return None
        create_run(spec, self.store, estimate=self.trial_estimate(study, params), run_id=run_id)
        self.submit_trial(study, run_id)
        return run_id

    def submit_trial(self, study: studies.Study, run_id: str) -> None:
        """Queue a trial's run as a client's submit would (estimated first when it has none)."""
        estimate = self.store.run_json(run_id).get("estimate")
        command = {"id": None, "action": "submit", "run_id": run_id, "args": {"estimate": estimate}}
        result = self.handle(command)
        if result is not None and not result.get("ok", True):
            log.info("sweep %s: trial run %s refused: %s", study.name, run_id, result)

    def trial_estimate(self, study: studies.Study, params: dict) -> dict | None:
        """The template's estimate, when the trial varies nothing that changes memory (else the
        supervisor's estimate helper measures the trial itself)."""
        if any(key in MEMORY_KNOBS for key in params):
            return None
        return studies.template_estimate(study)

    def slot_free(self, study: studies.Study, estimate: dict | None) -> bool:
        """Whether a run of the template's size (`estimate`, None before any is known) would be
        placed now (the study's trials are as many as the slots: more are asked as holds free
        up)."""
        template = study.template
        if template.resources.target == "cluster":
            return True  # the cluster queues it
        if estimate is None:
            return True  # the first trial: its estimate tells the size of the next ones
        return self.place_now(estimate, template, hardware.gpus()) is not None

    def known_trial_estimate(self, study: studies.Study) -> dict | None:
        """The estimate of the study's newest trial run that has one."""
        for trial in reversed(study.study.get_trials(deepcopy=False)):
            run_id = trial.user_attrs.get("run_id")
            if run_id and (paths.runs_dir() / run_id).is_dir():
                estimate = self.store.run_json(run_id).get("estimate")
                if estimate:
                    return estimate
        return None

    def report_evals(
        self, study: studies.Study, trial: Any, run_id: str, prune: bool = True
    ) -> None:
        """Report the trial's new eval losses to Optuna (the last ones too, after training);
        while it trains, prune it when its pruner says so."""
        reported = trial.intermediate_values
        new = [
            e
            for e in self.store.evals(run_id)
            if e.get("eval_loss") is not None and e.get("step") not in reported
        ]
        if not new:
            return
        for e in new:
            study.report(trial, int(e["step"]), float(e["eval_loss"]))
        sweep = study.sweep
        if not prune or sweep.pruner == "none" or run_id in self.pruning:
            return
        run = self.store.run_json(run_id)
        step, max_steps = int(new[-1]["step"]), int(run.get("max_steps") or 0)
        if not max_steps or step < sweep.min_fraction * max_steps or step >= max_steps:
            return
        pruner = studies.pruner(sweep, max_steps)
        fresh = study.trial(trial.number)
        if pruner is None or not pruner.prune(study.study, fresh):
            return
        reason = (
            f"pruned at step {step} of {max_steps} by {PRUNER_NAMES[sweep.pruner]} "
            f"(eval loss {float(new[-1]['eval_loss']):.4g})"
        )
        run_dir = paths.runs_dir() / run_id
        try:
            self.executor(run_id).request(run_id, run_dir, "prune", reason)
        except TunegraphError as err:
            log.warning("sweep %s: could not prune %s: %s", study.name, run_id, err)
            return
        self.pruning[run_id] = reason
        study.note(trial, "pruned_at", step)  # the eval point it lost at (it may step on a bit)
        self.emit(run_id, "log", level="info", message=reason)

    def tell_completed(self, study: studies.Study, trial: Any, run_id: str) -> None:
        """Tell Optuna a completed trial's objective (failed, when the run did not produce it)."""
        objective = study.sweep.objective.strip()
        value = studies.objective_value(self.store.run_json(run_id), objective)
        if value is None:
            self.emit(
                run_id,
                "log",
                level="warning",
                message=f"the sweep's objective {objective} is missing from this run's results, "
                "so the trial counts as failed",
            )
            study.tell(trial, None, "FAIL")
            return
        study.tell(trial, value)

    def settle_pruned(self, run_id: str, state: str | None) -> bool:
        """A pruned trial's worker ended: make sure the run says `pruned` when the worker died
        before writing it. A worker that ended on its own first (its last step came before the
        prune was read) keeps its ending, and the trial is told that. True when settled here."""
        reason = self.pruning.pop(run_id, None)
        if reason is None or state in TERMINAL:
            return state == "pruned"
        self.emit(run_id, "status", state="pruned", reason=reason)
        return True
