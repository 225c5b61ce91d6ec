"""A `stop` with an eval split delivers the weights with the lowest eval loss seen.

Every evaluation that sets a new lowest eval loss writes a checkpoint at its step
(`BestCheckpoint`; the Trainer keeps that checkpoint through rotation), the stop step is
evaluated so the current weights compete, and `deliver_best` loads the winner into the model
before the samples and the save (the adapter of a LoRA run, the whole model of a full
fine-tuning run), saying in a `log` event which it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback

from engine.events import EventLog
from engine.rundir import ADAPTER_WEIGHTS
from engine.training.callback import EventCallback
from engine.training.checkpoints import checkpoints, step_of
from engine.training.full import has_model_weights, load_checkpoint_weights


class BestCheckpoint(TrainerCallback):
    """For a run with an eval split: the checkpoints a `stop` chooses its weights from.

    An evaluation that sets a new lowest eval loss writes a checkpoint at its step (the Trainer
    saves right after evaluating, and keeps its best checkpoint through rotation), and the step
    at which the run is stopped is evaluated and saved, so the current weights compete too.
    """

    def __init__(self, events: EventCallback):
        self.events = events  # its `stopped` is the same on every DDP rank
        self._stop_seen = False

    def on_step_end(self, args, state, control, **kwargs):
        """At the stop step: evaluate and save before training ends."""
        if self.events.stopped == "stop" and not self._stop_seen:
            self._stop_seen = True
            control.should_evaluate = True
            control.should_save = True

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        """A new lowest eval loss: save a checkpoint at this step."""
        loss = (metrics or {}).get("eval_loss")
        if loss is not None and (state.best_metric is None or loss < state.best_metric):
            control.should_save = True


def deliver_best(
    trainer: Trainer,
    model: Any,
    run_dir: Path,
    log: EventLog,
    current: dict,
    full: bool = False,
    adapter: str | None = None,
) -> dict:
    """After a `stop`: put the weights with the lowest eval loss seen into `model`.

    `current` is the evaluation at the stop step. The candidates are the evaluations of this run
    (its resumed attempts included) whose step still has a complete checkpoint; a lower loss
    than the current weights' loads that checkpoint's adapter (`full`: the whole model's
    weights; `adapter`: the run's named adapter in a base several runs share). A `log` event
    says which checkpoint is delivered and its eval loss; returns that evaluation's metrics.
    """
    step = trainer.state.global_step
    saved = {step_of(path): path for path in checkpoints(run_dir)}
    best_step, best = step, current
    for entry in trainer.state.log_history:
        at = entry.get("step")
        if "eval_loss" not in entry or at == step or at not in saved:
            continue
        if not _has_weights(saved[at], full):
            continue
        if entry["eval_loss"] < best["eval_loss"]:
            best_step, best = at, entry
    loss = best["eval_loss"]
    if best_step == step:
        name = saved[step].name if step in saved else None
        where = f"the current weights (step {step}" + (f", {name})" if name else ")")
        log.emit(
            "log",
            level="info",
            message=f"Stopped at step {step}: delivering {where}, the lowest eval loss seen "
            f"({loss:.4f})",
            checkpoint=name,
            step=step,
            eval_loss=loss,
        )
        return current
    path = saved[best_step]
    if full:
        load_checkpoint_weights(model, path)
    else:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        named = {"adapter_name": adapter} if adapter else {}  # a base shared by several runs
        set_peft_model_state_dict(model, load_file(path / ADAPTER_WEIGHTS), **named)
    log.emit(
        "log",
        level="info",
        message=f"Stopped at step {step}: delivering {path.name}, the lowest eval loss seen "
        f"({loss:.4f}; the current weights had {current['eval_loss']:.4f})",
        checkpoint=path.name,
        step=best_step,
        eval_loss=loss,
    )
    return best


def _has_weights(checkpoint: Path, full: bool) -> bool:
    """Whether a checkpoint holds what a delivery loads: the whole model, or the adapter."""
    return has_model_weights(checkpoint) if full else (checkpoint / ADAPTER_WEIGHTS).is_file()
