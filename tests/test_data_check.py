"""The node tells the truth about its data (issue 20): each Dataset node's whole file is read
before any run starts from it. A missing file, a malformed line N, rows of no known format, a
conversation without an assistant turn or a row that does not fit the method is one sentence on
the Dataset node (a badge on the canvas, a refused module for `tunegraph run`), and a submission
that slips past the canvas is refused by the supervisor before any worker starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.data import check
from engine.data.check import cached_problem, check_dataset
from engine.spec import DatasetSpec, MethodSpec
from engine.supervisor import client
from nodes import GraphBuilder, compile, save_graph
from tests.helpers import FAST_LORA, FAST_TRAINING, cpu_estimate, make_spec, write_chats


def chat(answer: bool = True) -> dict:
    turns = [{"role": "user", "content": "hi"}]
    if answer:
        turns.append({"role": "assistant", "content": "hello"})
    return {"messages": turns}


def write(path: Path, lines: list) -> Path:
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines),
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    ("lines", "method", "expected"),
    [
        ([chat(), chat(), chat(), "{oops"], "sft", "bad.jsonl:4: invalid JSON"),
        ([chat(), [1, 2]], "sft", "bad.jsonl:2: expected a JSON object, found list"),
        ([{"question": "q", "reply": "a"}], "sft", "rows match no known format"),
        ([chat(), chat(), chat(answer=False)], "sft", "bad.jsonl:3: "),
        (
            [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "a"}],
            "dpo",
            "bad.jsonl:2: ",
        ),
    ],
)
def test_the_whole_file_is_read_and_the_first_problem_named(tmp_path, lines, method, expected):
    path = write(tmp_path / "bad.jsonl", lines)
    problem = check_dataset(DatasetSpec(path=str(path)), method)
    assert expected in problem, problem
    assert problem.startswith(str(path))


def test_a_missing_file_and_a_good_one(tmp_path):
    assert "file not found" in check_dataset(DatasetSpec(path=str(tmp_path / "gone.jsonl")))
    good = write_chats(tmp_path / "good.jsonl")
    assert check_dataset(DatasetSpec(path=str(good))) == ""
    assert check_dataset(DatasetSpec(path="relative.jsonl")) == ""  # the worker's to resolve


def test_a_result_is_kept_until_the_file_changes(tmp_path, monkeypatch):
    path = write(tmp_path / "data.jsonl", [chat(), chat()])
    ds = DatasetSpec(path=str(path))
    assert cached_problem(ds, "sft") is None
    assert check_dataset(ds) == ""
    reads = []
    monkeypatch.setattr(check, "check_rows_of", lambda *a: reads.append(a))
    assert check_dataset(ds) == "" and reads == []  # from the cache
    monkeypatch.undo()
    write(path, [chat(), "{broken"])  # another size: read again
    assert cached_problem(ds, "sft") is None
    assert "data.jsonl:2: invalid JSON" in check_dataset(ds)


def graph_with(tmp_path: Path, good: Path, bad: Path) -> dict:
    g = GraphBuilder(seed=4)
    base = g.add_node("BaseModel", "base")
    train = g.add_node("TrainingConfig", "train", **FAST_TRAINING)
    lora = g.add_node("LoraConfig", "lora", **FAST_LORA)
    for name, data in (("good", good), ("bad", bad)):
        ft = g.add_node("FineTune", name, device="cpu")
        g.connect(base, ft, "base_model")
        g.connect(g.add_node("Dataset", f"{name} data", path=str(data)), ft, "dataset")
        g.connect(train, ft, "training_config")
        g.connect(lora, ft, "lora_config")
    return g.to_dict()


def test_a_data_error_refuses_its_module_at_compile_and_the_others_still_run(tmp_path):
    from app.cli.submit import compile_graph

    good = write_chats(tmp_path / "good.jsonl")
    bad = write(tmp_path / "bad.jsonl", [chat(), chat(), chat(), "{oops"])
    graph = graph_with(tmp_path, good, bad)
    quick = compile(graph)  # without the whole-file check only the first row is looked at
    assert [s.name for s in quick.specs] == ["good", "bad"]

    result = compile(graph, data_check=check_dataset)
    assert [s.name for s in result.specs] == ["good"]
    [error] = result.errors
    assert (error.node_name, error.field) == ("bad data", "path")
    assert "bad.jsonl:4: invalid JSON" in error.message

    path = save_graph(graph, tmp_path / "g.tunegraph.json")
    specs, refused = compile_graph(str(path))  # what `tunegraph run` and `estimate` use
    assert [s.name for s in specs] == ["good"]
    assert [name for name, _ in refused] == ["bad"]


def test_the_supervisor_refuses_a_run_with_bad_data_before_any_worker_starts(sup, tmp_path):
    data = write_chats(tmp_path / "chats.jsonl")
    spec = make_spec(data, "late break")
    estimate = cpu_estimate(spec)
    write(data, [chat(), "{oops"])  # broken after the canvas had checked it
    [entry] = client.submit(sup, [spec], [estimate])
    assert entry["state"] == "refused"
    assert "chats.jsonl:2: invalid JSON" in entry["error"]["message"]
    run = sup.run_json(entry["id"])
    assert run["state"] == "refused" and run["attempts"] == []
    assert not (Path(run["run_dir"]) / "worker.jsonl").exists()


def test_a_preference_file_that_does_not_fit_dpo_is_refused_on_submit(sup, tmp_path):
    data = write(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}] * 3)
    spec = make_spec(data, "prefer")
    spec.method = MethodSpec(method="dpo")
    estimate = cpu_estimate(spec)
    write(data, [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "a"}])
    [entry] = client.submit(sup, [spec], [estimate])
    assert entry["state"] == "refused" and "pairs.jsonl:2: " in entry["error"]["message"]


# -- the canvas -------------------------------------------------------------------------------------
def test_the_canvas_badges_the_dataset_node_and_the_module_cannot_start(qtbot, tmp_path):
    from PySide6 import QtWidgets

    from app.canvas import Canvas

    holder = QtWidgets.QWidget()
    qtbot.addWidget(holder)
    canvas = Canvas(holder)
    bad = write(tmp_path / "bad.jsonl", [chat(), chat(), chat(), "{oops"])
    data = canvas.add_node("Dataset", "data", (0, 100), path=str(bad))
    ft = canvas.add_node("FineTune", "ft", (400, 100))
    for kind, port in (
        ("BaseModel", "base_model"),
        ("TrainingConfig", "training_config"),
        ("LoraConfig", "lora_config"),
    ):
        canvas.connect_nodes(canvas.add_node(kind, kind.lower()), ft, port)
    canvas.connect_nodes(data, ft, "dataset")

    result = canvas.recompile_checked()
    badge = canvas._decorations[data.id].badge
    assert badge.isVisible() and "bad.jsonl:4: invalid JSON" in badge.toolTip()
    assert not canvas.module_ok(ft) and result.specs == []

    write(bad, [chat(), chat(), chat()])  # fixed: checked again in the background
    canvas.recompile()
    qtbot.waitUntil(
        lambda: canvas.data_checks.wait(0) and not canvas.data_checks.busy, timeout=10000
    )
    qtbot.waitUntil(lambda: canvas.module_ok(ft), timeout=5000)
    assert not canvas._decorations[data.id].badge.isVisible()
    canvas.graph.undo_stack().setClean()
