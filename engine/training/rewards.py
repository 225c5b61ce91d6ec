"""GRPO's reward functions, one per Reward node of the run (engine.spec.RewardSpec).

Each wraps a scorer of engine.eval (the one interface of eval metrics and rewards:
`score(output, reference, row) -> float`): `exact`, `contains`, `rouge_l`, `regex:PATTERN`,
`json`, `json:SCHEMA.json`, `python:FILE.py`, plus `length:N` (1.0 for an answer of N characters,
falling linearly to 0 at 0 and at 2N characters). The reference is the row's `answer` (its answer
or reference column, or the last assistant turn of its messages; "" when it has none), `row` is
the dataset row as read plus `prompt_messages` (the prompt's turns).

TRL logs each function's mean and standard deviation under `rewards/<name>/mean|std`, `<name>`
being the scorer as written (a file scorer by its file name, e.g. `python:score.py`; a scorer
used twice gets `#2`). A scorer that raises fails the run with one EvalError naming the reward
and, for a Python scorer, the file and line where it raised.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import EvalError
from engine.eval.metrics import make_scorer
from engine.eval.scorers import FunctionScorer, Scorer
from engine.spec import RewardSpec

RewardFunction = Callable[..., list[float]]


def length_scorer(target: int) -> FunctionScorer:
    """`length:N`: 1.0 at N characters, falling linearly to 0.0 at 0 and at 2N characters."""

    def closeness(output: str, reference: str, row: dict) -> float:
        return max(0.0, 1.0 - abs(len(output.strip()) - target) / target)

    return FunctionScorer(f"length:{target}", closeness)


def scorer_for(reward: RewardSpec) -> Scorer:
    """The scorer of one Reward node; EvalError for a pattern or file that cannot be used."""
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


def reward_functions(rewards: list[RewardSpec]) -> tuple[list[RewardFunction], list[float]]:
    """TRL reward functions for the run's Reward nodes and their weights; every scorer is built
    here, so a bad pattern or file fails before the model is loaded."""
    functions: list[RewardFunction] = []
    seen: dict[str, int] = {}
    for reward in rewards:
        name = reward_name(reward.scorer)
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name} #{seen[name]}"
        functions.append(_reward_function(name, scorer_for(reward)))
    return functions, [float(r.weight) for r in rewards]


def _reward_function(name: str, scorer: Scorer) -> RewardFunction:
    def reward(
        prompts: list[Any],
        completions: list[Any],
        answer: list[str] | None = None,
        row: list[str] | None = None,
        **_: Any,
    ) -> list[float]:
        scores = []
        for i, completion in enumerate(completions):
            data = json.loads(row[i]) if row else {}
            data["prompt_messages"] = _turns(prompts[i])
            try:
                scores.append(scorer.score(_text(completion), answer[i] if answer else "", data))
            except EvalError as err:
                raise EvalError(f"reward {name}: {err.message}", err.hint) from None
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
