"""The data nodes before a Fine-Tune node, compiled into the run's data steps.

A Fine-Tune node's `dataset` input may be fed by a data node (Generate, Filter, Deduplicate, Mix,
Split) instead of a Dataset node. Each data node becomes one step, in the order they must run:

    {"key", "step" (generate, filter, dedup, mix, split), "name", "node_uuid",
     "spec" (the node's part, JSON), "inputs": [path, …], "outputs": {port: path}}

`key` is the sha256 (first 20 hex digits) of the step, its spec and what it reads: a file by its
path, size and modification time, another step's output by that step's key and port, and a
teacher or judge model file the same way, and RECIPE_VERSION (raised when the code makes other
rows from the same inputs), so the same recipe on the same files compiles to the same key, and
any change to them to a new one. A step writes its outputs to
`<data_dir>/recipes/<key>/<port>.jsonl` (engine.recipes.job), paths known here, so the run's
dataset is an ordinary file the run waits for (its spec's `data_steps`) and the diff and the
confirmation read like any dataset's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine import paths
from engine.recipes.specs import RECIPE_VERSION
from nodes.structure import GraphNode

STEP_OF = {
    "Generate": "generate",
    "Filter": "filter",
    "Deduplicate": "dedup",
    "Mix": "mix",
    "Split": "split",
}
# fields naming files a step reads, whose identity is part of its key
FILE_FIELDS = ("seeds_file", "documents", "teacher", "judge", "against")


def is_data_node(node: GraphNode) -> bool:
    """A data recipe node (not a Dataset node)."""
    return node.decl is not None and node.decl.kind in STEP_OF


def step_key(step: str, spec: dict, inputs: list[str]) -> str:
    """The key of a step: its kind, its spec and the identity of everything it reads."""
    files = [spec[f] for f in FILE_FIELDS if f in spec]
    named = [x for f in files for x in (f if isinstance(f, list) else [f]) if x]
    payload = {
        "recipe_version": RECIPE_VERSION,
        "step": step,
        "spec": spec,
        "inputs": [identity(i) for i in inputs],
        "files": [identity(f) for f in named],
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def identity(path: str) -> str:
    """A file as a key sees it: a step's output by its path (whose folder is that step's key),
    any other file by its path, size and modification time (`gguf:pypi:` names as they are)."""
    text = str(path)
    bare = text[len("gguf:") :] if text.startswith("gguf:") else text
    file = Path(bare)
    if bare.startswith("pypi:") or recipes_dir() in file.parents:
        return text
    try:
        stat = file.stat()
    except OSError:
        return text
    return f"{text}|{stat.st_size}|{stat.st_mtime_ns}"


def recipes_dir() -> Path:
    """Where the steps' outputs go: `<data_dir>/recipes`."""
    return paths.data_dir() / "recipes"


def output_path(key: str, port: str) -> str:
    """The file step `key` writes for its output `port`."""
    return str(recipes_dir() / key / f"{port}.jsonl")


def part_dict(node: GraphNode) -> dict[str, Any]:
    """The node's spec part as plain data."""
    assert node.decl is not None
    cls = node.decl.spec_class
    return dataclasses.asdict(cls(**node.decl.part_values(node.values, cls)))


def build_step(node: GraphNode, inputs: list[str]) -> dict:
    """The step of data node `node` reading the files `inputs` (Dataset files or the outputs of
    the steps before it)."""
    assert node.decl is not None
    step = STEP_OF[node.decl.kind]
    spec = part_dict(node)
    key = step_key(step, spec, inputs)
    return {
        "key": key,
        "step": step,
        "name": node.name,
        "node_uuid": node.uuid,
        "spec": spec,
        "inputs": list(inputs),
        "outputs": {p.name: output_path(key, p.name) for p in node.decl.outputs},
    }


def ordered(steps: list[dict]) -> list[dict]:
    """`steps` once each, every step after the steps whose outputs it reads."""
    made = {path: s["key"] for s in steps for path in s["outputs"].values()}
    by_key = {s["key"]: s for s in steps}
    out: list[dict] = []
    seen: set[str] = set()

    def place(step: dict) -> None:
        if step["key"] in seen:
            return
        seen.add(step["key"])
        for path in step["inputs"]:
            if path in made:
                place(by_key[made[path]])
        out.append(step)

    for step in steps:
        place(step)
    return out


class RecipeSteps:
    """Mixed into the compiler (nodes.compiler._Compiler): the data steps a module's datasets
    need, with errors on the data nodes that cannot run."""

    nodes: dict[str, GraphNode]
    # input node id -> input port -> [(output node id, output port)], enabled or not
    sources: dict[str, dict[str, list[tuple[str, str]]]]
    result: Any  # the compiler's CompileResult
    error: Callable[..., None]  # the compiler's: (node, field, message, kind)

    def feed(self, node: GraphNode, port: str) -> tuple[str | None, list[dict], list[GraphNode]]:
        """What data node `node`'s output `port` gives: (its file, the steps that make it in
        order, every node it depends on); the file is None when a node on the way has an
        error (reported on that node)."""
        steps: list[dict] = []
        used: list[GraphNode] = [node]
        inputs: list[str] = []
        ok = True
        assert node.decl is not None
        wants = node.decl.input("dataset")
        feeding = [
            (self.nodes[i], p)
            for i, p in self.sources.get(node.id, {}).get("dataset", [])
            if not self.nodes[i].disabled
        ]
        if wants is not None and not feeding:
            self.error(
                node, "dataset", "connect a Dataset node or another data node", "missing_input"
            )
            ok = False
        if wants is not None and len(feeding) > 1 and not wants.multiple:
            names = ", ".join(f'"{n.name}"' for n, _ in feeding)
            self.error(
                node,
                "dataset",
                f"takes one dataset but {len(feeding)} are connected ({names}); keep one, or "
                "mix them with a Mix node first",
                "bad_connection",
            )
            ok = False
        for source, out_port in feeding:
            if is_data_node(source):
                path, before, deps = self.feed(source, out_port)
                steps += before
                used += deps
            else:  # a Dataset node: its file
                used.append(source)
                path = self.read_whole(source, node)
            if path is None:
                ok = False
            else:
                inputs.append(path)
        if node.decl.kind == "Mix" and ok:
            from engine.errors import SpecError
            from engine.recipes.specs import MixSpec

            try:
                MixSpec(**node.decl.part_values(node.values, MixSpec)).check_inputs(len(inputs))
            except SpecError as err:
                self.error(node, err.field.split(".", 1)[-1], str(err), "invalid_value")
                ok = False
        if not ok or self.has_error(node):
            return None, steps, used
        step = build_step(node, inputs)
        return step["outputs"][port], [*steps, step], used

    def read_whole(self, source: GraphNode, node: GraphNode) -> str | None:
        """The file of Dataset node `source` as data node `node` reads it: whole, with the
        format's own column names. None, with the error on the Dataset node, when it asks for a
        column mapping or a row limit, which would otherwise be dropped without a word."""
        reader = f'the data node "{node.name}"'
        for name, what in (
            (
                "columns",
                f"maps columns, but {reader} reads the file with its format's own column names; "
                "clear the mapping, or rename the columns in the file",
            ),
            (
                "max_rows",
                f"limits its rows, but {reader} reads the whole file; set it to 0 and cut the "
                "rows with a Mix node's row count or a Split",
            ),
        ):
            if source.values.get(name):
                self.error(source, name, what, "invalid_value")
                return None
        return source.values.get("path") or None

    def has_error(self, node: GraphNode) -> bool:
        """An error was reported on `node` (its values, its files, its part's rules)."""
        return any(e.node_id == node.id for e in self.result.errors)
