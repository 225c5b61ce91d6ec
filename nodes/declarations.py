"""The building blocks of node declarations: ports, parameters generated from a spec dataclass's
field metadata (engine.fields.param), and the coercion of the values a graph file stores. The node
kinds themselves are declared in nodes.catalogue (the Fine-Tune module's nodes) and nodes.data_nodes
(the data recipe nodes).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

TYPE_PREFIX = "tunegraph."
"""Node `type_` in graph files is TYPE_PREFIX + kind, e.g. `tunegraph.FineTune`."""

PARAMETER_TYPES = ("str", "int", "float", "bool", "choice", "file", "list", "mapping")


class PortRef(NamedTuple):
    """An output port of a node kind, e.g. PortRef("BaseModel", "model")."""

    kind: str
    port: str

    @property
    def node_type(self) -> str:
        """The NodeGraphQt node type holding this port, e.g. `tunegraph.BaseModel`."""
        return TYPE_PREFIX + self.kind


@dataclass(frozen=True)
class InputPort:
    """An input port: which outputs it accepts, whether it is required or takes several."""

    name: str
    label: str
    accepts: tuple[PortRef, ...]
    required: bool = True
    multiple: bool = False
    help: str = ""


@dataclass(frozen=True)
class OutputPort:
    """An output port; every output may feed several inputs (a shared dataset)."""

    name: str
    label: str
    multiple: bool = True


@dataclass(frozen=True)
class Parameter:
    """One editable value of a node, stored in the node's `custom` dict under `name`."""

    name: str
    type: str  # one of PARAMETER_TYPES
    default: Any
    help: str
    label: str  # in the properties panel, e.g. "Learning rate"
    short: str  # in one-line summaries (lineage, sweep copy names), e.g. "lr"
    widget: str  # the spec's widget hint, else the type name ("file", "model", "modules", ...)
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    # (other parameter, values): shown only while that parameter holds one of the values
    visible_if: tuple[str, tuple[str, ...]] | None = None

    def visible(self, values: dict[str, Any]) -> bool:
        """Whether the parameter matters for a node holding `values` (a method's knobs matter
        only for that method); a missing controlling value counts as its default."""
        if self.visible_if is None:
            return True
        name, allowed = self.visible_if
        return values.get(name) in allowed

    def default_value(self) -> Any:
        """A fresh copy of the default (lists and mappings are never shared)."""
        return (
            type(self.default)(self.default)
            if isinstance(self.default, (list, dict))
            else self.default
        )

    def coerce(self, value: Any) -> Any:
        """Convert a stored value to the declared type; raise ValueError saying what is wrong.

        Graph files may hold numbers as strings (NodeGraphQt's spinbox stores text), lists as
        comma-separated text and mappings as JSON text. Range, choices and the rules between
        fields are not checked here: that is the spec's job (`engine.fields.check_field`, and each
        part's `validate`).
        """
        if self.widget in ("space", "lines"):  # entries that hold commas: one per line
            return _as_lines(value)
        return _COERCE[self.type](value)


@dataclass(frozen=True)
class NodeDecl:
    """A node kind: its label, colour, ports and parameters, and the spec part it fills."""

    kind: str
    label: str
    help: str
    colour: tuple[int, int, int]
    inputs: tuple[InputPort, ...]
    outputs: tuple[OutputPort, ...]
    parameters: tuple[Parameter, ...]
    spec_class: type
    spec_part: str  # the JobSpec attribute this node fills: base_model, datasets, training, ...
    # further spec parts whose fields are parameters of this node too (Fine-Tune: its method)
    extra_parts: tuple[tuple[type, str], ...] = ()

    @property
    def parts(self) -> tuple[tuple[type, str], ...]:
        """Every (spec class, JobSpec attribute) whose fields are this node's parameters."""
        return ((self.spec_class, self.spec_part), *self.extra_parts)

    def part_of(self, name: str) -> tuple[type, str]:
        """The (spec class, JobSpec attribute) declaring parameter `name`."""
        for cls, part in self.parts:
            if any(f.name == name for f in dataclasses.fields(cls)):
                return cls, part
        return self.spec_class, self.spec_part

    def part_values(self, values: dict[str, Any], cls: type) -> dict[str, Any]:
        """The entries of `values` that are fields of spec class `cls`."""
        names = {f.name for f in dataclasses.fields(cls)}
        return {k: v for k, v in values.items() if k in names}

    @property
    def type_(self) -> str:
        """The NodeGraphQt node type, e.g. `tunegraph.FineTune`."""
        return TYPE_PREFIX + self.kind

    def parameter(self, name: str) -> Parameter | None:
        """The parameter called `name`, or None."""
        return next((p for p in self.parameters if p.name == name), None)

    def input(self, name: str) -> InputPort | None:
        """The input port called `name`, or None."""
        return next((p for p in self.inputs if p.name == name), None)

    def output(self, name: str) -> OutputPort | None:
        """The output port called `name`, or None."""
        return next((p for p in self.outputs if p.name == name), None)

    def custom_defaults(self) -> dict[str, Any]:
        """Every key a node of this kind keeps in `custom`, with its default.

        The app's generated NodeGraphQt class must create exactly these properties: NodeGraphQt's
        deserializer refuses a custom key the class does not declare.
        """
        values: dict[str, Any] = {"uuid": ""}
        if self.kind == "FineTune":
            values["origin_uuid"] = ""
        # the name the app gave a copy (nodes.autoname); a name that differs was typed by the user
        values["auto_name"] = ""
        values.update((p.name, p.default_value()) for p in self.parameters)
        return values


# -- parameters from engine.spec field metadata -------------------------------------------------
def parameters_of(spec_class: type) -> tuple[Parameter, ...]:
    """Node parameters generated from a spec dataclass's fields and their metadata, less the
    fields the compiler sets (`param(..., node=False)`: an EvalSpec's set name)."""
    params = []
    for f in dataclasses.fields(spec_class):
        meta = f.metadata
        if meta.get("node") is False:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        ptype = _type_of(default, meta)
        params.append(
            Parameter(
                name=f.name,
                type=ptype,
                default=default,
                help=meta.get("help") or "",
                label=meta.get("label") or _plain_label(f.name),
                short=meta.get("short") or _plain_short(f.name),
                widget=meta.get("widget") or ptype,
                min=meta.get("min"),
                max=meta.get("max"),
                choices=meta.get("choices"),
                visible_if=meta.get("visible_if"),
            )
        )
    return tuple(params)


def _type_of(default: Any, meta: Any) -> str:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, list):
        return "list"
    if isinstance(default, dict):
        return "mapping"
    if meta.get("choices"):
        return "choice"
    if meta.get("widget") in ("file", "gguf"):  # gguf: a model file (the Eval node's judge)
        return "file"
    return "str"


def _plain_short(name: str) -> str:
    return name.replace("_", " ")


def _plain_label(name: str) -> str:
    text = _plain_short(name)
    return text[:1].upper() + text[1:]


# -- coercion -----------------------------------------------------------------------------------
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0", ""}


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"must be true or false, got {value!r}")


def _as_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"must be a finite number, got {value!r}")
    return number


def _as_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        number = _as_number(value)
    except ValueError:
        raise ValueError(f"must be a whole number, got {value!r}") from None
    if number != int(number):
        raise ValueError(f"must be a whole number, got {value!r}")
    return int(number)


def _as_float(value: Any) -> float:
    return _as_number(value)


def _as_str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"must be text, got {value!r}")


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"is not a valid JSON list ({e.msg}): {value!r}") from None
        else:
            return [part.strip() for part in text.split(",") if part.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise ValueError(f"must be a list of names or comma-separated text, got {value!r}")


def _as_lines(value: Any) -> list[str]:
    """Lines of text (a list, or text with one entry per line or separated by `;`): entries of
    a search space hold commas of their own."""
    if isinstance(value, str):
        return [part.strip() for part in value.replace(";", "\n").splitlines() if part.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise ValueError(f"must be a list of lines, got {value!r}")


def _as_mapping(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(
                f'must be a JSON object such as {{"messages": "chat"}} ({e.msg}), got {value!r}'
            ) from None
    if isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return dict(value)
    raise ValueError(f'must map names to names, such as {{"messages": "chat"}}, got {value!r}')


_COERCE = {
    "str": _as_str,
    "file": _as_str,
    "choice": _as_str,
    "int": _as_int,
    "float": _as_float,
    "bool": _as_bool,
    "list": _as_list,
    "mapping": _as_mapping,
}


# -- the catalogue ------------------------------------------------------------------------------
