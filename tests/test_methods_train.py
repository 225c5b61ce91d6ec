"""Training methods on the tiny model (issue 21): each of dpo, orpo, simpo, kto, grpo and pretrain
runs to completion with its TRL metrics in the event log and an adapter that loads with peft; DPO
moves the model towards the chosen style; GRPO logs each reward function and its weighted sum; a
Python reward that raises fails the run with its file and line; a paused DPO run resumes from its
checkpoint exactly where it stopped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.control import Control, clear, request
from engine.errors import RunPaused
from engine.events import EventLog, read_events
from engine.rundir import entry_command
from engine.spec import JobSpec, MethodSpec, RewardSpec
from engine.training.trainer import run_job
from tests.helpers import make_spec

QUESTIONS = (
    "is my bill ready",
    "why is the router red",
    "can I move my plan",
    "where is my parcel",
    "how do I reset my password",
)


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def answer(i: int) -> str:
    return f"I checked case {i}: restart the device and wait a minute."


def preference_rows(n: int = 40) -> list[dict]:
    """Chosen answers start with "ACK:", rejected ones are the same answer without it."""
    return [
        {
            "prompt": f"Question {i}: {QUESTIONS[i % len(QUESTIONS)]}?",
            "chosen": f"ACK: {answer(i)}",
            "rejected": answer(i),
        }
        for i in range(n)
    ]


def method_spec(data: Path, method: str, rewards: tuple[RewardSpec, ...] = (), **training):
    spec = make_spec(data, name=method, **training)
    spec.method = MethodSpec(method=method, max_completion_length=12)
    spec.rewards = list(rewards)
    spec.export.adapter_zip = False
    spec.validate()
    return spec


def train(spec: JobSpec, run_dir: Path, log: EventLog | None = None) -> list:
    run_dir.mkdir(parents=True, exist_ok=True)
    spec.save(run_dir / "spec.json")
    with log or EventLog(run_dir / "events.jsonl") as events:
        run_job(spec, run_dir, events, Control(run_dir))
    return list(read_events(run_dir / "events.jsonl"))


def metrics(events: list) -> list:
    return [e for e in events if e.kind == "metric"]


def load_adapter(run_dir: Path):
    """The run's adapter on the tiny base, as a user would load it."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from engine.models.tiny import ensure_builtin_tiny_model

    base = AutoModelForCausalLM.from_pretrained(ensure_builtin_tiny_model())
    return PeftModel.from_pretrained(base, run_dir / "adapter")


def preference_gap(model, tokenizer, rows: list[dict]) -> float:
    """Mean over rows of log p(chosen answer) - log p(rejected answer) given the prompt."""
    import torch

    def answer_logp(prompt: str, reply: str) -> float:
        turns = [{"role": "user", "content": prompt}]
        start = tokenizer.apply_chat_template(turns, add_generation_prompt=True, return_dict=True)[
            "input_ids"
        ]
        full = tokenizer.apply_chat_template(
            turns + [{"role": "assistant", "content": reply}], return_dict=True
        )["input_ids"]
        ids = torch.tensor([full])
        with torch.no_grad():
            logps = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
        picked = logps.gather(1, ids[0, 1:, None])[:, 0]
        return float(picked[len(start) - 1 :].sum())

    gaps = [
        answer_logp(r["prompt"], r["chosen"]) - answer_logp(r["prompt"], r["rejected"])
        for r in rows
    ]
    return sum(gaps) / len(gaps)


# -- DPO ------------------------------------------------------------------------------------------
def test_dpo_moves_the_model_towards_the_chosen_style(tmp_path):
    """Held-in check: the reward margin rises over the run, accuracy ends above 0.5, and the
    delivered adapter prefers the "ACK:" answers more than the base does on the training prompts
    (measured here with the adapter loaded by peft, not with TRL's own numbers)."""
    from transformers import AutoTokenizer

    rows = preference_rows()
    data = write_rows(tmp_path / "pairs.jsonl", rows)
    run_dir = tmp_path / "run"
    events = train(method_spec(data, "dpo", max_steps=10, learning_rate=5e-3), run_dir)

    steps = metrics(events)
    assert [m["step"] for m in steps] == list(range(1, 11))
    margins = [m["rewards/margins"] for m in steps]
    accuracy = [m["rewards/accuracies"] for m in steps]
    assert all("rewards/chosen" in m.data and "rewards/rejected" in m.data for m in steps)
    assert sum(margins[-3:]) / 3 > sum(margins[:3]) / 3 + 0.2, margins
    assert margins[-1] > margins[0] and accuracy[-1] > 0.5, (margins, accuracy)
    evals = [e for e in events if e.kind == "eval" and "step" in e.data]
    assert evals and evals[-1]["rewards/margins"] > 0  # held-out pairs agree
    assert len([e for e in events if e.kind == "sample"]) == 3

    model = load_adapter(run_dir)
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "adapter")
    tuned = preference_gap(model, tokenizer, rows[:6])
    with model.disable_adapter():
        base = preference_gap(model, tokenizer, rows[:6])
    assert tuned > base + 1.0, (tuned, base)


class PauseAtStep(EventLog):
    """Asks the run to pause (as the supervisor does) once it reports progress at `step`."""

    def __init__(self, run_dir: Path, step: int):
        super().__init__(run_dir / "events.jsonl")
        self.run_dir, self.step = run_dir, step

    def emit(self, kind: str, /, **data):
        event = super().emit(kind, **data)
        if kind == "progress" and data.get("step") == self.step:
            request(self.run_dir, "pause")
        return event


def test_a_paused_dpo_run_resumes_from_its_checkpoint_as_if_never_paused(tmp_path):
    data = write_rows(tmp_path / "pairs.jsonl", preference_rows(24))
    spec = method_spec(data, "dpo", max_steps=5, learning_rate=5e-3, eval_split=0.0)
    straight = metrics(train(spec, tmp_path / "straight"))

    run_dir = tmp_path / "paused"
    run_dir.mkdir()
    spec.save(run_dir / "spec.json")
    with pytest.raises(RunPaused), PauseAtStep(run_dir, 2) as log:
        run_job(spec, run_dir, log, Control(run_dir))
    assert (run_dir / "checkpoints" / "checkpoint-2").is_dir()
    clear(run_dir)
    events = train(spec, run_dir)
    assert any("Resuming from checkpoint-2" in e.get("message", "") for e in events)
    resumed = {m["step"]: m for m in metrics(events)}
    assert sorted(resumed) == [1, 2, 3, 4, 5]
    for before in straight:  # the same steps, the same numbers
        after = resumed[before["step"]]
        assert after["loss"] == pytest.approx(before["loss"], rel=1e-4, abs=1e-6)
        assert after["rewards/margins"] == pytest.approx(
            before["rewards/margins"], rel=1e-3, abs=1e-5
        )


# -- ORPO, SimPO, KTO -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "keys"),
    [
        ("orpo", ("rewards/margins", "rewards/accuracies", "nll_loss", "log_odds_ratio")),
        ("simpo", ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")),
        ("kto", ("kl", "rewards/chosen", "rewards/rejected", "rewards/margins")),
    ],
)
def test_each_preference_method_trains_logs_its_metrics_and_delivers_an_adapter(
    tmp_path, method, keys
):
    rows = preference_rows(24)
    if method == "kto":  # single answers marked good (ACK:) or bad
        rows = [
            {"prompt": r["prompt"], "completion": r[key], "label": key == "chosen"}
            for r in rows
            for key in ("chosen", "rejected")
        ]
    data = write_rows(tmp_path / f"{method}.jsonl", rows)
    run_dir = tmp_path / "run"
    events = train(method_spec(data, method, max_steps=4, learning_rate=5e-3), run_dir)
    steps = metrics(events)
    assert [m["step"] for m in steps] == [1, 2, 3, 4]
    for key in keys:
        assert all(isinstance(m.get(key), float) for m in steps), (key, steps[-1].data)
    data_log = next(e for e in events if e.kind == "log" and e["message"].startswith("Data: "))
    stats = json.loads(data_log["message"][len("Data: ") :])
    assert stats["datasets"][0]["format"] == ("kto" if method == "kto" else "preference")
    model = load_adapter(run_dir)
    assert model.peft_config["default"].r == 4


# -- GRPO -----------------------------------------------------------------------------------------
def test_grpo_logs_each_reward_function_and_their_weighted_sum(tmp_path):
    rows = [{"prompt": f"Say something about {q}.", "answer": "ok"} for q in QUESTIONS * 4]
    data = write_rows(tmp_path / "prompts.jsonl", rows)
    rewards = (RewardSpec(scorer="regex:[aeiou]"), RewardSpec(scorer="length:24", weight=0.5))
    run_dir = tmp_path / "run"
    events = train(method_spec(data, "grpo", rewards, max_steps=3, learning_rate=5e-3), run_dir)
    steps = metrics(events)
    assert [m["step"] for m in steps] == [1, 2, 3]
    for m in steps:
        vowel, length = m["rewards/regex:[aeiou]/mean"], m["rewards/length:24/mean"]
        assert 0.0 <= vowel <= 1.0 and 0.0 <= length <= 1.0
        assert "rewards/regex:[aeiou]/std" in m.data and "reward_std" in m.data
        assert m["reward"] == pytest.approx(vowel + 0.5 * length, abs=1e-4)
        assert 1 <= m["completions/mean_length"] <= 12
    assert any(m["rewards/regex:[aeiou]/mean"] > 0 for m in steps)  # the regex does match
    assert not [e for e in events if e.kind == "eval"]  # grpo holds nothing out
    load_adapter(run_dir)


def test_a_python_reward_that_raises_fails_the_run_with_its_file_and_line(tmp_path):
    scorer = tmp_path / "bad_reward.py"
    scorer.write_text(
        "def score(output, reference, row):\n"
        "    words = output.split()\n"
        "    return len(words) / 0\n",
        encoding="utf-8",
    )
    rows = [{"prompt": f"Tell me about {q}."} for q in QUESTIONS * 2]
    data = write_rows(tmp_path / "prompts.jsonl", rows)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    spec = method_spec(data, "grpo", (RewardSpec(scorer=f"python:{scorer}"),), max_steps=2)
    spec.save(run_dir / "spec.json")
    proc = subprocess.run(
        entry_command(sys.executable, "worker", str(run_dir)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, (run_dir / "worker.log").read_text()[-2000:]
    events = list(read_events(run_dir / "events.jsonl"))
    error = next(e for e in events if e.kind == "error")
    assert error["class"] == "EvalError"
    assert f"{scorer}:3" in error["message"]
    assert "reward python:bad_reward.py" in error["message"]
    assert "ZeroDivisionError" in error["message"] and "Traceback" not in error["message"]
    assert [e["state"] for e in events if e.kind == "status"][-1] == "failed"
    assert not (run_dir / "adapter").exists()


# -- continued pretraining ------------------------------------------------------------------------
def test_pretrain_trains_on_packed_text_and_delivers_an_adapter(tmp_path):
    rows = [
        {"text": f"The river runs by the old town {i}, and people walk along it every day."}
        for i in range(60)
    ]
    data = write_rows(tmp_path / "text.jsonl", rows)
    run_dir = tmp_path / "run"
    events = train(method_spec(data, "pretrain", max_steps=4, max_seq_length=64), run_dir)
    steps = metrics(events)
    assert [m["step"] for m in steps] == [1, 2, 3, 4] and all(m["loss"] > 0 for m in steps)
    data_log = next(e for e in events if e.kind == "log" and e["message"].startswith("Data: "))
    stats = json.loads(data_log["message"][len("Data: ") :])
    assert stats["tokens_max"] == 64 and stats["datasets"][0]["format"] == "text"
    samples = [e for e in events if e.kind == "sample"]
    assert len(samples) == 3 and samples[0]["prompt"].startswith("The river runs")
    load_adapter(run_dir)


# -- the whole pipeline -------------------------------------------------------------------------
def test_a_dpo_graph_runs_through_the_command_line_and_show_gives_its_method(sup, tmp_path):
    """`tunegraph run` on a graph whose Fine-Tune node says dpo: compiled, estimated (the
    estimate reads preference rows), queued, trained and indexed; `show --json` gives the method
    and `upstream` (null), the store holds DPO's metrics, the adapter is delivered."""
    from nodes import GraphBuilder, save_graph
    from tests.helpers import FAST_EXPORT, FAST_LORA, FAST_TRAINING, cli

    data = write_rows(tmp_path / "pairs.jsonl", preference_rows(24))
    g = GraphBuilder(seed=5)
    ft = g.add_node("FineTune", "prefer ack", (400, 0), method="dpo", beta=0.2, device="cpu")
    feeds = {
        "base_model": g.add_node("BaseModel", "base"),
        "dataset": g.add_node("Dataset", "pairs", path=str(data)),
        "training_config": g.add_node(
            "TrainingConfig", "train", **{**FAST_TRAINING, "max_steps": 3}
        ),
        "lora_config": g.add_node("LoraConfig", "lora", **FAST_LORA),
        "export": g.add_node("Export", "export", **{**FAST_EXPORT, "adapter_zip": False}),
    }
    for port, node in feeds.items():
        g.connect(node, ft, port)
    graph = save_graph(g.to_dict(), tmp_path / "dpo.tunegraph.json")

    out = cli("run", str(graph), "--yes", timeout=300)
    assert out.returncode == 0, out.stderr
    shown = cli("show", "prefer ack", "--json")
    run = json.loads(shown.stdout)
    assert run["state"] == "completed" and run["method"] == "dpo" and run["upstream"] is None
    assert JobSpec.load(Path(run["run_dir"]) / "spec.json").method.beta == 0.2
    assert "adapter_dir" in {a["kind"] for a in run["artifacts"]}
    series = sup.metrics(run["id"])
    assert [m["step"] for m in series] == [1, 2, 3]
    assert all("rewards/margins" in m and "rewards/accuracies" in m for m in series)
