"""A run's trainer set-up: `build_trainer(spec, run_dir, log, control) -> Setup`, everything up to
`trainer.train()` (the benchmarks time exactly that).

It goes in three steps, so that runs sharing one base model (engine.training.group) load it
once and each add their own part:

- `open_run`: device, dtype, attention kernel, the tokenizer, the config and (unless a GGUF
  base's config comes only with its weights) the data, so bad input fails before the weights
  load; then the mode (LoRA, QLoRA, full);
- `load_base`: the weights;
- `complete_setup`: the data of a GGUF base, checkpointing, the chat template, LoRA (or, for full
  fine-tuning, every weight; fp32 master weights), and the Trainer with the speed switches of
  TrainingSpec (engine.training.options), padding-free batches (`packing`) and the event
  callback (engine.training.callback). A run sharing its base adds a named adapter
  (`SharedBase`) instead of being the model's only one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, set_seed
from transformers.trainer_callback import PrinterCallback

from engine.control import Control
from engine.data.templates import stop_token_ids
from engine.events import EventLog
from engine.models.sources import (
    ResolvedSource,
    check_target_modules,
    load_config,
    load_model,
    load_tokenizer,
    resolve_source,
)
from engine.models.targets import resolve_targets
from engine.spec import JobSpec
from engine.training.best import BestCheckpoint
from engine.training.callback import EventCallback
from engine.training.full import parameter_count, reference_copy, saved_dtype, trl_reference
from engine.training.methods import TRL_METHODS, method_trainer
from engine.training.options import (
    attention_kernel,
    check_liger,
    gpu_total_gib,
    lora_config,
    pick_device,
    pick_dtype,
    quantization_config,
    training_arguments,
    weights_dtype,
)

if TYPE_CHECKING:  # the data wing is imported when a run builds its trainer
    from engine.data.prepare import DataStats
    from engine.plan.shape import ModelShape


@dataclass
class Setup:
    """Everything `build_trainer` prepared for one run (the benchmarks time `trainer.train()`)."""

    trainer: Trainer
    model: Any
    tokenizer: Any
    data: Any  # engine.data.prepare.PreparedData
    callback: EventCallback
    device: str
    mode: str
    trainable: int
    has_eval: bool
    save_dtype: torch.dtype  # the 16-bit type a full run's model folder is written in
    adapter: str | None = None  # its adapter's name in a shared base; None: the model's only one


@dataclass
class Opening:
    """What `open_run` decided and read for a run before its weights load."""

    device: str
    dtype: torch.dtype
    attention: str
    resolved: ResolvedSource
    tokenizer: Any
    config: Any  # None for a GGUF base on the CPU: its config comes with its weights
    data: Any  # None until the config is known
    gpu_gib: float | None
    shape: ModelShape | None
    mode: str


@dataclass
class SharedBase:
    """A base model that several runs train their own named adapters on (engine.training.group):
    the names of its linear layers and its class, read before any adapter wrapped them."""

    linear: list[str]
    architecture: str


def max_length(spec: JobSpec, config: Any) -> int:
    """The run's max sequence length: the spec's, else min(the model's context, 2048)."""
    context = getattr(config, "max_position_embeddings", None) or 2048
    return spec.training.max_seq_length or min(context, 2048)


def build_trainer(spec: JobSpec, run_dir: Path, log: EventLog, control: Control) -> Setup:
    """Load model and tokenizer, prepare the data, attach LoRA (or, for full fine-tuning, train
    every weight) and build the Trainer for a run, with its speed options (attention kernel,
    Liger, padding-free batches, checkpointing)."""
    opening = open_run(spec, log)
    model = load_base(spec, opening)
    return complete_setup(spec, run_dir, log, control, opening, model)


def open_run(spec: JobSpec, log: EventLog) -> Opening:
    """Everything a run decides and reads before its weights: device, dtype, attention kernel
    (Liger checked), tokenizer, config, the data when the config is known (bad data fails here),
    and the mode, each said in a `log` event."""
    from engine.data.method_data import prepare_run_data
    from engine.plan.estimate import choose_mode
    from engine.plan.shape import model_shape

    spec.validate()
    device = pick_device(spec)
    dtype = pick_dtype(spec, device)
    attention = attention_kernel(spec, device)
    check_liger(spec, device)  # before the slow loading: a missing package fails at once
    resolved = resolve_source(spec.base_model)
    log.emit("log", level="info", message=f"Loading {spec.base_model.source} on {device}")
    tokenizer = load_tokenizer(spec.base_model, resolved)
    # the config is loaded once and its shape goes down from here; a GGUF base's comes with its
    # weights (parsing it alone takes half a minute), unless a GPU run's plan needs it first
    config = None
    if resolved.kind != "gguf" or device == "cuda":
        config = load_config(spec.base_model, resolved)
    data = None
    if config is not None:  # bad data fails here, before the weights are loaded
        data = prepare_run_data(spec, tokenizer, max_length(spec, config))  # per method
    gpu_gib = gpu_total_gib(device)
    shape = model_shape(config) if device == "cuda" else None  # only a GPU run's plan needs it
    mode, reason = choose_mode(spec, device, shape, gpu_gib)
    log.emit("log", level="info", message=f"Mode {mode}: {reason}")
    return Opening(
        device, dtype, attention, resolved, tokenizer, config, data, gpu_gib, shape, mode
    )


def load_base(spec: JobSpec, opening: Opening) -> Any:
    """The run's base model weights, as `opening` chose (dtype, 4-bit, attention kernel)."""
    return load_model(
        spec.base_model,
        opening.resolved,
        weights_dtype(spec, opening.dtype),  # fp32 master weights for full fine-tuning
        quantization_config(spec, opening.device, opening.mode),
        device_map={"": 0} if opening.mode == "qlora" else None,
        attn_implementation=opening.attention,
        config=opening.config,
    )


def complete_setup(
    spec: JobSpec,
    run_dir: Path,
    log: EventLog,
    control: Control,
    opening: Opening,
    model: Any,
    shared: SharedBase | None = None,
    adapter: str | None = None,
    trainer_class: Callable[..., Trainer] = Trainer,
) -> Setup:
    """The rest of a run's set-up on its loaded `model`: the data (a GGUF base's), checkpointing,
    chat template, LoRA (full fine-tuning: none) and the Trainer with its callbacks.

    With `shared`, the model is a base several runs share: this run adds its LoRA adapter under
    the name `adapter` (other runs' adapters stay) and its Trainer is `trainer_class`.
    """
    from engine.data.method_data import prepare_run_data
    from engine.data.prepare import make_collator
    from engine.plan.estimate import use_checkpointing
    from engine.plan.memory import needs_reference

    run_dir = Path(run_dir)
    device, dtype, mode, tokenizer = opening.device, opening.dtype, opening.mode, opening.tokenizer
    config = opening.config
    max_len = max_length(spec, config if config is not None else model.config)
    data = opening.data
    if data is None:
        data = prepare_run_data(spec, tokenizer, max_len)
    checkpointing, why = use_checkpointing(
        spec, device, opening.shape, mode == "qlora", max_len, opening.gpu_gib
    )
    log.emit("log", level="info", message=f"Attention {opening.attention}; {why}")

    tokenizer.chat_template = data.chat_template
    if data.added_tokens and (
        shared is None or len(tokenizer) > len(model.get_input_embeddings().weight)
    ):
        model.resize_token_embeddings(len(tokenizer))  # a pad token the vocabulary lacked
    model.generation_config.eos_token_id = stop_token_ids(tokenizer, data.chat_template)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    for note in data.notes:
        log.emit("log", level="info", message=note)
    for warning in data.stats.warnings:
        log.emit("log", level="warning", message=warning)
    log.emit("log", level="info", message="Data: " + json.dumps(stats_dict(data.stats)))

    reference = None  # a full run's frozen copy of the base, for the methods that compare
    if spec.lora.full:
        trainable = parameter_count(model)
        log.emit(
            "log",
            level="info",
            message=f"Full fine-tuning: all {trainable:,} parameters train (fp32 master "
            "weights, no adapter)",
        )
        if spec.method.method in TRL_METHODS and needs_reference(spec):
            reference = reference_copy(model, dtype)
    else:
        model, trainable = attach_lora(spec, model, mode, log, shared, adapter)
    model.config.use_cache = False  # padding-free batches must not see a KV cache

    has_eval = data.eval is not None and len(data.eval) > 0
    arguments = partial(training_arguments, spec, run_dir, device, dtype, has_eval, checkpointing)
    callback = EventCallback(log, control, device, save_minutes=spec.training.save_minutes)
    callbacks: list[TrainerCallback] = [callback]
    if has_eval:  # after the event callback: it reads the stop that callback took
        callbacks.append(BestCheckpoint(callback))
    if spec.training.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(spec.training.early_stopping_patience))
    if spec.method.method in TRL_METHODS:  # DPO, ORPO, SimPO, KTO, GRPO: TRL's trainers
        with trl_reference(reference):
            trainer = method_trainer(spec, model, tokenizer, data, callbacks, arguments, max_len)
    else:  # sft and pretrain: token labels prepared by engine.data
        trainer = trainer_class(
            model=model,
            args=arguments(),
            train_dataset=data.train,
            eval_dataset=data.eval if has_eval else None,
            data_collator=make_collator(tokenizer, spec.training.packing),
            processing_class=tokenizer,
            callbacks=callbacks,
        )
    trainer.remove_callback(PrinterCallback)
    save = saved_dtype(config, gguf_base=opening.resolved.kind == "gguf")
    return Setup(
        trainer, model, tokenizer, data, callback, device, mode, trainable, has_eval, save, adapter
    )


def attach_lora(
    spec: JobSpec,
    model: Any,
    mode: str,
    log: EventLog,
    shared: SharedBase | None = None,
    adapter: str | None = None,
) -> tuple[Any, int]:
    """The peft model with the run's LoRA adapter (on a base prepared for 4-bit training in
    QLoRA mode), and its number of trainable parameters.

    With `shared`, the adapter is added under the name `adapter` beside the adapters already
    there (different ranks and targets are fine) and made the active one; the counts are this
    adapter's and the base's, as for a run of its own.
    """
    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training

    first = not isinstance(model, PeftModel)
    if shared is None:
        check_target_modules(model, spec.lora.target_modules)
    else:  # the base's own layer names: adapters already attached add layers of their own
        resolve_targets(spec.lora.target_modules, shared.linear, shared.architecture)
    if mode == "qlora" and first:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    config = lora_config(spec, model) if shared is None else lora_config(spec, linear=shared.linear)
    set_seed(spec.training.seed)  # LoRA weights are drawn here, before Trainer seeds anything
    if shared is None:
        model = get_peft_model(model, config)  # auto resolved to its layers
    elif first:
        model = get_peft_model(model, config, adapter_name=adapter)
    else:
        model.add_adapter(adapter, config)
    trainable, total = model.get_nb_trainable_parameters()
    if shared is not None:
        model.set_adapter(adapter)  # trainable now, the others frozen
        trainable, total = model.get_nb_trainable_parameters()
        total -= sum(  # the other runs' adapters are not part of this run's model
            p.numel() for n, p in model.named_parameters() if "lora_" in n and not p.requires_grad
        )
    log.emit("log", level="info", message=f"LoRA: {trainable:,} trainable of {total:,} parameters")
    return model, trainable


def stats_dict(stats: DataStats | Mapping[str, Any]) -> dict:
    """The data statistics as a plain dict (for the run log and the model card)."""
    import dataclasses

    return dataclasses.asdict(stats) if dataclasses.is_dataclass(stats) else dict(stats)
