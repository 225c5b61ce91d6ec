"""GRPO's reward functions, one per Reward node of the run (engine.spec.RewardSpec).

Each wraps a scorer of engine.eval (the one interface of eval metrics and rewards:
`score(output, reference, row) -> float`): `exact`, `contains`, `rouge_l`, `regex:PATTERN`,
`json`, `json:SCHEMA.json`, `python:FILE.py`, plus `length:N` (1.0 for an answer of N characters,
falling linearly to 0 at 0 and at 2N characters) and `judge` (the Reward node's judge GGUF grades
the completion 1-10 against the row's answer with the eval's rubric, engine.eval.judge; the
reward is grade / 10). The reference is the row's `answer` (its answer or reference column, or
the last assistant turn of its messages; "" when it has none), `row` is the dataset row as read
plus `prompt_messages` (the prompt's turns).

A judge is checked (exists, is a GGUF) when the rewards are built, started at the first
completion it grades (one llama.cpp process per judge file, shared by the Reward nodes naming
it) and closed by `RewardSet.close` when training ends. It gets the run's CPU threads
(TUNEGRAPH_THREADS, the share the supervisor gives the run, as eval's GGUF targets do), never
all the cores: judging happens between sampling and the update, so the judge and training take
turns on the same cores instead of fighting over them. A completion the judge gives no grade
after its retries gets no reward (None: TRL leaves it out of the means).

TRL logs each function's mean and standard deviation under `rewards/<name>/mean|std`, `<name>`
being the scorer as written (a file scorer by its file name, e.g. `python:score.py`; a scorer
used twice gets `#2`). A scorer that raises fails the run with one EvalError naming the reward
and, for a Python scorer, the file and line where it raised.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import EvalError
from engine.eval.judge import Judge, JudgeScorer, check_judge
from engine.eval.metrics import make_scorer
from engine.eval.scorers import FunctionScorer, Scorer
from engine.spec import RewardSpec

RewardFunction = Callable[..., list[float | None]]


def length_scorer(target: int) -> FunctionScorer:
    """`length:N`: 1.0 at N characters, falling linearly to 0.0 at 0 and at 2N characters."""

    def closeness(output: str, reference: str, row: dict) -> float:
        return max(0.0, 1.0 - abs(len(output.strip()) - target) / target)

    return FunctionScorer(f"length:{target}", closeness)


class JudgeReward:
    """`judge` as a reward: the judge's grade of the completion / 10, in [0.1, 1]; NaN when the
    judge gave none. The judge process starts at the first completion graded."""

    name = "judge"

    def __init__(self, path: str):
        self.path = check_judge(path)  # missing, or not a GGUF: EvalError before training
        self.judge: Judge | None = None
        self.asked = 0  # completions given to the judge
        self.ungraded = 0  # of those, the ones it gave no grade for

    def score(self, output: str, reference: str, row: dict) -> float:
        """The grade of `output` for the row's prompt against `reference`, divided by 10."""
        if self.judge is None:
            self.judge = Judge(self.path, n_threads=judge_threads())
        grade = JudgeScorer(self.judge).score(output, reference, row) / 10
        self.asked += 1
        self.ungraded += math.isnan(grade)
        return grade

    def warning(self) -> str | None:
        """What the run should say about this judge: the completions it could not grade."""
        if not self.ungraded:
            return None
        return (
            f"the judge {self.path.name} gave no grade for {self.ungraded} of {self.asked} "
            "completions; those were left out of the reward means"
        )

    def close(self) -> None:
        """End the judge's process (a later completion would start it again)."""
        if self.judge is not None:
            self.judge.close()
            self.judge = None


def judge_threads() -> int:
    """The judge's llama.cpp threads: the run's CPU share (TUNEGRAPH_THREADS, which the worker
    also gives torch), else torch's own thread count."""
    threads = os.environ.get("TUNEGRAPH_THREADS")
    if threads:
        return max(1, int(threads))
    import torch

    return torch.get_num_threads()


def scorer_for(reward: RewardSpec) -> Scorer:
    """The scorer of one Reward node other than judge; EvalError for a pattern or file that
    cannot be used."""
    text = reward.scorer.strip()
    if text.startswith("length:"):
        return length_scorer(int(text[len("length:") :]))
    return make_scorer(text)


def reward_name(scorer: str) -> str:
    """The name a reward is logged under: the scorer as written, a file by its name only."""
    head, sep, rest = scorer.strip().partition(":")
    if sep and head in ("python", "json"):
        return f"{head}:{Path(rest.strip()).name}"
    return scorer.strip()


@dataclass
class RewardSet:
    """The run's TRL reward functions, their weights, and the judges they hold (`close` ends
    them)."""

    functions: list[RewardFunction] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    judges: dict[Path, JudgeReward] = field(default_factory=dict)

    def close(self) -> None:
        """End every judge process (idempotent)."""
        for judge in self.judges.values():
            judge.close()

    def warnings(self) -> list[str]:
        """The run's warnings about its rewards: completions a judge could not grade."""
        return [w for w in (judge.warning() for judge in self.judges.values()) if w]


def reward_functions(rewards: list[RewardSpec]) -> RewardSet:
    """TRL reward functions for the run's Reward nodes and their weights; every scorer is built
    (and every judge file checked) here, so a bad pattern or file fails before training starts."""
    out = RewardSet(weights=[float(r.weight) for r in rewards])
    seen: dict[str, int] = {}
    for reward in rewards:
        name = reward_name(reward.scorer)
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name} #{seen[name]}"
        if reward.scorer.strip() == "judge":
            judge = JudgeReward(reward.judge)
            scorer: Scorer = out.judges.setdefault(judge.path, judge)
        else:
            scorer = scorer_for(reward)
        out.functions.append(_reward_function(name, scorer))
    return out


def _reward_function(name: str, scorer: Scorer) -> RewardFunction:
    def reward(
        prompts: list[Any],
        completions: list[Any],
        answer: list[str] | None = None,
        row: list[str] | None = None,
        **_: Any,
    ) -> list[float]:
        scores: list[float | None] = []
        for i, completion in enumerate(completions):
            data = json.loads(row[i]) if row else {}
            data["prompt_messages"] = _turns(prompts[i])
            try:
                value = scorer.score(_text(completion), answer[i] if answer else "", data)
            except EvalError as err:
                raise EvalError(f"reward {name}: {err.message}", err.hint) from None
            scores.append(value if math.isfinite(value) else None)  # None: no reward
        return scores

    reward.__name__ = reward.__qualname__ = name
    return reward


def _text(completion: Any) -> str:
    """A completion's text: conversational completions are a list of turns."""
    if isinstance(completion, list):
        return "".join(str(turn.get("content") or "") for turn in completion)
    return str(completion)


def _turns(prompt: Any) -> list[dict]:
    if isinstance(prompt, list):
        return prompt
    return [{"role": "user", "content": str(prompt)}]
