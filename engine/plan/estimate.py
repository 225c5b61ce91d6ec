"""Estimates before a run starts: parameters, peak VRAM (16-bit and 4-bit), mode, time range.

Parameter counts come from `config.json` alone (the model is built on the meta device: exact, no
weights). Peak VRAM: weights + LoRA params with their fp32 gradients and AdamW states + the
activations autograd keeps (counted tensor by tensor for a LoRA run of a Llama-style layer, see
activation_bytes_per_token) + the fp32 logits of the loss + CUDA context and allocator slack.
The allocated part is checked against a fake-tensor simulation of the worker's training step
(bench/bench_vram_sim.py; tests/test_estimate_memory.py); context and slack need a GPU
(bench/bench_vram.py). Imports torch: call it from the CLI, the worker or a helper process, never
from the UI process.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from engine.errors import DataError, ModelError, TunegraphError
from engine.hardware import GIB
from engine.models.sources import load_config
from engine.models.targets import architecture_name, expand_targets, resolve_targets
from engine.models.template_choice import template_plan
from engine.plan import calibration
from engine.plan.shape import ModelShape, model_shape
from engine.plan.timing import row_lengths, time_range_s, workload
from engine.spec import PAIRED_METHODS, JobSpec

CUDA_CONTEXT_GIB = 0.5
ALLOCATOR_SLACK = 1.10
NF4_BYTES_PER_PARAM = 0.55
LOGIT_BYTES = 12  # per token and vocabulary entry: fp32 log-softmax, its gradient and the input's
HEADROOM = 0.90  # a run must fit in 90% of a GPU's memory


@dataclass
class Estimate:
    """A run's estimate before it starts: parameters, VRAM per mode, the chosen mode, time range."""

    params: int
    trainable_params: int
    vram_gib: dict
    vram_parts_gib: dict  # where the chosen mode's memory goes (memory_parts, then the rest)
    mode: str
    mode_reason: str
    device: str
    time_s: dict
    dataset_rows: int | None
    warnings: list[str]
    time_basis: str = ""  # what the time range comes from: this machine's runs, or the model
    work: dict | None = None  # what the time range predicted the run computes (for calibration)
    calibration_key: str | None = None  # the device and shape its measured time is kept under

    def to_dict(self) -> dict:
        """The estimate as a plain dict (JSON for the store and the UI)."""
        return dataclasses.asdict(self)


def _targeted(table: dict[str, int], spec: JobSpec) -> int:
    """The sum of `table` (linear layer name -> count) over the layers the spec's LoRA adapts,
    auto and all-linear resolved against the table's names (those of the model's linears)."""
    return sum(table.get(t, 0) for t in expand_targets(spec.lora.target_modules, list(table)))


def trainable_params(shape: ModelShape, spec: JobSpec) -> int:
    """LoRA parameters the spec trains: r·(inputs + outputs) of every targeted linear."""
    return _targeted(shape.lora_params, spec) * spec.lora.r


def activation_bytes_per_token(shape: ModelShape, spec: JobSpec) -> float:
    """Bytes autograd keeps per token and decoder layer in a 16-bit LoRA run, counted tensor by
    tensor (engine/memory_sim.py traces them): the gated MLP's gate, activation and up outputs
    (3·I, 16-bit); the two RMSNorm inputs in fp32 (2·4·h); the rotated query and the attention
    output (2·2·h); key and value (2·2·kv with flash-attn, which reads grouped heads as they are;
    sdpa and eager get them repeated to every head, 2·2·h, whenever a mask is in play, which
    padding-free and padded batches always bring); and, per LoRA-targeted linear, its own 16-bit
    copy of the input for lora_A's gradient, plus the dropout mask when dropout is on."""
    h = shape.hidden
    flash = spec.training.attention == "flash_attention_2"
    kv = (shape.kv_dim or h) if flash else h
    lora_inputs = _targeted(shape.in_features, spec) if shape.in_features else 4 * h
    per_input = 2 + (4 if spec.lora.dropout > 0 else 0)
    return 6 * shape.intermediate + 12 * h + 4 * kv + per_input * lora_inputs


def attention_rows(spec: JobSpec, seq_len: int) -> tuple[int, int]:
    """(rows, tokens per row) attention sees: padding-free batches are one row of
    micro_batch_size·seq_len tokens whose mask blocks attention across sequences."""
    b = spec.training.micro_batch_size
    return (1, b * seq_len) if spec.training.packing else (b, seq_len)


def mask_bytes_per_layer(spec: JobSpec, seq_len: int) -> float:
    """The attention mask sdpa and eager keep per layer in 16-bit, one key-length row per query
    (so a padding-free row's grows with the square of its tokens); flash-attn needs none."""
    if spec.training.attention == "flash_attention_2":
        return 0.0
    rows, length = attention_rows(spec, seq_len)
    return 2.0 * rows * length**2


def memory_parts(
    shape: ModelShape, spec: JobSpec, four_bit: bool, checkpointing: bool, seq_len: int
) -> dict[str, float]:
    """Bytes of the tensors alive at a training step's peak, by kind: weights, LoRA (fp32 weight,
    gradient and two AdamW moments), activations and logits.

    Activations assume a fused attention kernel (sdpa / flash): the eager kernel additionally
    keeps every layer's a·s² attention probabilities, in fp32 and as a 16-bit copy. With
    checkpointing each layer keeps only its input (16-bit, fp32 on a 4-bit base), and one layer is
    recomputed at a time, after the loss's logits are gone.

    The method changes the shape of a step (`method_batch`): preference methods and KTO put two
    answers per row through the model at once, GRPO trains on prompts followed by
    max_completion_length generated tokens (sampled in the same process, so within the same hold).
    """
    b, s = method_batch(spec, seq_len)
    h = shape.hidden
    if four_bit:  # quantized linears, embeddings upcast to fp32 by kbit preparation, and one
        # linear at a time dequantized to 16-bit for its matmul
        weights = (
            (shape.params - shape.embedding_params) * NF4_BYTES_PER_PARAM
            + shape.embedding_params * 4
            + 2 * h * shape.intermediate
        )
    else:
        weights = shape.params * 2
    per_layer = s * b * activation_bytes_per_token(shape, spec) + mask_bytes_per_layer(spec, s)
    if spec.training.attention == "eager":
        rows, length = attention_rows(spec, s)
        per_layer += 6 * shape.heads * rows * length**2
    logits = b * s * shape.vocab * LOGIT_BYTES
    if checkpointing:  # the loss's peak has passed when the last layer is recomputed
        residual = 4 if four_bit else 2  # fp32 embeddings keep the residual stream in fp32
        activations = residual * s * b * h * shape.layers + max(0, per_layer - logits)
    else:
        activations = per_layer * shape.layers
    return {
        "weights": weights,
        "lora": trainable_params(shape, spec) * 16,
        "activations": activations,
        "logits": logits,
    }


def method_batch(spec: JobSpec, seq_len: int) -> tuple[int, int]:
    """(sequences, tokens each) one micro-batch puts through the model for the run's method:
    dpo, orpo, simpo and kto score two answers per row (chosen and rejected, or an answer and its
    mismatched KL pair) in one forward; grpo's sequences are a prompt plus the sampled answer."""
    m = spec.method
    rows = spec.training.micro_batch_size
    if m.method in PAIRED_METHODS + ("kto",):
        return 2 * rows, seq_len
    if m.method == "grpo":
        return rows, seq_len + m.max_completion_length
    return rows, seq_len


def peak_vram_gib(
    shape: ModelShape, spec: JobSpec, four_bit: bool, checkpointing: bool, seq_len: int
) -> float:
    """Estimated peak GPU memory in GiB for one training process: the tensors of memory_parts,
    with the caching allocator's slack, plus the CUDA context."""
    total = sum(memory_parts(shape, spec, four_bit, checkpointing, seq_len).values())
    return round(total * ALLOCATOR_SLACK / GIB + CUDA_CONTEXT_GIB, 2)


def vram_parts_text(parts: dict) -> str:
    """'weights 0.9, LoRA 0.01, activations 2.1, logits 1.4, CUDA context + slack 0.9 GiB'."""
    labels = {
        "weights": "weights",
        "lora": "LoRA",
        "activations": "activations",
        "logits": "logits",
        "context_and_slack": "CUDA context + slack",
    }
    shown = [f"{labels.get(k, k)} {f'{v:g}' if v >= 0.01 else '<0.01'}" for k, v in parts.items()]
    return ", ".join(shown) + " GiB"


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
    spec: JobSpec, device: str, shape: ModelShape | None, gpu_total_gib: float | None = None
) -> tuple[str, str]:
    """('lora' | 'qlora', why). Auto picks 4-bit only when 16-bit would not fit the GPU; `shape`
    (the base's, from plan.shape.model_shape) is needed only then."""
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
    if shape is None:
        raise ValueError("choose_mode needs the model's shape to decide on a GPU")
    seq = spec.training.max_seq_length or min(shape.context, 2048)
    need = peak_vram_gib(shape, spec, False, spec.training.gradient_checkpointing != "off", seq)
    if need <= gpu_total_gib * HEADROOM:
        return "lora", f"16-bit fits: needs ~{need:.1f} GiB of {gpu_total_gib:.0f} GiB"
    return "qlora", (
        f"16-bit would need ~{need:.1f} GiB, more than 90% of the GPU's "
        f"{gpu_total_gib:.0f} GiB: loading the base in 4-bit"
    )


def estimate(
    spec: JobSpec,
    device: str = "cpu",
    gpu_total_gib: float | None = None,
    gpu_name: str | None = None,
    cores: int = 2,
) -> Estimate:
    """The full estimate for one spec on a given device."""

    plan = template_plan(spec.base_model)  # a base without a chat template is refused here
    if plan.problem:
        raise ModelError(f"Base model: {plan.problem}.", plan.hint)
    config = load_config(spec.base_model)
    shape = model_shape(config)
    # a target module the model lacks is refused here, at submission, not in the worker
    resolve_targets(spec.lora.target_modules, list(shape.lora_params), architecture_name(config))
    seq = spec.training.max_seq_length or min(shape.context, 2048)
    vram, checkpointing = {}, {}
    for key, four_bit in (("bf16", False), ("4bit", True)):
        checkpointing[key], _ = use_checkpointing(spec, device, shape, four_bit, seq, gpu_total_gib)
        vram[key] = peak_vram_gib(shape, spec, four_bit, checkpointing[key], seq)
    warnings: list[str] = gguf_warnings(spec)
    if device == "cuda" and gpu_total_gib:
        mode, reason = choose_mode(spec, device, shape, gpu_total_gib)
    else:
        mode, reason = choose_mode(spec, "cpu", shape)
    key = "4bit" if mode == "qlora" else "bf16"
    parts = memory_parts(shape, spec, mode == "qlora", checkpointing[key], seq)
    vram_parts = {k: round(v / GIB, 2) for k, v in parts.items()}
    vram_parts["context_and_slack"] = round(vram[key] - sum(parts.values()) / GIB, 2)
    mask = mask_bytes_per_layer(spec, seq) * (1 if checkpointing[key] else shape.layers) / GIB
    if device == "cuda" and mask >= 1.0:
        warnings.append(
            f"sdpa keeps a copy of the attention mask per layer: ~{mask:.1f} GiB at "
            f"{spec.training.micro_batch_size} x {seq} tokens"
            + (" in one padding-free row" if spec.training.packing else "")
            + "; flash_attention_2 (training.attention) needs none, or lower the micro-batch"
        )
    try:
        rows, lengths = row_lengths(spec)
    except DataError:
        raise  # the data cannot be read: the run would fail, so the estimate says so now
    except TunegraphError as err:  # e.g. no tokenizer at hand: the estimate goes on without rows
        rows, lengths = None, []
        warnings.append(str(err))
    if rows is not None and rows < 1000:
        warnings.append(f"only {rows} examples: fewer than 1,000 rows rarely teach a model much")
    work = workload(spec, rows or 0, lengths, seq)
    key = calibration.device_key(device, gpu_name, cores, shape)
    work_done = {
        "rows": work.rows,
        "micro_batches": work.micro_batches,
        "computed_tokens": round(work.computed_tokens),
        "eval_tokens": round(work.eval_tokens),
        "gguf": spec.export.gguf,
    }
    times, basis = measured_time(spec, key, work_done, device, vram[key_mode(mode)], shape)
    times = times or time_range_s(shape, work, device, gpu_name, cores, spec)
    return Estimate(
        params=shape.params,
        trainable_params=trainable_params(shape, spec),
        vram_gib=vram,
        vram_parts_gib=vram_parts,
        mode=mode,
        mode_reason=reason,
        device=device,
        time_s=times,
        time_basis=basis,
        work=work_done,
        calibration_key=key,
        dataset_rows=rows,
        warnings=warnings,
    )


def key_mode(mode: str) -> str:
    """The vram_gib key of a mode: "4bit" for qlora, "bf16" for lora."""
    return "4bit" if mode == "qlora" else "bf16"


def measured_time(
    spec: JobSpec, key: str, work: dict, device: str, need_gib: float, shape: ModelShape
) -> tuple[dict | None, str]:
    """(time range, what it comes from) predicted from this machine's own runs of the model's
    shape (engine.plan.calibration); the first time a device × shape is seen, a speed check
    (engine.plan.probe) measures it first. (None, why) when nothing measured applies."""
    from engine.plan import probe
    from engine.plan.timing import export_s

    if not work.get("rows") or not work.get("micro_batches"):
        return None, "from the model's size (the data could not be sampled)"
    measured = calibration.samples(key)
    why_not = None
    if not measured and probe.enabled():
        tokens_per_micro = work["computed_tokens"] / work["micro_batches"]
        why_not = probe.speed_check(spec, key, device, need_gib, tokens_per_micro)
        measured = calibration.samples(key)
    calibrated = calibration.calibrated_range(work, measured, export_s(shape))
    if calibrated is None:
        return None, "from the model's size (" + (
            why_not or "no earlier run of this model on this device yet"
        ) + ")"
    runs = [s for s in measured if not s.get("speed_check")]
    parts = [f"{len(runs)} earlier run{'s' if len(runs) != 1 else ''}"] if runs else []
    if len(runs) < len(measured):
        parts.append(f"a {probe.PROBE_STEPS}-step speed check")
    basis = "measured on this machine (" + " and ".join(parts) + " of this model)"
    if work.get("gguf") and not any(s.get("gguf") for s in measured):
        basis += "; the GGUF export's part from the model's size"
    return calibrated, basis


def gguf_warnings(spec: JobSpec) -> list[str]:
    """The confirm step's warning for a `gguf:` base that was itself quantized (e.g. Q4_K_M)."""
    source = spec.base_model.source.strip()
    if not source.startswith("gguf:"):
        return []
    from engine.models.gguf_base import gguf_path, quantized_warning

    warning = quantized_warning(gguf_path(source[len("gguf:") :]))
    return [warning] if warning else []
