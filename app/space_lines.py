"""A Sweep node's search-space lines as the space editor (app.space_editor) shows them: the knobs
a sweep can vary, how a line reads as a knob, a kind (values, range, range log, steps) and its
values text, what is wrong with a line in one sentence (the engine's own reading,
engine.sweep_spec), and how values carry over when the kind changes. Qt-free.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from engine.errors import SpecError
from engine.formatting import format_number
from engine.spec import PARTS
from engine.sweep_spec import parse_dimension, resolve_knob, split_line, sweepable_knobs
from nodes.catalogue import Parameter, parameters_of

VALUES, RANGE, LOG, STEPS = "values", "range", "range log", "steps"
KINDS = (VALUES, RANGE, LOG, STEPS)
KIND_HELP = {
    VALUES: "A list of values, each tried: a, b, c",
    RANGE: "Any value between low and high (linear): low .. high",
    LOG: "Any value between low and high on a log scale (learning rates): low .. high",
    STEPS: "Values from low to high in equal steps: low .. high, and the step",
}
WHERE = "sweep.space"
# a space line's values, as engine.sweep_spec reads them
RANGE_TEXT = re.compile(
    r"^(?P<span>\S+\s*\.\.\s*\S+)(?:\s+(?:(?P<log>log)|step\s+(?P<step>\S+)))?$"
)
SPAN = re.compile(r"^\S+\s*\.\.\s*\S+$")  # what a range row's values text holds


@dataclasses.dataclass(frozen=True)
class Knob:
    """A knob a sweep can vary: `key` is `part.field`; `kind` its value type."""

    key: str
    label: str
    short: str
    kind: str  # "bool", "int", "float" or "str"
    default: Any
    choices: tuple[str, ...] | None

    @property
    def numeric(self) -> bool:
        return self.kind in ("int", "float")

    def title(self) -> str:
        part = self.key.split(".", 1)[0].replace("_", " ")
        return f"{self.label} ({part})"


def knobs() -> list[Knob]:
    """Every knob of engine.spec.PARTS a sweep can vary, in the engine's order."""
    out = []
    for key in sweepable_knobs(PARTS):
        part, name = key.split(".", 1)
        param: Parameter = next(p for p in parameters_of(PARTS[part]) if p.name == name)
        kind = param.type if param.type in ("bool", "int", "float") else "str"
        out.append(Knob(key, param.label, param.short, kind, param.default, param.choices))
    return out


def problem(line: str) -> str:
    """What is wrong with one space line, in one sentence ("" when it reads)."""
    try:
        name, text = split_line(line, WHERE)
        key, cls = resolve_knob(name, PARTS, WHERE)
        parse_dimension(key, cls, text, WHERE)
    except SpecError as err:
        return sentence(err)
    return ""


def sentence(err: SpecError) -> str:
    """The error's own words without the `field = value:` it starts with, plus its hint."""
    prefix = f"{err.field} = {err.value!r}: "
    message = err.message[len(prefix) :] if err.message.startswith(prefix) else err.message
    message = message.split("; knobs: ", 1)[0]  # the 42 knobs are in the row's list
    first = message.split(" ", 1)[0]
    text = message[:1].upper() + message[1:] if first.isalpha() else message  # not a knob name
    if err.hint:
        text = text.rstrip(".") + ". " + err.hint
    return text


def read_line(line: str, by_key: dict[str, Knob]) -> tuple[Knob, str, str, str] | None:
    """(knob, kind, values text, step text) of a line the rows can show, else None."""
    try:
        name, text = split_line(line, WHERE)
        key, _cls = resolve_knob(name, PARTS, WHERE)
    except SpecError:
        return None
    match = RANGE_TEXT.match(text)
    if match is None:
        return by_key[key], VALUES, text, ""
    if match["log"]:
        return by_key[key], LOG, match["span"], ""
    if match["step"]:
        return by_key[key], STEPS, match["span"], match["step"]
    return by_key[key], RANGE, match["span"], ""


def default_kind(knob: Knob) -> str:
    """The kind a new row of `knob` starts with."""
    if not knob.numeric:
        return VALUES
    if knob.kind == "int":
        return STEPS
    return LOG if knob.key.endswith("learning_rate") else RANGE


def example(knob: Knob, kind: str) -> str:
    """A placeholder for the values text: what to type for this knob and kind."""
    d = knob.default
    if kind == VALUES:
        if knob.choices:
            return ", ".join(knob.choices[:3])
        if knob.kind == "bool":
            return "on, off"
        if knob.kind == "int" and d:
            return f"{max(d // 2, 1)}, {d}, {d * 2}"
        if knob.kind == "float" and d:
            return ", ".join(format_number(v) for v in (d / 2, d, d * 2))
        return "a, b, c"
    if not (knob.numeric and d):
        return "low .. high"
    if knob.kind == "int":
        return f"{max(d // 2, 1)} .. {d * 2}"
    scale = 10 if kind == LOG else 2
    return f"{format_number(d / scale)} .. {format_number(d * scale)}"


def convert(text: str, step: str, kind: str) -> str:
    """The values text carried over to another kind: a list's ends become a range, a range in
    steps becomes the list of its values, a range stays a range."""
    text = text.strip()
    match = RANGE_TEXT.match(text)
    if kind == VALUES:
        if match is None or ".." not in text:
            return text
        low, high = (p.strip() for p in match["span"].split(".."))
        try:
            lo, hi, by = float(low), float(high), float(step) if step.strip() else 0.0
        except ValueError:
            return f"{low}, {high}"
        if by > 0 and (hi - lo) / by < 50:
            count = int((hi - lo) / by + 1e-9) + 1
            return ", ".join(format_number(lo + i * by) for i in range(count))
        return f"{low}, {high}"
    if match is not None and ".." in text:
        return match["span"]
    numbers = []
    for part in text.split(","):
        try:
            numbers.append(float(part))
        except ValueError:
            continue
    if len(numbers) >= 2:
        return f"{format_number(min(numbers))} .. {format_number(max(numbers))}"
    return text


def guess_step(text: str, knob: Knob) -> str:
    """A step that cuts a range in four (whole for whole-number knobs)."""
    match = RANGE_TEXT.match(text.strip())
    if match is None:
        return "1"
    try:
        low, high = (float(p) for p in match["span"].split(".."))
    except ValueError:
        return "1"
    step = (high - low) / 4
    if knob.kind == "int":
        return str(max(int(round(step)), 1))
    return format_number(step) if step > 0 else "1"
