"""The speed switches of a run (attention kernel, Liger kernels, gradient checkpointing "auto"):
their validation, the clear error when a package is missing, and the same loss with eager and
sdpa attention on the tiny model."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest

from engine.errors import SpecError
from engine.spec import JobSpec, TrainingSpec
from tests.test_train import fast_spec, write_chats


def test_defaults_and_round_trip(tmp_path):
    spec = fast_spec(tmp_path / "chats.jsonl", attention="eager", liger_kernels=False)
    assert TrainingSpec().attention == "auto" and TrainingSpec().liger_kernels is False
    again = JobSpec.from_json(spec.to_json())
    assert again.training.attention == "eager" and again.training.liger_kernels is False
    fields = {f.name: f.metadata for f in dataclasses.fields(TrainingSpec)}
    for name in ("attention", "liger_kernels", "gradient_checkpointing", "packing"):
        assert fields[name]["help"], name  # the node catalogue shows these as tooltips
    assert "flash_attention_2" in fields["attention"]["choices"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("attention", "flash3", "must be one of"),
        ("attention", 1, "must be"),
        ("liger_kernels", "yes", "must be true or false"),
    ],
)
def test_bad_values_name_the_field(tmp_path, field, value, message):
    spec = fast_spec(tmp_path / "chats.jsonl", **{field: value})
    with pytest.raises(SpecError) as err:
        spec.validate()
    assert err.value.field == f"training.{field}" and message in str(err.value)


def test_attention_kernel_choices(tmp_path):
    from engine.training.options import attention_kernel

    spec = fast_spec(tmp_path / "chats.jsonl")
    assert attention_kernel(spec, "cpu") == "sdpa"  # auto
    spec.training.attention = "eager"
    assert attention_kernel(spec, "cpu") == "eager"
    spec.training.attention = "flash_attention_2"
    with pytest.raises(SpecError) as err:
        attention_kernel(spec, "cpu")
    assert err.value.field == "training.attention" and "GPU" in str(err.value)
    if importlib.util.find_spec("flash_attn") is None:
        with pytest.raises(SpecError) as err:
            attention_kernel(spec, "cuda")
        assert err.value.field == "training.attention" and "flash-attn" in str(err.value)


@pytest.mark.skipif(importlib.util.find_spec("liger_kernel") is not None, reason="liger installed")
def test_liger_without_the_package_fails_at_once_naming_the_field(tmp_path):
    from engine.control import Control
    from engine.events import NullLog
    from engine.training.trainer import build_trainer

    spec = fast_spec(write_chats(tmp_path / "chats.jsonl"), liger_kernels=True)
    with pytest.raises(SpecError) as err:
        build_trainer(spec, tmp_path / "run", NullLog(), Control(tmp_path / "run"))
    assert err.value.field == "training.liger_kernels"
    assert "liger-kernel" in str(err.value) and "tunegraph[speed]" in str(err.value)


def test_checkpointing_auto_follows_the_memory_estimate(tiny_model_dir, tmp_path):
    from transformers import AutoConfig

    from engine.plan.estimate import peak_vram_gib, use_checkpointing
    from engine.plan.shape import model_shape

    spec = fast_spec(tmp_path / "chats.jsonl", base=str(tiny_model_dir), max_seq_length=2048)
    shape = model_shape(AutoConfig.from_pretrained(tiny_model_dir))
    need = peak_vram_gib(shape, spec, False, False, 2048)
    assert use_checkpointing(spec, "cpu", shape, False, 2048, None)[0] is False
    assert use_checkpointing(spec, "cuda", shape, False, 2048, need * 2)[0] is False
    on, why = use_checkpointing(spec, "cuda", shape, False, 2048, need / 2)
    assert on and "would not fit" in why
    assert use_checkpointing(spec, "cuda", shape, False, 2048, None)[0] is True  # unknown GPU
    spec.training.gradient_checkpointing = "on"
    assert use_checkpointing(spec, "cuda", shape, False, 2048, need * 2)[0] is True
    spec.training.gradient_checkpointing = "off"
    assert use_checkpointing(spec, "cuda", shape, False, 2048, need / 2)[0] is False


def test_eager_attention_costs_more_memory_in_the_estimate(tiny_model_dir, tmp_path):
    from transformers import AutoConfig

    from engine.plan.estimate import peak_vram_gib
    from engine.plan.shape import model_shape

    shape = model_shape(AutoConfig.from_pretrained(tiny_model_dir))
    spec = fast_spec(tmp_path / "chats.jsonl", base=str(tiny_model_dir))
    sdpa = peak_vram_gib(shape, spec, False, False, 2048)
    spec.training.attention = "eager"
    assert peak_vram_gib(shape, spec, False, False, 2048) > sdpa


def _losses(spec, run_dir) -> list[float]:
    from engine.control import Control
    from engine.events import NullLog
    from engine.training.trainer import build_trainer

    run_dir.mkdir()
    setup = build_trainer(spec, run_dir, NullLog(), Control(run_dir))
    assert setup.model.config._attn_implementation == (
        "sdpa" if spec.training.attention == "auto" else spec.training.attention
    )
    setup.trainer.train()
    return [e["loss"] for e in setup.trainer.state.log_history if "loss" in e]


@pytest.mark.parametrize("packing", [True, False])
def test_eager_and_sdpa_train_to_the_same_loss(tmp_path, tiny_model_dir, packing):
    data = write_chats(tmp_path / "chats.jsonl")
    settings = dict(max_steps=3, eval_split=0.0, save_steps=0, packing=packing)
    sdpa = _losses(fast_spec(data, base=str(tiny_model_dir), **settings), tmp_path / "sdpa")
    eager = _losses(
        fast_spec(data, base=str(tiny_model_dir), attention="eager", **settings),
        tmp_path / "eager",
    )
    assert len(sdpa) == len(eager) == 3
    assert eager == pytest.approx(sdpa, rel=1e-3)


def test_time_model_counts_steps_padding_and_export(tmp_path, tiny_model_dir):
    from transformers import AutoConfig

    from engine.plan.shape import model_shape
    from engine.plan.timing import time_range_s, workload

    spec = fast_spec(tmp_path / "chats.jsonl", max_steps=10, micro_batch_size=4, eval_split=0.0)
    lengths = [20, 200] * 50
    packed = workload(spec, 100, lengths, 512)
    assert packed.steps == 10 and packed.computed_tokens == packed.real_tokens
    spec.training.packing = False
    padded = workload(spec, 100, lengths, 512)
    assert padded.computed_tokens > 1.5 * padded.real_tokens  # rows padded to the batch's longest
    spec.training.max_steps = 0
    spec.training.epochs = 2.0
    assert workload(spec, 100, lengths, 512).steps == 50  # 2 epochs of 25 batches of 4

    shape = model_shape(AutoConfig.from_pretrained(tiny_model_dir))
    spec.export.gguf = False
    plain = time_range_s(shape, padded, "cpu", None, 2, spec)
    assert 0 < plain["low"] < plain["high"]
    spec.export.gguf = True
    with_gguf = time_range_s(shape, padded, "cpu", None, 2, spec)
    assert with_gguf["low"] > plain["low"] and with_gguf["high"] > plain["high"]
    longer = workload(
        dataclasses.replace(spec, training=dataclasses.replace(spec.training, epochs=8.0)),
        100,
        lengths,
        512,
    )
    assert time_range_s(shape, longer, "cpu", None, 2, spec)["high"] > with_gguf["high"]
