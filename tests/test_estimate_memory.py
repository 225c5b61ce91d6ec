"""The VRAM estimator's tensor part against a traced training step (engine/memory_sim.py).

The simulation runs the worker's model (16-bit base, LoRA from the spec, bf16 autocast, AdamW)
on fake tensors and counts the bytes alive at the peak. It is first checked against the same
steps on real CPU tensors, then engine.plan.estimate.memory_parts is held to it for shapes of real
models (bench/common.py's widths and vocabularies, four layers so the test stays quick) across
the options that change activations: checkpointing, LoRA targets and dropout, padding-free or
padded batches.
What a GPU adds on top (CUDA context, kernels' workspaces, the allocator's rounding) is measured
by bench/bench_vram.py on a real GPU, not here.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from transformers import LlamaConfig, Qwen2Config  # noqa: E402

from engine.plan.estimate import memory_parts  # noqa: E402
from engine.plan.memory_trace import simulate_peak  # noqa: E402
from engine.plan.shape import model_shape
from engine.spec import (  # noqa: E402
    BaseModelSpec,
    DatasetSpec,
    JobSpec,
    LoraSpec,
    TrainingSpec,
)

TOLERANCE = 0.05


def shape(name: str) -> dict:
    """bench/common.py's sizes of a real model (Llama-3.2-1B, Qwen2.5-0.5B), without the family."""
    from bench.common import SHAPES

    return {k: v for k, v in SHAPES[name].items() if k != "family"}


def make_spec(
    batch=2,
    packing=True,
    targets=("q_proj", "k_proj", "v_proj", "o_proj"),
    dropout=0.0,
    attention="auto",
):
    return JobSpec(
        name="memory",
        base_model=BaseModelSpec(source="unused"),
        datasets=[DatasetSpec(path="unused.jsonl")],
        training=TrainingSpec(
            micro_batch_size=batch, packing=packing, max_seq_length=512, attention=attention
        ),
        lora=LoraSpec(r=16, alpha=32, target_modules=list(targets), dropout=dropout),
    )


def test_fake_trace_matches_real_cpu_tensors():
    """The fake-tensor trace counts what real tensors would hold, byte for byte."""
    config = LlamaConfig(
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=8000,
    )
    spec = make_spec(dropout=0.05)
    peaks = {}
    for checkpointing in (False, True):
        fake = simulate_peak(config, spec, 128, checkpointing)
        real = simulate_peak(config, spec, 128, checkpointing, fake=False)
        assert fake.peak_bytes == real.peak_bytes
        assert fake.weights_bytes == real.weights_bytes
        peaks[checkpointing] = fake.peak_bytes
    assert peaks[True] < peaks[False]  # checkpointing really lowers the peak in the trace


@pytest.mark.parametrize(
    ("family", "name", "seq", "checkpointing", "options"),
    [
        ("llama", "1b", 512, False, {}),
        ("llama", "1b", 1024, True, {}),
        ("llama", "1b", 512, False, {"targets": ["all-linear"], "dropout": 0.05}),
        ("llama", "1b", 512, True, {"targets": ["all-linear"], "dropout": 0.05}),
        ("llama", "1b", 512, False, {"packing": False, "batch": 3}),
        ("llama", "1b", 512, False, {"attention": "eager"}),
        ("qwen2", "0.5b", 512, False, {"attention": "eager", "packing": False}),
        ("qwen2", "0.5b", 1024, False, {"batch": 1}),
        ("qwen2", "0.5b", 512, True, {"targets": ["q_proj", "v_proj"]}),
    ],
)
def test_estimate_matches_traced_step(family, name, seq, checkpointing, options):
    cls = Qwen2Config if family == "qwen2" else LlamaConfig
    sizes = shape(name) | {"num_hidden_layers": 4}  # real widths and vocabulary, four layers
    config = cls(max_position_embeddings=4096, **sizes)
    spec = make_spec(**options)
    traced = simulate_peak(config, spec, seq, checkpointing).peak_bytes
    parts = memory_parts(model_shape(config), spec, False, checkpointing, seq)
    estimate = sum(parts.values())
    error = (estimate - traced) / traced
    gib = {k: round(v / 2**30, 3) for k, v in parts.items()}
    assert abs(error) <= TOLERANCE, (
        f"estimate {gib} vs traced {traced / 2**30:.3f} GiB: {error:+.1%}"
    )


def test_four_bit_is_refused_by_the_simulation():
    spec = make_spec()
    spec.lora.quantization = "4bit"
    with pytest.raises(ValueError, match="4-bit"):
        simulate_peak(LlamaConfig(num_hidden_layers=1), spec, 64, False)


def test_estimate_shows_where_the_memory_goes(tiny_model_dir, tmp_path):
    """The estimate's breakdown adds up to its VRAM figure, and a large per-layer sdpa mask
    (many tokens in one padding-free row) is named with the way out."""
    from engine.plan.estimate import estimate, vram_parts_text
    from tests.test_train import fast_spec, write_chats

    data = write_chats(tmp_path / "chats.jsonl")
    spec = fast_spec(data, base=str(tiny_model_dir), max_seq_length=2048, micro_batch_size=16)
    spec.training.gradient_checkpointing = "off"
    est = estimate(spec, device="cuda", gpu_total_gib=80.0, gpu_name="NVIDIA H100")
    parts = est.vram_parts_gib
    assert set(parts) == {"weights", "lora", "activations", "logits", "context_and_slack"}
    assert sum(parts.values()) == pytest.approx(est.vram_gib["bf16"], abs=0.03)
    # 2 layers x a 16-bit (16 * 2048)^2 mask = 4 GiB of the activations
    assert parts["activations"] > 4.0
    assert any("attention mask per layer" in w and "flash_attention_2" in w for w in est.warnings)
    assert vram_parts_text(parts).startswith("weights <0.01, LoRA <0.01, activations ")

    spec.training.micro_batch_size = 1
    assert not any("attention mask" in w for w in estimate(spec, device="cuda").warnings)
