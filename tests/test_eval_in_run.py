"""A run with Eval nodes, for real: submitted with `tunegraph run`, placed by the supervisor,
trained on the tiny model, it scores itself while `evaluating` (its adapter, and the base once
as the baseline), scores its GGUF inside `exporting`, adds its sets' losses to the evaluations
during training, and its scores reach `show --json`; an eval set without references fails the
run before its first step, naming the file and line."""

from __future__ import annotations

import json
import time

import pytest

from engine.eval.run_results import run_results
from engine.events import read_events
from engine.rundir import WORKER_LOG
from tests.helpers import cli, wait_for
from tests.test_eval_node import eval_graph, short_set


def submit(path) -> str:
    out = cli("run", str(path), "--detach", "--json", "--yes", timeout=120)
    assert out.returncode == 0, out.stderr
    (entry,) = json.loads(out.stdout)
    return entry["id"]


def test_a_run_scores_its_adapter_base_and_gguf_when_training_ends(sup, tmp_path):
    short_set(tmp_path / "set.jsonl", rows=6)
    path, *_ = eval_graph(
        tmp_path,
        {
            "path": "set.jsonl",
            "metrics": ["loss", "contains", "regex:^Sorry", "rouge_l"],
            "max_rows": 3,
            "score_base": True,
            "score_gguf": True,
        },
        {"path": "", "metrics": ["loss", "exact"], "max_rows": 2},  # the held-out split
        export_gguf=True,
        eval_steps=4,
    )
    started = time.time()
    run_id = submit(path)
    run = wait_for(sup, run_id, ("completed", "failed"), timeout=240)
    assert run["state"] == "completed" and run["warnings"] == [], run
    print(f"a tiny run with two Eval nodes, base and GGUF scored: {time.time() - started:.0f} s")

    events = list(read_events(f"{run['run_dir']}/{WORKER_LOG}"))
    states = [e.get("state") for e in events if e.kind == "status"]
    assert states == ["starting", "training", "evaluating", "exporting", "completed"]
    state, scores = None, []
    for e in events:
        state = e.get("state") if e.kind == "status" else state
        if e.kind == "eval" and "metric" in e.data:
            scores.append((state, e.get("set"), e.get("target"), e.get("metric"), e.get("rows")))
    metrics = ["loss", "perplexity", "contains", "regex:^Sorry", "rouge_l"]
    assert scores == (
        [("evaluating", "set.jsonl", "adapter", m, 3) for m in metrics]
        + [("evaluating", "set.jsonl", "base", m, 3) for m in metrics]
        + [
            ("evaluating", "held-out split", "adapter", m, 2)
            for m in ("loss", "perplexity", "exact")
        ]
        + [("exporting", "set.jsonl", "gguf", m, 3) for m in metrics]
    )
    # scoring shows its progress to the end of each set, keeping the run's training step
    progress = [e.data for e in events if e.kind == "progress" and e.get("phase") == "evaluating"]
    finished = [(p["set"], p["target"], p["total"]) for p in progress if p["done"] == p["total"]]
    assert finished == [
        ("set.jsonl", "base", 6),
        ("held-out split", "adapter", 2),
        ("set.jsonl", "gguf", 3),
    ]
    assert {p["step"] for p in progress} == {run["max_steps"]}
    # during training each evaluation carries the sets' losses next to the split's eval loss
    during = [e for e in events if e.kind == "eval" and "step" in e.data]
    assert [e.get("step") for e in during] == [4, 8]
    assert set(during[-1].get("set_loss")) == {"set.jsonl", "held-out split"}

    shown = json.loads(cli("show", run_id, "--json").stdout)
    assert set(shown["eval"]) == {
        "set.jsonl",
        "set.jsonl (base)",
        "set.jsonl (gguf)",
        "held-out split",
    }
    adapter, base, gguf = (
        shown["eval"][k] for k in ("set.jsonl", "set.jsonl (base)", "set.jsonl (gguf)")
    )
    assert list(adapter) == metrics and list(base) == metrics
    assert 0.0 < adapter["loss"] < base["loss"]  # trained on these answers: closer than the base
    assert abs(gguf["loss"] - adapter["loss"]) < 0.15 * adapter["loss"]  # the same model, quantized
    # the last evaluation during training saw the same rows and weights as the final one
    assert during[-1].get("set_loss")["set.jsonl"] == pytest.approx(adapter["loss"], rel=1e-6)

    # the rows, outputs side by side, for the leaderboard
    own = [r for r in run_results(run["run_dir"]) if r["set"] == "set.jsonl"]
    by_target = {t["target"]: t for r in own for t in r["results"]}
    assert set(by_target) == {"adapter", "base", "gguf"}
    for target in by_target.values():
        assert len(target["rows"]) == 3
        for row in target["rows"]:
            assert isinstance(row["output"], str)
            assert row["scores"]["regex:^Sorry"] == float(row["output"].startswith("Sorry"))


def test_an_eval_set_without_references_fails_the_run_before_training(sup, tmp_path):
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    rows = [{"messages": turns}, {"messages": turns[:1]}]
    (tmp_path / "no-answer.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path, *_ = eval_graph(tmp_path, {"path": "no-answer.jsonl"})
    run = wait_for(sup, submit(path), ("completed", "failed"), timeout=120)
    assert run["state"] == "failed"
    assert run["error"]["message"].endswith(
        "no-answer.jsonl:2: the row has no assistant turn to take as the reference"
    ), run["error"]
    assert run["step"] in (None, 0)  # not one training step was spent
