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

`build_trainer` (engine.training.setup) is everything up to `trainer.train()` (the benchmarks time
exactly that). The stages after it, `start_evals`, `train`, `deliver` (samples, adapter or model,
model card, the Eval nodes' scores) and `export`, are what a group of runs sharing one base
(engine.training.group) runs for each of its runs too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import Trainer
from transformers.trainer_utils import get_last_checkpoint

from engine.control import Control
from engine.data.templates import stop_token_ids
from engine.errors import RunCancelled, RunPaused, RunPruned
from engine.events import EventLog
from engine.export import artifacts, modelcard
from engine.rundir import ADAPTER, CHECKPOINTS, MODEL
from engine.spec import JobSpec
from engine.training.best import deliver_best
from engine.training.final_eval import RunEvals
from engine.training.full import add_base_files, save_model
from engine.training.setup import Setup, build_trainer, max_length, stats_dict

SAMPLE_MAX_NEW_TOKENS = 64


def run_job(spec: JobSpec, run_dir: Path, log: EventLog, control: Control) -> list[str]:
    """Train one run into `run_dir` and return its warnings; raises RunPaused / RunCancelled /
    RunPruned when asked to stop."""
    run_dir = Path(run_dir)
    setup = build_trainer(spec, run_dir, log, control)
    evals = start_evals(spec, run_dir, setup, log, control)
    train(setup, run_dir, log, control)
    warnings = deliver(spec, run_dir, setup, log, evals)
    if warnings is None:  # a DDP rank other than 0: rank 0 delivers
        return []
    return export(spec, run_dir, setup, log, control, evals, warnings)


def start_evals(
    spec: JobSpec, run_dir: Path, setup: Setup, log: EventLog, control: Control
) -> RunEvals | None:
    """The Eval nodes' sets, checked now (bad input fails before training) and scored when
    training ends; None for a run without Eval nodes."""
    if not spec.evals:
        return None
    seq = max_length(spec, setup.model.config)
    return RunEvals.start(spec, run_dir, setup, seq, log, control)


def train(setup: Setup, run_dir: Path, log: EventLog, control: Control) -> None:
    """Train, from the run's last complete checkpoint when it has one; raises RunPaused,
    RunCancelled or RunPruned when the control file asked to stop that way."""
    trainer, callback = setup.trainer, setup.callback
    last = (
        get_last_checkpoint(trainer.args.output_dir)
        if (Path(run_dir) / CHECKPOINTS).is_dir()
        else None
    )
    if last:
        log.emit("log", level="info", message=f"Resuming from {Path(last).name}")
    trainer.train(resume_from_checkpoint=last)
    if callback.stopped == "pause":
        raise RunPaused()
    if callback.stopped == "cancel":
        raise RunCancelled()
    if callback.stopped == "prune":
        raise RunPruned(control.reason or "pruned by its sweep")


def deliver(
    spec: JobSpec, run_dir: Path, setup: Setup, log: EventLog, evals: RunEvals | None
) -> list[str] | None:
    """After training (`evaluating`): the final evaluation, the samples, the adapter (or a full
    run's model) with its model card, and the Eval nodes' scores on it; returns the warnings so
    far, or None on a DDP rank other than 0 (which only joins the final evaluation)."""
    trainer, model, tokenizer, data = setup.trainer, setup.model, setup.tokenizer, setup.data
    callback, device, has_eval = setup.callback, setup.device, setup.has_eval
    log.emit("status", state="evaluating")
    final_metrics = {"train_loss": _last_loss(trainer)}
    if not trainer.is_world_process_zero():
        if has_eval and not _evaluated_at_end(trainer):
            trainer.evaluate()  # a collective: every rank takes part
        return None
    if has_eval:
        # the end-of-epoch evaluation (or the one at the stop step) may already be the final one
        last_eval = _evaluated_at_end(trainer) or trainer.evaluate()
        if callback.stopped == "stop":
            last_eval = deliver_best(
                trainer, model, run_dir, log, last_eval, spec.lora.full, setup.adapter
            )
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
        out = save_adapter(model, tokenizer, run_dir / ADAPTER, data.chat_template, setup.adapter)
    modelcard.write(
        out / "README.md",
        spec,
        stats_dict(data.stats),
        final_metrics,
        samples,
        data.template_origin,
        setup.trainable,
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
    return warnings


def export(
    spec: JobSpec,
    run_dir: Path,
    setup: Setup,
    log: EventLog,
    control: Control,
    evals: RunEvals | None,
    warnings: list[str],
) -> list[str]:
    """The `exporting` state: what the Export node asks for (from the saved adapter or model,
    not the one in memory), and the Eval nodes' scores on the GGUF; returns all the run's
    warnings."""
    trainer = setup.trainer
    log.emit("status", state="exporting")
    from engine.export.pipeline import export_after_training

    warnings = warnings + export_after_training(
        spec, run_dir, log, cancel=lambda: control.action() == "cancel"
    )
    if evals is not None:
        warnings += evals.score_gguf()
    if setup.callback.stopped == "stop":
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


def save_adapter(
    model: Any, tokenizer: Any, out: Path, chat_template: str, adapter: str | None = None
) -> Path:
    """The PEFT adapter with tokenizer files and the exact chat template the run trained with;
    `adapter` names the run's adapter in a base that several runs share (saved alone)."""
    out.mkdir(parents=True, exist_ok=True)
    if adapter is None:
        model.save_pretrained(out)
    else:
        save_named_adapter(model, adapter, out)
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(out)
    (out / "chat_template.jinja").write_text(chat_template, encoding="utf-8")
    return out


def save_named_adapter(model: Any, adapter: str, out: Path) -> None:
    """Save one of a PeftModel's named adapters into `out` exactly as a model's only adapter
    is saved (peft writes a named adapter into a subfolder of that name: moved up), so it loads
    with `PeftModel.from_pretrained(base, out)` and a run of its own resumes from it."""
    import shutil

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, selected_adapters=[adapter])
    folder = out / adapter
    if adapter == "default":  # peft writes its default adapter into `out` itself
        return
    for path in folder.iterdir():
        path.replace(out / path.name)
    shutil.rmtree(folder, ignore_errors=True)
