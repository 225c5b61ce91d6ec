"""The eval runner for real on the CPU: the tiny model as a base target and a run (its adapter on
that base) answer an eval set greedily; every text metric is checked against the outputs the
models really gave, loss against the model's own answers, and a run's scores reach the run index
(`show --json`'s `eval`) and survive a rebuild."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from engine.errors import EvalError, RunCancelled
from engine.eval.evalset import load_eval_set
from engine.eval.job import EvalRequest, record_scores
from engine.eval.metrics import check_metrics
from engine.eval.runner import evaluate
from engine.eval.targets import Target, run_target
from tests.helpers import write_chats
from tests.test_export import make_run

RUN_ID = "20261201-100000-e7a1e7"
NEW_TOKENS = 24  # the random tiny model rarely stops by itself: every answer is this long
SCORER = (
    "def score(output, reference, row):\n    return len(output) + len(row['prompt_messages'])\n"
)


class Scored:
    """One evaluation of a base and a run, shared by the tests of this module."""

    def __init__(self, root: Path, base_dir: Path):
        self.home = root / "eval-home"
        self.run_dir = make_run(self.home / "runs" / RUN_ID, base_dir, name="tuned")
        self.set_path = write_chats(root / "eval-set.jsonl", rows=4)
        (root / "length.py").write_text(SCORER, encoding="utf-8")
        self.metrics = check_metrics(
            [
                "loss",
                "exact",
                "contains",
                "regex:^S",
                "json",
                "rouge_l",
                f"python:{root}/length.py",
            ],
            2,
            False,
        )
        self.targets = [
            Target("tiny", "base", str(base_dir)),
            run_target("tuned", RUN_ID, self.run_dir),
        ]
        self.steps: list[tuple[int, int, str]] = []
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TUNEGRAPH_HOME", str(self.home))
            started = time.time()
            self.result = evaluate(
                self.targets,
                load_eval_set(self.set_path),
                self.metrics,
                max_new_tokens=NEW_TOKENS,
                progress=lambda *step: self.steps.append(step),
            )
            self.seconds = time.time() - started
        self.json = self.result.as_json()


@pytest.fixture(scope="module")
def scored(tmp_path_factory, tiny_model_dir) -> Scored:
    return Scored(tmp_path_factory.mktemp("eval-runner"), tiny_model_dir)


def test_results_have_the_design_shape(scored):
    out = scored.json
    assert set(out) == {"set", "rows", "metrics", "results", "ranking"}
    assert out["set"] == "eval-set.jsonl" and out["rows"] == 4
    assert out["metrics"][:2] == ["loss", "perplexity"] and len(out["metrics"]) == 8
    assert [(r["target"], r["kind"]) for r in out["results"]] == [
        ("tiny", "base"),
        ("tuned", "run"),
    ]
    for result in out["results"]:
        assert set(result) == {"target", "kind", "scores", "rows"}
        assert set(result["scores"]) == set(out["metrics"])
        assert len(result["rows"]) == 4
        for row in result["rows"]:
            assert set(row) == {"prompt", "reference", "output", "scores"}
            assert row["prompt"].startswith("Hi, ") and row["reference"].startswith("Sorry")
    losses = {r["target"]: r["scores"]["loss"] for r in out["results"]}
    assert out["ranking"] == sorted(losses, key=losses.get)  # loss: lower is better
    assert scored.steps[-1][:2] == (8, 8) and [s[0] for s in scored.steps] == list(range(1, 9))
    print(f"eval of 2 targets x 4 rows: {scored.seconds:.1f} s")


def test_every_text_metric_scores_the_real_outputs(scored):
    from rouge_score import rouge_scorer

    rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    for result in scored.json["results"]:
        for row in result["rows"]:
            output, reference, got = row["output"], row["reference"], row["scores"]
            assert isinstance(output, str)
            assert got["exact"] == float(output.strip() == reference.strip())
            assert got["contains"] == float(reference.lower() in " ".join(output.split()).lower())
            assert got["regex:^S"] == float(output.startswith("S"))
            try:
                json.loads(output)
                parsed = 1.0
            except ValueError:
                parsed = 0.0
            assert got["json"] == parsed
            assert got["rouge_l"] == pytest.approx(
                rouge.score(reference, output)["rougeL"].fmeasure
            )
            assert got[scored.metrics[-1]] == len(output) + 1  # the user's scorer, one user turn
        for name in scored.metrics[1:]:
            values = [r["scores"][name] for r in result["rows"]]
            assert result["scores"][name] == pytest.approx(sum(values) / len(values))
    outputs = [[r["output"] for r in res["rows"]] for res in scored.json["results"]]
    assert outputs[0] != outputs[1], "the run's adapter changed nothing"


def test_loss_is_the_token_loss_of_the_references(scored):
    for result in scored.json["results"]:
        loss = result["scores"]["loss"]
        assert 0 < loss < 20
        assert result["scores"]["perplexity"] == pytest.approx(math.exp(loss))
        row_losses = [r["scores"]["loss"] for r in result["rows"]]
        assert min(row_losses) <= loss <= max(row_losses)
        for row in result["rows"]:
            assert row["scores"]["perplexity"] == pytest.approx(math.exp(row["scores"]["loss"]))
    base, run = (r["scores"]["loss"] for r in scored.json["results"])
    assert base != pytest.approx(run)


def test_the_models_own_answers_score_full_marks(scored, tmp_path):
    """References set to the base's greedy outputs: generation is deterministic, the template and
    stop tokens are the same as the first time, and the model finds its own answers likelier."""
    base_rows = scored.json["results"][0]["rows"][:2]
    own = tmp_path / "own.jsonl"
    own.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": f"Hi, {r['prompt'][len('Hi, ') :]}"},
                        {"role": "assistant", "content": r["output"]},
                    ]
                }
            )
            + "\n"
            for r in base_rows
        )
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNEGRAPH_HOME", str(scored.home))
        again = evaluate(
            scored.targets[:1],
            load_eval_set(own),
            ["loss", "exact", "contains", "rouge_l"],
            max_new_tokens=NEW_TOKENS,
        ).as_json()["results"][0]
    assert again["scores"]["exact"] == 1.0
    assert again["scores"]["contains"] == 1.0
    assert again["scores"]["rouge_l"] == 1.0
    first_losses = [r["scores"]["loss"] for r in base_rows]
    assert again["scores"]["loss"] < min(first_losses)


def test_a_runs_scores_reach_the_index_and_survive_a_rebuild(scored, monkeypatch):
    from engine.store.index import Store

    monkeypatch.setenv("TUNEGRAPH_HOME", str(scored.home))
    request = EvalRequest(scored.targets, str(scored.set_path), scored.metrics)
    record_scores("20261201-110000-000001", request, scored.result)
    log = scored.run_dir / "evals" / "20261201-110000-000001.jsonl"
    assert log.is_file()
    tuned = next(r for r in scored.json["results"] if r["target"] == "tuned")
    expected = {"eval-set.jsonl": tuned["scores"]}
    with Store() as store:
        store.ingest(scored.run_dir)
        assert store.run_json(RUN_ID)["eval"] == expected
        assert store.run_json(RUN_ID)["state"] == "completed"  # scores are no status
        store.rebuild()
        assert store.run_json(RUN_ID)["eval"] == expected
        lines = [line for line in store.logs(RUN_ID) if " eval " in line]
        assert len(lines) == len(scored.metrics) + 1


def test_a_python_scorer_that_raises_stops_the_eval_naming_file_and_line(scored, tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def score(output, reference, row):\n    return row['missing']\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNEGRAPH_HOME", str(scored.home))
        with pytest.raises(EvalError) as err:
            evaluate(
                scored.targets[:1],
                load_eval_set(scored.set_path, max_rows=1),
                [f"python:{bad}"],
                max_new_tokens=4,
            )
    assert str(err.value).startswith(f"{bad}:2: score raised KeyError: 'missing' (eval row 1)")


def test_cancel_stops_between_rows(scored):
    seen = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNEGRAPH_HOME", str(scored.home))
        with pytest.raises(RunCancelled):
            evaluate(
                scored.targets[:1],
                load_eval_set(scored.set_path),
                ["exact"],
                max_new_tokens=4,
                progress=lambda done, total, what: seen.append(done),
                cancel=lambda: len(seen) >= 1,
            )
    assert seen == [1]
