"""The training worker on the tiny model: a real run end to end, its events and adapter, and every
bad input of the engine-spine issue ending in one clear sentence."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.control import Control
from engine.errors import DataError, ModelError, SpecError
from engine.events import EventLog, read_events, run_state
from engine.rundir import entry_command
from engine.spec import BaseModelSpec, DatasetSpec, JobSpec, LoraSpec, TrainingSpec
from engine.training.trainer import run_job


def write_chats(path: Path, n: int = 40) -> Path:
    topics = ["invoice", "router", "password", "delivery", "refund", "contract"]
    rows = []
    for i in range(n):
        topic = topics[i % len(topics)]
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": "You are a helpful support agent."},
                    {"role": "user", "content": f"My {topic} has a problem, case {i}."},
                    {
                        "role": "assistant",
                        "content": f"Sorry about your {topic}. I opened ticket {i}.",
                    },
                ]
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def fast_spec(data: Path, base: str = "builtin:tiny-llama", **training) -> JobSpec:
    settings = dict(
        max_steps=4,
        micro_batch_size=4,
        max_seq_length=128,
        eval_split=0.1,
        save_steps=2,
        learning_rate=5e-3,
        warmup_ratio=0.0,
    )
    settings.update(training)
    return JobSpec(
        name="fast",
        base_model=BaseModelSpec(source=base),
        datasets=[DatasetSpec(path=str(data))],
        training=TrainingSpec(**settings),
        lora=LoraSpec(r=4, alpha=8),
        resources=_cpu(),
    )


def _cpu():
    from engine.spec import ResourceSpec

    return ResourceSpec(device="cpu")


def run_in_process(spec: JobSpec, run_dir: Path) -> list:
    run_dir.mkdir(parents=True, exist_ok=True)
    spec.save(run_dir / "spec.json")
    with EventLog(run_dir / "events.jsonl") as log:
        run_job(spec, run_dir, log, Control(run_dir))
    return list(read_events(run_dir / "events.jsonl"))


def test_worker_process_trains_and_saves_a_loadable_adapter(tmp_path, tiny_model_dir):
    data = write_chats(tmp_path / "chats.jsonl")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    fast_spec(data, base=str(tiny_model_dir), max_steps=6).save(run_dir / "spec.json")

    proc = subprocess.run(
        entry_command(sys.executable, "worker", str(run_dir)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (run_dir / "worker.log").read_text()[-3000:]

    events = list(read_events(run_dir / "events.jsonl"))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    states = [e["state"] for e in events if e.kind == "status"]
    assert states == ["starting", "training", "evaluating", "exporting", "completed"]
    assert (
        next(e for e in events if e.kind == "status" and e["state"] == "completed")["warnings"]
        == []
    )
    metrics = [e for e in events if e.kind == "metric"]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    for m in metrics:
        assert m["loss"] > 0 and m["grad_norm"] is not None and m["lr"] is not None
        assert m["tokens_per_s"] is None or m["tokens_per_s"] > 0
    progress = [e for e in events if e.kind == "progress"]
    assert progress[-1]["step"] == 6 and progress[-1]["max_steps"] == 6
    assert any(e.kind == "eval" and e["eval_loss"] > 0 for e in events)
    samples = [e for e in events if e.kind == "sample"]
    assert len(samples) == 3 and all(s["prompt"] for s in samples)
    kinds = {e["artifact_kind"]: e for e in events if e.kind == "artifact"}
    assert {"adapter_dir", "adapter_zip", "gguf", "gguf_bundle"} <= set(kinds)
    assert all(a["bytes"] > 0 and len(a["sha256"]) == 64 for a in kinds.values())
    assert "library" in kinds["gguf_bundle"]["path"]
    assert run_state(run_dir)[0] == "completed"
    pid = json.loads((run_dir / "worker.pid").read_text())
    assert pid["pid"] > 0 and pid["create_time"] > 0

    adapter = run_dir / "adapter"
    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "chat_template.jinja",
        "tokenizer_config.json",
        "README.md",
    ):
        assert (adapter / name).is_file(), name
    card = (adapter / "README.md").read_text()
    assert "chats.jsonl" in card and "learning_rate" in card and "Prompt 1" in card

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(adapter)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, adapter)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "My router is slow."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert tok.chat_template == (adapter / "chat_template.jinja").read_text()


def test_failed_worker_writes_error_and_failed_state(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    fast_spec(tmp_path / "missing.jsonl").save(run_dir / "spec.json")
    proc = subprocess.run(
        entry_command(sys.executable, "worker", str(run_dir)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    events = list(read_events(run_dir / "events.jsonl"))
    error = next(e for e in events if e.kind == "error")
    assert "missing.jsonl" in error["message"] and "Traceback" not in error["message"]
    assert run_state(run_dir)[0] == "failed"
    assert "Traceback" in (run_dir / "worker.log").read_text()  # the full trace goes to the log


# -- bad input: one clear sentence each ------------------------------------------------------
def test_missing_dataset_file(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl"):
        run_in_process(fast_spec(tmp_path / "nope.jsonl"), tmp_path / "run")


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    data = write_chats(tmp_path / "chats.jsonl", 5)
    with open(data, "a") as f:
        f.write('{"messages": [oops\n')
    with pytest.raises(DataError) as err:
        run_in_process(fast_spec(data), tmp_path / "run")
    assert "chats.jsonl" in str(err.value) and "6" in str(err.value)
    assert err.value.line == 6


def test_empty_dataset(tmp_path):
    data = tmp_path / "empty.jsonl"
    data.write_text("")
    with pytest.raises(DataError, match="empty"):
        run_in_process(fast_spec(data), tmp_path / "run")


def test_rows_in_no_known_format_list_formats_and_keys(tmp_path):
    data = tmp_path / "odd.jsonl"
    data.write_text('{"question": "a", "reply": "b"}\n')
    with pytest.raises(DataError) as err:
        run_in_process(fast_spec(data), tmp_path / "run")
    assert "question" in str(err.value) and "messages" in str(err.value)


def test_unknown_target_module_lists_the_existing_ones(tmp_path):
    spec = fast_spec(write_chats(tmp_path / "c.jsonl"))
    spec.lora.target_modules = ["query_key_value"]
    with pytest.raises(ModelError) as err:
        run_in_process(spec, tmp_path / "run")
    text = str(err.value)
    assert "query_key_value" in text and "q_proj" in text and "down_proj" in text


@pytest.mark.parametrize(
    "field,value", [("max_seq_length", -1), ("learning_rate", 0.0), ("learning_rate", -1e-4)]
)
def test_bad_training_values_name_field_and_value(tmp_path, field, value):
    spec = fast_spec(write_chats(tmp_path / "c.jsonl"), **{field: value})
    with pytest.raises(SpecError) as err:
        spec.validate()
    assert f"training.{field}" in str(err.value) and repr(value) in str(err.value)


def test_base_model_folder_without_config(tmp_path):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"0")
    with pytest.raises(ModelError, match="config.json"):
        run_in_process(
            fast_spec(write_chats(tmp_path / "c.jsonl"), base=str(folder)), tmp_path / "run"
        )


def test_cuda_request_on_a_cpu_machine(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    spec = fast_spec(write_chats(tmp_path / "c.jsonl"))
    spec.resources.device = "cuda"
    with pytest.raises(SpecError, match="resources.device"):
        run_in_process(spec, tmp_path / "run")


def test_qlora_config_is_nf4_with_double_quant():
    import torch

    from engine.training.options import quantization_config

    spec = JobSpec(name="q", lora=LoraSpec(quantization="4bit"))
    spec.training.precision = "bf16"
    cfg = quantization_config(spec, "cuda", "qlora")
    assert cfg.load_in_4bit and cfg.bnb_4bit_quant_type == "nf4"
    assert cfg.bnb_4bit_use_double_quant and cfg.bnb_4bit_compute_dtype == torch.bfloat16
    with pytest.raises(SpecError, match="lora.quantization"):
        quantization_config(spec, "cpu", "qlora")


def test_ddp_two_processes_on_cpu_with_gloo(tmp_path):
    """gpu_count 2 launches two ranks under torchrun; each sees half the data, rank 0 reports."""
    from engine.training.launch import worker_command

    data = write_chats(tmp_path / "chats.jsonl", 40)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    spec = fast_spec(data, max_steps=0, epochs=1.0, save_steps=0)
    spec.resources.gpu_count = 2
    spec.export.gguf = False
    spec.export.adapter_zip = False
    spec.save(run_dir / "spec.json")
    env = {**__import__("os").environ, "TUNEGRAPH_THREADS": "1"}
    proc = subprocess.run(
        worker_command(run_dir, 2),
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
        cwd=run_dir,
    )
    assert proc.returncode == 0, (run_dir / "worker.log").read_text()[-3000:] + proc.stderr[-2000:]
    events = list(read_events(run_dir / "events.jsonl"))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))  # one writer: rank 0
    assert run_state(run_dir)[0] == "completed"
    # 36 training rows, micro batch 4: 9 steps in one process, 5 when two ranks split the data
    assert [e for e in events if e.kind == "progress"][-1]["max_steps"] == 5
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert len([e for e in events if e.kind == "status" and e["state"] == "starting"]) == 1


def test_stop_ends_training_early_and_still_delivers_the_adapter(tmp_path):
    """The run panel's "Stop and keep best": training ends at the next step, then the run
    evaluates, keeps its best checkpoint and saves the adapter as a finished run would."""
    import time

    from engine import control

    data = write_chats(tmp_path / "chats.jsonl")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    spec = fast_spec(data, max_steps=400, keep_best=True, eval_steps=2, save_steps=2)
    spec.export.gguf = False
    spec.save(run_dir / "spec.json")
    proc = subprocess.Popen(
        entry_command(sys.executable, "worker", str(run_dir)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not any(
            e.kind == "metric" for e in read_events(run_dir / "events.jsonl")
        ):
            time.sleep(0.2)
        control.request(run_dir, "stop")
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = list(read_events(run_dir / "events.jsonl"))
    done = [e for e in events if e.kind == "status"][-1]
    assert done["state"] == "completed"
    assert done["warnings"] and "stopped early" in done["warnings"][0]
    last_step = max(e["step"] for e in events if e.kind == "metric")
    assert last_step < 400
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert any(e.kind == "sample" for e in events)


class StopAtStep(EventLog):
    """A run's event log that asks the run to stop through engine.control (as the supervisor
    does for the run panel's button) as soon as the worker reports progress at `step`."""

    def __init__(self, run_dir: Path, step: int):
        super().__init__(run_dir / "events.jsonl")
        self.run_dir, self.step = run_dir, step

    def emit(self, kind: str, /, **data):
        event = super().emit(kind, **data)
        if kind == "progress" and data.get("step") == self.step:
            from engine import control

            control.request(self.run_dir, "stop")
        return event


def stopped_run(spec: JobSpec, run_dir: Path, step: int) -> list:
    """Run `spec` in this process, stopped by the user at `step`; its events."""
    spec.export.gguf = False
    spec.export.adapter_zip = False
    run_dir.mkdir(parents=True, exist_ok=True)
    spec.save(run_dir / "spec.json")
    with StopAtStep(run_dir, step) as log:
        warnings = run_job(spec, run_dir, log, Control(run_dir))
    assert warnings and "stopped early" in warnings[0]
    return list(read_events(run_dir / "events.jsonl"))


def adapter_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def same_weights(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def test_stop_with_an_eval_split_delivers_the_checkpoint_with_the_lowest_eval_loss(tmp_path):
    """A constant learning rate this high makes the eval loss climb after the first evaluation:
    stopped at a later step (not an eval step), the run evaluates the current weights, then
    delivers the adapter of the checkpoint with the lowest eval loss, tensor for tensor, not the
    last weights. Evaluations (every 3 steps) and saves (every 2) do not line up: the best
    evaluation gets its own checkpoint, which rotation (2 kept) does not delete."""
    data = write_chats(tmp_path / "chats.jsonl")
    run_dir = tmp_path / "run"
    spec = fast_spec(
        data, max_steps=40, learning_rate=0.5, lr_scheduler="constant", eval_steps=3, save_steps=2
    )
    events = stopped_run(spec, run_dir, step=10)

    last_step = max(e["step"] for e in events if e.kind == "metric")
    assert last_step < 40
    evals = {e["step"]: e["eval_loss"] for e in events if e.kind == "eval"}
    assert last_step in evals  # the stop step was evaluated: the current weights compete
    best_step = min(evals, key=evals.get)
    assert best_step < last_step, evals  # the loss curve makes an earlier checkpoint the best
    best_dir = run_dir / "checkpoints" / f"checkpoint-{best_step}"
    last_dir = run_dir / "checkpoints" / f"checkpoint-{last_step}"
    assert best_dir.is_dir() and last_dir.is_dir()

    delivered = adapter_weights(run_dir / "adapter")
    best, last = adapter_weights(best_dir), adapter_weights(last_dir)
    assert same_weights(delivered, best)
    assert not same_weights(best, last) and not same_weights(delivered, last)

    note = next(e for e in events if e.kind == "log" and e.get("checkpoint"))
    assert note["checkpoint"] == best_dir.name and note["eval_loss"] == evals[best_step]
    assert best_dir.name in note["message"] and f"{evals[best_step]:.4f}" in note["message"]
    samples = [e for e in events if e.kind == "sample"]
    assert len(samples) == 3  # generated after the swap, from the delivered weights
    assert note.seq < samples[0].seq


def test_stop_without_an_eval_split_delivers_the_last_weights(tmp_path):
    """No eval split, nothing to choose by: stop delivers the weights of the stop step."""
    data = write_chats(tmp_path / "chats.jsonl")
    run_dir = tmp_path / "run"
    spec = fast_spec(data, max_steps=40, eval_split=0.0, save_steps=2)
    events = stopped_run(spec, run_dir, step=5)

    assert not any(e.kind == "eval" for e in events)
    last_step = max(e["step"] for e in events if e.kind == "metric")
    assert last_step < 40
    saved = sorted(
        int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("checkpoint-*")
    )
    assert saved[-1] == last_step and len(saved) >= 2  # the stop step is saved
    delivered = adapter_weights(run_dir / "adapter")
    last = adapter_weights(run_dir / "checkpoints" / f"checkpoint-{last_step}")
    earlier = adapter_weights(run_dir / "checkpoints" / f"checkpoint-{saved[-2]}")
    assert same_weights(delivered, last) and not same_weights(delivered, earlier)
    note = next(e for e in events if e.kind == "log" and "delivering" in e["message"])
    assert "current weights" in note["message"] and note["step"] == last_step
