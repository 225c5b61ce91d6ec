"""The event-log codec: one JSON object per line with `seq`, `ts` and `kind`, one writer per file.

`events.jsonl` is written only by the worker, `supervisor.jsonl` only by the supervisor. Both use
`EventLog` to append and `read_events` to read (a torn last line is ignored). The fields each kind
must carry are declared once in `KINDS`; `EventLog.emit` checks them so a typo fails loudly in tests
rather than producing a log the UI cannot read.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.rundir import SUPERVISOR_LOG, WORKER_LOG

# kind -> fields every event of that kind carries (more may follow)
KINDS: dict[str, tuple[str, ...]] = {
    "status": ("state",),
    "metric": ("step",),
    "eval": (),  # `step` (during training) or EVAL_SCORE_FIELDS (a score after it): see emit
    "progress": ("step", "max_steps"),
    "log": ("level", "message"),
    "sample": ("prompt", "response"),
    # DESIGN names the field `kind`, which clashes with the event's own `kind` on the JSON line
    "artifact": ("artifact_kind", "path", "bytes", "sha256"),
    "error": ("class", "message", "hint"),
    "schedule": ("message",),
}

# an `eval` event after training: the set, the metric and its value (also `target`, `rows`)
EVAL_SCORE_FIELDS = ("set", "metric", "value")

# A `metric` event also carries the training method's own numbers under TRL's names (written by
# engine.training.callback, charted and shown by the store's readers): DPO/ORPO/SimPO/KTO
# rewards/chosen, rewards/rejected, rewards/margins, rewards/accuracies and logps/*, KTO's kl,
# ORPO's nll_loss and log_odds_*, GRPO's reward, reward_std, kl, entropy, rewards/<function>/mean|std
# and completions/mean_length
METHOD_METRIC_PREFIXES = ("rewards/", "logps/", "log_odds_")
METHOD_METRICS = ("reward", "reward_std", "kl", "entropy", "nll_loss", "completions/mean_length")


def is_method_metric(name: str) -> bool:
    """True for a `metric` event field that is one of the training method's own numbers."""
    return name in METHOD_METRICS or name.startswith(METHOD_METRIC_PREFIXES)


# run states, in lifecycle order; DESIGN.md "Lifecycle"
LIVE_STATES = ("queued", "starting", "training", "evaluating", "exporting", "retrying")
TERMINAL_STATES = ("completed", "failed", "cancelled", "refused", "pruned")
STATES = LIVE_STATES + ("paused",) + TERMINAL_STATES


def cancel_overrides(state: str | None) -> bool:
    """Whether a stop the user asked for makes a worker that has ended `cancelled`: yes unless it
    had completed before the stop reached it (its outputs are written and stay), or already said
    cancelled. One that failed while being stopped is cancelled: the kill is the likely cause."""
    return state not in ("completed", "cancelled")


@dataclass
class Event:
    """One line of an event log: sequence number, time, kind and the kind's fields."""

    seq: int
    ts: float
    kind: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The event as one JSON line (paths as strings, NaN refused)."""
        return json.dumps(
            {"seq": self.seq, "ts": self.ts, "kind": self.kind, **self.data},
            default=_jsonable,
            allow_nan=False,
        )

    @classmethod
    def from_obj(cls, obj: dict) -> Event:
        """An event from a decoded JSON line."""
        obj = dict(obj)
        return cls(
            seq=int(obj.pop("seq")), ts=float(obj.pop("ts")), kind=str(obj.pop("kind")), data=obj
        )

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        """A field of the event, or `default`."""
        return self.data.get(key, default)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _clean(value: Any) -> Any:
    """NaN and infinities become null so every line stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class EventLog:
    """Appends events to one JSONL file; `seq` continues from the file's last complete line."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        last = 0
        for event in read_events(self.path):
            last = event.seq
        self._seq = last
        self._truncate_torn_tail()
        self._file = open(self.path, "a", encoding="utf-8")

    def _truncate_torn_tail(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            cut = raw.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(cut)

    def emit(self, kind: str, /, **data: Any) -> Event:
        """Append one event and flush it to disk."""
        if kind == "artifact" and "kind" in data:  # accept DESIGN's spelling
            data["artifact_kind"] = data.pop("kind")
        required = KINDS.get(kind)
        if required is None:
            raise ValueError(f"unknown event kind {kind!r}")
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"{kind} event is missing {', '.join(missing)}")
        if kind == "eval" and "step" not in data:
            absent = [k for k in EVAL_SCORE_FIELDS if k not in data]
            if absent:
                raise ValueError(f"eval event has no step and is missing {', '.join(absent)}")
        if kind == "status" and data["state"] not in STATES:
            raise ValueError(f"unknown run state {data['state']!r}")
        self._seq += 1
        event = Event(self._seq, time.time(), kind, {k: _clean(v) for k, v in data.items()})
        self._file.write(event.to_json() + "\n")
        self._file.flush()
        if kind in ("status", "artifact", "error"):
            os.fsync(self._file.fileno())  # the states a crash must never lose
        return event

    def close(self) -> None:
        """Close the log file (a second close does nothing)."""
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullLog:
    """The event log of a DDP rank other than 0: only rank 0 speaks for the run."""

    def emit(self, kind: str, /, **data: Any) -> None:
        """Drop the event."""
        return None

    def close(self) -> None:
        """Nothing to close."""
        return None

    def __enter__(self) -> NullLog:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def read_events(path: Path | str, after_seq: int = 0) -> Iterator[Event]:
    """Yield the complete events of a log with seq > after_seq; a torn last line is skipped."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                return  # torn: the writer is mid-line or died there
            line = line.strip()
            if not line:
                continue
            try:
                event = Event.from_obj(json.loads(line))
            except (ValueError, KeyError):
                continue
            if event.seq > after_seq:
                yield event


def read_offset(path: Path | str, offset: int) -> tuple[list[Event], int]:
    """Read complete events from byte `offset`; return them and the offset after the last one."""
    path = Path(path)
    if not path.exists():
        return [], offset
    events = []
    with open(path, "rb") as f:
        f.seek(offset)
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            offset += len(raw)
            try:
                events.append(Event.from_obj(json.loads(raw)))
            except (ValueError, KeyError):
                continue
    return events, offset


def run_state(run_dir: Path | str) -> tuple[str | None, dict]:
    """A run's state: its latest `status` event across both logs, by ts. Returns (state, event data)."""
    run_dir = Path(run_dir)
    latest: Event | None = None
    for name in (WORKER_LOG, SUPERVISOR_LOG):
        for event in read_events(run_dir / name):
            if event.kind == "status" and (latest is None or event.ts >= latest.ts):
                latest = event
    if latest is None:
        return None, {}
    return latest["state"], latest.data
