"""Copies name themselves after what differs from their original (nodes.autoname), on the graph
dict alone: the Fine-Tune copy after its module's differences, each copied feeder after its own,
until the user types a name; the Δ label's short and full texts; free spots for new nodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes import GraphBuilder, load_graph
from nodes.autoname import auto_names, copy_name, is_auto_named
from nodes.duplicate import deep_duplicate
from nodes.graphedit import free_spot
from nodes.lineage import Change, lineage_diff, lineage_label

SWEEP = Path(__file__).resolve().parents[1] / "resources" / "examples" / "sweep.json"


def module_graph(**names) -> tuple[dict, dict[str, str]]:
    """A Fine-Tune node "support" fed by its model, data, training and LoRA nodes."""
    b = GraphBuilder(seed=11)
    ids = {
        "model": b.add_node("BaseModel", names.get("model", "tiny"), (0, 0)),
        "data": b.add_node("Dataset", "support chats", (0, 100), path="chats.jsonl"),
        "train": b.add_node("TrainingConfig", names.get("train", "train"), (0, 200)),
        "lora": b.add_node("LoraConfig", names.get("lora", "LoRA r8"), (0, 300), r=8),
    }
    ids["ft"] = b.add_node("FineTune", names.get("ft", "support"), (400, 100))
    for key, port in (
        ("model", "base_model"),
        ("data", "dataset"),
        ("train", "training_config"),
        ("lora", "lora_config"),
    ):
        b.connect(ids[key], ids["ft"], port)
    return b.to_dict(), ids


def duplicated(graph: dict, module: str, roles: dict | None = None) -> tuple[dict, dict]:
    """The graph with a deep copy of `module`; the copies' ids by the original's id, and by
    role for the originals named in `roles` ({role: original id})."""
    dup = deep_duplicate(graph, module)
    by_role = {role: dup.ids[old] for role, old in (roles or {}).items() if old in dup.ids}
    return dup.merged_into(graph), {**dup.ids, **by_role}


def apply(graph: dict) -> dict[str, str]:
    """What the canvas does with auto_names: rename, and record the name as the app's."""
    renames = auto_names(graph)
    for node_id, name in renames.items():
        graph["nodes"][node_id]["name"] = name
        graph["nodes"][node_id]["custom"]["auto_name"] = name
    return renames


def name(graph: dict, node_id: str) -> str:
    return graph["nodes"][node_id]["name"]


def test_a_copy_names_itself_after_its_differences_and_follows_them():
    graph, ids = module_graph()
    graph, copy = duplicated(graph, ids["ft"], ids)
    assert name(graph, copy["ft"]) == "support (copy)" and apply(graph) == {}

    graph["nodes"][copy["train"]]["custom"]["learning_rate"] = 2e-3
    graph["nodes"][copy["lora"]]["custom"]["r"] = 16
    apply(graph)
    assert name(graph, copy["ft"]) == "support · lr 2e-3 · r 16"  # the example
    assert name(graph, copy["train"]) == "train · lr 2e-3"
    assert name(graph, copy["lora"]) == "LoRA r16"  # the value the name stated, replaced
    assert name(graph, copy["data"]) == "support chats (copy)"  # nothing differs

    graph["nodes"][copy["lora"]]["custom"]["r"] = 8  # a knob back: the name follows again
    graph["nodes"][copy["train"]]["custom"]["epochs"] = 1.0
    apply(graph)
    assert name(graph, copy["ft"]) == "support · lr 2e-3 · epochs 1"
    assert name(graph, copy["lora"]) == "LoRA r8 (copy)"
    assert name(graph, ids["ft"]) == "support"  # the original is never renamed


def test_a_name_the_user_typed_is_kept():
    graph, ids = module_graph()
    graph, copy = duplicated(graph, ids["ft"], ids)
    graph["nodes"][copy["ft"]]["name"] = "support, bigger steps"  # typed: auto_name differs
    graph["nodes"][copy["train"]]["custom"]["learning_rate"] = 2e-3
    assert not is_auto_named(graph["nodes"][copy["ft"]])
    apply(graph)
    assert name(graph, copy["ft"]) == "support, bigger steps"
    assert name(graph, copy["train"]) == "train · lr 2e-3"  # its feeders still follow


def test_a_copied_feeder_never_states_a_value_it_does_not_have():
    """The stale "train lr 1e-3 (copy)" that trained at 2e-3, in the example graph."""
    graph = load_graph(SWEEP)
    by_name = {n["name"]: i for i, n in graph["nodes"].items()}
    graph, copy = duplicated(graph, by_name["support lr 1e-3"])
    train = copy[by_name["train lr 1e-3"]]
    assert name(graph, train) == "train lr 1e-3 (copy)"
    graph["nodes"][train]["custom"]["learning_rate"] = 2e-3
    apply(graph)
    assert name(graph, train) == "train lr 2e-3"
    assert name(graph, copy[by_name["support lr 1e-3"]]) == "support lr 2e-3"
    # "support lr 5e-3" in the example is a copy its author named: it keeps its name
    assert name(graph, by_name["support lr 5e-3"]) == "support lr 5e-3"


def test_graph_files_from_before_auto_names_count_copy_names_as_the_apps():
    graph, ids = module_graph()
    graph, copy = duplicated(graph, ids["ft"], ids)
    for node_id in set(copy.values()):
        graph["nodes"][node_id]["custom"].pop("auto_name")
    graph["nodes"][copy["ft"]]["name"] = "support (copy) 2"  # the old numbering
    graph["nodes"][copy["lora"]]["name"] = "my lora"
    graph["nodes"][copy["lora"]]["custom"]["r"] = 32
    graph["nodes"][copy["train"]]["custom"]["learning_rate"] = 1e-3
    apply(graph)
    assert name(graph, copy["ft"]) == "support · lr 1e-3 · r 32"
    assert name(graph, copy["train"]) == "train · lr 1e-3"
    assert name(graph, copy["lora"]) == "my lora"


def test_copies_of_copies_and_equal_names_stay_apart():
    graph, ids = module_graph()
    graph, first = duplicated(graph, ids["ft"], ids)
    graph["nodes"][first["train"]]["custom"]["learning_rate"] = 1e-3
    apply(graph)
    graph, second = duplicated(graph, first["ft"])  # a copy of the copy, then of the original
    graph["nodes"][second[first["lora"]]]["custom"]["r"] = 64
    graph, third = duplicated(graph, ids["ft"], ids)
    graph["nodes"][third["train"]]["custom"]["learning_rate"] = 1e-3
    apply(graph)
    assert name(graph, second[first["ft"]]) == "support · lr 1e-3 · r 64"
    assert name(graph, third["ft"]) == "support · lr 1e-3 (2)"
    assert apply(graph) == {}  # settled: the next edit elsewhere renames nothing


def test_copy_name_numbers_and_replaces():
    lr = Change("training_config.learning_rate", "lr", 1e-3, 2e-3)
    assert copy_name("ft", (), set()) == "ft (copy)"
    assert copy_name("ft", (), {"ft (copy)", "ft (copy 2)"}) == "ft (copy 3)"
    assert copy_name("ft (copy 2)", (), set()) == "ft (copy)"
    assert copy_name("train lr 1e-3", [lr], set()) == "train lr 2e-3"
    assert copy_name("train lr 1e-30", [lr], set()) == "train lr 1e-30 · lr 2e-3"
    assert copy_name("ft", [lr], {"ft · lr 2e-3"}) == "ft · lr 2e-3 (2)"
    many = [Change(f"k{i}", f"knob{i}", -1, i) for i in range(5)]
    assert copy_name("ft", many, set()) == "ft · knob0 0 · knob1 1 · knob2 2"  # three at most


# -- the Δ label -----------------------------------------------------------------------------
def test_the_label_holds_three_differences_and_the_tooltip_all():
    graph, ids = module_graph()
    graph, copy = duplicated(graph, ids["ft"], ids)
    graph["nodes"][copy["train"]]["custom"].update(
        learning_rate=1e-3, epochs=5.0, warmup_ratio=0.1, weight_decay=0.01
    )
    graph["nodes"][copy["lora"]]["custom"]["r"] = 32
    text = lineage_diff(graph, copy["ft"]).text()
    short, full = lineage_label(text)
    assert short == "lr 2e-4 → 1e-3, r 8 → 32, epochs 3 → 5 +2 more"
    assert full.splitlines() == [
        "lr 2e-4 → 1e-3",
        "r 8 → 32",
        "epochs 3 → 5",
        "warmup 0.03 → 0.1",
        "wd 0 → 0.01",
    ]
    assert lineage_label("lr 2e-4 → 1e-3") == ("lr 2e-4 → 1e-3", "lr 2e-4 → 1e-3")


def test_several_datasets_give_a_short_label():
    """The issue's "data support_chats.jsonl → —, format auto → —, columns — → —…"."""
    graph, ids = module_graph()
    graph, copy = duplicated(graph, ids["ft"], ids)
    for i, file in enumerate(("faq.jsonl", "tickets.csv")):
        graph["nodes"][f"0xextra{i}"] = {
            "type_": "tunegraph.Dataset",
            "name": file,
            "pos": [900, 400 + 100 * i],
            "custom": {"uuid": f"extra-{i}", "path": f"/data/{file}", "format": "auto"},
        }
        graph["connections"].append(
            {"out": [f"0xextra{i}", "dataset"], "in": [copy["ft"], "dataset"]}
        )
    assert lineage_diff(graph, copy["ft"]).text() == "data +2 files"
    apply(graph)
    assert name(graph, copy["ft"]) == "support · data +2 files"

    graph["connections"] = [
        c for c in graph["connections"] if not c["out"][0].startswith("0xextra")
    ]
    graph["nodes"][copy["data"]]["custom"].update(path="/elsewhere/replies.jsonl", max_rows=100)
    short, _ = lineage_label(lineage_diff(graph, copy["ft"]).text())
    assert short == "data chats.jsonl → replies.jsonl, max rows 0 → 100"
    graph["nodes"][copy["data"]]["custom"].update(path="/elsewhere/chats.jsonl", max_rows=0)
    assert lineage_diff(graph, copy["ft"]).text() == "data chats.jsonl → elsewhere/chats.jsonl"


# -- free spots --------------------------------------------------------------------------------
def test_free_spot_keeps_a_free_start_and_moves_off_nodes():
    taken = [(0.0, 0.0, 160.0, 60.0), (0.0, 100.0, 160.0, 60.0)]
    assert free_spot((160, 60), (400, 0), taken) == (400, 0)
    x, y = free_spot((160, 60), (10, 20), taken)
    assert all(
        x >= rx + rw or rx >= x + 160 or y >= ry + rh or ry >= y + 60 for rx, ry, rw, rh in taken
    )
    assert (x - 10) ** 2 + (y - 20) ** 2 <= 190**2  # beside the nodes in the way, not far off


@pytest.mark.parametrize("count", [1, 12])
def test_free_spot_in_a_crowd(count):
    taken = [
        (float(200 * i), float(100 * j), 160.0, 60.0) for i in range(count) for j in range(count)
    ]
    x, y = free_spot((160, 60), (50, 50), taken, gap=30)
    assert all(
        x >= rx + rw + 30 or rx >= x + 190 or y >= ry + rh + 30 or ry >= y + 90
        for rx, ry, rw, rh in taken
    )
