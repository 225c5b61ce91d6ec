"""The runner: score targets on an eval set, `evaluate(targets, eval_set, metrics, …)`.

Each target is loaded in turn (engine.eval.targets), answers every row greedily with its own chat
template and stop tokens (when a metric needs outputs) and scores the reference's loss (when
`loss` is asked), then is freed before the next one loads. Text metrics score each output as it
comes (engine.eval.metrics). The judge loads last, when no target holds memory any more: it grades
every output (`judge`) and compares the targets' outputs pair by pair in both orders
(`judge_pairwise`). Progress goes to a plain callback `progress(done, total, what)`; `cancel()` is
checked between rows and raises RunCancelled.

A metric's score is the mean over rows, except `loss`: the mean token loss over every reference
token of the set (as a trainer's eval loss), with `perplexity` its exponential. A row a scorer
could not score (a judge that never gave a grade) is left out of the mean and named in the
result's warnings.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from engine.errors import EvalError, RunCancelled
from engine.eval.evalset import EvalRow, EvalSet
from engine.eval.judge import Judge, pairwise_win_rates
from engine.eval.metrics import MODEL_METRICS, make_scorer, score_names
from engine.eval.scoreboard import EvalResult, RowResult, TargetResult, mean
from engine.eval.scorers import Scorer
from engine.eval.targets import Target, TargetModel, open_model

Progress = Callable[[int, int, str], None]
CancelCheck = Callable[[], bool]
MIN_NEW_TOKENS = 32
MAX_NEW_TOKENS = 512
_PERPLEXITY_CAP = 700.0  # exp() of more overflows a float


def _no_progress(done: int, total: int, what: str) -> None:
    return None


def answer_budget(reference: str) -> int:
    """New tokens a target may write for a row: about twice the reference (4 characters to a
    token), within MIN_NEW_TOKENS and MAX_NEW_TOKENS."""
    return max(MIN_NEW_TOKENS, min(MAX_NEW_TOKENS, len(reference) // 2 + 16))


def perplexity(loss: float | None) -> float | None:
    """exp(loss), or None without a loss."""
    if loss is None or not math.isfinite(loss):
        return None
    return math.exp(min(loss, _PERPLEXITY_CAP))


def evaluate(
    targets: list[Target],
    eval_set: EvalSet,
    metrics: list[str],
    *,
    judge: str | None = None,
    device: str = "cpu",
    max_new_tokens: int | None = None,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
    opened: Mapping[str, TargetModel] | None = None,
) -> EvalResult:
    """Score each target on the eval set with `metrics` (as engine.eval.metrics.check_metrics
    returns them); see the module docstring. `opened` holds models already in memory by target
    label (a run's worker scores the model it just trained): those are used as they are and
    left open. Raises EvalError for a scorer that fails (a user's Python scorer raising, naming
    its file and line) and RunCancelled when `cancel()` says so."""
    progress = progress or _no_progress
    rows = eval_set.rows
    if not rows:
        raise EvalError(f"{eval_set.path}: the eval set holds no rows")
    if len({t.label for t in targets}) != len(targets):
        raise EvalError("each target may be named only once")
    scorers = [make_scorer(m) for m in metrics if m not in MODEL_METRICS]
    generate = any(m != "loss" for m in metrics)
    pairwise = "judge_pairwise" in metrics
    judged = "judge" in metrics or pairwise
    pairs = len(targets) * (len(targets) - 1) if pairwise else 0
    total = len(rows) * (len(targets) * (1 + ("judge" in metrics)) + pairs)
    counter = _Counter(progress, total, cancel)
    results = []
    for target in targets:
        model = (opened or {}).get(target.label)
        results.append(
            _score_target(
                target, rows, metrics, scorers, generate, device, max_new_tokens, counter, model
            )
        )
    warnings: list[str] = []
    if judged:
        if not judge:
            raise EvalError("the judge metrics need a judge model", "Give --judge JUDGE.gguf.")
        warnings += _judge(judge, rows, metrics, results, counter)
    for result in results:
        _means(result, metrics)
    return EvalResult(eval_set.name, len(rows), score_names(metrics), results, warnings)


class _Counter:
    """Counts work done for the progress callback and checks for a cancel between rows."""

    def __init__(self, progress: Progress, total: int, cancel: CancelCheck | None):
        self.progress, self.total, self.cancel, self.done = progress, total, cancel, 0

    def step(self, what: str) -> None:
        self.done += 1
        self.progress(self.done, self.total, what)
        self.check()

    def check(self) -> None:
        if self.cancel and self.cancel():
            raise RunCancelled()


def _score_target(
    target: Target,
    rows: list[EvalRow],
    metrics: list[str],
    scorers: list[Scorer],
    generate: bool,
    device: str,
    max_new_tokens: int | None,
    counter: _Counter,
    model: TargetModel | None = None,
) -> TargetResult:
    counter.check()
    result = TargetResult(target.label, target.kind)
    owned = model is None  # a model handed in stays open: its owner goes on using it
    model = open_model(target, device) if owned else model
    nll_sum, tokens = 0.0, 0
    try:
        for row in rows:
            output = None
            scores: dict[str, float | None] = {}
            if "loss" in metrics:
                nll, count = model.loss(row.messages, row.reference)
                row_loss = nll / count if count else None
                nll_sum, tokens = nll_sum + (nll if count else 0.0), tokens + count
                scores["loss"], scores["perplexity"] = row_loss, perplexity(row_loss)
            if generate:
                budget = max_new_tokens or answer_budget(row.reference)
                output = model.generate(row.messages, budget)
                for scorer in scorers:
                    scores[scorer.name] = _score(scorer, output, row)
            result.rows.append(RowResult(row.prompt, row.reference, output, scores))
            counter.step(target.label)
    finally:
        if owned:
            model.close()
    if "loss" in metrics:
        set_loss = nll_sum / tokens if tokens else None
        result.scores["loss"], result.scores["perplexity"] = set_loss, perplexity(set_loss)
    return result


def _score(scorer: Scorer, output: str, row: EvalRow) -> float | None:
    try:
        value = scorer.score(output, row.reference, row.scorer_row())
    except EvalError as err:
        raise EvalError(f"{err.message} (eval row {row.index + 1})", err.hint) from None
    return value if math.isfinite(value) else None


def _judge(
    path: str,
    rows: list[EvalRow],
    metrics: list[str],
    results: list[TargetResult],
    counter: _Counter,
) -> list[str]:
    judge = Judge(path)
    try:
        if "judge" in metrics:
            for result in results:
                for row, row_result in zip(rows, result.rows, strict=True):
                    question = "\n".join(m["content"] for m in row.messages)
                    where = f"{result.target}, row {row.index + 1}: "
                    grade = judge.grade(question, row.reference, row_result.output or "", where)
                    row_result.scores["judge"] = grade if math.isfinite(grade) else None
                    counter.step(f"judge: {result.target}")
        if "judge_pairwise" in metrics:
            outputs = {r.target: [x.output or "" for x in r.rows] for r in results}
            rates, per_row = pairwise_win_rates(
                judge,
                ["\n".join(m["content"] for m in r.messages) for r in rows],
                [r.reference for r in rows],
                outputs,
                progress=lambda done, total: counter.step("judge: pairs"),
            )
            for result in results:
                result.scores["judge_pairwise"] = rates[result.target]
                for row_result, rate in zip(result.rows, per_row[result.target], strict=True):
                    row_result.scores["judge_pairwise"] = rate
    finally:
        judge.close()
    failures = judge.failures
    if not failures:
        return []
    shown = "; ".join(failures[:3]) + ("; …" if len(failures) > 3 else "")
    return [
        f"the judge gave no verdict {len(failures)} time(s) of {judge.verdicts}, even "
        f"after retries; those rows are left out of the judge scores: {shown}"
    ]


def _means(result: TargetResult, metrics: list[str]) -> None:
    """Each score's mean over rows (loss, perplexity and win rates are set-level already), every
    score in the order of the metrics, a missing one as None."""
    names = score_names(metrics)
    for name in names:
        if name not in ("loss", "perplexity", "judge_pairwise"):
            result.scores[name] = mean([r.scores.get(name) for r in result.rows])
    result.scores = {name: result.scores.get(name) for name in names}
    for row in result.rows:
        row.scores = {name: row.scores.get(name) for name in names}
