"""The Eval node without a model: compiled into `JobSpec.evals` (several per Fine-Tune, paths
resolved against the graph's folder), each bad input an error on the Eval node naming the field
and the file (and line), deep duplicates copying their Eval nodes, the spec's JSON round trip,
and the time estimate counting the eval rows' generation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.plan.shape import ModelShape
from engine.plan.timing import time_range_s, workload
from engine.spec import EvalSpec, JobSpec
from nodes import GraphBuilder, compile, load_graph, save_graph
from nodes.duplicate import deep_duplicate
from nodes.graphedit import absolute_paths
from tests.helpers import FAST_LORA, FAST_TRAINING, make_spec, write_chats

SCORER = "def score(output, reference, row):\n    return float(output.startswith('Sorry'))\n"


def short_set(path: Path, rows: int = 4) -> Path:
    """An eval set of short answers in the training data's style: the tiny model's answer budget
    stays at its minimum (32 tokens), which keeps a run's scoring to seconds."""
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"Hi, my router blinks red (ticket {i})."},
                    {"role": "assistant", "content": f"Sorry about that: ticket {i}."},
                ]
            }
        )
        for i in range(rows)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def eval_graph(folder: Path, *evals: dict, export_gguf: bool = False, **training) -> tuple:
    """A graph file in `folder` with one Fine-Tune module fed by one Eval node per `evals` entry;
    returns (path, graph dict, module id, Eval node ids)."""
    data = write_chats(folder / "chats.jsonl")
    g = GraphBuilder(seed=3)
    feeds = {
        "base_model": g.add_node("BaseModel", "base", source="builtin:tiny-llama"),
        "dataset": g.add_node("Dataset", "chats", path=data.name),
        "training_config": g.add_node("TrainingConfig", "train", **{**FAST_TRAINING, **training}),
        "lora_config": g.add_node("LoraConfig", "lora", **FAST_LORA),
        "export": g.add_node("Export", "export", gguf=export_gguf),
    }
    module = g.add_node("FineTune", "tuned", device="cpu")
    for port, node in feeds.items():
        g.connect(node, module, port)
    ids = []
    for i, values in enumerate(evals):
        ids.append(g.add_node("Eval", f"eval {i + 1}", **values))
        g.connect(ids[-1], module, "eval")
    path = save_graph(g.to_dict(), folder / "graph.json")
    return path, load_graph(path), module, ids


def test_eval_nodes_compile_into_the_spec_with_their_files_resolved(tmp_path):
    write_chats(tmp_path / "set.jsonl", rows=5)
    (tmp_path / "sorry.py").write_text(SCORER, encoding="utf-8")
    (tmp_path / "judge.gguf").write_bytes(b"GGUF" + bytes(60))
    path, graph, _module, _ids = eval_graph(
        tmp_path,
        {
            "path": "set.jsonl",
            "metrics": ["loss", "regex:^Sorry, (about|for)", "python:sorry.py", "judge"],
            "judge": "judge.gguf",
            "max_rows": 4,
            "score_base": True,
        },
        {"path": "", "metrics": "loss, exact"},  # the held-out split; text as a canvas may store
    )
    result = compile(graph, path)
    assert result.errors == []
    (spec,) = result.specs
    assert [e.path for e in spec.evals] == [str(tmp_path / "set.jsonl"), ""]
    first = spec.evals[0]
    # the comma inside the pattern survives: the metrics are a list, not comma-separated text
    assert first.metrics == [
        "loss",
        "regex:^Sorry, (about|for)",
        f"python:{tmp_path / 'sorry.py'}",
        "judge",
    ]
    assert (first.judge, first.max_rows, first.score_base) == (
        str(tmp_path / "judge.gguf"),
        4,
        True,
    )
    assert spec.evals[1].metrics == ["loss", "exact"]
    assert JobSpec.from_json(spec.to_json()) == spec  # sorted JSON round trip, evals included
    # saved elsewhere, the graph keeps pointing at the same files
    moved = absolute_paths(graph, path)["nodes"]
    node = next(n for n in moved.values() if n["name"] == "eval 1")["custom"]
    assert node["metrics"][2] == f"python:{tmp_path / 'sorry.py'}"
    assert node["judge"] == str(tmp_path / "judge.gguf")


@pytest.mark.parametrize(
    ("values", "field", "says"),
    [
        (
            {"metrics": ["loss", "regex:(unclosed"]},
            "metrics",
            "regex:(unclosed: the pattern does not compile",
        ),
        ({"judge": "judge.gguf", "metrics": ["judge"]}, "judge", "is not a GGUF file"),
        ({"path": "missing.jsonl"}, "path", "missing.jsonl does not exist"),
        ({"metrics": ["python:nowhere.py"]}, "metrics", "nowhere.py does not exist"),
        ({"metrics": ["python:broken.py"]}, "metrics", "broken.py:2: syntax error"),
        ({"metrics": ["rouge_l", "judge"]}, "judge", "the judge metric needs a judge model"),
        ({"metrics": ["bleu"]}, "metrics", "unknown metric 'bleu'"),
        ({"path": "", "eval_split": 0.0}, "path", "no eval set chosen"),
        ({"score_gguf": True}, "score_gguf", "there is no GGUF to score"),
        ({"path": "notes.txt"}, "path", "unsupported file type '.txt'"),
    ],
)
def test_bad_eval_input_is_an_error_on_the_eval_node(tmp_path, values, field, says):
    write_chats(tmp_path / "set.jsonl", rows=3)
    (tmp_path / "judge.gguf").write_text("not a model", encoding="utf-8")
    (tmp_path / "broken.py").write_text("def score(output, reference, row):\n    return (\n")
    values = {"path": "set.jsonl", **values}
    training = {"eval_split": values.pop("eval_split")} if "eval_split" in values else {}
    path, graph, module, (eval_id,) = eval_graph(tmp_path, values, **training)
    result = compile(graph, path)
    assert result.specs == []  # the module does not run
    (error,) = result.errors
    assert (error.node_id, error.node_name, error.field) == (eval_id, "eval 1", field)
    assert says in error.message, error.message
    if field == "metrics" and "python" in str(values["metrics"]):
        assert str(tmp_path) in error.message  # the file, by its full path


def test_duplicate_deep_copies_the_eval_nodes(tmp_path):
    write_chats(tmp_path / "set.jsonl", rows=3)
    path, graph, module, evals = eval_graph(
        tmp_path, {"path": "set.jsonl"}, {"path": "", "metrics": ["loss"]}
    )
    copy = deep_duplicate(graph, module)
    merged = copy.merged_into(graph)
    new_evals = [copy.ids[i] for i in evals]
    assert set(new_evals).isdisjoint(evals)
    for old, new in zip(evals, new_evals, strict=True):
        assert merged["nodes"][new]["custom"]["uuid"] != graph["nodes"][old]["custom"]["uuid"]
        assert {"out": [new, "eval"], "in": [copy.module_id, "eval"]} in merged["connections"]
    merged["nodes"][new_evals[0]]["custom"]["max_rows"] = 7  # editing the copy…
    original, duplicate = compile(merged, path).specs
    assert [e.max_rows for e in original.evals] == [50, 50]  # …leaves the original as it was
    assert [e.max_rows for e in duplicate.evals] == [7, 50]
    assert duplicate.origin_uuid == original.node_uuid


def test_the_time_estimate_counts_the_eval_rows(tmp_path):
    data = write_chats(tmp_path / "chats.jsonl")
    eval_set = write_chats(tmp_path / "set.jsonl", rows=30)
    spec = make_spec(data)
    lengths = [70] * 40
    plain = workload(spec, 40, lengths, 128)
    spec.evals = [EvalSpec(path=str(eval_set), metrics=["loss", "rouge_l"], max_rows=20)]
    scored = workload(spec, 40, lengths, 128)
    assert plain.answer_tokens == (0.0, 0.0) and plain.scored_tokens == 0
    fast, slow = scored.answer_tokens
    assert 20 * 32 <= fast <= slow <= 20 * 512  # 20 rows, each within the answer budget
    assert scored.scored_tokens == 20 * 70  # `loss` reads every row once
    spec.evals[0].score_base = True  # a second target doubles both
    assert workload(spec, 40, lengths, 128).answer_tokens == (2 * fast, 2 * slow)
    shape = tiny_shape()
    before = time_range_s(shape, plain, "cpu", None, 2, spec)
    after = time_range_s(shape, workload(spec, 40, lengths, 128), "cpu", None, 2, spec)
    assert after["low"] > before["low"] and after["high"] > before["high"]


def tiny_shape() -> ModelShape:
    """A 135M-parameter model's shape (only its size matters to the time range)."""
    return ModelShape(
        params=135_000_000,
        hidden=576,
        layers=30,
        intermediate=1536,
        vocab=49152,
        context=2048,
        embedding_params=28_000_000,
    )


def test_an_old_spec_without_evals_still_loads(tmp_path):
    spec = make_spec(write_chats(tmp_path / "chats.jsonl"))
    data = json.loads(spec.to_json())
    del data["evals"]
    assert JobSpec.from_dict(data).evals == []
