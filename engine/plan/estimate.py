"""Estimates before a run starts: parameters, peak VRAM (16-bit and 4-bit), mode, time range.

Parameter counts come from `config.json` alone (the model is built on the meta device: exact, no
weights). Peak VRAM is engine.plan.memory's: weights + LoRA params with their fp32 gradients and
AdamW states (or, for full fine-tuning, fp32 weights, gradients and AdamW states of every
parameter) + the activations autograd keeps + the fp32 logits of the loss (+ GRPO's generation)
+ CUDA context and allocator slack. The mode is lora, qlora (4-bit base) or full; a full run has
one figure (nothing is quantized), given as both `vram_gib` entries, so the supervisor judges it
by that figure whatever it reads. Imports torch: call it from the CLI, the worker or a helper
process, never from the UI process.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from engine.errors import DataError, ModelError, TunegraphError
from engine.formatting import format_count
from engine.hardware import GIB
from engine.models.sources import load_config
from engine.models.targets import architecture_name, resolve_targets
from engine.models.template_choice import template_plan
from engine.plan import calibration

# the memory model lives in engine.plan.memory; the names other modules import from here stay
from engine.plan.memory import ALLOCATOR_SLACK as ALLOCATOR_SLACK
from engine.plan.memory import CUDA_CONTEXT_GIB as CUDA_CONTEXT_GIB
from engine.plan.memory import LOGIT_BYTES as LOGIT_BYTES
from engine.plan.memory import (
    mask_bytes_per_layer,
    memory_parts,
    peak_vram_gib,
    trainable_params,
)
from engine.plan.memory import vram_parts_text as vram_parts_text
from engine.plan.shape import ModelShape, model_shape
from engine.plan.timing import row_lengths, time_range_s, workload
from engine.spec import JobSpec

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
    data_pending: bool = False  # its data nodes have not made its rows yet (dataset_rows None)

    def to_dict(self) -> dict:
        """The estimate as a plain dict (JSON for the store and the UI)."""
        return dataclasses.asdict(self)


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
    """('lora' | 'qlora' | 'full', why). Auto picks 4-bit only when 16-bit would not fit the
    GPU; `shape` (the base's, from plan.shape.model_shape) is needed only then. Full
    fine-tuning is its own mode: every weight trains, never on a 4-bit base."""
    if spec.lora.full:
        return "full", full_reason(shape)
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


def full_reason(shape: ModelShape | None) -> str:
    """The confirm step's words for a full fine-tuning run."""
    if shape is None:
        return "full fine-tuning: every parameter trains, no adapter"
    return f"full fine-tuning: all {format_count(shape.params)} parameters train"


def made_by_steps(spec: JobSpec) -> set[str]:
    """The dataset files the spec's data steps write (nodes.recipes)."""
    return {p for step in spec.data_steps for p in step["outputs"].values()}


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
    if not spec.lora.full:  # a target module the model lacks is refused here, not in the worker
        targets = spec.lora.target_modules
        resolve_targets(targets, list(shape.lora_params), architecture_name(config))
    seq = spec.training.max_seq_length or min(shape.context, 2048)
    vram, checkpointing = {}, {}
    for key, four_bit in (("bf16", False), ("4bit", True)):
        four_bit = four_bit and not spec.lora.full  # full: nothing is quantized, one figure
        checkpointing[key], _ = use_checkpointing(spec, device, shape, four_bit, seq, gpu_total_gib)
        vram[key] = peak_vram_gib(shape, spec, four_bit, checkpointing[key], seq)
    warnings: list[str] = gguf_warnings(spec)
    if spec.lora.full and device == "cuda" and gpu_total_gib:
        warnings += full_fit_warnings(spec, shape, vram["bf16"], gpu_total_gib, seq)
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
    unmade = [d.path for d in spec.datasets if d.path in made_by_steps(spec)]
    unmade = [p for p in unmade if not Path(p).is_file()]
    try:
        if unmade:  # its data steps make it first: rows and time are known once it is there
            rows, lengths = None, []
            names = ", ".join(s["name"] for s in spec.data_steps if s["outputs"])
            warnings.append(
                f"its data is made first (data nodes {names}): the time range counts its rows "
                "once they are there"
            )
        else:
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
        data_pending=bool(unmade),
    )


def full_fit_warnings(
    spec: JobSpec, shape: ModelShape, need_gib: float, gpu_total_gib: float, seq: int
) -> list[str]:
    """The warning that a full fine-tuning run cannot fit the largest GPU, with what LoRA (or
    QLoRA) would need instead; none when it fits."""
    room = gpu_total_gib * HEADROOM
    if need_gib <= room:
        return []
    lora = dataclasses.replace(spec, lora=dataclasses.replace(spec.lora, full=False))
    mode, _ = choose_mode(lora, "cuda", shape, gpu_total_gib)
    gc, _ = use_checkpointing(lora, "cuda", shape, mode == "qlora", seq, gpu_total_gib)
    other = peak_vram_gib(shape, lora, mode == "qlora", gc, seq)
    name = "QLoRA (4-bit)" if mode == "qlora" else "LoRA"
    return [
        f"full fine-tuning needs ~{need_gib:.1f} GiB (fp32 weights, gradients and AdamW states "
        f"of {format_count(shape.params)} parameters), more than {room:.1f} GiB (90% of the "
        f"largest GPU's {gpu_total_gib:.0f} GiB): it cannot run here. {name} would need "
        f"~{other:.1f} GiB: turn Full fine-tuning off on the LoRA config node, or pick a "
        "smaller base model."
    ]


def key_mode(mode: str) -> str:
    """The vram_gib key of a mode: "4bit" for qlora, "bf16" for lora and full."""
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
