"""What an eval holds while it runs, in the estimate shape the supervisor places work by.

Targets are scored one after another, so an eval holds the largest of them: a transformers
target (a base model, or a run's base with its adapter) needs its weights in 16-bit, the fp32
logits of one scored sequence when `loss` is asked (tokens × vocabulary × LOGIT_BYTES), its KV
cache for generation, allocator slack and the CUDA context. GGUF targets and the judge run in
llama.cpp on the CPU and hold no GPU memory. An eval of GGUF files alone takes a CPU slot.
"""

from __future__ import annotations

from typing import Any

from engine.eval.targets import MAX_SEQ_LENGTH, Target
from engine.hardware import GIB
from engine.spec import BaseModelSpec

BYTES_16BIT = 2


def target_gib(target: Target, with_loss: bool) -> tuple[float, int]:
    """(GiB a transformers target holds on a GPU, its parameter count); (0, 0) for a GGUF."""
    from engine.plan.estimate import ALLOCATOR_SLACK, CUDA_CONTEXT_GIB, LOGIT_BYTES

    if target.kind == "gguf":
        return 0.0, 0
    source = target.base if target.kind == "run" else target.source
    params, vocab, context, cache_per_token = _shape(str(source))
    tokens = min(context, MAX_SEQ_LENGTH)
    need = params * BYTES_16BIT + tokens * cache_per_token
    if with_loss:
        need += tokens * vocab * LOGIT_BYTES
    return need * ALLOCATOR_SLACK / GIB + CUDA_CONTEXT_GIB, params


def _shape(source: str) -> tuple[int, int, int, int]:
    """(parameters, vocabulary, context, KV-cache bytes per token) of a base-model source."""
    if source.startswith("gguf:"):  # its config takes long to parse: the tensor table is enough
        from engine.models.gguf_base import gguf_path, header, parameter_count

        path = gguf_path(source[len("gguf:") :])
        meta = header(path)
        arch = meta.get("general.architecture") or ""
        vocab = int(meta.get(f"{arch}.vocab_size") or 0)
        context = int(meta.get(f"{arch}.context_length") or MAX_SEQ_LENGTH)
        return parameter_count(path), vocab, context, 0
    from engine.models.sources import load_config
    from engine.plan.shape import model_shape

    shape = model_shape(load_config(BaseModelSpec(source=source)))
    cache = 2 * shape.layers * shape.kv_dim * BYTES_16BIT  # keys and values
    return shape.params, shape.vocab, shape.context, cache


def estimate_eval(targets: list[Target], metrics: list[str]) -> dict[str, Any]:
    """The eval's estimate: `vram_gib` (the same figure for "bf16" and "4bit": nothing is
    quantized), `mode` "eval", `params` of the largest target, and `uses_gpu` (False when every
    target is a GGUF)."""
    with_loss = "loss" in metrics
    sized = [target_gib(t, with_loss) for t in targets]
    gib = round(max((g for g, _ in sized), default=0.0), 2)
    return {
        "params": max((p for _, p in sized), default=0),
        "vram_gib": {"bf16": gib, "4bit": gib},
        "mode": "eval",
        "uses_gpu": any(t.kind != "gguf" for t in targets),
    }
