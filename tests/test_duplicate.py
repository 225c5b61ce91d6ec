"""Deep duplicate on the graph dict (nodes.duplicate), without Qt: the example graphs copied,
compiled and compared, as DESIGN "The flow of one run" step 1 says."""

from __future__ import annotations

import copy as copylib
from pathlib import Path

import pytest

from nodes import GraphBuilder, load_graph
from nodes import compile as compile_graph
from nodes.duplicate import GAP, deep_duplicate
from nodes.lineage import lineage_diff

EXAMPLES = Path(__file__).resolve().parents[1] / "resources" / "examples"
SWEEP = EXAMPLES / "sweep.json"
GEMMA = EXAMPLES / "gemma-style.json"
IDENTITY = ("uuid", "origin_uuid", "auto_name")  # what a copy does not share with its original


def by_name(graph: dict, name: str) -> str:
    return next(i for i, n in graph["nodes"].items() if n["name"] == name)


def test_copy_holds_the_module_and_its_feeders_only():
    graph = load_graph(SWEEP)
    before = copylib.deepcopy(graph)
    module = by_name(graph, "support lr 5e-3")

    dup = deep_duplicate(graph, module)

    assert graph == before  # the input is left alone
    assert sorted(n["name"] for n in dup.nodes.values()) == [
        "LoRA r8 (copy)",
        "support chats (copy)",
        "support lr 5e-3 (copy)",
        "tiny llama (copy)",
        "train lr 5e-3 (copy)",
    ]
    assert set(dup.ids) == {
        module,
        *(by_name(graph, n) for n in ("tiny llama", "support chats", "LoRA r8", "train lr 5e-3")),
    }
    assert dup.nodes[dup.module_id]["name"] == "support lr 5e-3 (copy)"
    assert dup.module_id == dup.ids[module]
    assert not set(dup.nodes) & set(graph["nodes"])  # fresh node ids
    uuids = [n["custom"]["uuid"] for n in dup.nodes.values()]
    original_uuids = {n["custom"]["uuid"] for n in graph["nodes"].values()}
    assert len(set(uuids)) == 5 and not set(uuids) & original_uuids
    assert (
        dup.nodes[dup.module_id]["custom"]["origin_uuid"]
        == (graph["nodes"][module]["custom"]["uuid"])
    )
    for old_id, new_id in dup.ids.items():  # everything else is copied as it was
        old, new = graph["nodes"][old_id], dup.nodes[new_id]
        assert new["type_"] == old["type_"]

        def settings(node: dict) -> dict:
            return {k: v for k, v in node["custom"].items() if k not in IDENTITY}

        assert settings(new) == settings(old)
        assert new["custom"]["auto_name"] == new["name"]  # named by the app, so it renames itself
        assert not new["selected"]


def test_connections_are_only_those_inside_the_copy():
    graph = load_graph(SWEEP)
    dup = deep_duplicate(graph, by_name(graph, "support lr 5e-3"))
    back = {new: old for old, new in dup.ids.items()}
    assert len(dup.connections) == 4
    originals = [
        {"out": [back[c["out"][0]], c["out"][1]], "in": [back[c["in"][0]], c["in"][1]]}
        for c in dup.connections
    ]
    assert all(c in graph["connections"] for c in originals)
    assert {c["in"][1] for c in dup.connections} == {
        "base_model",
        "dataset",
        "training_config",
        "lora_config",
    }
    assert all(c["in"][0] == dup.module_id for c in dup.connections)


def test_copy_sits_right_of_the_graph_with_its_layout_kept():
    graph = load_graph(SWEEP)
    dup = deep_duplicate(graph, by_name(graph, "support lr 5e-3"))
    right = max(n["pos"][0] + n["width"] for n in graph["nodes"].values())
    offsets = {
        (dup.nodes[new]["pos"][0] - graph["nodes"][old]["pos"][0]) for old, new in dup.ids.items()
    }
    assert len(offsets) == 1  # one shift for every node
    assert min(n["pos"][0] for n in dup.nodes.values()) == right + GAP
    for old, new in dup.ids.items():
        assert dup.nodes[new]["pos"][1] == graph["nodes"][old]["pos"][1]

    moved = deep_duplicate(graph, by_name(graph, "support lr 5e-3"), x_offset=1000.0)
    assert moved.nodes[moved.module_id]["pos"] == [1420.0, 400.0]


def test_merged_copy_compiles_to_the_same_settings_and_edits_stay_in_the_copy():
    graph = load_graph(SWEEP)
    module = by_name(graph, "support lr 5e-3")
    merged = deep_duplicate(graph, module).merged_into(graph)
    result = compile_graph(merged, SWEEP)
    assert result.ok
    specs = {s.name: s for s in result.specs}
    assert sorted(specs) == ["support lr 1e-3", "support lr 5e-3", "support lr 5e-3 (copy)"]
    original, copied = specs["support lr 5e-3"], specs["support lr 5e-3 (copy)"]
    assert copied.training.learning_rate == original.training.learning_rate == 5e-3
    assert copied.origin_uuid == graph["nodes"][module]["custom"]["uuid"]
    copy_id = by_name(merged, "support lr 5e-3 (copy)")
    assert lineage_diff(merged, copy_id).text() == "same settings as support lr 5e-3"

    merged["nodes"][by_name(merged, "train lr 5e-3 (copy)")]["custom"]["learning_rate"] = 1e-4
    assert merged["nodes"][by_name(merged, "train lr 5e-3")]["custom"]["learning_rate"] == 5e-3
    assert lineage_diff(merged, copy_id).text() == "lr 5e-3 → 1e-4"
    specs = {s.name: s for s in compile_graph(merged, SWEEP).specs}
    assert specs["support lr 5e-3"].training.learning_rate == 5e-3
    assert specs["support lr 5e-3 (copy)"].training.learning_rate == 1e-4


def test_a_second_copy_gets_a_numbered_name_further_right():
    graph = load_graph(GEMMA)
    module = by_name(graph, "gemma answers in JSON")
    first = deep_duplicate(graph, module)
    assert len(first.nodes) == 6  # base, data, LoRA, training, export and the module
    once = first.merged_into(graph)
    second = deep_duplicate(once, module)
    assert second.nodes[second.module_id]["name"] == "gemma answers in JSON (copy 2)"
    assert "adapter + GGUF Q8_0 (copy 2)" in {n["name"] for n in second.nodes.values()}
    assert min(n["pos"][0] for n in second.nodes.values()) > max(
        n["pos"][0] for n in first.nodes.values()
    )
    twice = second.merged_into(once)
    assert len(twice["nodes"]) == 18
    assert len({n["custom"]["uuid"] for n in twice["nodes"].values()}) == 18
    assert compile_graph(twice, GEMMA).ok


def test_a_sweep_suffix_names_every_copied_node():
    graph = load_graph(SWEEP)
    dup = deep_duplicate(graph, by_name(graph, "support lr 1e-3"), suffix=" · lr 3e-3")
    assert dup.nodes[dup.module_id]["name"] == "support lr 1e-3 · lr 3e-3"
    assert "train lr 1e-3 · lr 3e-3" in {n["name"] for n in dup.nodes.values()}


def test_several_datasets_are_copied_in_their_order_and_loose_nodes_stay():
    b = GraphBuilder(seed=7)
    model = b.add_node("BaseModel", "model", source="builtin:tiny-llama")
    chats = b.add_node("Dataset", "chats", path="chats.jsonl")
    faq = b.add_node("Dataset", "faq", path="faq.jsonl")
    train = b.add_node("TrainingConfig", "train")
    lora = b.add_node("LoraConfig", "lora")
    b.add_node("Dataset", "loose data", path="other.jsonl")
    module = b.add_node("FineTune", "ft")
    b.connect(model, module, "base_model")
    b.connect(train, module, "training_config")
    b.connect(lora, module, "lora_config")
    b.connect(faq, module, "dataset")
    b.connect(chats, module, "dataset")
    graph = b.to_dict()

    dup = deep_duplicate(graph, module)

    assert sorted(n["name"] for n in dup.nodes.values()) == [
        "chats (copy)",
        "faq (copy)",
        "ft (copy)",
        "lora (copy)",
        "model (copy)",
        "train (copy)",
    ]
    datasets = [c["out"][0] for c in dup.connections if c["in"][1] == "dataset"]
    assert datasets == [dup.ids[faq], dup.ids[chats]]  # the order the module reads them in
    merged = dup.merged_into(graph)
    result = compile_graph(merged)
    assert result.ok, result.errors
    specs = {s.name: s for s in result.specs}
    assert [d.path for d in specs["ft (copy)"].datasets] == [d.path for d in specs["ft"].datasets]


def test_only_fine_tune_nodes_are_duplicated():
    graph = load_graph(SWEEP)
    with pytest.raises(ValueError, match="only Fine-Tune"):
        deep_duplicate(graph, by_name(graph, "tiny llama"))
    with pytest.raises(ValueError, match="no node"):
        deep_duplicate(graph, "0xnothere")
