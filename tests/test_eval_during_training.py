"""An Eval node's `during_training_rows`: at each evaluation during training the run answers at
most that many rows of the set with the model being trained and adds the scores of the metrics
that generate (not loss, not the judge's) to that evaluation's `eval` event (`set_scores`,
`set_rows`); a node left at 0 generates nothing until training ends. The time estimate counts
those answers."""

from __future__ import annotations

import json
import time
from pathlib import Path

from engine.eval.evalset import load_eval_set
from engine.events import EventLog, read_events
from engine.plan.timing import workload
from engine.rundir import WORKER_LOG
from engine.spec import EvalSpec
from engine.training.final_eval import PlannedEval, RunEvals
from tests.helpers import make_spec, wait_for, write_chats
from tests.test_eval_in_run import submit
from tests.test_eval_node import eval_graph, short_set


def test_each_evaluation_during_training_scores_the_generation_metrics_on_n_rows(sup, tmp_path):
    short_set(tmp_path / "set.jsonl", rows=4)
    path, *_ = eval_graph(
        tmp_path,
        {
            "path": "set.jsonl",
            "metrics": ["loss", "contains", "regex:^Sorry"],
            "max_rows": 4,
            "during_training_rows": 2,
        },
        # generation metrics, but only when training ends
        {"path": "", "metrics": ["exact"], "max_rows": 2},
        eval_steps=4,
    )
    started = time.time()
    run_id = submit(path)
    run = wait_for(sup, run_id, ("completed", "failed"), timeout=240)
    assert run["state"] == "completed" and run["warnings"] == [], run
    print(f"a tiny run generating during training: {time.time() - started:.0f} s")

    events = list(read_events(f"{run['run_dir']}/{WORKER_LOG}"))
    during = [e for e in events if e.kind == "eval" and "step" in e.data]
    assert [e.get("step") for e in during] == [4, 8]
    for event in during:
        scores = event.get("set_scores")
        assert list(scores) == ["set.jsonl"]  # the held-out node (0) generated nothing
        assert list(scores["set.jsonl"]) == ["contains", "regex:^Sorry"]  # no loss, no judge
        assert all(0.0 <= v <= 1.0 for v in scores["set.jsonl"].values()), scores
        assert event.get("set_rows") == {"set.jsonl": 2}  # at most 2 of its 4 rows
        assert set(event.get("set_loss")) == {"set.jsonl"}  # the loss as before
    # the scores go to SQLite with their evaluation
    sup.ingest(run["run_dir"])
    stored = sup.db.execute(
        "SELECT step, data FROM evals WHERE run_id = ? ORDER BY step", (run_id,)
    ).fetchall()
    assert [(step, json.loads(data)["set_scores"]) for step, data in stored] == [
        (e.get("step"), e.get("set_scores")) for e in during
    ]
    # when training ends every node is scored on all its rows, as without the setting
    final = [
        (e.get("set"), e.get("metric"), e.get("rows"))
        for e in events
        if e.kind == "eval" and "metric" in e.data
    ]
    assert final == [
        ("set.jsonl", "loss", 4),
        ("set.jsonl", "perplexity", 4),
        ("set.jsonl", "contains", 4),
        ("set.jsonl", "regex:^Sorry", 4),
        ("held-out split", "exact", 2),
    ]


def test_nothing_is_generated_during_training_without_the_setting(tmp_path):
    eval_set = load_eval_set(short_set(tmp_path / "set.jsonl", rows=4))
    spec = make_spec(write_chats(tmp_path / "chats.jsonl"))
    spec.evals = [EvalSpec(path=eval_set.path, metrics=["contains", "rouge_l"])]  # rows 0
    plans = [PlannedEval(0, spec.evals[0], eval_set, ["contains", "rouge_l"])]
    evals = RunEvals(spec, tmp_path, plans, None, 128, EventLog(tmp_path / "log"), lambda: False)
    model = object()  # any use of it would raise
    assert evals.training_scores(model) == {}
    # the judge metrics alone never generate during training, whatever the setting
    judged = EvalSpec(path=eval_set.path, metrics=["judge"], judge="j.gguf", during_training_rows=5)
    evals.plans = [PlannedEval(0, judged, eval_set, ["judge"])]
    assert evals.training_scores(model) == {}


def test_the_time_estimate_counts_the_answers_written_during_training(tmp_path):
    data = write_chats(tmp_path / "chats.jsonl")
    eval_set = short_set(tmp_path / "set.jsonl", rows=10)  # equal answers: 32 tokens' budget each
    spec = make_spec(data, max_steps=8, eval_steps=4)
    lengths = [70] * 40
    spec.evals = [EvalSpec(path=str(eval_set), metrics=["contains"], max_rows=10)]
    at_end = workload(spec, 40, lengths, 128)
    assert at_end.answer_tokens[1] == 10 * 32
    spec.evals[0].during_training_rows = 3
    during = workload(spec, 40, lengths, 128)
    evaluations = 8 // 4 + 1  # as the estimate counts the evaluation passes
    fast, slow = at_end.answer_tokens
    assert during.answer_tokens == (
        fast + 3 * evaluations * fast / 10,
        slow + 3 * evaluations * 32,
    )
    spec.evals[0].metrics = ["loss", "judge"]  # nothing that generates during training
    spec.evals[0].judge = str(Path(tmp_path / "j.gguf"))
    judged = workload(spec, 40, lengths, 128)
    spec.evals[0].during_training_rows = 0
    assert judged.answer_tokens == workload(spec, 40, lengths, 128).answer_tokens
