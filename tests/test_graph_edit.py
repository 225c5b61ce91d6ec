"""Graph-dict transforms the canvas uses (nodes.graphedit), without Qt, on the example graphs."""

from __future__ import annotations

import copy as copylib
import json
from pathlib import Path

from nodes import GRAPH_FORMAT_VERSION, load_graph
from nodes import compile as compile_graph
from nodes.catalogue import CATALOGUE
from nodes.graphedit import (
    absolute_paths,
    graph_from_session,
    node_names,
    unique_name,
    upstream_ids,
    with_declared_custom,
    with_unique_uuids,
)

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "resources" / "examples" / "sweep.json"
DATA = ROOT / "resources" / "datasets" / "support_chats.jsonl"


def by_name(graph: dict, name: str) -> str:
    return next(i for i, n in graph["nodes"].items() if n["name"] == name)


def test_graph_from_session_is_a_graph_file_dict():
    session = load_graph(SWEEP)
    session.pop("connections")  # serialize_session() drops an empty list
    session.pop("tunegraph")
    session["graph"]["accept_connection_types"] = '{"a": 1}'
    session["graph"]["reject_connection_types"] = "{}"
    session["nodes"][by_name(session, "tiny llama")]["custom"]["tags"] = {"x"}  # a set

    data = graph_from_session(session)

    assert data["tunegraph"] == {"format_version": GRAPH_FORMAT_VERSION}
    assert data["connections"] == []
    assert "accept_connection_types" not in data["graph"]
    assert "reject_connection_types" not in data["graph"]
    assert data["nodes"][by_name(data, "tiny llama")]["custom"]["tags"] == ["x"]
    assert "accept_connection_types" in session["graph"]  # the input is left alone
    json.dumps(data)  # plain JSON


def test_with_declared_custom_fills_defaults_and_drops_unknown_keys():
    graph = load_graph(SWEEP)
    lora = by_name(graph, "LoRA r8")
    graph["nodes"][lora]["custom"].pop("alpha")
    graph["nodes"][lora]["custom"]["from_the_future"] = 1
    graph["nodes"]["0xbackdrop"] = {"type_": "nodeGraphQt.nodes.BackdropNode", "custom": {"a": 1}}
    before = copylib.deepcopy(graph)

    data = with_declared_custom(graph)

    custom = data["nodes"][lora]["custom"]
    assert set(custom) == set(CATALOGUE["LoraConfig"].custom_defaults())
    assert custom["alpha"] == CATALOGUE["LoraConfig"].custom_defaults()["alpha"]
    assert custom["r"] == 8
    assert data["nodes"]["0xbackdrop"]["custom"] == {"a": 1}  # not ours: untouched
    assert graph == before


def test_with_unique_uuids_replaces_missing_and_shared_ones():
    graph = load_graph(SWEEP)
    top = by_name(graph, "tiny llama")  # at (0, 0): first in canvas order
    below = by_name(graph, "support chats")
    lora = by_name(graph, "LoRA r8")
    graph["nodes"][below]["custom"]["uuid"] = graph["nodes"][top]["custom"]["uuid"]
    graph["nodes"][lora]["custom"]["uuid"] = ""
    kept = {i: n["custom"]["uuid"] for i, n in graph["nodes"].items() if i not in (below, lora)}

    data = with_unique_uuids(graph)

    uuids = [n["custom"]["uuid"] for n in data["nodes"].values()]
    assert all(uuids) and len(set(uuids)) == len(uuids)
    assert {i: data["nodes"][i]["custom"]["uuid"] for i in kept} == kept
    assert graph["nodes"][lora]["custom"]["uuid"] == ""  # the input is left alone
    assert compile_graph(data, SWEEP).ok


def test_absolute_paths_rebases_relative_datasets(tmp_path):
    graph = load_graph(SWEEP)
    data = absolute_paths(graph, SWEEP)
    dataset = data["nodes"][by_name(data, "support chats")]["custom"]["path"]
    assert Path(dataset) == DATA
    assert data["nodes"][by_name(data, "tiny llama")]["custom"]["source"] == "builtin:tiny-llama"
    assert graph["nodes"][by_name(graph, "support chats")]["custom"]["path"].startswith("..")
    elsewhere = tmp_path / "a" / "b" / "copy.json"
    result = compile_graph(data, elsewhere)
    assert result.ok
    assert Path(result.specs[0].datasets[0].path) == DATA


def test_unique_name_numbers_taken_names():
    assert unique_name("  ft   (copy) ", set()) == "ft (copy)"
    assert unique_name("ft", {"ft"}) == "ft 2"
    assert unique_name("ft", {"ft", "ft 2", "ft 3"}) == "ft 4"
    assert node_names(load_graph(SWEEP)) >= {"support lr 1e-3", "tiny llama"}


def test_upstream_ids_follow_connections_transitively():
    graph = load_graph(SWEEP)
    module = by_name(graph, "support lr 1e-3")
    assert {graph["nodes"][i]["name"] for i in upstream_ids(graph, module)} == {
        "tiny llama",
        "support chats",
        "LoRA r8",
        "train lr 1e-3",
    }
    assert upstream_ids(graph, by_name(graph, "tiny llama")) == []
    chain = {
        "nodes": {"a": {}, "b": {}, "c": {}, "d": {}},
        "connections": [
            {"out": ["a", "x"], "in": ["b", "y"]},
            {"out": ["b", "x"], "in": ["c", "y"]},
            {"out": ["c", "x"], "in": ["d", "y"]},
            {"out": "broken"},
        ],
    }
    assert set(upstream_ids(chain, "c")) == {"a", "b"}
    assert upstream_ids(chain, "a") == []
