"""bench/bench_group_memory.py's traced group, and engine.plan.sharing's group need against it.

The bench traces a group as engine.training.group trains it (one 16-bit base, every run's
named adapter, the runs stepping in turn with their own optimizers) on fake tensors. Checked
here: a group of one traces exactly as a single run (engine.plan.memory_trace.simulate_peak);
a group of several counts what real CPU tensors hold, byte for byte; and the tensor part of
sharing.group_need_gib (the need less the context and slack it holds once), from real
estimates of an 8B-wide base cut to four layers, is never below the traced group and at most
10% above it.
"""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest

pytest.importorskip("torch")

from transformers import LlamaConfig  # noqa: E402

from bench.bench_group_memory import estimates, trace_group, variant_specs  # noqa: E402
from engine.hardware import GIB  # noqa: E402
from engine.plan.memory_trace import simulate_peak  # noqa: E402
from engine.plan.sharing import group_need_gib  # noqa: E402

SMALL = LlamaConfig(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=4000,
)


def options(ranks, seq=64, batch=2, targets=("all-linear",)) -> SimpleNamespace:
    """The bench's command-line options that shape its variants."""
    return SimpleNamespace(
        ranks=list(ranks), seq=seq, batch=batch, dropout=0.0, targets=list(targets)
    )


@pytest.mark.parametrize("checkpointing", [False, True])
def test_a_group_of_one_traces_as_a_single_run(checkpointing):
    (spec,) = variant_specs("unused", "unused.jsonl", options([8]), "none")
    single = simulate_peak(SMALL, spec, 64, checkpointing)
    assert trace_group(SMALL, [spec], 64, checkpointing) == single.peak_bytes


def test_the_traced_group_counts_what_real_tensors_hold():
    specs = variant_specs("unused", "unused.jsonl", options([4, 8, 16, 4]), "none")
    specs[3].lora.target_modules = ["q_proj", "v_proj"]  # ranks and targets may differ
    fake = trace_group(SMALL, specs, 64, True)
    real = trace_group(SMALL, specs, 64, True, fake=False)
    assert fake == real
    alone = max(simulate_peak(SMALL, s, 64, True).peak_bytes for s in specs)
    assert fake > alone  # the other adapters and their optimizer states are there too


def test_group_need_covers_the_traced_group(tmp_path, tiny_model_dir, data):
    """Real estimates of four variants of an 8B-wide base (Llama-3.1-8B's widths and
    vocabulary, four layers), 16-bit, checkpointing on as on a 24 GiB card."""
    config = LlamaConfig(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=4,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=False,
    )
    base = tmp_path / "base"
    config.save_pretrained(base)
    for item in tiny_model_dir.iterdir():
        if item.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(item, base / item.name)
    specs = variant_specs(str(base), data, options([8, 16, 32, 64], seq=512, batch=1), "none")
    for spec in specs:
        spec.training.gradient_checkpointing = "on"
    ests = estimates(specs, 24.0)
    held_once = max(e["vram_parts_gib"]["context_and_slack"] for e in ests)
    formula = (group_need_gib(ests) - held_once) * GIB
    traced = trace_group(config, specs, 512, True)
    assert traced <= formula <= traced * 1.10
