"""Runs sharing one base model in one process (engine.training.group): each trains exactly as it
trains alone, and pause, failure and an out-of-memory act on one run at a time.

Three SFT runs on the tiny model differ in learning rate, schedule, rank, target modules, dropout,
micro-batch, gradient accumulation, seed and step count; each is trained alone once (in this
process, module fixture) and then in groups. The runs that get resumed have no LoRA dropout: with
dropout, transformers' own resume of a single run is not bit-exact either (about 2e-4 on the
first resumed step's loss). fp32 on the CPU: the group reproduces every step's
loss, grad norm and learning rate, every evaluation, the samples and the final adapter weights
bit for bit (the tests allow 1e-4 on losses, 1e-6 on weights). About 30 s in all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine import control
from engine.control import Control
from engine.events import EventLog, read_events, run_state
from engine.plan.sharing import share_key
from engine.rundir import entry_command
from engine.spec import JobSpec, LoraSpec
from engine.training.group import EXIT_OK, EXIT_SPLIT, run_group
from engine.training.group_launch import create_group
from engine.training.trainer import run_job
from tests.helpers import make_spec, write_chats

LOSS_TOL = 1e-4
WEIGHT_TOL = 1e-6

# name -> (training overrides, LoRA config)
VARIANTS = {
    "small": (
        dict(learning_rate=1e-3, seed=1, max_steps=6, micro_batch_size=4),
        dict(r=4, alpha=8, dropout=0.1, target_modules=["q_proj", "v_proj"]),
    ),
    "wide": (
        dict(
            learning_rate=5e-3, seed=2, max_steps=8, micro_batch_size=2, grad_accum=2, save_steps=3
        ),
        dict(r=8, alpha=16, target_modules=["all-linear"]),
    ),
    "cosine": (
        dict(
            learning_rate=2e-3,
            seed=3,
            max_steps=5,
            micro_batch_size=3,
            lr_scheduler="cosine",
            warmup_ratio=0.2,
            weight_decay=0.1,
            eval_steps=2,
        ),
        dict(r=2, alpha=4, target_modules=["k_proj", "o_proj"]),
    ),
}


def variant_spec(name: str, data: Path) -> JobSpec:
    training, lora = VARIANTS[name]
    spec = make_spec(data, name=name, **training)
    spec.lora = LoraSpec(**lora)
    spec.validate()
    return spec


def new_run(folder: Path, spec: JobSpec) -> Path:
    folder.mkdir(parents=True)
    spec.save(folder / "spec.json")
    return folder


def metrics(run_dir: Path) -> dict[int, dict]:
    """step -> the latest metric event of that step (a resumed run re-emits none it kept)."""
    return {e["step"]: e.data for e in read_events(run_dir / "events.jsonl") if e.kind == "metric"}


def evals(run_dir: Path) -> list[tuple[int, float]]:
    return [
        (e["step"], e["eval_loss"])
        for e in read_events(run_dir / "events.jsonl")
        if e.kind == "eval" and "eval_loss" in e.data
    ]


def states(run_dir: Path) -> list[str]:
    return [e["state"] for e in read_events(run_dir / "events.jsonl") if e.kind == "status"]


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def assert_same_steps(got: dict[int, dict], want: dict[int, dict], steps=None) -> None:
    steps = sorted(want) if steps is None else steps
    assert steps and all(step in got for step in steps), (sorted(got), steps)
    for step in steps:
        for key in ("loss", "grad_norm"):
            assert abs(got[step][key] - want[step][key]) <= LOSS_TOL, (step, key, got, want)
        assert got[step]["lr"] == pytest.approx(want[step]["lr"], rel=1e-9, abs=1e-12)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] - b[key]).abs().max().item() <= WEIGHT_TOL, key


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@dataclass
class Alone:
    """The three variants, each trained in a process of its own (here: run_job in-process)."""

    data: Path
    runs: dict[str, Path]


@pytest.fixture(scope="module")
def alone(tmp_path_factory) -> Alone:
    root = tmp_path_factory.mktemp("alone")
    home = root / "home"
    (home).mkdir()
    (home / "models").symlink_to(os.environ["TUNEGRAPH_TEST_MODELS"], target_is_directory=True)
    data = write_chats(root / "chats.jsonl")
    runs = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNEGRAPH_HOME", str(home))
        mp.setenv("HF_HUB_OFFLINE", "1")
        for name in VARIANTS:
            run_dir = new_run(root / name, variant_spec(name, data))
            with EventLog(run_dir / "events.jsonl") as log:
                run_job(variant_spec(name, data), run_dir, log, Control(run_dir))
            runs[name] = run_dir
    return Alone(data, runs)


def make_group(folder: Path, data: Path, names: list[str]) -> tuple[Path, dict[str, Path]]:
    runs = {name: new_run(folder / name, variant_spec(name, data)) for name in names}
    return create_group(folder / "group", list(runs.values())), runs


def test_a_group_trains_each_run_exactly_as_it_trains_alone(alone, tmp_path):
    """Same loss, grad norm and learning rate at every step, same evaluations, samples and
    final adapter; checkpoints and adapter laid out as a run of its own's (loadable by peft)."""
    group_dir, runs = make_group(tmp_path, alone.data, list(VARIANTS))
    assert run_group(group_dir) == EXIT_OK
    for name, run_dir in runs.items():
        single = alone.runs[name]
        assert states(run_dir) == [
            "starting",
            "training",
            "evaluating",
            "exporting",
            "completed",
        ]
        assert_same_steps(metrics(run_dir), metrics(single))
        got, want = evals(run_dir), evals(single)
        assert [step for step, _ in got] == [step for step, _ in want]
        assert [loss for _, loss in got] == pytest.approx([loss for _, loss in want], abs=LOSS_TOL)
        assert_same_weights(weights(run_dir / "adapter"), weights(single / "adapter"))
        samples = [
            e["response"] for e in read_events(run_dir / "events.jsonl") if e.kind == "sample"
        ]
        assert samples == [
            e["response"] for e in read_events(single / "events.jsonl") if e.kind == "sample"
        ]
        assert files(run_dir / "adapter") == files(single / "adapter")
        assert files(run_dir / "checkpoints") == files(single / "checkpoints")
        config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
        assert config["r"] == VARIANTS[name][1]["r"]
        assert not (run_dir / "worker.pid").exists()  # the run's worker ended with the run
        assert "Shares one copy of builtin:tiny-llama" in (run_dir / "events.jsonl").read_text()
    _loads_with_peft(runs["wide"] / "adapter", alone.runs["wide"] / "adapter")


def _loads_with_peft(adapter: Path, reference: Path) -> None:
    """The group's adapter loads as any adapter does and answers as the run alone's."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from engine.models.sources import resolve_source
    from engine.spec import BaseModelSpec

    base_dir = resolve_source(BaseModelSpec(source="builtin:tiny-llama")).location
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    logits = []
    for folder in (adapter, reference):
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, str(folder)).eval()
        with torch.no_grad():
            logits.append(model(input_ids=ids).logits)
    assert torch.allclose(logits[0], logits[1], atol=1e-6)


class PauseAtStep(EventLog):
    """A run's event log that asks that run to pause (control.json, as the supervisor does) when
    it reports progress at `step`; the run's callback reads the request at that very step."""

    pauses: dict[Path, int] = {}

    def emit(self, kind: str, /, **data):
        event = super().emit(kind, **data)
        step = self.pauses.get(self.path.parent)
        if kind == "progress" and data.get("step") == step:
            control.request(self.path.parent, "pause")
        return event


def test_pausing_one_run_leaves_the_others_unchanged_and_it_resumes_alone(
    alone, tmp_path, monkeypatch
):
    """Pause "wide" at step 4 of 8: it leaves the rotation with a checkpoint, the others train
    on exactly as alone; resumed by a single worker it ends as the uninterrupted run."""
    import engine.training.group_member as group_member

    group_dir, runs = make_group(tmp_path, alone.data, list(VARIANTS))
    monkeypatch.setattr(group_member, "EventLog", PauseAtStep)
    monkeypatch.setattr(PauseAtStep, "pauses", {runs["wide"]: 4})
    assert run_group(group_dir) == EXIT_OK
    wide = runs["wide"]
    assert states(wide)[-1] == "paused"
    assert (wide / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors").is_file()
    assert max(metrics(wide)) == 4
    for name in ("small", "cosine"):
        assert states(runs[name])[-1] == "completed"
        assert_same_steps(metrics(runs[name]), metrics(alone.runs[name]))
        assert_same_weights(weights(runs[name] / "adapter"), weights(alone.runs[name] / "adapter"))

    control.clear(wide)  # what a resume does, then a worker of its own
    with EventLog(wide / "events.jsonl") as log:
        assert run_job(JobSpec.load(wide / "spec.json"), wide, log, Control(wide)) == []
    assert "Resuming from checkpoint-4" in (wide / "events.jsonl").read_text()
    assert_same_steps(metrics(wide), metrics(alone.runs["wide"]))
    assert_same_weights(weights(wide / "adapter"), weights(alone.runs["wide"] / "adapter"))


def test_an_out_of_memory_splits_the_group_and_each_run_resumes_alone(alone, tmp_path, monkeypatch):
    """The run "small" (micro-batch 4) runs out of memory after step 3: every run leaves the group
    without a final state (the supervisor retries each alone), the others with a checkpoint
    after their next step; one of them, resumed alone, ends as the run alone."""
    monkeypatch.setenv("TUNEGRAPH_FAULT_OOM", "3:batch>3")
    group_dir, runs = make_group(tmp_path, alone.data, list(VARIANTS))
    assert run_group(group_dir) == EXIT_SPLIT
    for name, run_dir in runs.items():
        assert states(run_dir)[-1] == "training", name
        left = [
            e["message"]
            for e in read_events(run_dir / "events.jsonl")
            if e.kind == "log" and "leaves its group" in e["message"]
        ]
        assert len(left) == 1 and "ran out of memory" in left[0], name
        assert not (run_dir / "worker.pid").exists()
    for name in ("wide", "cosine"):  # their step 3 came after "small"'s, in turn
        assert max(metrics(runs[name])) == 3
        assert (runs[name] / "checkpoints" / "checkpoint-3" / "trainer_state.json").is_file()
    assert "out of memory" in (runs["small"] / "worker.log").read_text()

    monkeypatch.delenv("TUNEGRAPH_FAULT_OOM")
    cosine = runs["cosine"]
    with EventLog(cosine / "events.jsonl") as log:
        assert run_job(JobSpec.load(cosine / "spec.json"), cosine, log, Control(cosine)) == []
    assert_same_steps(metrics(cosine), metrics(alone.runs["cosine"]))
    assert_same_weights(weights(cosine / "adapter"), weights(alone.runs["cosine"] / "adapter"))


class StopAtStep(EventLog):
    """A run's event log that sets the group's stop flag (what the group's SIGTERM handler
    sets) when the run reports progress at step 2."""

    stop: threading.Event

    def emit(self, kind: str, /, **data):
        event = super().emit(kind, **data)
        if kind == "progress" and data.get("step") == 2:
            self.stop.set()
        return event


def test_a_sigterm_to_the_group_cancels_every_run(alone, tmp_path, monkeypatch):
    import engine.training.group_member as group_member

    group_dir, runs = make_group(tmp_path, alone.data, ["small", "cosine"])
    stop = threading.Event()
    monkeypatch.setattr(group_member, "EventLog", StopAtStep)
    monkeypatch.setattr(StopAtStep, "stop", stop, raising=False)
    assert run_group(group_dir, stop) == EXIT_OK
    for run_dir in runs.values():
        assert states(run_dir)[-1] == "cancelled"
        assert max(metrics(run_dir)) <= 3
        assert not (run_dir / "adapter").exists()


def test_the_group_process_fails_a_run_with_bad_data_alone(alone, tmp_path):
    """`python -m engine.training.group GROUP_DIR`: a run whose dataset has a broken line fails
    with the file and line named; the other trains on. The group's pid stands for each run's
    worker while the run lasts."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text(alone.data.read_text() + "{not json\n", encoding="utf-8")
    good = new_run(tmp_path / "good", variant_spec("cosine", alone.data))
    broken = new_run(tmp_path / "broken", variant_spec("small", bad))
    group_dir = create_group(tmp_path / "group", [broken, good])
    proc = subprocess.run(
        entry_command(sys.executable, "group_worker", str(group_dir)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == EXIT_OK, (group_dir / "worker.log").read_text()[-3000:]
    state, data = run_state(broken)
    assert state == "failed"
    assert "bad.jsonl:41: invalid JSON" in data["reason"]
    assert "Traceback" in (broken / "worker.log").read_text()
    assert states(good)[-1] == "completed"
    assert_same_steps(metrics(good), metrics(alone.runs["cosine"]))
    group_pid = json.loads((group_dir / "worker.pid").read_text())["pid"]
    for run_dir in (broken, good):
        starting = next(e for e in read_events(run_dir / "events.jsonl") if e.kind == "status")
        assert starting["pid"] == group_pid and starting["group"] == "group"
        assert not (run_dir / "worker.pid").exists()


def test_share_key_groups_runs_of_one_base_and_settings(tmp_path):
    data = write_chats(tmp_path / "chats.jsonl")
    a, b = variant_spec("small", data), variant_spec("wide", data)
    assert share_key(a) is not None and share_key(a) == share_key(b)
    b.lora.quantization = "4bit"
    assert share_key(a) != share_key(b)
    for change in (
        lambda s: setattr(s.lora, "full", True),
        lambda s: setattr(s.method, "method", "dpo"),
        lambda s: setattr(s.training, "report_to", "tensorboard"),
        lambda s: setattr(s.resources, "gpu_count", 2),
        lambda s: setattr(s.resources, "share_base", False),
    ):
        spec = variant_spec("small", data)
        change(spec)
        assert share_key(spec) is None
