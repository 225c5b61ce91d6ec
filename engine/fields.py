"""Declared fields: a spec part's knobs carry their help text, range, choices and labels as
dataclass metadata (`param`), and `check_field` checks a value against that declaration. The spec
parts (engine.spec) are built from these; the node catalogue reads the same metadata, so a knob is
declared once.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import field
from typing import Any, ClassVar

from engine.errors import SpecError


def param(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    choices: tuple[str, ...] | None = None,
    label: str | None = None,
    short: str | None = None,
    widget: str | None = None,
    visible_if: tuple[str, tuple[str, ...]] | None = None,
    node: bool = True,
) -> Any:
    """A dataclass field with the metadata the node catalogue and validation use.

    `label` names the field in the properties panel and `short` in one-line summaries (lineage
    `lr 2e-4 → 1e-4`, sweep copy names); give them only where the field's name, with spaces for
    underscores, will not do (the catalogue capitalises it for `label`). `visible_if` =
    (other field, values): the field matters only while that field of the same part holds one of
    those values (a method's knobs), so the properties panel shows it only then. `node=False`:
    the compiler sets the field, so it is no parameter of the node (an EvalSpec's set name).
    """
    meta = {
        "help": help,
        "min": min,
        "max": max,
        "choices": choices,
        "label": label,
        "short": short,
        "widget": widget,
        "visible_if": visible_if,
        "node": node,
    }
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


class SpecPart:
    """What every spec part shares: `validate` checks each field against its declared type, range
    and choices, then the part's own rules between its fields (`check_rules`)."""

    part: ClassVar[str] = ""  # the part's name in field paths (`training.epochs`) by default

    def validate(self, prefix: str | None = None) -> None:
        """Raise SpecError naming `prefix.field` and the value for the first field we cannot run
        with (`prefix` defaults to the part's name in JobSpec, e.g. `training`)."""
        prefix = self.part if prefix is None else prefix
        check_fields(self, prefix)
        self.check_rules(prefix)

    def check_rules(self, prefix: str) -> None:
        """The part's rules between fields, once each field is valid on its own (none here)."""


def check_fields(obj: Any, prefix: str) -> None:
    """Check every field of a spec part against its declared type, range and choices."""
    for f in dataclasses.fields(obj):
        check_field(type(obj), f.name, getattr(obj, f.name), prefix)


def check_field(cls: type, name: str, value: Any, prefix: str) -> None:
    """Check one value for field `name` of spec part `cls`; SpecError names `prefix.name`."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    meta = f.metadata
    if not meta:
        return
    where = f"{prefix}.{name}"
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise SpecError(where, value, "must be true or false")
    elif isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(where, value, "must be a number")
        if not math.isfinite(value):
            raise SpecError(where, value, "must be a finite number")
        if isinstance(default, int) and value != int(value):
            raise SpecError(where, value, "must be a whole number")
        low, high = meta.get("min"), meta.get("max")
        if low is not None and value < low:
            raise SpecError(where, value, f"must be at least {low:g}")
        if high is not None and value > high:
            raise SpecError(where, value, f"must be at most {high:g}")
    elif isinstance(default, str) and not isinstance(value, str):
        raise SpecError(where, value, "must be text")
    elif isinstance(default, list) and not (
        isinstance(value, list) and all(isinstance(v, str) for v in value)
    ):
        raise SpecError(where, value, "must be a list of names")
    elif isinstance(default, dict) and not (
        isinstance(value, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    ):
        raise SpecError(where, value, 'must map names to names, such as {"messages": "chat"}')
    choices = meta.get("choices")
    if choices and value not in choices:
        raise SpecError(where, value, "must be one of " + ", ".join(choices))


def build_part(cls: type, value: Any, name: str) -> Any:
    """A spec part from its JSON dict (or itself); SpecError names an unknown field."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise SpecError(name, value, "must be an object")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise SpecError(
            f"{name}.{unknown[0]}",
            value[unknown[0]],
            "is not a known field; known fields: " + ", ".join(sorted(known)),
        )
    return cls(**value)
