"""The Trainer callback of a run: Trainer logs become events, control requests become stops.

`EventCallback` writes `status` (training), `progress` (with an ETA from the last 20 steps),
`metric` (loss, learning rate, tokens/s, peak memory) and `eval` events, and after each step obeys
the run's control file: pause (save a checkpoint, then stop), cancel, stop early as a finished
run, or prune (a sweep's loser: save a checkpoint, then stop, delivering nothing). It also asks for a checkpoint when `save_minutes` have passed since the last one, so a crash
loses at most that much work. Under DDP every rank takes rank 0's decision (`agree`), so all stop
and save at the same step.

Test aid: `TUNEGRAPH_FAULT_OOM="STEP[:CONDITION]"` raises torch's OutOfMemoryError after step STEP,
as a GPU that ran out of memory would, so the supervisor's out-of-memory retries can be tested on a
CPU. CONDITION limits it to runs that would still run out: `batch>N` (micro-batch above N) or
`no-checkpointing` (gradient checkpointing off); without one it fires on every attempt.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import TrainerCallback

from engine.control import Control
from engine.events import EventLog, is_method_metric
from engine.hardware import GIB


class EventCallback(TrainerCallback):
    """Turns Trainer logs into events and control requests into stops (pause saves first)."""

    def __init__(self, log: EventLog, control: Control, device: str, save_minutes: float = 0.0):
        self.log = log
        self.ctl = control
        self.device = device
        self.save_every_s = save_minutes * 60
        self._last_save_t = time.time()
        self.stopped: str | None = None
        self._step_times: collections.deque[float] = collections.deque(maxlen=20)
        self._last_step_t: float | None = None
        self._last_tokens = 0
        self._last_log_t: float | None = None
        # more fields for each `eval` event (the Eval nodes' set losses), from the model
        self.eval_fields: Callable[[Any], dict] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        """Report `training` and the first progress event."""
        self.log.emit("status", state="training", device=device_label(self.device))
        self._last_step_t = self._last_log_t = self._last_save_t = time.time()
        self._last_tokens = state.num_input_tokens_seen or 0
        self.log.emit(
            "progress",
            step=state.global_step,
            max_steps=state.max_steps,
            eta_s=None,
            epoch=state.epoch or 0.0,
        )

    def on_step_end(self, args, state, control, **kwargs):
        """Report progress with an ETA, then act on a pause, cancel or stop request."""
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
        inject_out_of_memory(state.global_step, args)
        due = bool(self.save_every_s) and now - self._last_save_t >= self.save_every_s
        if agree_flag(due, args.device):
            control.should_save = True  # at least every save_minutes
        action = agree(self.ctl.action(), args.device)
        if action == "pause":
            control.should_save = True  # a checkpoint at this step, then stop
            control.should_training_stop = True
            self.stopped = "pause"
        elif action == "cancel":
            control.should_training_stop = True
            self.stopped = "cancel"
        elif action == "prune":  # a sweep's losing trial: keep a checkpoint, deliver nothing
            control.should_save = True
            control.should_training_stop = True
            self.stopped = "prune"
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

    def on_save(self, args, state, control, **kwargs):
        """A checkpoint was written: the save_minutes clock starts again."""
        self._last_save_t = time.time()

    def on_log(self, args, state, control, logs=None, **kwargs):
        """Turn the Trainer's logs into `eval` and `metric` events."""
        logs = dict(logs or {})
        if "eval_loss" in logs:
            extra = {
                k[5:]: v for k, v in logs.items() if k.startswith("eval_") and k != "eval_loss"
            }
            if self.eval_fields is not None and state.is_world_process_zero:
                extra.update(self.eval_fields(kwargs.get("model")))
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
            **method_metrics(logs),
        )


def method_metrics(logs: dict) -> dict:
    """The training method's own numbers in one Trainer log, under their TRL names
    (engine.events.is_method_metric names them; none for SFT)."""
    return {k: v for k, v in logs.items() if is_method_metric(k) and isinstance(v, (int, float))}


ACTION_CODES = (None, "pause", "cancel", "stop", "prune")


def agree(action: str | None, device: torch.device | str) -> str | None:
    """Under DDP, every rank takes rank 0's control decision, so all stop at the same step."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return action
    code = torch.tensor([ACTION_CODES.index(action)], device=device)
    dist.broadcast(code, src=0)
    return ACTION_CODES[int(code.item())]


def agree_flag(flag: bool, device: torch.device | str) -> bool:
    """Under DDP, every rank takes rank 0's yes or no (a time-based save must happen on all)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())


FAULT_OOM_ENV = "TUNEGRAPH_FAULT_OOM"


def inject_out_of_memory(step: int, args: object) -> None:
    """Raise torch.OutOfMemoryError after the step TUNEGRAPH_FAULT_OOM names (a test aid; see the
    module docstring), when its condition holds for this attempt's settings."""
    setting = os.environ.get(FAULT_OOM_ENV, "").strip()
    if not setting:
        return
    at, _, condition = setting.partition(":")
    if step != int(at):
        return
    batch = getattr(args, "per_device_train_batch_size", 1)
    checkpointing = bool(getattr(args, "activation_checkpointing", False))
    if condition.startswith("batch>") and batch <= int(condition[len("batch>") :]):
        return
    if condition == "no-checkpointing" and checkpointing:
        return
    raise torch.OutOfMemoryError(
        f"CUDA out of memory (injected by {FAULT_OOM_ENV}={setting} at step {step}, "
        f"micro-batch {batch}, checkpointing {'on' if checkpointing else 'off'})"
    )


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
        return round(torch.cuda.max_memory_reserved() / GIB, 3)
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
    except ImportError:  # Windows
        return None
