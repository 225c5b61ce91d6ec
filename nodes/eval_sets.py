"""An Eval node's rows from the canvas: what its Eval set input (`eval_set`) is connected to.

An Eval node scores a file (its `path`), the run's held-out split (nothing given), or the rows of
the node on its Eval set input: a Dataset node's file, or a data node's output (a Split's `eval`
part) made by the data steps before it (nodes.recipes). Those steps join the run's `data_steps`,
after the ones that make its training data and never twice, so the run waits for its eval set as
it waits for its training data and `tunegraph run --only-data` builds it too. The EvalSpec then
holds that file, and in `name` how the scores call the set: the node's name, with the port of a
node of several outputs (`hold out 4 (eval)`), instead of a file name such as `eval.jsonl`.

An eval set is read with its format detected and its columns as they are (engine.eval.evalset),
so a Dataset node asking for a column mapping or a format the file is not detected as is an error
on that node; its `max_rows` cuts the set from the front, as the Eval node's own does, so the
smaller of the two is kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from engine.data.formats import detect_format
from engine.data.method_formats import first_row
from engine.errors import DataError
from engine.spec import EvalSpec
from nodes.catalogue import CATALOGUE
from nodes.recipes import is_data_node
from nodes.structure import GraphNode

EVAL_SET = "eval_set"  # the Eval node's input port


def set_name(name: str, kind: str, port: str) -> str:
    """How the scores name the rows of node `name`'s output `port`: `hold out 4 (eval)` for a
    node of several outputs (a Split), the node's name for any other."""
    decl = CATALOGUE.get(kind)
    return f"{name} ({port})" if decl is not None and len(decl.outputs) > 1 else name


def source_label(name: str, kind: str, port: str) -> str:
    """Node `name`'s output `port` in a sentence: `"hold out 4" (eval)`, or `"chats"` for a node
    of one output (the properties panel: `Scores the rows from "hold out 4" (eval)`)."""
    return set_name(f'"{name}"', kind, port)


class EvalSets:
    """Mixed into the compiler (nodes.compiler._Compiler) beside RecipeSteps: each Eval node's
    set as its EvalSpec gets it, with errors on the node the user must fix."""

    nodes: dict[str, GraphNode]
    sources: dict[str, dict[str, list[tuple[str, str]]]]
    error: Callable[..., None]  # the compiler's: (node, field, message, kind)
    feed: Callable[..., tuple[str | None, list[dict], list[GraphNode]]]  # RecipeSteps'
    has_error: Callable[[GraphNode], bool]  # RecipeSteps'
    data_deps: Callable[[GraphNode], list[GraphNode]]  # the compiler's

    def eval_sources(self, node: GraphNode) -> list[tuple[GraphNode, str]]:
        """The enabled nodes (with their output port) on Eval node `node`'s Eval set input."""
        ends = self.sources.get(node.id, {}).get(EVAL_SET, [])
        return [(self.nodes[i], port) for i, port in ends if not self.nodes[i].disabled]

    def eval_deps(self, evals: list[GraphNode]) -> list[GraphNode]:
        """Every node the Eval nodes `evals` take their rows from, directly or not: an error on
        one of them stops the module, as one on its training data does."""
        out: list[GraphNode] = []
        for node in evals:
            for source, _ in self.eval_sources(node):
                out.append(source)
                if is_data_node(source):
                    out += self.data_deps(source)
        return out

    def module_evals(self, evals: list[GraphNode]) -> tuple[list[EvalSpec] | None, list[dict]]:
        """The EvalSpec of each Eval node of `evals` (one with an eval set connected holds that
        set's file and name) and the data steps that make those sets; None when a node on the
        way has an error (reported on it)."""
        specs: list[EvalSpec] = []
        steps: list[dict] = []
        ok = True
        for node in evals:
            spec = EvalSpec(**node.values)
            sources = self.eval_sources(node)
            if not sources:
                specs.append(spec)
                continue
            names = ", ".join(
                source_label(n.name, n.decl.kind if n.decl else "", p) for n, p in sources
            )
            if len(sources) > 1:
                self.error(
                    node,
                    EVAL_SET,
                    f"takes one eval set but {len(sources)} are connected ({names}); keep one, "
                    "or mix them with a Mix node first",
                    "bad_connection",
                )
                ok = False
                continue
            if spec.path.strip():
                self.error(
                    node,
                    "path",
                    f"names a file while its Eval set input takes the rows of {names}; clear "
                    "the file or disconnect the eval set",
                    "bad_connection",
                )
                ok = False
                continue
            source, port = sources[0]
            if is_data_node(source):
                path, before, _ = self.feed(source, port)
                steps += before
                max_rows = spec.max_rows
            else:
                path = self.dataset_eval_file(source, node)
                cut = int(source.values.get("max_rows") or 0)
                max_rows = min(n for n in (spec.max_rows, cut) if n) if cut else spec.max_rows
            if path is None:
                ok = False
                continue
            kind = source.decl.kind if source.decl is not None else ""
            name = set_name(source.name, kind, port)
            specs.append(dataclasses.replace(spec, path=path, name=name, max_rows=max_rows))
        return (specs if ok else None), steps

    def dataset_eval_file(self, source: GraphNode, node: GraphNode) -> str | None:
        """The file of Dataset node `source` as Eval node `node` scores it; None, with the
        error on the Dataset node, when it has an error or reads the file in a way an eval set
        cannot: a column mapping, plain text rows (no answers), a format other than the one the
        file's first row is detected as."""
        if self.has_error(source):
            return None
        path = str(source.values.get("path") or "")
        fmt = str(source.values.get("format") or "auto")
        if source.values.get("columns"):
            self.error(
                source,
                "columns",
                f'maps columns, but the Eval node "{node.name}" reads its eval set with the '
                "format's own column names; clear the mapping, or rename the columns in the file",
                "invalid_value",
            )
            return None
        row = first_row(path) if Path(path).is_absolute() else None  # else: no graph folder
        try:
            found = detect_format([row], path) if row is not None else None
        except DataError:  # no known format: the worker names the file and what it found
            found = None
        if "text" in (fmt, found) and fmt in ("text", "auto"):
            self.error(
                source,
                "format",
                f'reads plain text rows, which hold no answers for the Eval node "{node.name}" '
                "to score against; connect a file of chats (or another format with answers)",
                "invalid_value",
            )
            return None
        if fmt != "auto" and found is not None and found != fmt:
            self.error(
                source,
                "format",
                f'is {fmt}, but the Eval node "{node.name}" detects the format of its eval set '
                f"and finds {found} rows in this file; set the format to auto",
                "invalid_value",
            )
            return None
        return path
