"""One training run, start to finish: `run_job(spec, run_dir, log, control)`.

Loads the base model and tokenizer, prepares the data, attaches LoRA (4-bit base for QLoRA), trains
with transformers' Trainer while a callback writes metric/progress/eval events and obeys control
requests, then writes three inference samples and the adapter folder and scores the Eval nodes'
sets on it (engine.training.final_eval). With full fine-tuning (LoraSpec.full) no adapter is
attached: every weight trains (fp32 master weights), and the run delivers the whole model folder,
`model/` (engine.training.full). Runs inside the worker process (`engine.training.worker`);
imports torch.

A `stop` ends training and delivers the adapter (or model) as for a finished run. With an eval
split that is the one with the lowest eval loss seen (engine.training.best). Without an eval
split, stop delivers the current weights.

The method (engine.spec.MethodSpec) picks the data (engine.data.method_data) and the trainer:
transformers' Trainer for sft and pretrain, TRL's for dpo, orpo, simpo, kto and grpo
(engine.training.methods); the rest of a run is the same for every method.

`build_trainer` is everything up to `trainer.train()` (the benchmarks time exactly that), with the
speed switches of TrainingSpec (engine.training.options: attention kernel, Liger kernels, gradient
checkpointing) and padding-free batches (`packing`); the event callback is
engine.training.callback.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, set_seed
from transformers.trainer_callback import PrinterCallback
from transformers.trainer_utils import get_last_checkpoint

from engine.control import Control
from engine.data.templates import stop_token_ids
from engine.errors import RunCancelled, RunPaused
from engine.events import EventLog
from engine.export import artifacts, modelcard
from engine.models.sources import (
    check_target_modules,
    load_config,
    load_model,
    load_tokenizer,
    resolve_source,
)
from engine.rundir import ADAPTER, CHECKPOINTS, MODEL
from engine.spec import JobSpec
from engine.training.best import BestCheckpoint, deliver_best
from engine.training.callback import EventCallback
from engine.training.final_eval import RunEvals
from engine.training.full import (
    add_base_files,
    parameter_count,
    reference_copy,
    save_model,
    saved_dtype,
    trl_reference,
)
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

SAMPLE_MAX_NEW_TOKENS = 64


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


def max_length(spec: JobSpec, config: Any) -> int:
    """The run's max sequence length: the spec's, else min(the model's context, 2048)."""
    context = getattr(config, "max_position_embeddings", None) or 2048
    return spec.training.max_seq_length or min(context, 2048)


def build_trainer(spec: JobSpec, run_dir: Path, log: EventLog, control: Control) -> Setup:
    """Load model and tokenizer, prepare the data, attach LoRA (or, for full fine-tuning, train
    every weight) and build the Trainer for a run, with its speed options (attention kernel,
    Liger, padding-free batches, checkpointing)."""
    from engine.data.method_data import prepare_run_data
    from engine.data.prepare import make_collator
    from engine.plan.estimate import choose_mode, use_checkpointing
    from engine.plan.memory import needs_reference
    from engine.plan.shape import model_shape

    run_dir = Path(run_dir)
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
        max_len = max_length(spec, config)
        data = prepare_run_data(spec, tokenizer, max_len)  # per method: engine.data.method_data
    gpu_gib = gpu_total_gib(device)
    shape = model_shape(config) if device == "cuda" else None  # only a GPU run's plan needs it
    mode, reason = choose_mode(spec, device, shape, gpu_gib)
    log.emit("log", level="info", message=f"Mode {mode}: {reason}")
    model = load_model(
        spec.base_model,
        resolved,
        weights_dtype(spec, dtype),  # fp32 master weights for full fine-tuning
        quantization_config(spec, device, mode),
        device_map={"": 0} if mode == "qlora" else None,
        attn_implementation=attention,
        config=config,
    )
    if data is None:
        max_len = max_length(spec, model.config)
        data = prepare_run_data(spec, tokenizer, max_len)
    checkpointing, why = use_checkpointing(spec, device, shape, mode == "qlora", max_len, gpu_gib)
    log.emit("log", level="info", message=f"Attention {attention}; {why}")

    tokenizer.chat_template = data.chat_template
    if data.added_tokens:  # a pad token the vocabulary lacked
        model.resize_token_embeddings(len(tokenizer))
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
        model, trainable = attach_lora(spec, model, mode, log)
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
        trainer = Trainer(
            model=model,
            args=arguments(),
            train_dataset=data.train,
            eval_dataset=data.eval if has_eval else None,
            data_collator=make_collator(tokenizer, spec.training.packing),
            processing_class=tokenizer,
            callbacks=callbacks,
        )
    trainer.remove_callback(PrinterCallback)
    save = saved_dtype(config, gguf_base=resolved.kind == "gguf")
    return Setup(trainer, model, tokenizer, data, callback, device, mode, trainable, has_eval, save)


def attach_lora(spec: JobSpec, model: Any, mode: str, log: EventLog) -> tuple[Any, int]:
    """The peft model with the run's LoRA adapter (on a base prepared for 4-bit training in
    QLoRA mode), and its number of trainable parameters."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    check_target_modules(model, spec.lora.target_modules)
    if mode == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    set_seed(spec.training.seed)  # LoRA weights are drawn here, before Trainer seeds anything
    model = get_peft_model(model, lora_config(spec, model))  # auto resolved to its layers
    trainable, total = model.get_nb_trainable_parameters()
    log.emit("log", level="info", message=f"LoRA: {trainable:,} trainable of {total:,} parameters")
    return model, trainable


def run_job(spec: JobSpec, run_dir: Path, log: EventLog, control: Control) -> list[str]:
    """Train one run into `run_dir` and return its warnings; raises RunPaused / RunCancelled
    when asked to stop."""
    run_dir = Path(run_dir)
    setup = build_trainer(spec, run_dir, log, control)
    trainer, model, tokenizer, data = setup.trainer, setup.model, setup.tokenizer, setup.data
    callback, device = setup.callback, setup.device
    has_eval, trainable = setup.has_eval, setup.trainable
    evals = None  # the Eval nodes' sets, checked now, scored when training ends
    if spec.evals:
        seq = max_length(spec, model.config)
        evals = RunEvals.start(spec, run_dir, setup, seq, log, control)
    last = (
        get_last_checkpoint(trainer.args.output_dir) if (run_dir / CHECKPOINTS).is_dir() else None
    )
    if last:
        log.emit("log", level="info", message=f"Resuming from {Path(last).name}")
    trainer.train(resume_from_checkpoint=last)
    if callback.stopped == "pause":
        raise RunPaused()
    if callback.stopped == "cancel":
        raise RunCancelled()

    log.emit("status", state="evaluating")
    final_metrics = {"train_loss": _last_loss(trainer)}
    if not trainer.is_world_process_zero():
        if has_eval and not _evaluated_at_end(trainer):
            trainer.evaluate()  # a collective: every rank takes part
        return []
    if has_eval:
        # the end-of-epoch evaluation (or the one at the stop step) may already be the final one
        last_eval = _evaluated_at_end(trainer) or trainer.evaluate()
        if callback.stopped == "stop":
            last_eval = deliver_best(trainer, model, run_dir, log, last_eval, spec.lora.full)
        final_metrics.update(last_eval)
    elif callback.stopped == "stop":
        step = trainer.state.global_step
        log.emit(
            "log",
            level="info",
            message=f"Stopped at step {step}: delivering the current weights (no eval split to "
            "choose a best checkpoint by)",
            step=step,
        )
    samples = generate_samples(model, tokenizer, data.sample_prompts, device)
    for sample in samples:
        log.emit("sample", **sample)
    if spec.lora.full:  # the whole model: what a chained run and the export start from
        out = save_model(model, tokenizer, run_dir / MODEL, data.chat_template, setup.save_dtype)
        add_base_files(spec, out)
    else:
        out = save_adapter(model, tokenizer, run_dir / ADAPTER, data.chat_template)
    modelcard.write(
        out / "README.md",
        spec,
        stats_dict(data.stats),
        final_metrics,
        samples,
        data.template_origin,
        trainable,
    )
    kind = "model_dir" if spec.lora.full else "adapter_dir"
    log.emit("artifact", **artifacts.describe_dir(out, kind))
    from engine.training.methods import CloseRewards

    warnings = [  # a GRPO judge that could not grade some completions
        w
        for cb in trainer.callback_handler.callbacks
        if isinstance(cb, CloseRewards)
        for w in cb.warnings()
    ]
    if evals is not None:  # the Eval nodes' sets, on the weights just saved
        at = {"step": trainer.state.global_step, "max_steps": trainer.state.max_steps}
        warnings += evals.evaluate(model, device, {**at, "epoch": trainer.state.epoch})

    log.emit("status", state="exporting")
    from engine.export.pipeline import export_after_training

    warnings += export_after_training(
        spec, run_dir, log, cancel=lambda: control.action() == "cancel"
    )
    if evals is not None:
        warnings += evals.score_gguf()
    if callback.stopped == "stop":
        warnings.insert(
            0,
            f"stopped early by the user at step {trainer.state.global_step} of "
            f"{trainer.state.max_steps}",
        )
    return warnings


def _evaluated_at_end(trainer: Trainer) -> dict | None:
    last = next((e for e in reversed(trainer.state.log_history) if "eval_loss" in e), None)
    return last if last and last.get("step") == trainer.state.global_step else None


def _last_loss(trainer: Trainer) -> float | None:
    for entry in reversed(trainer.state.log_history):
        if "loss" in entry:
            return entry["loss"]
    return None


def stats_dict(stats: DataStats | Mapping[str, Any]) -> dict:
    """The data statistics as a plain dict (for the run log and the model card)."""
    import dataclasses

    return dataclasses.asdict(stats) if dataclasses.is_dataclass(stats) else dict(stats)


@torch.no_grad()
def generate_samples(model: Any, tokenizer: Any, prompts: list[dict], device: str) -> list[dict]:
    """Greedy answers to the held-out prompts, rendered with the run's chat template."""
    model.eval()
    model.config.use_cache = True
    stop_ids = stop_token_ids(tokenizer, tokenizer.chat_template)
    samples = []
    for item in prompts[:3]:
        if "messages" in item:
            messages = item["messages"]
            ids = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
        else:  # plain-text data: continue the text
            messages = [{"role": "user", "content": item["text"]}]
            ids = tokenizer(item["text"], return_tensors="pt")
        input_ids = ids["input_ids"].to(model.device)
        out = model.generate(
            input_ids=input_ids,
            attention_mask=ids["attention_mask"].to(model.device),
            max_new_tokens=SAMPLE_MAX_NEW_TOKENS,
            do_sample=False,
            eos_token_id=stop_ids,
            pad_token_id=tokenizer.pad_token_id,
        )
        response = tokenizer.decode(out[0, input_ids.shape[1] :], skip_special_tokens=True)
        user = next(
            (m["content"] for m in reversed(messages) if m["role"] == "user"),
            messages[-1]["content"],
        )
        samples.append(
            {"prompt": user, "response": response.strip(), "reference": item.get("reference")}
        )
    model.config.use_cache = False
    return samples


def save_adapter(model: Any, tokenizer: Any, out: Path, chat_template: str) -> Path:
    """The PEFT adapter with tokenizer files and the exact chat template the run trained with."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(out)
    (out / "chat_template.jinja").write_text(chat_template, encoding="utf-8")
    return out
