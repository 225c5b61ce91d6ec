"""An eval job on disk: its request, its folder, its result, and where its scores are recorded.

An eval is work like a run (DESIGN.md "The command line"): a client writes the request into a new
`<data_dir>/evals/<eval_id>/` (engine.rundir names its files) and hands it to the supervisor,
which places its worker under a hold. The worker (`engine.eval.worker`) writes the folder's
`events.jsonl` (status, progress, log, error, and one `eval` event per target and score), the
`result.json` with DESIGN.md's `eval --json` shape, and, for each run it scored, the same `eval`
events into `<run_dir>/evals/<eval_id>.jsonl` (`target` "adapter"): a file of its own, since each
log has one writer, that the store ingests with the run's logs, so a run's scores show in
`show --json` (`eval`: {set: {metric: value}}) and survive an index rebuild.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine import paths
from engine.errors import EvalError
from engine.eval.evalset import EvalSet, load_eval_set
from engine.eval.judge import check_judge
from engine.eval.metrics import check_metrics
from engine.eval.scoreboard import EvalResult
from engine.eval.targets import Target
from engine.events import EventLog
from engine.rundir import EVAL_REQUEST, EVAL_RESULT, RUN_EVALS

RUN_TARGET = "adapter"  # what of a run an after-the-fact eval scores (DESIGN's `eval` event)


@dataclass
class EvalRequest:
    """What to score, on which set, with which metrics (as `tunegraph eval` was asked)."""

    targets: list[Target]
    set_path: str
    metrics: list[str] = field(default_factory=list)  # empty: the defaults
    judge: str | None = None
    max_rows: int | None = None
    created_at: float = field(default_factory=time.time)
    cwd: str = field(default_factory=os.getcwd)  # relative metric files are read from here

    def to_dict(self) -> dict:
        """As JSON (request.json)."""
        data = asdict(self)
        data["targets"] = [t.to_dict() for t in self.targets]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> EvalRequest:
        """From `to_dict`'s JSON."""
        data = dict(data)
        data["targets"] = [Target.from_dict(t) for t in data.get("targets") or []]
        return cls(**data)

    def save(self, folder: Path | str) -> Path:
        """Write request.json into `folder` (atomic)."""
        path = Path(folder) / EVAL_REQUEST
        _write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, folder: Path | str) -> EvalRequest:
        """Read an eval folder's request.json."""
        path = Path(folder) / EVAL_REQUEST
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as err:
            raise EvalError(f"{path} cannot be read as an eval request: {err}") from None


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def check_request(request: EvalRequest) -> tuple[EvalSet, list[str]]:
    """(eval set, metrics) of a request, every input checked before a model loads: targets,
    the set (file and line of a bad row), the metrics (a pattern that does not compile, a bad
    Python or schema file) and the judge file. Raises EvalError or DataError naming what to fix."""
    if not request.targets:
        raise EvalError("name at least one target to score")
    labels = [t.label for t in request.targets]
    repeated = sorted({x for x in labels if labels.count(x) > 1})
    if repeated:
        raise EvalError(f"target {repeated[0]} is named twice")
    if request.max_rows is not None and request.max_rows < 1:
        raise EvalError(f"--max-rows must be at least 1, not {request.max_rows}")
    if request.judge:
        check_judge(request.judge)
    metrics = check_metrics(request.metrics, len(request.targets), bool(request.judge))
    eval_set = load_eval_set(request.set_path, request.max_rows)
    return eval_set, metrics


def create_eval_dir(request: EvalRequest) -> tuple[str, Path]:
    """A new eval folder holding the request; returns (eval id, folder)."""
    eval_id = paths.new_run_id()
    folder = paths.evals_dir() / eval_id
    folder.mkdir(parents=True)
    request.save(folder)
    return eval_id, folder


def write_result(folder: Path | str, result: EvalResult) -> Path:
    """Write result.json (the `eval --json` shape) into the eval folder (atomic)."""
    path = Path(folder) / EVAL_RESULT
    _write_json(path, result.as_json())
    return path


def read_result(folder: Path | str) -> dict | None:
    """The eval's result.json, or None while it has none."""
    try:
        return json.loads((Path(folder) / EVAL_RESULT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def eval_events(result: EvalResult, target: str) -> list[dict]:
    """The `eval` event fields of one target's scores: set, target, metric, value, rows."""
    found = next(r for r in result.results if r.target == target)
    return [
        {
            "set": result.set,
            "metric": metric,
            "value": found.scores.get(metric),
            "rows": result.rows,
        }
        for metric in result.metrics
    ]


def record_scores(
    eval_id: str, request: EvalRequest, result: EvalResult, log: EventLog | None = None
) -> None:
    """Write each target's scores as `eval` events: into the eval's own log (`log`), and for a
    run into `<run_dir>/evals/<eval_id>.jsonl`, so the run index shows them."""
    for target in request.targets:
        events = eval_events(result, target.label)
        if log is not None:
            for fields in events:
                log.emit("eval", target=target.label, target_kind=target.kind, **fields)
        if target.kind != "run":
            continue
        with EventLog(Path(target.source) / RUN_EVALS / f"{eval_id}.jsonl") as run_log:
            for fields in events:
                run_log.emit("eval", target=RUN_TARGET, eval_id=eval_id, **fields)
