"""The eval's parts that need no model: the scorers on known texts, the user's Python scorer and
its errors, metric checking, eval-set reading and its errors, the judge's reply parsing, and the
ranking."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from engine.errors import EvalError
from engine.eval.evalset import load_eval_set
from engine.eval.judge import check_judge, parse_choice, parse_grade
from engine.eval.metrics import check_metrics, make_scorer, score_names
from engine.eval.scoreboard import EvalResult, TargetResult, format_table, rank
from engine.eval.targets import model_target

ROW = {"prompt_messages": [{"role": "user", "content": "q"}]}


def score(metric: str, output: str, reference: str = "Paris") -> float:
    return make_scorer(metric).score(output, reference, ROW)


def test_exact_contains_regex():
    assert score("exact", "  Paris\n") == 1.0
    assert score("exact", "paris") == 0.0
    assert score("contains", "The capital is  PARIS, of course.") == 1.0
    assert score("contains", "The capital is Lyon.") == 0.0
    assert score("contains", "Saint  Paris\tis", "paris is") == 1.0  # whitespace runs collapse
    assert score("regex:^ACK:", "ACK: done") == 1.0
    assert score("regex:^ACK:", "ok ACK: done") == 0.0
    assert score(r"regex:\d{3}", "call 555 now") == 1.0


def test_json_and_json_schema(tmp_path):
    assert score("json", '{"a": 1}') == 1.0
    assert score("json", '```json\n{"a": [1, 2]}\n```') == 1.0
    assert score("json", "{'a': 1}") == 0.0
    assert score("json", 'Sure! {"a": 1}') == 0.0
    schema = tmp_path / "answer.schema.json"
    schema.write_text(
        json.dumps(
            {
                "type": "object",
                "required": ["answer"],
                "properties": {"answer": {"type": "string"}},
            }
        )
    )
    assert score(f"json:{schema}", '{"answer": "Paris"}') == 1.0
    assert score(f"json:{schema}", '{"answer": 3}') == 0.0
    assert score(f"json:{schema}", "not json") == 0.0


def test_rouge_l_is_the_lcs_f1():
    assert score("rouge_l", "Paris") == 1.0
    assert score("rouge_l", "Lyon") == 0.0
    # LCS "the cat sat" (3 of 5 and 3 of 4 tokens): F1 = 2 * 0.6 * 0.75 / 1.35
    value = score("rouge_l", "the cat sat down today", "the cat sat here")
    assert value == pytest.approx(2 * 0.6 * 0.75 / 1.35)


@pytest.mark.parametrize(
    ("metric", "says"),
    [
        ("regex:(ab", "metric regex:(ab: the pattern does not compile"),
        ("bleu", "unknown metric 'bleu'"),
        ("json:/no/such/schema.json", "the schema file does not exist"),
        ("python:/no/such/score.py", "does not exist"),
    ],
)
def test_a_bad_metric_is_one_sentence(metric, says):
    with pytest.raises(EvalError) as err:
        check_metrics([metric], 1, False)
    assert says in str(err.value)
    assert "\n" not in str(err.value)


def test_a_schema_that_is_no_schema(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": 12}')
    with pytest.raises(EvalError, match="not a valid JSON schema"):
        make_scorer(f"json:{bad}")


def test_python_scorer_scores_and_its_errors_name_file_and_line(tmp_path):
    good = tmp_path / "good.py"
    good.write_text(
        "def score(output, reference, row):\n    return len(output) + len(row['prompt_messages'])\n"
    )
    assert make_scorer(f"python:{good}").score("abc", "x", ROW) == 4.0

    raising = tmp_path / "raising.py"
    raising.write_text(
        "def helper(text):\n"
        "    return 1 / 0\n"
        "\n"
        "def score(output, reference, row):\n"
        "    return helper(output)\n"
    )
    scorer = make_scorer(f"python:{raising}")
    with pytest.raises(EvalError) as err:
        scorer.score("abc", "x", ROW)
    assert str(err.value).startswith(f"{raising}:2: score raised ZeroDivisionError")

    nan = tmp_path / "nan.py"
    nan.write_text("def score(output, reference, row):\n    return 'high'\n")
    with pytest.raises(EvalError, match="returned 'high', not a finite number"):
        make_scorer(f"python:{nan}").score("a", "b", ROW)

    broken = tmp_path / "broken.py"
    broken.write_text("x = 1\ndef score(output, reference, row)\n    return 1\n")
    with pytest.raises(EvalError, match=rf"{broken}:2: syntax error"):
        make_scorer(f"python:{broken}")

    failing_import = tmp_path / "failing.py"
    failing_import.write_text("import os\nraise RuntimeError('no config')\n")
    with pytest.raises(EvalError, match=rf"{failing_import}:2: importing .* RuntimeError"):
        make_scorer(f"python:{failing_import}")

    none = tmp_path / "none.py"
    none.write_text("def grade(output):\n    return 1\n")
    with pytest.raises(EvalError, match="defines no function score"):
        make_scorer(f"python:{none}")


def test_check_metrics_defaults_and_the_judge():
    assert check_metrics([], 1, False) == ["loss", "rouge_l"]
    assert check_metrics(["exact", "exact", "loss"], 1, False) == ["exact", "loss"]
    assert check_metrics(["judge"], 2, True) == ["judge", "judge_pairwise"]
    assert check_metrics(["judge"], 1, True) == ["judge"]
    assert check_metrics([], 2, True) == ["loss", "rouge_l", "judge", "judge_pairwise"]
    assert score_names(["rouge_l", "loss"]) == ["rouge_l", "loss", "perplexity"]
    with pytest.raises(EvalError, match="metric judge needs a judge model"):
        check_metrics(["judge"], 2, False)
    with pytest.raises(EvalError, match="judge_pairwise compares targets"):
        check_metrics(["judge_pairwise"], 1, True)


def test_judge_file_that_is_not_a_gguf(tmp_path):
    fake = tmp_path / "judge.gguf"
    fake.write_text("a text file")
    with pytest.raises(EvalError) as err:
        check_judge(fake)
    assert str(err.value).startswith(f"judge {fake} is not a GGUF file")
    with pytest.raises(EvalError, match="does not exist"):
        check_judge(tmp_path / "missing.gguf")
    with pytest.raises(EvalError, match=f"target {fake} is not a GGUF file"):
        model_target(str(fake))
    assert model_target("builtin:tiny-llama").kind == "base"
    assert model_target("no-such-run") is None  # then it may be a run or a hub id


def test_judge_replies_are_parsed():
    assert parse_grade("8") == 8
    assert parse_grade("Grade: 10/10") == 10
    assert parse_grade("I would give it a 7 out of 10.") == 7
    assert parse_grade("0 or 42, hard to say") is None
    assert parse_grade("excellent") is None
    assert parse_choice("B") == "B"
    assert parse_choice(" a.") == "A"
    assert parse_choice("Answer A is better") == "A"
    assert parse_choice("both are a bit off") is None


# -- eval sets ------------------------------------------------------------------------------------
def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_the_prompt_is_everything_before_the_last_assistant_turn(tmp_path):
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]
    path = _jsonl(tmp_path / "set.jsonl", [{"messages": chat}, {"messages": chat[1:3]}])
    found = load_eval_set(path)
    assert found.name == "set.jsonl" and len(found.rows) == 2
    first = found.rows[0]
    assert first.messages == chat[:4] and first.reference == "Paris."
    assert first.prompt == "Capital of France?"
    assert found.rows[1].reference == "Hello!" and found.rows[1].prompt == "Hi"
    assert load_eval_set(path, max_rows=1).rows == found.rows[:1]
    alpaca = _jsonl(tmp_path / "alpaca.jsonl", [{"instruction": "Add 2 and 2.", "output": "4"}])
    row = load_eval_set(alpaca).rows[0]
    assert (row.prompt, row.reference) == ("Add 2 and 2.", "4")


def test_no_assistant_turn_names_the_file_and_line(tmp_path):
    path = _jsonl(
        tmp_path / "set.jsonl",
        [
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
            {"messages": [{"role": "user", "content": "only a question"}]},
        ],
    )
    with pytest.raises(EvalError) as err:
        load_eval_set(path)
    assert str(err.value).startswith(
        f"{path}:2: the row has no assistant turn to take as the reference."
    )

    csv = tmp_path / "set.csv"
    csv.write_text("prompt,completion\nhi,there\n", encoding="utf-8")
    assert load_eval_set(csv).rows[0].reference == "there"
    text = _jsonl(tmp_path / "text.jsonl", [{"text": "just some prose"}])
    with pytest.raises(EvalError, match="plain text, with no assistant turns"):
        load_eval_set(text)


# -- ranking --------------------------------------------------------------------------------------
def test_ranking_by_the_first_metric():
    results = [
        TargetResult("base", "base", {"loss": 2.0, "rouge_l": 0.1}),
        TargetResult("tuned", "run", {"loss": 1.5, "rouge_l": 0.4}),
        TargetResult("broken", "gguf", {"loss": None, "rouge_l": 0.9}),
        TargetResult("tuned-2", "run", {"loss": 1.5, "rouge_l": 0.3}),
    ]
    assert rank(results, "loss") == ["tuned", "tuned-2", "base", "broken"]
    assert rank(results, "rouge_l") == ["broken", "tuned", "tuned-2", "base"]
    result = EvalResult("set.jsonl", 3, ["rouge_l", "loss"], results)
    assert result.as_json()["ranking"] == ["broken", "tuned", "tuned-2", "base"]
    table = format_table(result).splitlines()
    assert "ranked by rouge_l (higher is better)" in table[0]
    assert table[2].split()[:3] == ["1", "broken", "gguf"] and table[2].split()[-1] == "-"
    assert math.isclose(float(table[3].split()[3]), 0.4)
