"""Peak GPU memory of one training process, by parts: `memory_parts` and `peak_vram_gib`.

A LoRA run holds the (16-bit or 4-bit) base, the adapter with its fp32 gradients and AdamW states,
and at the step's peak every layer's activations and the loss's fp32 logits. A full fine-tuning
run (LoraSpec.full) holds fp32 master weights and AdamW's two fp32 moments (12 bytes a
parameter) throughout; its step peaks either when the backward pass starts (the weights' 16-bit
autocast copies, the activations and the logits still alive) or when it ends (every fp32
gradient written, the activations gone): `full_parts`. A GRPO run also samples its answers in
the same process, between steps: the KV cache of the generation batch (`generation_bytes`).

The allocated part is checked against a fake-tensor trace of the worker's training step
(engine.plan.memory_trace; tests/test_estimate_memory.py, tests/test_full_finetune.py,
bench/bench_vram_sim.py); the CUDA context and the allocator's slack need a GPU
(bench/bench_vram.py). Imports nothing heavy: the shape comes from engine.plan.shape.
"""

from __future__ import annotations

from engine.hardware import GIB
from engine.models.targets import expand_targets
from engine.plan.shape import ModelShape
from engine.spec import PAIRED_METHODS, JobSpec

CUDA_CONTEXT_GIB = 0.5
ALLOCATOR_SLACK = 1.10
NF4_BYTES_PER_PARAM = 0.55
LOGIT_BYTES = 12  # per token and vocabulary entry: fp32 log-softmax, its gradient and the input's
LOSS_FORWARD_BYTES = 10  # the same while the forward pass computes the loss: logits, fp32 copies
MASTER_BYTES = 4  # full fine-tuning: fp32 master weights (and fp32 gradients, 4 more)
ADAM_BYTES = 8  # AdamW's two fp32 moments per trained parameter
REFERENCE_METHODS = ("dpo", "kto")  # and grpo with a KL coefficient: TRL's reference model


def _targeted(table: dict[str, int], spec: JobSpec) -> int:
    """The sum of `table` (linear layer name -> count) over the layers the spec's LoRA adapts,
    auto and all-linear resolved against the table's names (those of the model's linears)."""
    return sum(table.get(t, 0) for t in expand_targets(spec.lora.target_modules, list(table)))


def trainable_params(shape: ModelShape, spec: JobSpec) -> int:
    """Parameters the spec trains: r·(inputs + outputs) of every LoRA-targeted linear, or every
    parameter of the model for full fine-tuning."""
    if spec.lora.full:
        return shape.params
    return _targeted(shape.lora_params, spec) * spec.lora.r


def activation_bytes_per_token(shape: ModelShape, spec: JobSpec) -> float:
    """Bytes autograd keeps per token and decoder layer in a 16-bit LoRA run, counted tensor by
    tensor (engine/memory_sim.py traces them): the gated MLP's gate, activation and up outputs
    (3·I, 16-bit); the two RMSNorm inputs in fp32 (2·4·h); the rotated query and the attention
    output (2·2·h); key and value (2·2·kv with flash-attn, which reads grouped heads as they are;
    sdpa and eager get them repeated to every head, 2·2·h, whenever a mask is in play, which
    padding-free and padded batches always bring); and, per LoRA-targeted linear, its own 16-bit
    copy of the input for lora_A's gradient, plus the dropout mask when dropout is on."""
    if spec.lora.full:
        return full_activation_bytes_per_token(shape, spec)
    h, kv = shape.hidden, _kv_width(shape, spec)
    lora_inputs = _targeted(shape.in_features, spec) if shape.in_features else 4 * h
    per_input = 2 + (4 if spec.lora.dropout > 0 else 0)
    return 6 * shape.intermediate + 12 * h + 4 * kv + per_input * lora_inputs


def full_activation_bytes_per_token(shape: ModelShape, spec: JobSpec) -> float:
    """Bytes autograd keeps per token and decoder layer when every weight trains (fp32 master
    weights, so an fp32 residual stream, under 16-bit autocast), as the trace counts them: the
    MLP's gate, activation, up and their product, down_proj's input (4·2·I); the RMSNorms' fp32
    inputs and normalised outputs, which the norm weights' gradients need (4·4·h), the 16-bit
    inputs of the attention and MLP projections and the query, attention output and more
    (14·h in all with those); key and value (2·2·kv, as for LoRA); the attention's fp32
    log-sum-exp per head; and 8 bytes of bookkeeping."""
    h, kv = shape.hidden, _kv_width(shape, spec)
    return 8 * shape.intermediate + 30 * h + 4 * kv + 4 * shape.heads + 8


def _kv_width(shape: ModelShape, spec: JobSpec) -> int:
    """Key (= value) width autograd keeps: grouped heads with flash-attn, repeated otherwise."""
    flash = spec.training.attention == "flash_attention_2"
    return (shape.kv_dim or shape.hidden) if flash else shape.hidden


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
    gradient and two AdamW moments), activations and logits; for full fine-tuning weights,
    gradients, optimizer and activations (`full_parts`); plus the reference model of a full
    run's DPO, KTO or GRPO with a KL term, and GRPO's `generation`.

    Activations assume a fused attention kernel (sdpa / flash): the eager kernel additionally
    keeps every layer's a·s² attention probabilities, in fp32 and as a 16-bit copy. With
    checkpointing each layer keeps only its input (16-bit, fp32 on a 4-bit base), and one layer is
    recomputed at a time, after the loss's logits are gone.

    The method changes the shape of a step (`method_batch`): preference methods and KTO put two
    answers per row through the model at once, GRPO trains on prompts followed by
    max_completion_length generated tokens, which it samples in the same process between steps,
    so within the same hold: their KV cache is counted on top of the step's peak.
    """
    activations, logits = _step_activations(shape, spec, four_bit, checkpointing, seq_len)
    if spec.lora.full:
        parts = full_parts(shape, spec, activations, logits, checkpointing)
    else:
        parts = {
            "weights": _lora_weights(shape, four_bit),
            "lora": trainable_params(shape, spec) * 16,
            "activations": activations,
            "logits": logits,
        }
    if spec.lora.full and needs_reference(spec):
        parts["reference"] = shape.params * _compute_bytes(spec)
    if spec.method.method == "grpo":
        parts["generation"] = generation_bytes(shape, spec, seq_len)
    return parts


def _lora_weights(shape: ModelShape, four_bit: bool) -> float:
    if not four_bit:
        return shape.params * 2
    # quantized linears, embeddings upcast to fp32 by kbit preparation, and one linear at a time
    # dequantized to 16-bit for its matmul
    return (
        (shape.params - shape.embedding_params) * NF4_BYTES_PER_PARAM
        + shape.embedding_params * 4
        + 2 * shape.hidden * shape.intermediate
    )


def _step_activations(
    shape: ModelShape, spec: JobSpec, four_bit: bool, checkpointing: bool, seq_len: int
) -> tuple[float, float]:
    """(activations, logits) of one micro-batch's forward at its peak."""
    b, s = method_batch(spec, seq_len)
    per_layer = s * b * activation_bytes_per_token(shape, spec) + mask_bytes_per_layer(spec, s)
    if spec.training.attention == "eager":
        rows, length = attention_rows(spec, s)
        per_layer += 6 * shape.heads * rows * length**2
    logits = b * s * shape.vocab * LOGIT_BYTES
    if not checkpointing:
        return per_layer * shape.layers, logits
    # the loss's peak has passed when the last layer is recomputed (with, in a full run, its
    # weights' 16-bit copies); fp32 embeddings (a 4-bit base's, or a full run's master weights)
    # keep the residual stream in fp32
    residual = 4 if four_bit or spec.lora.full else 2
    if spec.lora.full and _compute_bytes(spec) == 2:
        per_layer += 2 * (shape.params - shape.embedding_params) / max(shape.layers, 1)
    return residual * s * b * shape.hidden * shape.layers + max(0, per_layer - logits), logits


def full_parts(
    shape: ModelShape, spec: JobSpec, activations: float, logits: float, checkpointing: bool
) -> dict[str, float]:
    """A full fine-tuning step's peak, by part: fp32 master `weights` and the `optimizer`'s two
    moments (12 bytes a parameter, held throughout); fp32 `gradients` (4 more, written during the
    backward pass; a tied embedding briefly holds two more copies of its gradient as its two
    uses add up); and `activations`: what the step holds before the backward pass beyond the
    gradients it ends with — the layers' saved tensors, the loss's logits and the 16-bit autocast
    copies of the weights. Autocast keeps every copy it made until the forward pass ends, so
    they are all alive while the loss is computed; the backward pass then starts with the ones
    the matmuls saved (only the output layer's when checkpointing recomputes the layers). With
    short sequences the end of the backward pass is the peak, and activations are 0."""
    params, vh = shape.params, shape.vocab * shape.hidden
    tied = shape.embedding_params <= vh
    copies = 2 * (params - (0 if tied else vh)) if _compute_bytes(spec) == 2 else 0.0
    before = copies + activations + logits
    if checkpointing:  # the loss in the forward pass (every copy) or the backward's start
        loss_forward = copies + activations + logits * LOSS_FORWARD_BYTES / LOGIT_BYTES
        before = max(loss_forward, min(copies, 2 * vh) + activations + logits)
    gradients = MASTER_BYTES * params + (2 * MASTER_BYTES * vh if tied else 0)
    return {
        "weights": MASTER_BYTES * params,
        "gradients": gradients,
        "optimizer": ADAM_BYTES * params,
        "activations": max(0.0, before - gradients),
    }


def needs_reference(spec: JobSpec) -> bool:
    """Whether the run's method compares with a frozen reference model: DPO and KTO, and GRPO
    with a KL coefficient. A LoRA run gets it for free (the base with the adapter disabled); a
    full run holds a second, 16-bit copy of the base (engine.training.full)."""
    m = spec.method
    return m.method in REFERENCE_METHODS or (m.method == "grpo" and m.kl_coef > 0)


def generation_bytes(shape: ModelShape, spec: JobSpec, seq_len: int) -> float:
    """What GRPO's sampling holds beyond the weights: the KV cache of the generation batch and
    the logits of each new token.

    TRL samples one generation batch per optimizer step, micro_batch_size × gradient
    accumulation sequences on each GPU (num_generations answers to each of its prompts, so the
    batch is a multiple of it), each a prompt of up to the max sequence length followed by up
    to max_completion_length tokens: key and value of every layer (2·kv wide, 16-bit) for each
    token, and per new token fp32 logits with their softmax for sampling (2·4·vocab).
    """
    t, m = spec.training, spec.method
    sequences = t.micro_batch_size * t.grad_accum
    tokens = seq_len + m.max_completion_length
    kv = shape.kv_dim or shape.hidden
    cache = sequences * tokens * shape.layers * 2 * kv * _compute_bytes(spec)
    return cache + sequences * shape.vocab * 8


def _compute_bytes(spec: JobSpec) -> int:
    """Bytes of an activation in the run's compute precision: 4 in fp32, else 2."""
    return 4 if spec.training.precision == "fp32" else 2


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


PROCESS_GIB = 0.5  # what a training process on the CPU takes besides the run (Python, torch)


def ram_parts(parts: dict) -> dict:
    """A CPU run's memory parts: the estimate's `vram_parts_gib` without the GPU's own share
    (the CUDA context and allocator slack)."""
    return {k: v for k, v in parts.items() if k != "context_and_slack"}


def vram_parts_text(parts: dict) -> str:
    """'weights 0.9, LoRA 0.01, activations 2.1, logits 1.4, CUDA context + slack 0.9 GiB'."""
    labels = {
        "weights": "weights",
        "lora": "LoRA",
        "gradients": "gradients",
        "optimizer": "optimizer states",
        "activations": "activations",
        "logits": "logits",
        "reference": "reference model",
        "generation": "generation (KV cache)",
        "context_and_slack": "CUDA context + slack",
    }
    shown = [f"{labels.get(k, k)} {f'{v:g}' if v >= 0.01 else '<0.01'}" for k, v in parts.items()]
    return ", ".join(shown) + " GiB"
