"""Estimates before a run starts: parameters, peak VRAM (16-bit and 4-bit), mode, time range.

Parameter counts come from `config.json` alone (the model is built on the meta device: exact, no
weights). Peak VRAM follows shared/NOTES.md "Memory and speed facts": weights + LoRA params with
their fp32 gradients and AdamW states + activations (Korthikanti et al.: ~34·s·b·h bytes per layer
with SDPA, ~2·s·b·h with full checkpointing plus one layer recomputed) + the fp32 logits of the
loss + CUDA context and allocator slack. Imports torch: call it from the CLI, the worker or a helper
process, never from the UI process.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from engine.spec import JobSpec

GIB = 2**30
CUDA_CONTEXT_GIB = 0.5
ALLOCATOR_SLACK = 1.10
NF4_BYTES_PER_PARAM = 0.55
HEADROOM = 0.90  # a run must fit in 90% of a GPU's memory
TIME_HEADROOM = 1.3
CHARS_PER_TOKEN = 3.6
# dense bf16 peak FLOP/s by GPU name fragment (measured where we could; vendor figures otherwise)
GPU_PEAK_FLOPS = {
    "H200": 790e12,
    "H100": 790e12,
    "A100": 312e12,
    "L40": 181e12,
    "4090": 165e12,
    "A6000": 155e12,
    "3090": 71e12,
    "A10": 125e12,
    "T4": 65e12,
    "4080": 97e12,
}
GPU_MFU = (0.20, 0.45)  # LoRA model-FLOPs utilisation range with HF Trainer
CPU_FLOPS_PER_CORE = (4e9, 25e9)


@dataclass
class ModelShape:
    params: int
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    context: int
    embedding_params: int
    lora_params: dict[str, int] = field(default_factory=dict)  # module name -> params at r=1


@dataclass
class Estimate:
    params: int
    trainable_params: int
    vram_gib: dict
    mode: str
    mode_reason: str
    device: str
    time_s: dict
    dataset_rows: int | None
    warnings: list[str]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def model_shape(config) -> ModelShape:
    """Exact parameter counts from a transformers config, by building the model on `meta`."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    embedding = sum(
        m.weight.numel()
        for m in (model.get_input_embeddings(), model.get_output_embeddings())
        if m is not None
    )
    if getattr(config, "tie_word_embeddings", False):
        embedding //= 2
    lora: dict[str, int] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not model.get_output_embeddings():
            short = name.rsplit(".", 1)[-1]
            lora[short] = lora.get(short, 0) + module.in_features + module.out_features
    text = getattr(config, "text_config", None) or config
    return ModelShape(
        params=params,
        hidden=text.hidden_size,
        layers=text.num_hidden_layers,
        intermediate=getattr(text, "intermediate_size", 4 * text.hidden_size),
        vocab=text.vocab_size,
        context=getattr(text, "max_position_embeddings", 2048) or 2048,
        embedding_params=embedding,
        lora_params=lora,
    )


def trainable_params(shape: ModelShape, spec: JobSpec) -> int:
    targets = spec.lora.target_modules
    per_rank = (
        sum(shape.lora_params.values())
        if "all-linear" in targets
        else sum(shape.lora_params.get(t, 0) for t in targets)
    )
    return per_rank * spec.lora.r


def peak_vram_gib(
    shape: ModelShape, spec: JobSpec, four_bit: bool, checkpointing: bool, seq_len: int
) -> float:
    """Estimated peak GPU memory in GiB for one training process."""
    b, s, h = spec.training.micro_batch_size, seq_len, shape.hidden
    if four_bit:  # quantized linears, 16-bit embeddings (upcast to fp32 by kbit preparation)
        weights = (
            shape.params - shape.embedding_params
        ) * NF4_BYTES_PER_PARAM + shape.embedding_params * 4
    else:
        weights = shape.params * 2
    lora = trainable_params(shape, spec) * 16  # fp32 weight + grad + two AdamW moments
    mlp_scale = (3 * shape.intermediate) / (8 * h)  # SwiGLU vs the 4h GeLU MLP behind "34"
    per_layer = s * b * h * (10 + 24 * mlp_scale)
    activations = (
        (2 * s * b * h * shape.layers + per_layer) if checkpointing else per_layer * shape.layers
    )
    logits = b * s * shape.vocab * 10
    total = (weights + lora + activations + logits) * ALLOCATOR_SLACK
    return round(total / GIB + CUDA_CONTEXT_GIB, 2)


def choose_mode(
    spec: JobSpec, device: str, resolved=None, gpu_total_gib: float | None = None
) -> tuple[str, str]:
    """('lora' | 'qlora', why). Auto picks 4-bit only when 16-bit would not fit the GPU."""
    q = spec.lora.quantization
    if q == "4bit":
        return "qlora", "4-bit was chosen on the LoRA config node"
    if q == "none":
        return "lora", "16-bit base, as chosen on the LoRA config node"
    if device != "cuda":
        return "lora", "16-bit/32-bit base: 4-bit QLoRA needs an NVIDIA GPU"
    if gpu_total_gib is None:
        import torch

        gpu_total_gib = torch.cuda.get_device_properties(0).total_memory / GIB
    shape = model_shape(load_config(spec, resolved))
    seq = spec.training.max_seq_length or min(shape.context, 2048)
    need = peak_vram_gib(shape, spec, False, spec.training.gradient_checkpointing != "off", seq)
    if need <= gpu_total_gib * HEADROOM:
        return "lora", f"16-bit fits: needs ~{need:.1f} GiB of {gpu_total_gib:.0f} GiB"
    return "qlora", (
        f"16-bit would need ~{need:.1f} GiB, more than 90% of the GPU's "
        f"{gpu_total_gib:.0f} GiB: loading the base in 4-bit"
    )


def load_config(spec: JobSpec, resolved=None):
    """The base model's transformers config (no weights)."""
    from transformers import AutoConfig

    from engine.models import _hub_kwargs, resolve_source

    resolved = resolved or resolve_source(spec.base_model)
    kwargs = _hub_kwargs(spec.base_model, resolved)
    return AutoConfig.from_pretrained(resolved.location, **kwargs)


def time_range_s(
    shape: ModelShape, tokens: float, device: str, gpu_name: str | None, cores: int
) -> dict:
    """Lower and upper bound (with headroom) of the training time for `tokens` processed tokens."""
    flops = 4 * shape.params * tokens  # LoRA: no weight-gradient GEMMs for the frozen base
    if device == "cuda":
        peak = next((v for k, v in GPU_PEAK_FLOPS.items() if gpu_name and k in gpu_name), 100e12)
        fast, slow = peak * GPU_MFU[1], peak * GPU_MFU[0]
    else:
        fast, slow = CPU_FLOPS_PER_CORE[1] * cores, CPU_FLOPS_PER_CORE[0] * cores
    overhead = 5.0  # process start, loading and saving, seconds
    return {
        "low": round(flops / fast + overhead, 1),
        "high": round((flops / slow + overhead) * TIME_HEADROOM, 1),
    }


def dataset_size(spec: JobSpec) -> tuple[int, float]:
    """(rows, approximate tokens per row) from the files, without tokenizing everything."""
    from engine.data import load_dataset_rows, to_messages

    rows, chars = 0, 0
    for ds in spec.datasets:
        loaded, fmt = load_dataset_rows(ds)
        rows += len(loaded)
        for row in loaded[:500]:
            msgs = to_messages(row, fmt)
            chars += sum(len(m["content"]) + 12 for m in msgs) * len(loaded) / min(len(loaded), 500)
    return rows, (chars / CHARS_PER_TOKEN / rows if rows else 0.0)


def estimate(
    spec: JobSpec,
    device: str = "cpu",
    gpu_total_gib: float | None = None,
    gpu_name: str | None = None,
    cores: int = 2,
) -> Estimate:
    """The full estimate for one spec on a given device."""
    from engine.errors import TunegraphError

    config = load_config(spec)
    shape = model_shape(config)
    seq = spec.training.max_seq_length or min(shape.context, 2048)
    checkpointing = spec.training.gradient_checkpointing == "on" or (
        spec.training.gradient_checkpointing == "auto" and device == "cuda"
    )
    vram = {
        "bf16": peak_vram_gib(shape, spec, False, checkpointing, seq),
        "4bit": peak_vram_gib(shape, spec, True, checkpointing, seq),
    }
    warnings: list[str] = gguf_warnings(spec)
    if device == "cuda" and gpu_total_gib:
        mode, reason = choose_mode(spec, device, gpu_total_gib=gpu_total_gib)
    else:
        mode, reason = choose_mode(spec, "cpu")
    try:
        rows, tokens_per_row = dataset_size(spec)
    except TunegraphError as err:
        rows, tokens_per_row = None, 0.0
        warnings.append(str(err))
    if rows is not None and rows < 1000:
        warnings.append(f"only {rows} examples: fewer than 1,000 rows rarely teach a model much")
    train_rows = (rows or 0) * (1 - spec.training.eval_split)
    tokens_per_row = min(tokens_per_row, seq)
    if spec.training.max_steps:
        batch = spec.training.micro_batch_size * spec.training.grad_accum * spec.resources.gpu_count
        tokens = spec.training.max_steps * batch * tokens_per_row
    else:
        tokens = spec.training.epochs * train_rows * tokens_per_row
    times = time_range_s(shape, tokens, device, gpu_name, cores)
    return Estimate(
        params=shape.params,
        trainable_params=trainable_params(shape, spec),
        vram_gib=vram,
        mode=mode,
        mode_reason=reason,
        device=device,
        time_s=times,
        dataset_rows=rows,
        warnings=warnings,
    )


def gguf_warnings(spec: JobSpec) -> list[str]:
    """The confirm step's warning for a `gguf:` base that was itself quantized (e.g. Q4_K_M)."""
    source = spec.base_model.source.strip()
    if not source.startswith("gguf:"):
        return []
    from engine.gguf_base import gguf_path, quantized_warning

    warning = quantized_warning(gguf_path(source[len("gguf:") :]))
    return [warning] if warning else []
