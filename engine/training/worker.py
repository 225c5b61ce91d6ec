"""The training worker process: `python -m engine.training.worker RUN_DIR`.

Reads `spec.json`, records `worker.pid` (pid and process start time, so a supervisor can tell this
worker from a reused pid), sends its log to `worker.log`, and runs `engine.training.trainer.run_job`, turning
the outcome into `status` / `error` events: a user-fixable error becomes one clear message with a
hint, anything else gets its class and message with the traceback kept in `worker.log`.
Exit codes: 0 completed, 3 paused, 4 cancelled, 1 failed.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path

from engine.rundir import SPEC_FILE, WORKER_LOG, log_to_file
from engine.rundir import write_pid as record_pid

EXIT_OK, EXIT_FAILED, EXIT_PAUSED, EXIT_CANCELLED = 0, 1, 3, 4


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
    from engine.errors import RunCancelled, RunPaused, TunegraphError
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
        except RunPaused:
            log.emit("status", state="paused", reason="paused by the user")
            return EXIT_PAUSED
        except RunCancelled:
            log.emit("status", state="cancelled", reason="cancelled by the user")
            return EXIT_CANCELLED
        except TunegraphError as err:
            logger.error("run failed: %s\n%s", err, traceback.format_exc())
            log.emit("error", **err.as_dict())
            log.emit("status", state="failed", reason=err.message)
            return EXIT_FAILED
        except BaseException as exc:  # noqa: BLE001 - the run must end in a readable state
            logger.error("run crashed:\n%s", traceback.format_exc())
            error = describe_crash(exc)
            log.emit("error", **error)
            log.emit("status", state="failed", reason=error["message"])
            return EXIT_FAILED
        log.emit("status", state="completed", warnings=warnings)
        return EXIT_OK


def describe_crash(exc: BaseException) -> dict:
    """An error event for an unexpected exception: class, first line, and where to look."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    hint = "The full traceback is in the run's worker.log."
    name = type(exc).__name__
    if "out of memory" in text.lower():
        hint = (
            "The GPU ran out of memory: lower micro batch size or max sequence length, or "
            "enable 4-bit. " + hint
        )
    if isinstance(exc, KeyboardInterrupt):
        text = "interrupted"
    return {"class": name, "message": f"{name}: {text}" if text else name, "hint": hint}


if __name__ == "__main__":
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip torch's slow interpreter teardown: the next queued run starts sooner
