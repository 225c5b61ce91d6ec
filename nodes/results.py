"""What `nodes.compile` returns: errors as values (`CompileError`, its `kind` one of the closed set
ERROR_KINDS), one `ModuleResult` per Fine-Tune node and the `CompileResult` of the whole graph."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, get_args

from engine.spec import JobSpec

ErrorKind = Literal[
    "missing_input",
    "bad_connection",
    "cycle",
    "unknown_type",
    "invalid_value",
    "file_error",
    "invalid_graph",
]
ERROR_KINDS: tuple[str, ...] = get_args(ErrorKind)


@dataclass(frozen=True)
class CompileError:
    """A problem to show on one node: `field` is a parameter or port name ("" for the node).

    `kind` says what sort of problem it is, one of ERROR_KINDS (a closed set):

    - `missing_input`: a required input port of a Fine-Tune node has no enabled node connected
      (`field` is the port);
    - `bad_connection`: a connection the graph cannot hold: from or to a node id that is not in
      the graph, a port the node does not have, a node of the wrong kind, or several nodes on an
      input that takes one (`field` is the port, or `connections` for the graph);
    - `cycle`: the node sits on a cycle of connections (`field` is "");
    - `unknown_type`: the node's `type_` is not a known kind (`field` is `type_`);
    - `invalid_value`: a parameter holds a value the spec refuses, alone or together with other
      values (a SpecError from `engine.spec`), or a Fine-Tune name is not unique (`field` is the
      parameter);
    - `file_error`: a file or folder the node names does not exist or is not what it should be
      (`field` is the parameter);
    - `invalid_graph`: the graph dict itself is malformed: no `nodes` object, `connections` not a
      list, a node entry that is not an object, a connection that is not `{"out", "in"}`.
    """

    node_id: str  # the key in graph["nodes"]; "" for a problem with the graph as a whole
    field: str
    message: str
    node_name: str = ""
    node_uuid: str = ""
    node_label: str = ""
    kind: ErrorKind = dataclasses.field(kw_only=True)

    def __post_init__(self) -> None:
        """Refuse a kind outside ERROR_KINDS."""
        if self.kind not in ERROR_KINDS:
            raise ValueError(
                f"unknown CompileError kind {self.kind!r}; known: " + ", ".join(ERROR_KINDS)
            )

    def __str__(self) -> str:
        """The error as one line: where, which field, what."""
        where = f'{self.node_label or "Node"} "{self.node_name}"' if self.node_id else "Graph"
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )

    def as_dict(self) -> dict:
        """A JSON-ready dict (for the CLI and the app)."""
        return {**dataclasses.asdict(self), "text": str(self)}


@dataclass(frozen=True)
class ModuleResult:
    """One Fine-Tune node: its spec, or None and the errors (its own and its feeders') why not."""

    node_id: str
    name: str
    node_uuid: str
    spec: JobSpec | None
    errors: tuple[CompileError, ...]


@dataclass
class CompileResult:
    """Specs of the valid modules (ordered by node position), and every error in the graph."""

    specs: list[JobSpec] = field(default_factory=list)
    errors: list[CompileError] = field(default_factory=list)
    modules: list[ModuleResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the graph has no errors at all (Run is enabled)."""
        return not self.errors

    def errors_for(self, node_id: str) -> list[CompileError]:
        """The errors to show on one node."""
        return [e for e in self.errors if e.node_id == node_id]
