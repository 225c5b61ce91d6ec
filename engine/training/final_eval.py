"""A run's Eval nodes: each eval set scored on the run itself (DESIGN.md "Lifecycle").

`RunEvals.prepare` reads every Eval node's set (its file, or the run's held-out split) and names
it (the spec's `name` for rows the compiler took from a node, else the file's name), checks its
metrics and judge before training starts, so bad input fails the run before any step. While
training, each evaluation adds the loss of every set that asks for `loss` to its `eval` event
(`set_loss`, on at most DURING_TRAINING_ROWS rows; the Trainer's own eval split stays
`eval_loss`) and, for a node whose `during_training_rows` is set, the scores of its metrics
that generate answers, on at most that many rows (`set_scores` {set: {metric: value}} and
`set_rows` {set: rows scored}; the judge metrics wait for the end, as they load the judge).
When training ends, in the `evaluating` state, `evaluate` scores the adapter just trained,
in memory, through engine.eval's `evaluate` (and, with "also score the base", the same
weights with the adapter disabled: the baseline row, once per set); after the export,
`score_gguf` scores the GGUF it wrote (inside `exporting`). Scores become `eval` events (`set`,
`target` adapter/base/gguf, `metric`, `value`, `rows`) in the worker's own log, and each result,
row by row, goes to `<run_dir>/eval_results/` (engine.eval.run_results) for the leaderboard.

Progress is a `progress` event that keeps the run's training step and adds `phase`
("evaluating"), `done`, `total` and an ETA. A metric that fails while scoring (a user's Python
scorer raising) is a warning naming its file and line, never a lost adapter; a cancel raises.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine.errors import DataError, EvalError
from engine.eval.evalset import EvalSet, load_eval_set, rows_eval_set
from engine.eval.judge import check_judge
from engine.eval.metrics import MODEL_METRICS, check_metrics
from engine.eval.run_results import write_run_result
from engine.eval.runner import evaluate
from engine.eval.scoreboard import EvalResult
from engine.eval.targets import LoadedModel, Target
from engine.events import EventLog, read_events
from engine.rundir import WORKER_LOG
from engine.spec import EvalSpec, JobSpec

HELD_OUT = "held-out split"  # the set name of an Eval node without a file
DURING_TRAINING_ROWS = 64  # rows a set's loss is taken on at each evaluation during training
PROGRESS_EVERY_S = 0.5


@dataclass
class PlannedEval:
    """One Eval node, read and checked: its set and the metrics the run computes on it."""

    index: int
    spec: EvalSpec
    eval_set: EvalSet
    metrics: list[str]


class RunEvals:
    """The Eval nodes of one run, from before training to after the export."""

    def __init__(
        self,
        spec: JobSpec,
        run_dir: Path,
        plans: list[PlannedEval],
        tokenizer: Any,
        max_length: int,
        log: EventLog,
        cancel: Callable[[], bool],
    ):
        self.spec, self.run_dir, self.plans = spec, Path(run_dir), plans
        self.tokenizer, self.max_length = tokenizer, max_length  # the run's, template set
        self.log, self.cancel = log, cancel
        self.at: dict = {}  # the run's step, max_steps and epoch, kept in progress events

    @classmethod
    def prepare(
        cls,
        spec: JobSpec,
        run_dir: Path,
        held_out: list[dict],
        tokenizer: Any,
        max_length: int,
        log: EventLog,
        cancel: Callable[[], bool],
    ) -> RunEvals:
        """Read and check every Eval node's set, metrics and judge (`held_out`: the run's eval
        split, normalized rows); EvalError or DataError naming the file (and line) of what
        cannot be used. `tokenizer` is the run's, its chat template set."""
        plans: list[PlannedEval] = []
        names: set[str] = set()
        for index, ev in enumerate(spec.evals):
            judge = ev.judge.strip() or None
            if judge:
                check_judge(judge)
            metrics = check_metrics(ev.metrics, 1 + ev.score_base, bool(judge))
            max_rows = ev.max_rows or None
            if ev.path.strip():
                eval_set = load_eval_set(ev.path, max_rows)
                eval_set.name = ev.name.strip() or eval_set.name  # a node's rows: its name
            elif held_out:
                eval_set = rows_eval_set(HELD_OUT, held_out, max_rows)
            else:
                raise EvalError(
                    f"Eval node {index + 1} scores the held-out split, but the run holds out no "
                    "chat rows to score (an eval split needs at least 10 rows of chats)",
                    "Choose an eval set file for the Eval node, or use more training rows.",
                )
            if eval_set.name in names:  # two sets of one name: results must tell them apart
                eval_set.name = f"{eval_set.name} ({index + 1})"
            names.add(eval_set.name)
            plans.append(PlannedEval(index, ev, eval_set, metrics))
        if plans:
            described = "; ".join(
                f"{p.eval_set.name} ({len(p.eval_set.rows)} rows: {', '.join(p.metrics)})"
                for p in plans
            )
            log.emit("log", level="info", message=f"Eval sets: {described}")
        return cls(spec, run_dir, plans, tokenizer, max_length, log, cancel)

    @classmethod
    def start(
        cls, spec: JobSpec, run_dir: Path, setup: Any, max_length: int, log: EventLog, control: Any
    ) -> RunEvals:
        """`prepare` for a run's trainer set-up (engine.training.trainer.Setup), whose event
        callback then adds the sets' losses to each evaluation during training."""
        evals = cls.prepare(
            spec,
            run_dir,
            getattr(setup.data, "eval_examples", []),  # sft's chats; other methods' rows differ
            setup.tokenizer,
            max_length,
            log,
            lambda: control.action() == "cancel",
        )
        setup.callback.eval_fields = evals.during_training
        return evals

    # -- during training -----------------------------------------------------------------------
    def training_losses(self, model: Any) -> dict:
        """`{"set_loss": {set: mean token loss}}` of the sets asking for `loss`, on at most
        DURING_TRAINING_ROWS rows each, for the `eval` event of an evaluation during training."""
        plans = [p for p in self.plans if "loss" in p.metrics]
        if not plans or model is None:
            return {}
        import torch

        was_training = model.training
        model.eval()
        scorer = self._loaded(model)
        losses = {}
        try:
            with torch.no_grad():
                for plan in plans:
                    nll, tokens = 0.0, 0
                    for row in plan.eval_set.rows[:DURING_TRAINING_ROWS]:
                        row_nll, count = scorer.loss(row.messages, row.reference)
                        if count:
                            nll, tokens = nll + row_nll, tokens + count
                    losses[plan.eval_set.name] = nll / tokens if tokens else None
        finally:
            model.train(was_training)
        return {"set_loss": losses}

    def during_training(self, model: Any) -> dict:
        """The fields an evaluation during training adds to its `eval` event: `training_losses`
        and `training_scores`."""
        return {**self.training_losses(model), **self.training_scores(model)}

    def training_scores(self, model: Any) -> dict:
        """`{"set_scores": {set: {metric: mean}}, "set_rows": {set: rows}}`: the metrics that
        generate answers (all but loss and the judge's) of each set whose node sets
        `during_training_rows`, on at most that many rows, answered greedily by the model being
        trained. A scorer that fails is a warning and leaves that set out, never a lost run."""
        plans = [
            (p, metrics)
            for p in self.plans
            if p.spec.during_training_rows > 0
            and (metrics := [m for m in p.metrics if m not in MODEL_METRICS])
        ]
        if not plans or model is None:
            return {}
        was_training = model.training
        model.eval()
        opened = {"adapter": self._loaded(model)}
        target = Target("adapter", "run", str(self.run_dir), run_id=self.run_dir.name)
        scores: dict[str, dict] = {}
        rows: dict[str, int] = {}
        try:
            for plan, metrics in plans:
                subset = replace(
                    plan.eval_set, rows=plan.eval_set.rows[: plan.spec.during_training_rows]
                )
                try:  # no cancel check here: the training callback acts on it after this step
                    result = evaluate([target], subset, metrics, opened=opened)
                except EvalError as err:
                    message = f"eval on {plan.eval_set.name} during training failed: {err.message}"
                    self.log.emit("log", level="warning", message=message, hint=err.hint)
                    continue
                scores[result.set] = {
                    m: v if v is None or math.isfinite(v) else None
                    for m, v in result.results[0].scores.items()
                }
                rows[result.set] = result.rows
        finally:
            model.train(was_training)
        return {"set_scores": scores, "set_rows": rows} if scores else {}

    # -- when training ends --------------------------------------------------------------------
    def evaluate(self, model: Any, device: str, at: dict) -> list[str]:
        """Score the trained adapter (and the base where asked) on every set; the warnings.
        `at` is the run's step, max_steps and epoch, which its progress events keep."""
        warnings: list[str] = []
        model.eval()
        self.at = dict(at)
        for plan in self.plans:
            targets = [
                Target(
                    "adapter",
                    "run",
                    str(self.run_dir),
                    run_id=self.run_dir.name,
                    base=self.spec.base_model.source,
                )
            ]
            opened = {"adapter": self._loaded(model)}
            if plan.spec.score_base:
                targets.append(Target("base", "base", self.spec.base_model.source))
                if not self.spec.lora.full:  # a full run has no adapter to disable: the base
                    opened["base"] = self._loaded(model, adapter_off=True)  # loads on its own
            warnings += self._score(plan, targets, plan.metrics, device, opened, "adapter")
        return warnings

    def score_gguf(self) -> list[str]:
        """Score the GGUF the export just wrote on the sets that ask for it; the warnings."""
        plans = [p for p in self.plans if p.spec.score_gguf]
        if not plans:
            return []
        path = exported_gguf(self.run_dir)
        if path is None:
            return ["the GGUF was not scored: the export wrote no GGUF"]
        warnings: list[str] = []
        for plan in plans:
            metrics = [m for m in plan.metrics if m != "judge_pairwise"]  # one target only
            target = Target("gguf", "gguf", path)
            warnings += self._score(plan, [target], metrics, "cpu", None, "gguf")
        return warnings

    def _loaded(self, model: Any, adapter_off: bool = False) -> LoadedModel:
        template = self.tokenizer.chat_template
        return LoadedModel(model, self.tokenizer, template, self.max_length, adapter_off)

    def _score(
        self,
        plan: PlannedEval,
        targets: list[Target],
        metrics: list[str],
        device: str,
        opened: dict | None,
        what: str,
    ) -> list[str]:
        name = plan.eval_set.name
        self.log.emit(
            "log",
            level="info",
            message=f"Evaluating {' and '.join(t.label for t in targets)} on {name} "
            f"({len(plan.eval_set.rows)} rows: {', '.join(metrics)})",
        )
        try:
            result = evaluate(
                targets,
                plan.eval_set,
                metrics,
                judge=plan.spec.judge.strip() or None,
                device=device,
                progress=self._progress(name),
                cancel=self.cancel,
                opened=opened,
            )
        except (EvalError, DataError) as err:  # the adapter is saved: a warning, not a failure
            message = f"eval on {name} ({what}) failed: {err.message}"
            self.log.emit("log", level="error", message=message, hint=err.hint)
            return [message]
        self._record(result, f"{plan.index + 1}-{what}")
        for warning in result.warnings:
            self.log.emit("log", level="warning", message=warning)
        return [f"eval on {name}: {w}" for w in result.warnings]

    def _record(self, result: EvalResult, file_name: str) -> None:
        for target in result.results:
            for metric in result.metrics:
                value = target.scores.get(metric)
                self.log.emit(
                    "eval",
                    set=result.set,
                    target=target.target,
                    metric=metric,
                    value=value if value is None or math.isfinite(value) else None,
                    rows=result.rows,
                )
        write_run_result(self.run_dir, file_name, result)
        summary = ", ".join(
            f"{t.target} {m} {t.scores[m]:.4g}"
            for t in result.results
            for m in result.metrics[:2]
            if t.scores.get(m) is not None
        )
        self.log.emit("log", level="info", message=f"Scores on {result.set}: {summary}")

    def _progress(self, name: str) -> Callable[[int, int, str], None]:
        start, last = time.time(), [0.0]

        def progress(done: int, total: int, what: str) -> None:
            now = time.time()
            if done < total and now - last[0] < PROGRESS_EVERY_S:
                return
            last[0] = now
            eta = (now - start) / done * (total - done) if done else None
            self.log.emit(
                "progress",
                **self.at,
                eta_s=None if eta is None else round(eta, 1),
                phase="evaluating",
                set=name,
                target=what,
                done=done,
                total=total,
            )

        return progress


def exported_gguf(run_dir: Path) -> str | None:
    """The path of the latest GGUF the run's export announced, or None."""
    found = None
    for event in read_events(Path(run_dir) / WORKER_LOG):
        if event.kind == "artifact" and event.get("artifact_kind") == "gguf":
            found = event.get("path")
    return found
