"""The training worker process: `python -m engine.training.worker RUN_DIR`.

Reads `spec.json`, records `worker.pid` (pid and process start time, so a supervisor can tell this
worker from a reused pid), sends its log to `worker.log`, and runs `engine.training.trainer.run_job`, turning
the outcome into `status` / `error` events (engine.rundir.end_with, as every worker does): a
user-fixable error becomes one clear message with a hint, anything else gets its class and
message with the traceback kept in `worker.log`.
Exit codes: 0 completed, 3 paused, 4 cancelled, 5 pruned, 1 failed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from engine.rundir import EXIT_OK, SPEC_FILE, WORKER_LOG, end_with, exit_now, log_to_file
from engine.rundir import write_pid as record_pid


def rank() -> int:
    """This process's DDP rank (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))


def write_pid(run_dir: Path) -> None:
    """Record the process that stands for the run: this one, or torchrun's launcher under DDP
    (its tree holds every rank, so a cancel kills them all)."""
    import psutil

    proc = psutil.Process()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        proc = proc.parent()
    record_pid(run_dir, proc.pid)


def _set_threads() -> None:
    threads = os.environ.get("TUNEGRAPH_THREADS")
    if threads:
        import torch

        torch.set_num_threads(max(1, int(threads)))


def main(argv: list[str] | None = None) -> int:
    """`python -m engine.training.worker RUN_DIR`: train the run; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m engine.training.worker RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(argv[0]).resolve()
    from engine.control import Control
    from engine.events import EventLog, NullLog
    from engine.spec import JobSpec

    logger = log_to_file(run_dir, "tunegraph.worker")
    control = Control(run_dir)
    control.install_signal_handlers()
    if rank() == 0:
        write_pid(run_dir)
    with EventLog(run_dir / WORKER_LOG) if rank() == 0 else NullLog() as log:
        log.emit("status", state="starting", pid=os.getpid())
        try:
            spec = JobSpec.load(run_dir / SPEC_FILE)
            if spec.upstream:  # a chained run (engine.models.sources: run:RUN_ID)
                log.emit(
                    "log",
                    level="info",
                    message=f"starts from run {spec.upstream}: its result is this run's base",
                )
            _set_threads()
            from engine.training.trainer import run_job

            warnings = run_job(spec, run_dir, log, control)
        except BaseException as exc:  # noqa: BLE001 - the run must end in a readable state
            return end_with(exc, log, logger)
        log.emit("status", state="completed", warnings=warnings)
        return EXIT_OK


if __name__ == "__main__":
    exit_now(main())
