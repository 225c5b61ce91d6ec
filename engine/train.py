"""One training run, start to finish: `run_job(spec, run_dir, log, control)`.

Loads the base model and tokenizer, prepares the data, attaches LoRA (4-bit base for QLoRA), trains
with transformers' Trainer while a callback writes metric/progress/eval events and obeys control
requests, then writes three inference samples and the adapter folder. Runs inside the worker
process (`engine.worker`); imports torch.

`build_trainer` is everything up to `trainer.train()` (the benchmarks time exactly that), with the
speed switches of TrainingSpec: the attention kernel (auto = sdpa), Liger kernels, padding-free
batches (`packing`) and gradient checkpointing ("auto": on only when the memory estimate without
it would not fit the GPU, see engine.estimate.use_checkpointing). A switch that cannot work here
(flash-attn or liger-kernel missing, no GPU) fails before loading with a SpecError naming it.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    EarlyStoppingCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_callback import PrinterCallback
from transformers.trainer_utils import get_last_checkpoint

from engine import artifacts, modelcard
from engine.control import Control
from engine.errors import RunCancelled, RunPaused, SpecError
from engine.events import EventLog
from engine.models import check_target_modules, load_model, load_tokenizer, resolve_source
from engine.spec import JobSpec

CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"
SAMPLE_MAX_NEW_TOKENS = 64


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


def quantization_config(spec: JobSpec, device: str, mode: str):
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


class EventCallback(TrainerCallback):
    """Turns Trainer logs into events and control requests into stops (pause saves first)."""

    def __init__(self, log: EventLog, control: Control, device: str):
        self.log = log
        self.ctl = control
        self.device = device
        self.stopped: str | None = None
        self._step_times: collections.deque[float] = collections.deque(maxlen=20)
        self._last_step_t: float | None = None
        self._last_tokens = 0
        self._last_log_t: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.log.emit("status", state="training", device=device_label(self.device))
        self._last_step_t = self._last_log_t = time.time()
        self._last_tokens = state.num_input_tokens_seen or 0
        self.log.emit(
            "progress",
            step=state.global_step,
            max_steps=state.max_steps,
            eta_s=None,
            epoch=state.epoch or 0.0,
        )

    def on_step_end(self, args, state, control, **kwargs):
        now = time.time()
        if self._last_step_t is not None:
            self._step_times.append(now - self._last_step_t)
        self._last_step_t = now
        eta = None
        if self._step_times:
            per_step = sum(self._step_times) / len(self._step_times)
            eta = round(per_step * max(state.max_steps - state.global_step, 0), 1)
        self.log.emit(
            "progress",
            step=state.global_step,
            max_steps=state.max_steps,
            eta_s=eta,
            epoch=round(state.epoch or 0.0, 4),
        )
        action = agree(self.ctl.action(), args.device)
        if action == "pause":
            control.should_save = True  # a checkpoint at this step, then stop
            control.should_training_stop = True
            self.stopped = "pause"
        elif action == "cancel":
            control.should_training_stop = True
            self.stopped = "cancel"
        elif action == "stop" and self.stopped != "stop":  # end early, as a finished run
            control.should_training_stop = True
            control.should_save = True
            control.should_evaluate = bool(args.eval_strategy != "no")
            self.stopped = "stop"
            self.log.emit(
                "log",
                level="info",
                message=f"Stopped early by the user at step {state.global_step}",
            )

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        if "eval_loss" in logs:
            extra = {
                k[5:]: v for k, v in logs.items() if k.startswith("eval_") and k != "eval_loss"
            }
            self.log.emit(
                "eval",
                step=state.global_step,
                eval_loss=logs["eval_loss"],
                epoch=state.epoch,
                **extra,
            )
            return
        if "loss" not in logs:
            return
        now = time.time()
        tokens = state.num_input_tokens_seen or 0
        span = now - (self._last_log_t or now)
        tokens_per_s = (tokens - self._last_tokens) / span if span > 0 else None
        self._last_log_t, self._last_tokens = now, tokens
        self.log.emit(
            "metric",
            step=state.global_step,
            epoch=state.epoch,
            loss=logs["loss"],
            grad_norm=logs.get("grad_norm"),
            lr=logs.get("learning_rate"),
            tokens_per_s=tokens_per_s,
            tokens_seen=tokens,
            peak_mem_gib=peak_memory_gib(self.device),
        )


ACTION_CODES = (None, "pause", "cancel", "stop")


def agree(action: str | None, device) -> str | None:
    """Under DDP, every rank takes rank 0's control decision, so all stop at the same step."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return action
    code = torch.tensor([ACTION_CODES.index(action)], device=device)
    dist.broadcast(code, src=0)
    return ACTION_CODES[int(code.item())]


def device_label(device: str) -> str:
    """'cpu' or 'cuda:N' with N the machine's GPU index (the supervisor passes its placement)."""
    if device != "cuda":
        return device
    import os

    ids = os.environ.get("TUNEGRAPH_GPU_IDS") or os.environ.get("CUDA_VISIBLE_DEVICES") or "0"
    return "cuda:" + ids.split(",")[0]


def peak_memory_gib(device: str) -> float | None:
    """Peak memory of this process on its device: CUDA reserved, or resident set on the CPU."""
    if device == "cuda":
        return round(torch.cuda.max_memory_reserved() / 2**30, 3)
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
    except ImportError:  # Windows
        return None


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
    dtype,
    has_eval: bool,
    checkpointing: bool | None = None,
) -> TrainingArguments:
    """The Trainer's arguments for a run; `checkpointing` None = "on" only when chosen so."""
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
    gc = t.gradient_checkpointing == "on" if checkpointing is None else checkpointing
    return TrainingArguments(
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
        save_total_limit=t.save_total_limit,
        eval_strategy=eval_strategy,
        eval_steps=t.eval_steps or None,
        load_best_model_at_end=best,
        metric_for_best_model="eval_loss" if best else None,
        greater_is_better=False if best else None,
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
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        save_only_model=False,
        log_level="warning",
    )


@dataclass
class Setup:
    """Everything `build_trainer` prepared for one run (the benchmarks time `trainer.train()`)."""

    trainer: Trainer
    model: Any
    tokenizer: Any
    data: Any  # engine.data.PreparedData
    callback: EventCallback
    device: str
    mode: str
    trainable: int
    has_eval: bool


def build_trainer(spec: JobSpec, run_dir: Path, log: EventLog, control: Control) -> Setup:
    """Load model and tokenizer, prepare the data, attach LoRA and build the Trainer for a run,
    with its speed options (attention kernel, Liger, padding-free batches, checkpointing)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from engine.data import make_collator, prepare_datasets
    from engine.estimate import choose_mode

    run_dir = Path(run_dir)
    spec.validate()
    device = pick_device(spec)
    dtype = pick_dtype(spec, device)
    attention = attention_kernel(spec, device)
    check_liger(spec, device)  # before the slow loading: a missing package fails at once
    resolved = resolve_source(spec.base_model)
    log.emit("log", level="info", message=f"Loading {spec.base_model.source} on {device}")
    tokenizer = load_tokenizer(spec.base_model, resolved)
    mode, reason = choose_mode(spec, device, resolved)
    log.emit("log", level="info", message=f"Mode {mode}: {reason}")
    model = load_model(
        spec.base_model,
        resolved,
        dtype,
        quantization_config(spec, device, mode),
        device_map={"": 0} if mode == "qlora" else None,
        attn_implementation=attention,
    )
    context = getattr(model.config, "max_position_embeddings", None) or 2048
    max_len = spec.training.max_seq_length or min(context, 2048)
    checkpointing, why = checkpointing_for(spec, device, model.config, mode, max_len)
    log.emit("log", level="info", message=f"Attention {attention}; {why}")

    data = prepare_datasets(spec, tokenizer, max_len)
    tokenizer.chat_template = data.chat_template
    if data.added_tokens:  # a pad token the vocabulary lacked
        model.resize_token_embeddings(len(tokenizer))
    model.generation_config.eos_token_id = end_of_turn_ids(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    for note in data.notes:
        log.emit("log", level="info", message=note)
    for warning in data.stats.warnings:
        log.emit("log", level="warning", message=warning)
    log.emit("log", level="info", message="Data: " + json.dumps(stats_dict(data.stats)))

    check_target_modules(model, spec.lora.target_modules)
    if mode == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    set_seed(spec.training.seed)  # LoRA weights are drawn here, before Trainer seeds anything
    lora = LoraConfig(
        r=spec.lora.r,
        lora_alpha=spec.lora.alpha,
        lora_dropout=spec.lora.dropout,
        target_modules=_targets(spec.lora.target_modules),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    model.config.use_cache = False  # padding-free batches must not see a KV cache
    trainable, total = model.get_nb_trainable_parameters()
    log.emit("log", level="info", message=f"LoRA: {trainable:,} trainable of {total:,} parameters")

    has_eval = data.eval is not None and len(data.eval) > 0
    args = training_arguments(spec, run_dir, device, dtype, has_eval, checkpointing)
    callback = EventCallback(log, control, device)
    callbacks: list[TrainerCallback] = [callback]
    if spec.training.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(spec.training.early_stopping_patience))
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval if has_eval else None,
        data_collator=make_collator(tokenizer, spec.training.packing),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)
    return Setup(trainer, model, tokenizer, data, callback, device, mode, trainable, has_eval)


def checkpointing_for(spec: JobSpec, device: str, config, mode: str, seq_len: int):
    """(gradient checkpointing on?, why), from the estimate when the spec says auto."""
    from engine.estimate import model_shape, use_checkpointing

    shape, total = None, None
    if spec.training.gradient_checkpointing == "auto" and device == "cuda":
        shape = model_shape(config)
        total = torch.cuda.get_device_properties(0).total_memory / 2**30
    return use_checkpointing(spec, device, shape, mode == "qlora", seq_len, total)


def run_job(spec: JobSpec, run_dir: Path, log: EventLog, control: Control) -> list[str]:
    """Train one run into `run_dir` and return its warnings; raises RunPaused / RunCancelled
    when asked to stop."""
    run_dir = Path(run_dir)
    setup = build_trainer(spec, run_dir, log, control)
    trainer, model, tokenizer, data = setup.trainer, setup.model, setup.tokenizer, setup.data
    callback, device = setup.callback, setup.device
    has_eval, trainable = setup.has_eval, setup.trainable
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
        last_eval = _evaluated_at_end(trainer)
        # the end-of-epoch evaluation may already have been the final one
        final_metrics.update(last_eval or trainer.evaluate())
    samples = generate_samples(model, tokenizer, data.sample_prompts, device)
    for sample in samples:
        log.emit("sample", **sample)
    adapter_dir = save_adapter(model, tokenizer, run_dir / ADAPTER, data.chat_template)
    modelcard.write(
        adapter_dir / "README.md",
        spec,
        stats_dict(data.stats),
        final_metrics,
        samples,
        data.template_origin,
        trainable,
    )
    log.emit("artifact", **artifacts.describe_dir(adapter_dir, "adapter_dir"))

    log.emit("status", state="exporting")
    from engine.export import export_after_training

    warnings = export_after_training(
        spec, run_dir, log, cancel=lambda: control.action() == "cancel"
    )
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


def _targets(targets: list[str]):
    return "all-linear" if "all-linear" in targets else list(targets)


def _last_loss(trainer: Trainer) -> float | None:
    for entry in reversed(trainer.state.log_history):
        if "loss" in entry:
            return entry["loss"]
    return None


def stats_dict(stats) -> dict:
    import dataclasses

    return dataclasses.asdict(stats) if dataclasses.is_dataclass(stats) else dict(stats)


@torch.no_grad()
def generate_samples(model, tokenizer, prompts: list[dict], device: str) -> list[dict]:
    """Greedy answers to the held-out prompts, rendered with the run's chat template."""
    model.eval()
    model.config.use_cache = True
    stop_ids = end_of_turn_ids(tokenizer)
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


def end_of_turn_ids(tokenizer) -> list[int]:
    """EOS plus the family's end-of-turn tokens that exist in this vocabulary."""
    ids = {tokenizer.eos_token_id}
    for text in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>"):
        tid = tokenizer.convert_tokens_to_ids(text)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return sorted(i for i in ids if i is not None)


def save_adapter(model, tokenizer, out: Path, chat_template: str) -> Path:
    """The PEFT adapter with tokenizer files and the exact chat template the run trained with."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(out)
    (out / "chat_template.jinja").write_text(chat_template, encoding="utf-8")
    return out
