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
# The time model: (fast, slow) pairs; see time_range_s. Calibrated with
# bench/bench_time_coverage.py (BENCHMARKS.md "Time-estimate coverage").
GPU_MFU = (0.45, 0.10)  # LoRA model-FLOPs utilisation with HF Trainer (small models: low)
CPU_FLOPS_PER_CORE = (10e9, 1e9)  # small shapes on a shared, busy CPU run far below peak
START_S = {"cpu": (5.0, 30.0), "cuda": (8.0, 45.0)}  # process start, imports, CUDA init
LOAD_BYTES_PER_S = (2e9, 1e8)  # reading and placing the weights
ENCODE_ROWS_PER_S = (4000.0, 150.0)  # chat template, tokenizing, masking
STEP_OVERHEAD_S = {"cpu": (0.02, 0.6), "cuda": (0.02, 0.15)}  # per micro-batch
SAMPLE_TOKENS = 3 * 64  # the end-of-run samples (engine.train.SAMPLE_MAX_NEW_TOKENS)
DECODE_S_PER_TOKEN = (0.002, 0.08)  # greedy decoding latency floor per token
SAVE_S = (0.3, 8.0)  # adapter, tokenizer, model card, final checkpoint
GGUF_S = (5.0, 60.0)  # merge, convert, quantize, parity check: fixed part
GGUF_PARAMS_PER_S = (1e8, 5e6)  # ... and the part growing with the model
TEMPLATE_TOKENS = 5  # per message: role markers and end of turn


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
    heads: int = 0  # attention heads (the eager kernel's s² score matrices)


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
        heads=getattr(text, "num_attention_heads", 0) or 0,
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
    """Estimated peak GPU memory in GiB for one training process.

    Activations assume a fused attention kernel (sdpa / flash): the eager kernel additionally
    keeps the a·s² attention scores of every layer (Korthikanti et al.'s 5·a·s²·b bytes).
    """
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
    if spec.training.attention == "eager":
        per_layer += 5 * shape.heads * s * s * b
    activations = (
        (2 * s * b * h * shape.layers + per_layer) if checkpointing else per_layer * shape.layers
    )
    logits = b * s * shape.vocab * 10
    total = (weights + lora + activations + logits) * ALLOCATOR_SLACK
    return round(total / GIB + CUDA_CONTEXT_GIB, 2)


def use_checkpointing(
    spec: JobSpec,
    device: str,
    shape: ModelShape | None,
    four_bit: bool,
    seq_len: int,
    gpu_total_gib: float | None,
) -> tuple[bool, str]:
    """(gradient checkpointing on?, why) for a run on `device`.

    "on"/"off" are taken as chosen. "auto" is off on the CPU and, on a GPU, on only when the
    estimated peak without it would exceed 90% (HEADROOM) of the GPU's memory: recomputing
    activations costs about a third more compute, so it is paid only when memory needs it.
    Deterministic for a spec, a model and a GPU size; the estimate uses the largest GPU, so a
    run placed on a smaller one may turn it on, never off (its hold is never too small).
    """
    choice = spec.training.gradient_checkpointing
    if choice != "auto":
        return choice == "on", f"gradient checkpointing {choice}, as chosen"
    if device != "cuda":
        return False, "gradient checkpointing off: not needed on the CPU"
    if shape is None or not gpu_total_gib:
        return True, "gradient checkpointing on: the GPU's memory is unknown"
    need = peak_vram_gib(shape, spec, four_bit, False, seq_len)
    room = gpu_total_gib * HEADROOM
    if need <= room:
        return False, (
            f"gradient checkpointing off: ~{need:.1f} GiB without it fits in "
            f"{room:.1f} GiB (90% of {gpu_total_gib:.0f} GiB)"
        )
    return True, (
        f"gradient checkpointing on: ~{need:.1f} GiB without it would not fit in "
        f"{room:.1f} GiB (90% of {gpu_total_gib:.0f} GiB)"
    )


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


@dataclass
class Workload:
    """What a run will compute, from the spec and a sample of its data (for the time range)."""

    rows: int  # rows in the files
    train_rows: float
    eval_rows: float
    steps: int  # optimizer steps
    micro_batches: int  # forward/backward passes per device
    real_tokens: float  # tokens trained, per device
    computed_tokens: float  # with padding (packing off), per device
    eval_tokens: float  # tokens of all evaluation passes, per device


def time_range_s(
    shape: ModelShape,
    work: Workload | float,
    device: str,
    gpu_name: str | None,
    cores: int,
    spec: JobSpec | None = None,
) -> dict:
    """Lower and upper bound (with headroom) of a run's wall time, process start to exit.

    The parts, each as a (fast, slow) pair of rates measured on the machines we could use
    (bench/bench_time_coverage.py; BENCHMARKS.md): worker start-up (imports, CUDA init), reading
    the weights, encoding the rows, the training compute (4·N FLOPs per computed token at a
    FLOP rate for the device) plus a fixed cost per micro-batch (optimizer, logging, Python),
    evaluation passes (2·N per token), the three end-of-run samples, saving, and the GGUF export.
    `work` may be a plain token count (no data sample: the training compute only, plus start-up).
    """
    gpu = device == "cuda"
    if gpu:
        peak = next((v for k, v in GPU_PEAK_FLOPS.items() if gpu_name and k in gpu_name), 100e12)
        rates = (peak * GPU_MFU[0], peak * GPU_MFU[1])
    else:
        rates = (CPU_FLOPS_PER_CORE[0] * cores, CPU_FLOPS_PER_CORE[1] * cores)
    if not isinstance(work, Workload):
        work = Workload(0, 0, 0, 0, 0, work, work, 0)
    weights = shape.params * (2 if gpu else 4)
    bounds = []
    for i in (0, 1):  # 0: everything goes fast, 1: everything goes slow
        seconds = START_S[device if gpu else "cpu"][i]
        seconds += weights / LOAD_BYTES_PER_S[i] + work.rows / ENCODE_ROWS_PER_S[i]
        seconds += 4 * shape.params * work.computed_tokens / rates[i]
        seconds += work.micro_batches * STEP_OVERHEAD_S["cuda" if gpu else "cpu"][i]
        seconds += 2 * shape.params * work.eval_tokens / rates[i]
        if spec is not None:
            per_token = max(2 * shape.params / rates[i], DECODE_S_PER_TOKEN[i])
            seconds += SAMPLE_TOKENS * per_token + SAVE_S[i]
            if spec.export.gguf:
                seconds += GGUF_S[i] + shape.params / GGUF_PARAMS_PER_S[i]
        bounds.append(seconds)
    return {"low": round(bounds[0], 1), "high": round(bounds[1] * TIME_HEADROOM, 1)}


def row_lengths(spec: JobSpec, sample: int = 500) -> tuple[int, list[int]]:
    """(rows in the files, token lengths of up to `sample` rows per file, untruncated).

    Lengths come from the base model's own tokenizer when it loads quickly (a folder, a hub
    cache or the builtin model), else from characters / CHARS_PER_TOKEN; each message adds its
    template's few tokens (role markers, end of turn).
    """
    from engine.data import load_dataset_rows
    from engine.data_formats import normalize

    tokenizer = _quick_tokenizer(spec)
    rows, texts = 0, []
    for ds in spec.datasets:
        loaded, fmt = load_dataset_rows(ds)
        rows += len(loaded)
        stride = max(1, len(loaded) // sample)
        for row in loaded[::stride][:sample]:
            example = normalize(row, fmt)
            if "text" in example:
                texts.append((example["text"], 1))
            else:
                parts = example["messages"]
                texts.append(("\n".join(m["content"] for m in parts), len(parts)))
    if not texts:
        return rows, []
    if tokenizer is not None:
        ids = tokenizer([t for t, _ in texts], add_special_tokens=False)["input_ids"]
        counts = [len(x) for x in ids]
    else:
        counts = [len(t) / CHARS_PER_TOKEN for t, _ in texts]
    return rows, [
        max(1, round(c + TEMPLATE_TOKENS * n)) for c, (_, n) in zip(counts, texts, strict=True)
    ]


def _quick_tokenizer(spec: JobSpec):
    source = spec.base_model.source.strip()
    if source.startswith("gguf:"):
        return None  # rebuilding a GGUF's tokenizer takes tens of seconds
    try:
        from transformers import AutoTokenizer

        from engine.models import _hub_kwargs, resolve_source

        resolved = resolve_source(spec.base_model)
        return AutoTokenizer.from_pretrained(
            resolved.location, **_hub_kwargs(spec.base_model, resolved)
        )
    except Exception:  # no tokenizer at hand: fall back to characters
        return None


def workload(spec: JobSpec, rows: int, lengths: list[int], seq: int) -> Workload:
    """Steps, micro-batches and tokens a run will compute, from a sample of its row lengths."""
    import math
    import random

    from engine.data import eval_size

    t = spec.training
    lengths = [min(n, seq) for n in lengths] or [seq]
    mean = sum(lengths) / len(lengths)
    n_eval = eval_size(rows, t.eval_split)
    train_rows = rows - n_eval
    b, devices = t.micro_batch_size, spec.resources.gpu_count
    per_step = b * t.grad_accum * devices
    epochs = t.epochs
    if t.max_steps:
        steps = t.max_steps
        epochs = steps * per_step / max(train_rows, 1)
    else:
        steps = math.ceil(math.ceil(train_rows / (b * devices)) / t.grad_accum * epochs)
    micro = steps * t.grad_accum
    padded = mean
    if not t.packing and b > 1:  # each micro-batch is padded to its longest row
        rng = random.Random(0)
        padded = sum(max(rng.choices(lengths, k=b)) for _ in range(200)) / 200
    evals = math.ceil(epochs) if not t.eval_steps else steps // t.eval_steps + 1
    return Workload(
        rows=rows,
        train_rows=train_rows,
        eval_rows=n_eval,
        steps=steps,
        micro_batches=micro,
        real_tokens=micro * b * mean,
        computed_tokens=micro * b * padded,
        eval_tokens=(evals * n_eval * mean / devices) if n_eval else 0.0,
    )


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
    vram = {}
    for key, four_bit in (("bf16", False), ("4bit", True)):
        ckpt, _ = use_checkpointing(spec, device, shape, four_bit, seq, gpu_total_gib)
        vram[key] = peak_vram_gib(shape, spec, four_bit, ckpt, seq)
    warnings: list[str] = gguf_warnings(spec)
    if device == "cuda" and gpu_total_gib:
        mode, reason = choose_mode(spec, device, gpu_total_gib=gpu_total_gib)
    else:
        mode, reason = choose_mode(spec, "cpu")
    try:
        rows, lengths = row_lengths(spec)
    except TunegraphError as err:
        rows, lengths = None, []
        warnings.append(str(err))
    if rows is not None and rows < 1000:
        warnings.append(f"only {rows} examples: fewer than 1,000 rows rarely teach a model much")
    work = workload(spec, rows or 0, lengths, seq)
    times = time_range_s(shape, work, device, gpu_name, cores, spec)
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
