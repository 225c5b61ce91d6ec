"""A run's eval results row by row: the prompts, references, outputs and scores the leaderboard
shows side by side.

Two places hold them, each in DESIGN.md's `eval --json` shape: the run's own Eval nodes, scored
by its worker when training ends (`<run_dir>/eval_results/<n>-<adapter|gguf>.json`, targets
"adapter", "base" and "gguf"), and the `tunegraph eval` jobs that scored the run later (their
`<data_dir>/evals/<eval_id>/result.json`, found through the run's `evals/<eval_id>.jsonl`; only
this run's target is kept, named "adapter"). The mean scores are in the run's `eval` events too
(the index's `eval` of `show --json`); these files add the rows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from engine import paths
from engine.eval.job import EvalRequest, read_result
from engine.eval.scoreboard import EvalResult
from engine.rundir import RUN_EVAL_RESULTS, RUN_EVALS

RUN_TARGETS = ("adapter", "base", "gguf")  # how a run's own results name what they scored


def write_run_result(run_dir: Path | str, name: str, result: EvalResult) -> Path:
    """Write one result of the run's own evaluation as `eval_results/<name>.json` (atomic)."""
    folder = Path(run_dir) / RUN_EVAL_RESULTS
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result.as_json(), indent=2), encoding="utf-8")
    os.replace(tmp, path)
    return path


def run_results(run_dir: Path | str) -> list[dict]:
    """Every eval result of a run, oldest first, each with `source` ("run", or the eval id of a
    later `tunegraph eval`) and its results named by RUN_TARGETS. Unreadable files are skipped."""
    run_dir = Path(run_dir)
    out = []
    for path in sorted((run_dir / RUN_EVAL_RESULTS).glob("*.json"), key=_number_first):
        data = _read(path)
        if data is not None:
            out.append({**data, "source": "run"})
    for log in sorted((run_dir / RUN_EVALS).glob("*.jsonl")):
        found = _job_result(log.stem, run_dir.name)
        if found is not None:
            out.append(found)
    return out


def _job_result(eval_id: str, run_id: str) -> dict | None:
    """This run's part of a `tunegraph eval` job's result, its target named "adapter"."""
    folder = paths.evals_dir() / eval_id
    result = read_result(folder)
    if result is None:
        return None
    try:
        targets = EvalRequest.load(folder).targets
    except Exception:  # noqa: BLE001 - a request we cannot read: nothing to show
        return None
    labels = {t.label for t in targets if t.kind == "run" and t.run_id == run_id}
    mine = [
        {**r, "target": "adapter"} for r in result.get("results") or [] if r["target"] in labels
    ]
    return {**result, "results": mine, "source": eval_id} if mine else None


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "results" in data else None


def _number_first(path: Path) -> tuple[int, str]:
    head = path.stem.split("-", 1)[0]
    return (int(head) if head.isdigit() else 0, path.stem)
