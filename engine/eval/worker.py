"""The eval worker process: `python -m engine.eval.worker EVAL_DIR`.

Started by the supervisor once it has placed the eval (a GPU hold, or a CPU slot); the placement
arrives as TUNEGRAPH_EVAL_DEVICE ("cuda" or "cpu") with CUDA_VISIBLE_DEVICES. Reads the folder's
request.json, records `worker.pid`, sends its log to `worker.log`, and writes `events.jsonl`
(its only writer): `starting`, `evaluating`, `progress` (rows scored of all the work), then the
scores as `eval` events, `result.json`, and `completed` (with the judge's warnings) — or an
`error` and `failed` with one sentence, or `cancelled` when control.json asks for it (or SIGTERM).
Exit codes: 0 completed, 1 failed, 4 cancelled.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from engine.rundir import EXIT_OK, WORKER_LOG, end_with, exit_now, log_to_file, write_pid

if TYPE_CHECKING:
    from engine.events import EventLog

PROGRESS_EVERY_S = 0.5


def pick_device() -> str:
    """The device the supervisor placed the eval on, "cpu" when CUDA is not there after all."""
    wanted = os.environ.get("TUNEGRAPH_EVAL_DEVICE", "cpu")
    if wanted == "cuda":
        import torch

        if torch.cuda.is_available():
            return "cuda"
    return "cpu"


def main(argv: list[str] | None = None) -> int:
    """`python -m engine.eval.worker EVAL_DIR`: run the eval; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m engine.eval.worker EVAL_DIR", file=sys.stderr)
        return 2
    eval_dir = Path(argv[0]).resolve()
    from engine.control import Control
    from engine.events import EventLog

    logger = log_to_file(eval_dir, "tunegraph.eval")
    control = Control(eval_dir)
    control.install_signal_handlers()
    write_pid(eval_dir)
    with EventLog(eval_dir / WORKER_LOG) as log:
        log.emit("status", state="starting", pid=os.getpid())
        try:
            warnings = run(eval_dir, log, lambda: control.action() == "cancel")
        except BaseException as exc:  # noqa: BLE001 - the eval must end in a readable state
            return end_with(exc, log, logger, "eval")
        log.emit("status", state="completed", warnings=warnings)
        return EXIT_OK


def run(eval_dir: Path, log: EventLog, cancel: Callable[[], bool]) -> list[str]:
    """Check the request, score its targets, record the scores; returns the warnings."""
    from engine.eval.job import EvalRequest, check_request, record_scores, write_result
    from engine.eval.runner import evaluate

    request = EvalRequest.load(eval_dir)
    if Path(request.cwd).is_dir():  # relative files in metrics (python:, json:) are read from it
        os.chdir(request.cwd)
    eval_set, metrics = check_request(request)
    threads = os.environ.get("TUNEGRAPH_THREADS")
    device = pick_device()
    if threads and device == "cpu":
        import torch

        torch.set_num_threads(max(1, int(threads)))
    log.emit("status", state="evaluating", device=device)
    log.emit(
        "log",
        level="info",
        message=f"Scoring {len(request.targets)} target(s) on {eval_set.name} "
        f"({len(eval_set.rows)} rows) with {', '.join(metrics)} on {device}",
    )
    last = [0.0]

    def progress(done: int, total: int, what: str) -> None:
        now = time.time()
        if done == total or now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now
            log.emit("progress", step=done, max_steps=total, target=what)

    result = evaluate(
        request.targets,
        eval_set,
        metrics,
        judge=request.judge,
        device=device,
        progress=progress,
        cancel=cancel,
    )
    record_scores(eval_dir.name, request, result, log)
    write_result(eval_dir, result)
    for warning in result.warnings:
        log.emit("log", level="warning", message=warning)
    return result.warnings


if __name__ == "__main__":
    exit_now(main())
