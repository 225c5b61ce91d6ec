"""What the Trainer is set up with for a spec: device, dtype (and the weights' dtype: fp32 for full
fine-tuning), 4-bit quantization, the LoRA config, the speed switches and the TrainingArguments.

The speed switches of TrainingSpec: the attention kernel (auto = sdpa), Liger kernels and
gradient checkpointing ("auto": on only when the memory estimate without it would not fit the
GPU, see engine.plan.estimate.use_checkpointing). A choice that cannot work here (fp16 or 4-bit on the
CPU, flash-attn or liger-kernel missing, no GPU) fails before loading with a SpecError naming it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import TrainingArguments

from engine.errors import SpecError
from engine.hardware import GIB
from engine.models.targets import linear_layer_names, peft_target_modules
from engine.rundir import CHECKPOINTS
from engine.spec import JobSpec
from engine.training.tracking import report_to

if TYPE_CHECKING:  # built in the functions that return them
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig


def pick_device(spec: JobSpec) -> str:
    """'cuda' or 'cpu' for this run; a CUDA request on a machine without one is a spec error."""
    wanted = spec.resources.device
    if wanted == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if wanted == "cuda":
        raise SpecError(
            "resources.device",
            "cuda",
            "no CUDA GPU is visible to the worker",
            "Choose device auto or cpu, or check the NVIDIA driver.",
        )
    return "cpu"


def pick_dtype(spec: JobSpec, device: str) -> torch.dtype:
    """Compute dtype: the spec's choice, or bf16/fp16 on GPUs and fp32 on the CPU."""
    precision = spec.training.precision
    if device == "cpu":
        if precision == "fp16":
            raise SpecError(
                "training.precision",
                precision,
                "fp16 training needs a GPU",
                "Use auto, bf16 or fp32 on the CPU.",
            )
        return torch.bfloat16 if precision == "bf16" else torch.float32
    if precision == "fp32":
        return torch.float32
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def weights_dtype(spec: JobSpec, dtype: torch.dtype) -> torch.dtype:
    """The dtype the weights are loaded in: the compute `dtype` for LoRA (the base is frozen);
    fp32 master weights for full fine-tuning, trained under the compute dtype's autocast (AdamW's
    small updates would vanish in bf16's 8-bit mantissa)."""
    return torch.float32 if spec.lora.full else dtype


def quantization_config(spec: JobSpec, device: str, mode: str) -> BitsAndBytesConfig | None:
    """A BitsAndBytesConfig for 4-bit NF4 QLoRA, or None for a 16/32-bit base."""
    if mode != "qlora":
        return None
    if device != "cuda":
        raise SpecError(
            "lora.quantization",
            spec.lora.quantization,
            "4-bit QLoRA needs an NVIDIA GPU (bitsandbytes)",
            "Set quantization to none to train on the CPU.",
        )
    from transformers import BitsAndBytesConfig

    compute = pick_dtype(spec, device)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
    )


def attention_kernel(spec: JobSpec, device: str) -> str:
    """The `attn_implementation` for this run: auto means sdpa; flash_attention_2 needs the
    flash-attn package and a GPU (a SpecError naming training.attention otherwise)."""
    choice = spec.training.attention
    if choice == "auto":
        return "sdpa"
    if choice == "flash_attention_2":
        if device != "cuda":
            raise SpecError(
                "training.attention",
                choice,
                "flash_attention_2 needs an NVIDIA GPU",
                "Use auto (sdpa) on the CPU.",
            )
        from transformers.utils import is_flash_attn_2_available

        if not is_flash_attn_2_available():
            raise SpecError(
                "training.attention",
                choice,
                "the flash-attn package is not installed (or not built for this torch/CUDA)",
                "Use auto (sdpa, nearly as fast), or install a flash-attn wheel built for "
                f"torch {torch.__version__}.",
            )
    return choice


def check_liger(spec: JobSpec, device: str) -> bool:
    """True when Liger kernels are asked for and usable; a SpecError naming
    training.liger_kernels when the package is missing or there is no GPU."""
    if not spec.training.liger_kernels:
        return False
    if importlib.util.find_spec("liger_kernel") is None:
        raise SpecError(
            "training.liger_kernels",
            True,
            "the liger-kernel package is not installed",
            "Install it with pip install 'tunegraph[speed]' (or liger-kernel), "
            "or turn liger_kernels off.",
        )
    if device != "cuda":
        raise SpecError(
            "training.liger_kernels",
            True,
            "Liger kernels are Triton GPU kernels and need an NVIDIA GPU",
            "Turn liger_kernels off to train on the CPU.",
        )
    return True


def training_arguments(
    spec: JobSpec,
    run_dir: Path,
    device: str,
    dtype: torch.dtype,
    has_eval: bool,
    checkpointing: bool | None = None,
    config_class: type[TrainingArguments] = TrainingArguments,
    **method_args: Any,
) -> TrainingArguments:
    """The Trainer's arguments for a run; `checkpointing` None = "on" only when chosen so.

    A method's trainer takes its own subclass of TrainingArguments (TRL's DPOConfig,
    GRPOConfig, …): `config_class` with the method's own settings as `method_args`
    (engine.training.methods).
    """
    t = spec.training
    if (t.early_stopping_patience or t.keep_best) and not has_eval:
        field = (
            "training.early_stopping_patience"
            if t.early_stopping_patience
            else "training.keep_best"
        )
        value = t.early_stopping_patience or t.keep_best
        raise SpecError(field, value, "needs an eval split", "Set eval_split above 0.")
    eval_strategy = "no"
    if has_eval:
        eval_strategy = "steps" if t.eval_steps else "epoch"
    # save_steps 0 = only at the end: the Trainer saves the final step under a "steps" strategy,
    # and pause, resume after a failure and `continue` all need that checkpoint
    save_strategy, save_steps = "steps", (t.save_steps or 10**9)
    best = bool(t.keep_best or t.early_stopping_patience)
    if best:  # the best checkpoint can only be chosen among evaluated ones
        save_strategy, save_steps = eval_strategy, (t.eval_steps or 500)
    # With an eval split the Trainer always tracks the lowest eval loss and its checkpoint, which
    # checkpoint rotation then keeps, so a `stop` can deliver it (engine.training.trainer). At
    # save_total_limit 1 the Trainer would delete every checkpoint but the best at the end of
    # training; a run that does not keep the best keeps its final checkpoint (pause, resume and
    # `continue` start from it), so it keeps two: the best and the latest.
    save_total_limit = t.save_total_limit if best or not has_eval else max(t.save_total_limit, 2)
    gc = t.gradient_checkpointing == "on" if checkpointing is None else checkpointing
    return config_class(
        output_dir=str(run_dir / CHECKPOINTS),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        learning_rate=t.learning_rate,
        per_device_train_batch_size=t.micro_batch_size,
        per_device_eval_batch_size=t.micro_batch_size,
        gradient_accumulation_steps=t.grad_accum,
        warmup_steps=t.warmup_ratio,
        lr_scheduler_type=t.lr_scheduler,
        weight_decay=t.weight_decay,
        logging_steps=1,
        save_strategy=save_strategy,
        save_steps=save_steps,
        save_total_limit=save_total_limit,
        eval_strategy=eval_strategy,
        eval_steps=t.eval_steps or None,
        load_best_model_at_end=best,
        metric_for_best_model="eval_loss" if has_eval else None,
        greater_is_better=False if has_eval else None,
        seed=t.seed,
        data_seed=t.seed,
        bf16=device == "cuda" and dtype == torch.bfloat16,
        fp16=device == "cuda" and dtype == torch.float16,
        use_cpu=device == "cpu",
        activation_checkpointing=gc,
        activation_checkpointing_kwargs={"use_reentrant": False} if gc else None,
        use_liger_kernel=check_liger(spec, device),
        include_num_input_tokens_seen="non_padding",
        ddp_backend="gloo" if device == "cpu" and spec.resources.gpu_count > 1 else None,
        report_to=report_to(spec, run_dir),  # engine.training.tracking: a copy of the metrics
        run_name=spec.name or None,
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        save_only_model=False,
        log_level="warning",
        **method_args,
    )


def lora_config(spec: JobSpec, model: Any = None, linear: list[str] | None = None) -> LoraConfig:
    """The LoRA config node's settings as peft's LoraConfig (rank, alpha, dropout, targets).

    Targets are resolved against `model`'s linear layers, or the layer names `linear` (auto
    becomes e.g. q_proj, v_proj or qkv_proj; engine.models.targets), so the adapter's config names
    exactly what was adapted. Without either, auto is spelled out as every name it stands for, of
    which peft adapts the ones the model has: the same layers.
    """
    from peft import LoraConfig

    if linear is None and model is not None:
        linear = linear_layer_names(model)
    return LoraConfig(
        r=spec.lora.r,
        lora_alpha=spec.lora.alpha,
        lora_dropout=spec.lora.dropout,
        target_modules=peft_target_modules(spec.lora.target_modules, linear),
        task_type="CAUSAL_LM",
    )


def gpu_total_gib(device: str) -> float | None:
    """The memory of the GPU this worker trains on, in GiB (None on the CPU)."""
    if device != "cuda":
        return None
    return torch.cuda.get_device_properties(0).total_memory / GIB
