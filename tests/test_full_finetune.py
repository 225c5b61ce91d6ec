"""Full fine-tuning (the LoRA config node's `full` switch) and GRPO's generation memory (issue 21).

A full run trains every weight of the tiny model (fp32 master weights) and delivers its whole
model folder, `model/`, which loads with transformers; its export makes the GGUF bundle and the
merged folder from that folder, with no adapter ZIP (on a `gguf:` base too); a stop delivers the best checkpoint's whole
weights; a full DPO run compares with a frozen copy of the base and resumes from a full checkpoint
as if never paused. The estimate counts fp32 weights, gradients and AdamW states (checked against
the fake-tensor trace of a full step), a full run too big for the (fake) GPU is refused by the
supervisor with its numbers, full + 4-bit is a spec error, the LoRA knobs hide when full is on,
and GRPO's estimate grows with its generation batch and completion length.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.control import Control, clear
from engine.errors import RunPaused, SpecError
from engine.events import EventLog, read_events
from engine.hardware import GIB
from engine.spec import EvalSpec, LoraSpec, MethodSpec, RewardSpec
from engine.training.trainer import run_job
from tests.helpers import make_spec, write_chats
from tests.test_methods_train import PauseAtStep, metrics, preference_rows, train, write_rows
from tests.test_train import fast_spec, stopped_run
from tests.test_train import write_chats as write_train_chats


def full_spec(data: Path, name: str = "full", **training):
    spec = make_spec(data, name, **training)
    spec.lora.full = True
    spec.validate()
    return spec


def safetensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


# -- the spec and the node -----------------------------------------------------------------------
def test_full_with_a_4bit_base_is_a_spec_error_naming_the_field():
    with pytest.raises(SpecError) as err:
        LoraSpec(full=True, quantization="4bit").validate()
    assert err.value.field == "lora.quantization"
    assert "full fine-tuning" in err.value.message and "4-bit" in err.value.message
    assert "Full fine-tuning off" in err.value.hint
    LoraSpec(full=True, quantization="auto", target_modules=[]).validate()  # LoRA knobs unused


def test_the_compiler_puts_full_with_4bit_on_the_lora_config_node(tmp_path):
    from nodes import compile as compile_graph
    from nodes.graphfile import GraphBuilder

    g = GraphBuilder(seed=3)
    base = g.add_node("BaseModel", "base", source="builtin:tiny-llama")
    data = g.add_node("Dataset", "chats", path=str(write_chats(tmp_path / "chats.jsonl")))
    lora = g.add_node("LoraConfig", "lora", full=True, quantization="4bit")
    module = g.add_node("FineTune", "ft")
    for node, port in ((base, "base_model"), (data, "dataset"), (lora, "lora_config")):
        g.connect(node, module, port)
    result = compile_graph(g.to_dict())
    [error] = [e for e in result.errors if e.field == "quantization"]
    assert error.node_id == lora and "full fine-tuning" in error.message


def test_the_lora_knobs_hide_while_full_is_on(request, tmp_path):
    pytest.importorskip("pytestqt")
    qtbot = request.getfixturevalue("qtbot")
    from tests.app_helpers import main_window_session

    session = main_window_session(qtbot, tmp_path)
    window = next(session)
    try:
        canvas, panel = window.canvas, window.properties
        lora = canvas.add_node("LoraConfig", "lora", (0, 0))
        canvas.select([lora])

        def shown() -> set[str]:
            return {n for n, editor in panel.editors.items() if panel.form.isRowVisible(editor)}

        knobs = {"r", "alpha", "dropout", "target_modules", "quantization"}
        assert shown() == knobs | {"full"}
        panel.editors["full"].box.setChecked(True)  # what a click on the box does
        assert lora.get_property("full") is True and shown() == {"full"}
        canvas.graph.undo_stack().undo()
        assert lora.get_property("full") is False and shown() == knobs | {"full"}
    finally:
        next(session, None)


# -- training, the model folder, export and scoring ------------------------------------------------
def test_a_full_run_delivers_a_model_folder_and_a_gguf_but_no_adapter(tmp_path):
    """Every weight trains: the delivered folder loads with transformers and differs from the
    base well beyond 16-bit rounding; its Eval node scores it and the base (loaded on its own:
    there is no adapter to disable); the export converts that folder to GGUF (no merge, no
    adapter ZIP) and copies it as the merged folder without touching the run's own; the run
    scores as an eval target from that folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.eval.targets import HFModel, run_target
    from engine.models.tiny import ensure_builtin_tiny_model

    spec = full_spec(write_chats(tmp_path / "chats.jsonl"))
    spec.export.gguf = spec.export.merged = spec.export.adapter_zip = True
    spec.export.quant = "F16"  # the bundle without a quantizing pass (parity is exact)
    spec.evals = [EvalSpec(path="", metrics=["loss"], max_rows=2, score_base=True)]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    spec.save(run_dir / "spec.json")
    with EventLog(run_dir / "events.jsonl") as log:
        warnings = run_job(spec, run_dir, log, Control(run_dir))
    assert warnings == []
    events = list(read_events(run_dir / "events.jsonl"))
    messages = [e["message"] for e in events if e.kind == "log"]
    assert any(m.startswith("Full fine-tuning: all 1,967,360 parameters train") for m in messages)
    kinds = {e["artifact_kind"]: e for e in events if e.kind == "artifact"}
    assert set(kinds) == {"model_dir", "merged_dir", "gguf", "gguf_bundle"}  # no adapter
    assert kinds["model_dir"]["path"] == str(run_dir / "model")
    assert not (run_dir / "adapter").exists()
    assert any("no adapter ZIP" in m for m in messages)
    parity = next(e["parity"] for e in events if e.kind == "log" and "parity" in e.data)
    assert parity["f16_agreement"] >= 0.99 and parity["prompt_tokens_match"]
    losses = {
        e["target"]: e["value"] for e in events if e.kind == "eval" and e.get("metric") == "loss"
    }
    assert set(losses) == {"adapter", "base"} and losses["adapter"] < losses["base"]

    folder = run_dir / "model"
    assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template == (folder / "chat_template.jinja").read_text()
    tuned = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(ensure_builtin_tiny_model(), dtype=torch.float32)
    for (name, a), (_, b) in zip(tuned.named_parameters(), base.named_parameters(), strict=True):
        rounding = (b.to(torch.bfloat16).float() - b).abs().max()
        assert (a - b).abs().max() > 10 * rounding, name  # trained, not just rounded
    assert "AutoModelForCausalLM.from_pretrained" in (folder / "README.md").read_text()
    assert (folder / "tokenizer.model").is_file()  # the converter reads it from the folder

    merged = Path(kinds["merged_dir"]["path"])
    assert safetensors(merged).keys() == safetensors(folder).keys()
    assert (folder / "model.safetensors").is_file() and (folder / "README.md").is_file()

    target = run_target("full", run_dir.name, run_dir)
    model = HFModel(target, "cpu")
    try:
        assert isinstance(model.generate([{"role": "user", "content": "Hi"}], 4), str)
        assert model.template == tokenizer.chat_template
    finally:
        model.close()


def test_a_full_run_on_a_gguf_base_exports_every_trained_tensor(tmp_path):
    """A `gguf:` base's export writes the GGUF from the source file with the tensors taken from
    the model folder (float16 for such a base): with every weight trained, all of them, so the
    F16 GGUF agrees with the trained model token for token."""
    from engine.export.gguf_tools import convert_to_gguf
    from engine.models.tiny import ensure_builtin_tiny_model

    source = convert_to_gguf(ensure_builtin_tiny_model(), tmp_path / "tiny-F16.gguf")
    spec = full_spec(write_chats(tmp_path / "chats.jsonl"), max_steps=4)
    spec.base_model.source = f"gguf:{source}"
    spec.export.gguf, spec.export.quant = True, "F16"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    spec.save(run_dir / "spec.json")
    with EventLog(run_dir / "events.jsonl") as log:
        assert run_job(spec, run_dir, log, Control(run_dir)) == []
    events = list(read_events(run_dir / "events.jsonl"))
    assert json.loads((run_dir / "model" / "config.json").read_text())["dtype"] == "float16"
    assert {"model_dir", "gguf", "gguf_bundle"} <= {
        e["artifact_kind"] for e in events if e.kind == "artifact"
    }
    messages = [e["message"] for e in events if e.kind == "log"]
    assert any("writing the merged tensors into a GGUF from tiny-F16.gguf" in m for m in messages)
    parity = next(e["parity"] for e in events if e.kind == "log" and "parity" in e.data)
    assert parity["f16_agreement"] >= 0.99, parity


def test_a_stopped_full_run_delivers_the_best_checkpoints_whole_weights(tmp_path):
    """At this constant learning rate the eval loss climbs after step 3: stopped at step 7, the
    run delivers checkpoint-3's weights (in 16-bit), not the last ones."""
    data = write_train_chats(tmp_path / "chats.jsonl")
    spec = fast_spec(
        data, max_steps=40, learning_rate=0.05, lr_scheduler="constant", eval_steps=3, save_steps=2
    )
    spec.lora.full = True
    run_dir = tmp_path / "run"
    events = stopped_run(spec, run_dir, step=7)
    evals = {e["step"]: e["eval_loss"] for e in events if e.kind == "eval"}
    assert sorted(evals) == [3, 6, 7] and min(evals, key=evals.get) == 3, evals
    note = next(e for e in events if e.kind == "log" and e.get("checkpoint"))
    assert note["checkpoint"] == "checkpoint-3" and note["eval_loss"] == evals[3]

    import torch

    delivered = safetensors(run_dir / "model")
    best = safetensors(run_dir / "checkpoints" / "checkpoint-3")
    last = safetensors(run_dir / "checkpoints" / "checkpoint-7")
    assert all(torch.equal(delivered[k], best[k].to(torch.bfloat16)) for k in delivered)
    assert not all(torch.equal(delivered[k], last[k].to(torch.bfloat16)) for k in delivered)


def test_a_full_dpo_run_compares_with_a_frozen_base_and_resumes_exactly(tmp_path):
    """DPO needs a reference model: a full run holds a frozen copy of the base (so its first
    step's loss is ln 2 and its margins 0), checkpoints the whole model and resumes from it with
    the same numbers as a run never paused."""
    data = write_rows(tmp_path / "pairs.jsonl", preference_rows(24))
    spec = make_spec(data, "dpo", max_steps=5, learning_rate=5e-3, eval_split=0.0)
    spec.method = MethodSpec(method="dpo")
    spec.lora.full = True
    spec.export.adapter_zip = False
    spec.validate()
    straight = metrics(train(spec, tmp_path / "straight"))
    assert straight[0]["loss"] == pytest.approx(0.693147, abs=1e-5)
    assert straight[0]["rewards/margins"] == 0.0 and straight[-1]["rewards/margins"] > 0.5

    run_dir = tmp_path / "paused"
    run_dir.mkdir()
    spec.save(run_dir / "spec.json")
    with pytest.raises(RunPaused), PauseAtStep(run_dir, 2) as log:
        run_job(spec, run_dir, log, Control(run_dir))
    assert (run_dir / "checkpoints" / "checkpoint-2" / "model.safetensors").is_file()
    clear(run_dir)
    events = train(spec, run_dir)
    assert any("Resuming from checkpoint-2" in e.get("message", "") for e in events)
    resumed = {m["step"]: m for m in metrics(events)}
    for before in straight:
        after = resumed[before["step"]]
        assert after["loss"] == pytest.approx(before["loss"], rel=1e-4, abs=1e-6)
    assert (run_dir / "model" / "model.safetensors").is_file()


def test_trl_builds_its_reference_model_from_ours_only_while_asked():
    from trl.trainer import dpo_trainer, grpo_trainer, kto_trainer

    from engine.training.full import trl_reference

    reference = object()
    modules = (dpo_trainer, kto_trainer, grpo_trainer)
    originals = [m.create_model_from_path for m in modules]
    with trl_reference(reference):
        assert all(m.create_model_from_path("any/path") is reference for m in modules)
    assert [m.create_model_from_path for m in modules] == originals


# -- the estimate --------------------------------------------------------------------------------
def test_the_full_estimate_counts_gradients_and_optimizer_states(tmp_path):
    from engine.plan.estimate import estimate, vram_parts_text

    spec = make_spec(write_chats(tmp_path / "chats.jsonl"), "est", device="auto")
    lora = estimate(spec, device="cuda", gpu_total_gib=24.0, gpu_name="RTX 4090")
    spec.lora.full = True
    full = estimate(spec, device="cuda", gpu_total_gib=24.0, gpu_name="RTX 4090")

    assert lora.mode == "lora" and full.mode == "full"
    assert full.mode_reason == "full fine-tuning: all 1.97 M parameters train"
    assert full.trainable_params == full.params > 100 * lora.trainable_params
    assert full.vram_gib["bf16"] == full.vram_gib["4bit"] > lora.vram_gib["bf16"]
    parts = full.vram_parts_gib
    assert set(parts) == {"weights", "gradients", "optimizer", "activations", "context_and_slack"}
    assert parts["weights"] == round(4 * full.params / GIB, 2)  # fp32 master weights
    assert parts["optimizer"] == round(8 * full.params / GIB, 2)  # AdamW's two fp32 moments
    assert parts["gradients"] >= round(4 * full.params / GIB, 2)
    assert sum(parts.values()) == pytest.approx(full.vram_gib["bf16"], abs=0.03)
    assert "optimizer states" in vram_parts_text(parts)


def test_the_traced_full_step_counts_what_real_tensors_hold():
    """The fake-tensor trace of a full step (fp32 weights, fused AdamW) byte for byte against
    the same two steps on real CPU tensors."""
    from transformers import LlamaConfig

    from engine.plan.memory_trace import simulate_peak
    from tests.test_estimate_memory import make_spec as memory_spec

    config = LlamaConfig(
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=2000,
    )
    spec = memory_spec()
    spec.lora.full = True
    for checkpointing in (False, True):
        fake = simulate_peak(config, spec, 64, checkpointing)
        real = simulate_peak(config, spec, 64, checkpointing, fake=False)
        assert (fake.peak_bytes, fake.weights_bytes) == (real.peak_bytes, real.weights_bytes)


@pytest.mark.parametrize(("seq", "checkpointing"), [(256, False), (1024, False), (1024, True)])
def test_the_full_memory_model_matches_a_traced_full_step(seq, checkpointing):
    """memory_parts of a full run against the peak of two traced full steps (fp32 master weights,
    bf16 autocast, fused AdamW) of a Qwen2.5-0.5B-shaped model cut to four layers."""
    from transformers import Qwen2Config

    from engine.plan.memory import memory_parts
    from engine.plan.memory_trace import simulate_peak
    from engine.plan.shape import model_shape
    from tests.test_estimate_memory import make_spec as memory_spec
    from tests.test_estimate_memory import shape

    config = Qwen2Config(max_position_embeddings=4096, **(shape("0.5b") | {"num_hidden_layers": 4}))
    spec = memory_spec()
    spec.lora.full = True
    traced = simulate_peak(config, spec, seq, checkpointing).peak_bytes
    estimated = sum(memory_parts(model_shape(config), spec, False, checkpointing, seq).values())
    assert abs(estimated - traced) / traced <= 0.02, (estimated / GIB, traced / GIB)


def test_a_full_run_too_big_for_the_gpu_is_refused_with_its_numbers(sup, tmp_path, monkeypatch):
    """A 1B-parameter base on a (fake) 16 GiB GPU: LoRA fits, full fine-tuning (~16 bytes a
    parameter before activations) can never fit, so the estimate warns and the supervisor
    refuses the run at submission, judged by its full-training figure."""
    from engine.models.tiny import ensure_builtin_tiny_model
    from engine.plan.report import estimate_spec
    from engine.supervisor import client

    monkeypatch.setenv("TUNEGRAPH_FAKE_GPUS", "16")
    big = tmp_path / "big-llama"
    shutil.copytree(ensure_builtin_tiny_model(), big)
    config = json.loads((big / "config.json").read_text())
    sizes = {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16}
    sizes |= {"num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000}
    (big / "config.json").write_text(json.dumps(config | sizes))
    spec = make_spec(write_chats(tmp_path / "chats.jsonl"), "too big", device="auto")
    spec.base_model.source = str(big)
    lora = estimate_spec(spec)
    spec.lora.full = True
    full = estimate_spec(spec)

    assert lora["mode"] == "lora" and lora["vram_gib"]["bf16"] < 14.4
    assert full["mode"] == "full" and full["vram_gib"]["bf16"] > 16
    assert full["params"] > 1e9 and full["device"] == "cuda:0"
    assert full["time_s"]["low"] > lora["time_s"]["low"]  # 6·N FLOPs a token, not 4·N
    [warning] = [w for w in full["warnings"] if w.startswith("full fine-tuning needs")]
    assert "LoRA would need" in warning and "Full fine-tuning off" in warning

    [entry] = client.submit(sup, [spec], [full])
    assert entry["state"] == "refused"
    need = full["vram_gib"]["bf16"]
    assert f"needs ~{need:.1f} GiB" in entry["error"]["message"]
    assert "largest GPU has 16 GiB" in entry["error"]["message"]
    assert "for full fine-tuning" in entry["error"]["message"]
    assert "Turn Full fine-tuning off" in entry["error"]["hint"]
    assert not (Path(sup.run_json(entry["id"])["run_dir"]) / "events.jsonl").exists()


def test_grpo_generation_memory_grows_with_its_batch_and_completion_length():
    """GRPO samples micro batch × gradient accumulation answers per GPU at once (num_generations
    of each prompt): the KV cache of prompt + max_completion_length tokens for each, counted as
    its own part of the estimate, within the run's hold."""
    from transformers import Qwen2Config

    from engine.plan.memory import memory_parts, peak_vram_gib
    from engine.plan.shape import model_shape
    from tests.test_estimate_memory import shape

    config = Qwen2Config(max_position_embeddings=4096, **shape("0.5b"))
    shp = model_shape(config)
    spec = make_spec(Path("unused.jsonl"), "grpo", micro_batch_size=4, grad_accum=1)
    spec.method = MethodSpec(method="grpo", num_generations=4, max_completion_length=256)
    spec.rewards = [RewardSpec()]

    def generation(**change) -> float:
        for key, value in change.items():
            target = spec.training if hasattr(spec.training, key) else spec.method
            setattr(target, key, value)
        spec.validate()
        return memory_parts(shp, spec, False, False, 512)["generation"]

    first = generation()
    kv = 24 * 2 * 128 * 2  # layers × key and value × kv width × 16-bit, per token
    assert first == 4 * (512 + 256) * kv + 4 * shp.vocab * 8
    assert generation(max_completion_length=1024) > 1.5 * first
    longer = generation()
    assert generation(num_generations=8, grad_accum=2) > 1.9 * longer  # 8 answers sampled at once
    assert "generation" not in memory_parts(shp, make_spec(Path("u.jsonl")), False, False, 512)
    sft = make_spec(Path("u.jsonl"), micro_batch_size=4)
    assert peak_vram_gib(shp, spec, False, False, 512) > peak_vram_gib(shp, sft, False, False, 512)
