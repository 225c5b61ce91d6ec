"""What the supervisor changes before it starts a run again after a CUDA out-of-memory.

The ladder (DESIGN.md "Lifecycle", `retrying`), one rung per retry, each rung skipped when it
cannot help: halve the micro-batch and double gradient accumulation (the effective batch and so
the curve stay the same), then turn gradient checkpointing on, then load the base in 4-bit when
the run is on a GPU and the base allows it. `oom_fallback` returns the changed spec and a sentence
saying what changed, or None when nothing is left to try.
"""

from __future__ import annotations

import copy

from engine.spec import JobSpec

MAX_RETRIES = 3  # automatic restarts per run, between two submissions or resumes by the user


def oom_fallback(spec: JobSpec, device: str) -> tuple[JobSpec, str] | None:
    """The next rung of the out-of-memory ladder for a run on `device` ("cuda" or "cpu")."""
    t = spec.training
    if t.micro_batch_size > 1:
        new = copy.deepcopy(spec)
        new.training.micro_batch_size = max(1, t.micro_batch_size // 2)
        new.training.grad_accum = t.grad_accum * t.micro_batch_size // new.training.micro_batch_size
        effective = new.training.micro_batch_size * new.training.grad_accum
        return new, (
            f"micro-batch {t.micro_batch_size} → {new.training.micro_batch_size}, gradient "
            f"accumulation {t.grad_accum} → {new.training.grad_accum} "
            f"(the same effective batch of {effective})"
        )
    if t.gradient_checkpointing != "on":
        new = copy.deepcopy(spec)
        new.training.gradient_checkpointing = "on"
        return new, f"gradient checkpointing {t.gradient_checkpointing} → on"
    if four_bit_allowed(spec, device):
        new = copy.deepcopy(spec)
        new.lora.quantization = "4bit"
        return new, f"base model {spec.lora.quantization} → 4-bit (QLoRA)"
    return None


def four_bit_allowed(spec: JobSpec, device: str) -> bool:
    """4-bit loading is possible: a GPU LoRA run (full fine-tuning cannot train a 4-bit base),
    not 4-bit already, a base bitsandbytes can quantize (a `gguf:` base is dequantized from its
    file, so it cannot be reloaded in 4-bit)."""
    return (
        device == "cuda"
        and not spec.lora.full  # full fine-tuning trains the weights themselves
        and spec.lora.quantization != "4bit"
        and not spec.base_model.source.strip().startswith("gguf:")
    )


def nothing_left(spec: JobSpec, device: str) -> str:
    """Why the ladder ends here, for the failed run's reason."""
    if spec.lora.quantization == "4bit":
        four = "a 4-bit base"
    elif device != "cuda":
        four = "no 4-bit (it needs a GPU)"
    else:
        four = "no 4-bit (a gguf: base cannot be reloaded in 4-bit)"
    return (
        f"still out of memory with micro-batch {spec.training.micro_batch_size}, gradient "
        f"checkpointing on and {four}: lower the max sequence length or pick a smaller base model"
    )
