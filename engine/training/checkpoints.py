"""A run's checkpoint folders: which are complete (resumable) and clearing away torn ones.

The Trainer writes `checkpoints/checkpoint-<step>/` with `trainer_state.json` last, so a worker
killed while saving leaves a folder without it; the supervisor, the client (continue, resume) and
the cluster runs all decide from these helpers whether a run can be resumed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from engine.rundir import CHECKPOINTS


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's complete checkpoints, oldest step first.

    A worker killed while saving leaves a folder without `trainer_state.json` (the Trainer
    writes it last): that one cannot be resumed from and does not count.
    """
    folder = Path(run_dir) / CHECKPOINTS
    found = []
    for path in folder.glob("checkpoint-*") if folder.is_dir() else []:
        step = step_of(path)
        if step is not None and _complete_checkpoint(path):
            found.append((step, path))
    return [path for _, path in sorted(found)]


def step_of(path: Path) -> int | None:
    """The training step of a `checkpoint-N` folder (None for another name)."""
    name = Path(path).name
    step = name.removeprefix("checkpoint-")
    return int(step) if name.startswith("checkpoint-") and step.isdigit() else None


def _complete_checkpoint(path: Path) -> bool:
    try:
        json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        return True
    except (OSError, ValueError):
        return False


def has_checkpoint(run_dir: Path) -> bool:
    """True when the run can be resumed: it has a complete checkpoint."""
    return bool(checkpoints(run_dir))


def drop_torn_checkpoints(run_dir: Path) -> None:
    """Delete checkpoint folders a dead worker left half-written, so a new worker resumes from
    the latest complete one (the Trainer takes the highest-numbered folder)."""
    complete = set(checkpoints(run_dir))
    for path in (Path(run_dir) / CHECKPOINTS).glob("checkpoint-*"):
        if path.is_dir() and path not in complete:
            shutil.rmtree(path, ignore_errors=True)
