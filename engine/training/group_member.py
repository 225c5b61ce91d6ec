"""One run of a group sharing a base model (engine.training.group): its set-up, its thread and
how it ends.

A `Member` is a run directory trained as a run of its own would be (engine.training.trainer's
stages: `train`, `deliver`, `export`), with its own Trainer (`MemberTrainer`: its checkpoints
hold only its adapter, laid out exactly as a run of its own's), its own event log, control file
and `worker.log`, and its own adapter in the shared model. `TurnCallback` hands the turn to the
next run at each optimizer step (engine.training.group_turns). How a member ends is written into
its own log as the single worker would (engine.training.worker): completed, paused, pruned,
cancelled, or failed with an `error` event; a member that *leaves* the group (an out-of-memory
split it, or it cannot share this base) writes no final state, so the supervisor runs it again
alone from its checkpoint.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer import TRAINING_ARGS_NAME

from engine.control import Control
from engine.data.templates import stop_token_ids
from engine.events import EventLog
from engine.rundir import (
    PID_FILE,
    SPEC_FILE,
    WORKER_LOG,
    describe_crash,
    end_with,
    log_file_handler,
    write_pid,
)
from engine.spec import JobSpec
from engine.training.group_turns import Turns, TurnState
from engine.training.setup import Opening, Setup, SharedBase, complete_setup, open_run
from engine.training.trainer import deliver, export, save_named_adapter, start_evals, train

if TYPE_CHECKING:
    from engine.training.final_eval import RunEvals

_current = threading.local()  # the member whose work this thread is doing (log routing)


class LeftGroup(Exception):
    """A member leaves the group without a final state, to be run alone (the reason says why)."""


class GroupState:
    """What the members of one group share: the turns, the stop signal, and an out-of-memory
    split once one happened."""

    def __init__(self, signalled: threading.Event | None = None) -> None:
        self.turns = Turns([])  # the rotation of the members that train (set when built)
        # set (by SIGTERM to the group): every member cancels
        self.signalled = signalled if signalled is not None else threading.Event()
        self.split: str | None = None  # why every member leaves at its next step


class MemberControl(Control):
    """A member's control file, plus the group's signal (a SIGTERM cancels every member)."""

    def __init__(self, run_dir: Path, signalled: threading.Event):
        super().__init__(run_dir)
        self._group_signal = signalled

    def action(self) -> str | None:
        """As Control.action, with the group's signal counting as cancel."""
        return "cancel" if self._group_signal.is_set() else super().action()


class MemberTrainer(Trainer):
    """A group member's Trainer: saves only its own adapter, in the checkpoint folder itself
    (peft would save every adapter of the shared model, the others in subfolders)."""

    def __init__(self, *args: Any, adapter_name: str, **kwargs: Any):
        self.adapter_name = adapter_name
        super().__init__(*args, **kwargs)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        save_named_adapter(self.model, self.adapter_name, Path(output_dir))
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))


class TurnCallback(TrainerCallback):
    """Hands the turn on as each optimizer step begins; after a step, stops the member with a
    checkpoint when the group is splitting (an out-of-memory in another member)."""

    def __init__(self, member: Member):
        self.member = member

    def on_step_begin(self, args, state, control, **kwargs):
        """Everything since this member's last step (its step, logs, evaluation, checkpoint)
        happened in its turn: let the next member step."""
        self.member.pass_turn()

    def on_step_end(self, args, state, control, **kwargs):
        """Leave at this step, with a checkpoint, when the group splits."""
        group = self.member.group
        if group.split and self.member.left is None:
            self.member.left = group.split
            control.should_save = True
            control.should_training_stop = True


class _MemberLogs(logging.Filter):
    """Passes the records made while a thread works for `member`."""

    def __init__(self, member: Member):
        super().__init__()
        self.member = member

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(_current, "member", None) is self.member


class Member:
    """One run of a group: its run directory, its adapter `name` in the shared model, its log,
    control and (once built) its trainer set-up."""

    def __init__(self, run_dir: Path, name: str, group: GroupState):
        self.run_dir = Path(run_dir)
        self.name = name  # its adapter's name in the shared model
        self.group = group
        self.control = MemberControl(self.run_dir, group.signalled)
        self.logger = logging.getLogger(f"tunegraph.group.{self.run_dir.name}")
        self.log: EventLog | None = None
        self.spec: JobSpec | None = None
        self.opening: Opening | None = None
        self.setup: Setup | None = None
        self.evals: RunEvals | None = None
        self.state: TurnState | None = None  # its own global state while another member steps
        self.settled = False  # its outcome is written (or it left the group)
        self.left: str | None = None  # why it leaves the group without a final state
        self._handler: logging.Handler | None = None

    # -- start and set-up (the group's main thread) ----------------------------------------------
    def start(self, pid: int, group_id: str) -> None:
        """Record the group's process as this run's worker, route its records to its own
        worker.log, open its event log and say `starting`."""
        write_pid(self.run_dir, pid)
        handler = log_file_handler(self.run_dir)
        handler.addFilter(_MemberLogs(self))
        logging.getLogger().addHandler(handler)
        self._handler = handler
        self.log = EventLog(self.run_dir / WORKER_LOG)
        self.log.emit("status", state="starting", pid=pid, group=group_id)

    def open(self) -> None:
        """Read the spec and do what a run does before its weights load (its data included)."""
        self.spec = JobSpec.load(self.run_dir / SPEC_FILE)
        self.opening = open_run(self.spec, self.log)

    def build(self, model: Any, shared: SharedBase) -> None:
        """Add this run's adapter to the shared `model` and build its Trainer; its random
        streams start where a run of its own's would at `trainer.train()`."""
        self.setup = complete_setup(
            self.spec,
            self.run_dir,
            self.log,
            self.control,
            self.opening,
            model,
            shared,
            adapter=self.name,
            trainer_class=partial(MemberTrainer, adapter_name=self.name),
        )
        self.setup.trainer.add_callback(TurnCallback(self))
        self.evals = start_evals(self.spec, self.run_dir, self.setup, self.log, self.control)
        self.state = TurnState.capture()

    # -- its thread ---------------------------------------------------------------------------
    def run(self) -> None:
        """The member's thread: wait for the first turn, train, deliver and export in turns,
        write how it ended, leave the rotation."""
        _current.member = self
        turns: Turns = self.group.turns
        turns.wait(self.name)
        try:
            self._take_turn()
            self.attempt(self._train_and_deliver)
        finally:
            self._leave_model()
            turns.leave(self.name)
            self.close()

    def pass_turn(self) -> None:
        """Save this member's own global state, let the others step, and take the turn back."""
        self.state = TurnState.capture()
        self.group.turns.pass_on(self.name)
        self._take_turn()

    def _take_turn(self) -> None:
        """Its random streams and gradient state back, its adapter the active (trainable) one."""
        self.state.restore()
        self.setup.model.set_adapter(self.name)

    def _train_and_deliver(self) -> list[str]:
        setup = self.setup
        train(setup, self.run_dir, self.log, self.control)
        if self.left:
            raise LeftGroup(self.left)
        model, tokenizer = setup.model, setup.tokenizer  # its own generation settings
        model.generation_config.eos_token_id = stop_token_ids(tokenizer, setup.data.chat_template)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        warnings = deliver(self.spec, self.run_dir, setup, self.log, self.evals)
        return export(self.spec, self.run_dir, setup, self.log, self.control, self.evals, warnings)

    # -- how it ends --------------------------------------------------------------------------
    def attempt(self, work: Callable[[], Any]) -> bool:
        """Run `work`; True when it returned. When it raised, the member's outcome is written
        (as the single worker writes it) and it is settled: False. A `work` returning a list of
        warnings completes the run."""
        with self.as_current():
            try:
                result = work()
            except BaseException as exc:  # noqa: BLE001 - each member ends in a readable state
                self.settle(exc)
                return False
            if isinstance(result, list):
                self.log.emit("status", state="completed", warnings=result)
                self.settled = True
            return True

    def settle(self, exc: BaseException) -> None:
        """Write how the exception `exc` ends this member, as engine.training.worker does."""
        log = self.log
        self.settled = True
        if isinstance(exc, LeftGroup):
            self.left = str(exc)
            log.emit(
                "log", level="warning", message=f"leaves its group: {exc}", left_group=str(exc)
            )
        elif isinstance(exc, torch.OutOfMemoryError) and self.group.turns.others(self.name):
            self.logger.error("out of memory in the group:\n%s", traceback.format_exc())
            reason = (
                f"run {self.run_dir.name} ran out of memory ({describe_crash(exc)['message']}); "
                "each run of the group is started again alone from its last checkpoint"
            )
            self.group.split = reason
            self.left = reason
            log.emit(
                "log", level="warning", message=f"leaves its group: {reason}", left_group=reason
            )
        else:  # paused, pruned, cancelled, failed: as a worker of its own ends
            end_with(exc, log, self.logger)

    def leave(self, reason: str) -> None:
        """Leave the group before training (it cannot share this base): no final state."""
        self.settle(LeftGroup(reason))
        self.close()

    def _leave_model(self) -> None:
        """Take this member's adapter out of the shared model (in its turn): its gradients of a
        step cut short go, and the adapter too while other members still train."""
        setup, self.setup = self.setup, None
        if setup is None:
            return
        model = setup.model
        for name, param in model.named_parameters():
            if f".{self.name}." in name:
                param.grad = None
        if self.group.turns.others(self.name):
            try:
                with warnings.catch_warnings():  # "was active": the next member sets its own
                    warnings.simplefilter("ignore", UserWarning)
                    model.delete_adapter(self.name)
            except (ValueError, AttributeError) as err:  # the memory stays; training goes on
                self.logger.warning("could not remove the adapter %s: %s", self.name, err)

    def close(self) -> None:
        """After its outcome: its worker.pid goes (the supervisor sees this run's worker
        gone while the group goes on), its log closes."""
        if not self.settled and self.log is not None:  # never left without a word
            self.settle(LeftGroup("the group ended before this run did"))
        (self.run_dir / PID_FILE).unlink(missing_ok=True)
        if self.log is not None:
            self.log.close()
            self.log = None
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    @contextmanager
    def as_current(self) -> Iterator[None]:
        """Route the log records made in this thread meanwhile to this member's worker.log."""
        before = getattr(_current, "member", None)
        _current.member = self
        try:
            yield
        finally:
            _current.member = before
