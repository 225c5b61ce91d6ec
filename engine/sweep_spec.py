"""A Sweep node's search: which knobs of a Fine-Tune module to vary, how to pick trials, what to
optimise and when to prune, frozen into the swept spec (`JobSpec.sweep`).

The search space is a list of lines, one knob each, as the Sweep node's space editor writes them
and as a user types them in a graph file:

    training.learning_rate: 1e-5 .. 1e-3 log     a range, log scale
    training.warmup_ratio: 0 .. 0.2              a range, linear
    lora.r: 8 .. 64 step 8                       whole numbers in steps (8, 16, … 64)
    training.lr_scheduler: cosine, linear         a list of values

A knob is `part.field` over the parts a Fine-Tune module is made of (training, lora, method,
base_model); its field name alone (`learning_rate`) or its short name (`lr`) will do where only
one part has it. Every value must be one the field itself accepts (its range and choices), so a
trial can never be invalid. Parsing and checks live here, in the core, so the compiler, the
supervisor and the sweep wing read a space the same way; Optuna (engine.sweep) turns the parsed
dimensions into its distributions.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from engine.errors import SpecError
from engine.fields import SpecPart, check_field, param
from engine.formatting import format_setting

STRATEGIES = ("grid", "random", "tpe")
PRUNERS = ("none", "median", "successive_halving", "hyperband")
DIRECTIONS = ("auto", "minimize", "maximize")
# the parts of a module a sweep may vary, by their JobSpec attribute
SWEEPABLE_PARTS = ("training", "lora", "method", "base_model")
# knobs whose value changes a run's memory: a trial varying one is estimated on its own
MEMORY_KNOBS = {
    "training.micro_batch_size",
    "training.max_seq_length",
    "training.packing",
    "training.precision",
    "training.gradient_checkpointing",
    "training.attention",
    "training.liger_kernels",
    "lora.r",
    "lora.target_modules",
    "lora.quantization",
    "lora.full",
    "method.method",
    "method.num_generations",
    "method.max_completion_length",
    "base_model.source",
    "base_model.revision",
}
SPACE_HELP = (
    "The knobs to search, one per line: `training.learning_rate: 1e-5 .. 1e-3 log` (a range, "
    "log scale), `training.warmup_ratio: 0 .. 0.2` (linear), `lora.r: 8 .. 64 step 8` (steps) or "
    "`training.lr_scheduler: cosine, linear` (a list of values). A knob's field name alone (or its "
    "short name, e.g. lr) will do."
)
OBJECTIVE_HELP = (
    "What the sweep optimises: eval_loss (the held-out split's loss; the only objective measured "
    "during training, so the one pruning can use) or a metric a connected Eval node scores when "
    "training ends (rouge_l, regex:…, judge, loss …)."
)
PRUNER_HELP = (
    "Stop losing trials early, at an eval point, from eval loss: median (worse than the median of "
    "earlier trials at the same step), successive_halving or hyperband (keep the best 1/factor "
    "at each rung); none runs every trial to its end."
)
_RANGE = re.compile(
    r"^(?P<low>\S+)\s*\.\.\s*(?P<high>\S+)(?:\s+(?P<how>log|step\s+(?P<step>\S+)))?$"
)


@dataclass(frozen=True)
class Dimension:
    """One knob of a search space: `key` is `part.field`; `values` for a list, else a range
    [`low`, `high`] on a log scale, or in steps of `step` (None: continuous)."""

    key: str
    short: str
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False

    @property
    def part(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def field(self) -> str:
        return self.key.split(".", 1)[1]

    def grid(self) -> list[Any] | None:
        """Every value the knob takes on a grid; None when it is continuous."""
        if self.values:
            return list(self.values)
        if self.step is None or self.low is None or self.high is None:
            return None
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        points = [self.low + i * self.step for i in range(count)]
        return [int(round(p)) for p in points] if self.integer else [round(p, 12) for p in points]

    def describe(self) -> str:
        """The dimension as a user reads it: `lr 1e-5 .. 1e-3 log`, `r 8, 16, 32`."""
        if self.values:
            return f"{self.short} " + ", ".join(format_setting(v) for v in self.values)
        how = " log" if self.log else f" step {format_setting(self.step)}" if self.step else ""
        return f"{self.short} {format_setting(self.low)} .. {format_setting(self.high)}{how}"


@dataclass
class SweepSpec(SpecPart):
    """A Sweep node: the search over its Fine-Tune module's knobs that Optuna runs."""

    space: list[str] = param(
        ["training.learning_rate: 5e-5 .. 5e-4 log"], SPACE_HELP, widget="space"
    )
    strategy: str = param(
        "tpe",
        "How trials are picked: grid (every combination of the listed values), random, or tpe "
        "(Optuna's TPE: learns from finished trials where the good values are).",
        choices=STRATEGIES,
    )
    trials: int = param(
        8,
        "How many trials to run (grid: 0 = the whole grid).",
        min=0,
        max=1000,
    )
    objective: str = param("eval_loss", OBJECTIVE_HELP)
    direction: str = param(
        "auto",
        "Minimise or maximise the objective; auto: minimise a loss, maximise any other metric.",
        choices=DIRECTIONS,
    )
    pruner: str = param("median", PRUNER_HELP, choices=PRUNERS)
    min_fraction: float = param(
        0.2,
        "No trial is pruned before this fraction of its steps.",
        min=0.0,
        max=0.95,
        label="Prune after",
        visible_if=("pruner", ("median", "successive_halving", "hyperband")),
    )
    reduction_factor: int = param(
        2,
        "Successive halving and Hyperband keep the best 1/factor of the trials at each rung.",
        min=2,
        max=10,
        visible_if=("pruner", ("successive_halving", "hyperband")),
    )
    seed: int = param(42, "Seed of the trial sampler (the same seed picks the same trials).", min=0)

    part: ClassVar[str] = "sweep"

    def check_rules(self, prefix: str) -> None:
        """The space is not empty and each line reads; a grid lists values or steps; random and
        TPE have a trial budget. (Whether each knob exists is `dimensions`, which needs the
        parts.)"""
        if not [line for line in self.space if line.strip()]:
            raise SpecError(
                f"{prefix}.space",
                self.space,
                "the search space is empty",
                "Add a knob to search, e.g. training.learning_rate: 1e-5 .. 1e-3 log",
            )
        for line in self.space:
            if line.strip():
                split_line(line, f"{prefix}.space")
        if self.strategy != "grid" and self.trials < 1:
            raise SpecError(
                f"{prefix}.trials",
                self.trials,
                f"a {self.strategy} sweep needs at least 1 trial",
                "Set trials to how many runs the sweep may start.",
            )

    def budget(self, dims: list[Dimension]) -> int:
        """How many trials the study runs: `trials`; a grid's size at most (0: the whole grid)."""
        if self.strategy != "grid":
            return self.trials
        size = math.prod(len(d.grid() or []) for d in dims)
        return size if self.trials == 0 else min(size, self.trials)

    def minimise(self) -> bool:
        """Whether a lower objective is better."""
        if self.direction != "auto":
            return self.direction == "minimize"
        return loss_like(self.objective)

    def dimensions(self, parts: dict[str, type], prefix: str = "sweep") -> list[Dimension]:
        """The space parsed against the spec parts (`engine.spec.PARTS`); SpecError names the
        line that does not read, the knob that does not exist or the value it refuses."""
        dims = []
        seen: set[str] = set()
        where = f"{prefix}.space"
        for line in self.space:
            if not line.strip():
                continue
            name, text = split_line(line, where)
            key, cls = resolve_knob(name, parts, where)
            if key in seen:
                raise SpecError(where, line, f"{key} is listed twice")
            seen.add(key)
            dims.append(parse_dimension(key, cls, text, where))
        if self.strategy == "grid":
            for dim in dims:
                if dim.grid() is None:
                    raise SpecError(
                        where,
                        dim.describe(),
                        f"a grid needs values to list, but {dim.key} is a continuous range",
                        "List its values (a, b, c), give the range a step, or pick random or tpe.",
                    )
        return dims


def loss_like(objective: str) -> bool:
    """A metric where lower is better (eval_loss, an Eval node's loss)."""
    name = objective.strip().lower()
    return name in ("eval_loss", "loss", "perplexity") or name.endswith("_loss")


def split_line(line: str, where: str) -> tuple[str, str]:
    """`knob: values` → (knob, values text)."""
    name, sep, text = line.partition(":")
    if not sep or not name.strip() or not text.strip():
        raise SpecError(
            where,
            line,
            "a search-space line is `knob: values`",
            "e.g. training.learning_rate: 1e-5 .. 1e-3 log, or lora.r: 8, 16, 32",
        )
    return name.strip(), text.strip()


def resolve_knob(name: str, parts: dict[str, type], where: str) -> tuple[str, type]:
    """`part.field`, a field name or a short name → (`part.field`, the part's class)."""
    candidates = []
    for part in SWEEPABLE_PARTS:
        cls = parts[part]
        for f in dataclasses.fields(cls):
            if not f.metadata or isinstance(_default(f), (list, dict)):
                continue
            key = f"{part}.{f.name}"
            if name in (key, f.name, f.metadata.get("short")):
                candidates.append((key, cls))
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        keys = " or ".join(k for k, _ in candidates)
        raise SpecError(where, name, f"{name} could be {keys}: name the part")
    known = ", ".join(sweepable_knobs(parts))
    raise SpecError(where, name, f"{name} is not a knob a sweep can vary; knobs: {known}")


def sweepable_knobs(parts: dict[str, type]) -> list[str]:
    """Every `part.field` a sweep can vary."""
    return [
        f"{part}.{f.name}"
        for part in SWEEPABLE_PARTS
        for f in dataclasses.fields(parts[part])
        if f.metadata and not isinstance(_default(f), (list, dict))
    ]


def parse_dimension(key: str, cls: type, text: str, where: str) -> Dimension:
    """One knob's values text → a Dimension whose every value the field accepts."""
    name = key.split(".", 1)[1]
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    default = _default(f)
    short = f.metadata.get("short") or name.replace("_", " ")
    match = _RANGE.match(text)
    if match:
        if isinstance(default, (bool, str)):
            raise SpecError(where, text, f"{key} takes values, not a range: list them (a, b)")
        integer = isinstance(default, int)
        low = _number(match["low"], integer, key, where)
        high = _number(match["high"], integer, key, where)
        step = _number(match["step"], integer, key, where) if match["step"] else None
        log = match["how"] == "log"
        if low >= high:
            raise SpecError(
                where, text, f"the range of {key} needs low < high, but {low:g} ≥ {high:g}"
            )
        if log and low <= 0:
            raise SpecError(where, text, f"a log range of {key} needs low above 0")
        if step is not None and step <= 0:
            raise SpecError(where, text, f"the step of {key} must be above 0")
        for end in (low, high):
            _check_value(cls, key, int(end) if integer else float(end), where)
        return Dimension(key, short, low=low, high=high, log=log, step=step, integer=integer)
    values = []
    for raw in (v.strip() for v in text.split(",")):
        if not raw:
            continue
        value = _value(raw, default, key, where)
        _check_value(cls, key, value, where)
        if value not in values:
            values.append(value)
    if not values:
        raise SpecError(where, text, f"{key} lists no values")
    return Dimension(key, short, values=tuple(values))


def _check_value(cls: type, key: str, value: Any, where: str) -> None:
    """The field accepts `value`; else a SpecError on the space line (not on the swept node)."""
    part, name = key.split(".", 1)
    try:
        check_field(cls, name, value, part)
    except SpecError as err:
        reason = str(err).split(": ", 1)[-1]
        raise SpecError(where, value, f"{key} {format_setting(value)}: {reason}") from None


def _default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _number(raw: str, integer: bool, key: str, where: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SpecError(where, raw, f"{key}: {raw!r} is not a number") from None
    if integer and value != int(value):
        raise SpecError(where, raw, f"{key} takes whole numbers")
    return int(value) if integer else value


def _value(raw: str, default: Any, key: str, where: str) -> Any:
    """One listed value as the field's type."""
    if isinstance(default, bool):
        low = raw.lower()
        if low in ("true", "on", "yes", "1"):
            return True
        if low in ("false", "off", "no", "0"):
            return False
        raise SpecError(where, raw, f"{key} is on or off")
    if isinstance(default, (int, float)):
        return _number(raw, isinstance(default, int), key, where)
    return raw


def apply_params(spec: Any, params: dict[str, Any]) -> Any:
    """A copy of JobSpec `spec` with each `part.field` of `params` set (a trial's choices)."""
    parts: dict[str, Any] = {}
    for key, value in params.items():
        part, name = key.split(".", 1)
        current = parts.get(part, getattr(spec, part))
        parts[part] = dataclasses.replace(current, **{name: value})
    return dataclasses.replace(spec, **parts)


def trial_name(template: str, number: int, params: dict[str, Any], dims: list[Dimension]) -> str:
    """A trial's run name: `support #3 · lr 2.1e-4, r 16`."""
    shorts = {d.key: d.short for d in dims}
    chosen = ", ".join(f"{shorts.get(k, k)} {format_setting(v)}" for k, v in params.items())
    return f"{template} #{number} · {chosen}" if chosen else f"{template} #{number}"
