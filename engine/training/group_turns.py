"""Turn-taking over one shared model: the runs of a group (engine.training.group) step in turn.

Every run of a group trains in its own thread with its own Trainer, but only one thread at a
time touches the model and the process-wide state (the active adapter, the random number
generators, the autograd graph): the one holding the turn. `Turns` is a round-robin baton: a run
hands the turn to the next run of the rotation and waits until it comes back; a run that is done
(finished, paused, failed) leaves the rotation.

`TurnState` is what of the process's global state a run must keep as its own, saved when it
hands the turn over and restored when it gets it back: its random number streams (torch's CPU
and CUDA generators, Python's and NumPy's), so its dropout, sampling and data order draw from
its own stream exactly as in a process of its own; and accelerate's gradient state, one for the
whole process, whose `sync_gradients` a Trainer sets for its next micro-batch just before the
step begins (where the turn changes hands): without its own copy, a run whose next step
accumulates gradients would make the next run's optimizer skip its step.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


class Turns:
    """A round-robin baton among named members: exactly one holds the turn at a time."""

    def __init__(self, names: list[str]):
        self._cond = threading.Condition()
        self._order = list(names)
        self._holder: str | None = self._order[0] if self._order else None

    @property
    def holder(self) -> str | None:
        """The member whose turn it is (None once every member has left)."""
        with self._cond:
            return self._holder

    def wait(self, name: str) -> None:
        """Block until it is `name`'s turn."""
        with self._cond:
            self._cond.wait_for(lambda: self._holder == name)

    def pass_on(self, name: str) -> None:
        """`name` (holding the turn) hands it to the next member of the rotation and waits until
        it is its turn again; alone in the rotation, it keeps the turn."""
        with self._cond:
            if self._holder != name:
                raise RuntimeError(f"{name} passed a turn it does not hold ({self._holder} does)")
            self._holder = self._next_after(name)
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._holder == name)

    def leave(self, name: str) -> None:
        """`name` leaves the rotation; when it held the turn, the next member gets it."""
        with self._cond:
            if name not in self._order:
                return
            following = self._next_after(name)
            self._order.remove(name)
            if self._holder == name:
                self._holder = following if self._order else None
            self._cond.notify_all()

    def others(self, name: str) -> bool:
        """Whether members other than `name` are still in the rotation."""
        with self._cond:
            return any(other != name for other in self._order)

    def _next_after(self, name: str) -> str:
        index = self._order.index(name)
        return self._order[(index + 1) % len(self._order)]


@dataclass
class TurnState:
    """The process-wide state one member has as its own: its random number streams, and
    accelerate's gradient state (shared by every Accelerator of the process: whether the next
    optimizer step syncs and steps, the dataloaders being iterated)."""

    torch_cpu: torch.Tensor
    torch_cuda: list[torch.Tensor] | None
    python: Any
    numpy: Any
    gradient: dict

    @classmethod
    def capture(cls) -> TurnState:
        """The state now."""
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        gradient = {
            key: list(value) if isinstance(value, list) else value
            for key, value in _gradient_state().items()
        }
        return cls(torch.get_rng_state(), cuda, random.getstate(), np.random.get_state(), gradient)

    def restore(self) -> None:
        """Put this state back."""
        torch.set_rng_state(self.torch_cpu)
        if self.torch_cuda is not None:
            torch.cuda.set_rng_state_all(self.torch_cuda)
        random.setstate(self.python)
        np.random.set_state(self.numpy)
        shared = _gradient_state()
        shared.clear()
        shared.update(
            {
                key: list(value) if isinstance(value, list) else value
                for key, value in self.gradient.items()
            }
        )


def _gradient_state() -> dict:
    """accelerate's GradientState, a dict every instance shares (a Borg)."""
    from accelerate.state import GradientState

    return GradientState._shared_state
