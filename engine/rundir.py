"""A run directory's file names and the engine's process entry points, named once.

`<data_dir>/runs/<run_id>/` holds the frozen spec, the two event logs (one writer each), the
control file, the worker's pid record and log, checkpoints and the adapter (or, for a full
fine-tuning run, the whole model: `model/`, 16-bit safetensors with the tokenizer files and the
run's chat_template.jinja) (DESIGN.md "Run directory and event logs"), and
`evals/<eval_id>.jsonl`: the `eval` events of each eval job that scored the run after training,
written only by that job's eval worker. An eval job's own folder,
`<data_dir>/evals/<eval_id>/`, is laid out like a run directory (the two logs, control, pid, log)
with the request instead of the spec, and the result. Every process the engine starts is a module
run with `-m`; its name and module are in `ENTRY_POINTS`, and launchers build their command lines
with `entry_command`. `end_with` writes how a worker's work ended (paused, pruned, cancelled,
failed), the same for every worker, with its exit code.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

SPEC_FILE = "spec.json"  # frozen at submission
WORKER_LOG = "events.jsonl"  # written only by the worker
SUPERVISOR_LOG = "supervisor.jsonl"  # written only by the supervisor
CONTROL_FILE = "control.json"  # supervisor -> worker requests
PID_FILE = "worker.pid"  # pid and process start time of the worker
LOG_FILE = "worker.log"  # the worker's Python logging (tracebacks go here)
CHECKPOINTS = "checkpoints"  # the Trainer's output_dir
ADAPTER = "adapter"  # the saved PEFT adapter
MODEL = "model"  # a full fine-tuning run's delivered model folder (no adapter)
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # what peft writes into it (and a checkpoint)
# what transformers writes for a whole model (a full run's model/ and checkpoints): one file, or
# shards listed in an index
MODEL_WEIGHTS = "model.safetensors"
MODEL_WEIGHTS_INDEX = "model.safetensors.index.json"
TENSORBOARD = "tensorboard"  # TensorBoard event files, when the run reports to it
RUN_EVALS = "evals"  # <run_dir>/evals/<eval_id>.jsonl, each written only by that eval's worker
# <run_dir>/eval_results/<n>-<adapter|gguf>.json: the run's Eval nodes' results row by row (the
# `eval --json` shape), written by its worker when training ends (and after the GGUF export)
RUN_EVAL_RESULTS = "eval_results"
EVAL_REQUEST = "request.json"  # an eval job's targets, set, metrics and judge (frozen)
EVAL_RESULT = "result.json"  # the eval's results (the `eval --json` shape), written at its end

# name -> module run as `python -m MODULE ARGS`
ENTRY_POINTS = {
    "worker": "engine.training.worker",  # RUN_DIR: train one run
    "group_worker": "engine.training.group",  # GROUP_DIR: runs sharing one base, in turns
    "eval_worker": "engine.eval.worker",  # EVAL_DIR: score the targets of one eval job
    "recipe_worker": "engine.recipes.worker",  # STEP_DIR: make one data step's dataset
    "supervisor": "engine.supervisor.process",  # the background supervisor of a data directory
    "estimate": "engine.plan.report",  # RUN_DIR, or --specs DEVICE with specs on stdin
    "preview": "engine.plan.preview",  # REQUEST_JSON: a Dataset node's preview
    "chat_server": "engine.chat.server",  # a llama-cpp chat server on stdin/stdout
    "serve": "engine.chat.serve",  # GGUF --host --port: an OpenAI-compatible HTTP endpoint
    "gguf_tools": "engine.export.gguf_tools",  # quantize SRC DST QUANT THREADS
    "ray_bridge": "engine.cluster.bridge",  # ADDRESS: relays cluster runs' logs home
    "converter_setup": "engine.setup.converter",  # installs the HF->GGUF converter
    "tensorboard": "engine.training.tensorboard_server",  # LOGDIR --port: a run's TensorBoard
}


def log_file_handler(folder: Path | str) -> logging.FileHandler:
    """A logging handler appending to `folder`'s LOG_FILE in the workers' format."""
    handler = logging.FileHandler(Path(folder) / LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


def log_to_file(folder: Path | str, name: str) -> logging.Logger:
    """Send this worker process's log records to `folder`'s LOG_FILE; the logger `name`."""
    root = logging.getLogger()
    root.addHandler(log_file_handler(folder))
    root.setLevel(logging.INFO)
    return logging.getLogger(name)


EXIT_OK, EXIT_FAILED, EXIT_PAUSED, EXIT_CANCELLED, EXIT_PRUNED = 0, 1, 3, 4, 5  # worker exits


def describe_crash(exc: BaseException, what: str = "run") -> dict:
    """An error event for an unexpected exception: class, first line, and where to look (the
    `what`'s worker.log)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    hint = f"The full traceback is in the {what}'s worker.log."
    name = type(exc).__name__
    if "out of memory" in text.lower():
        hint = (
            "The GPU ran out of memory: lower micro batch size or max sequence length, or "
            "enable 4-bit. " + hint
        )
    if isinstance(exc, KeyboardInterrupt):
        text = "interrupted"
    return {"class": name, "message": f"{name}: {text}" if text else name, "hint": hint}


def end_with(exc: BaseException, log: Any, logger: logging.Logger, what: str = "run") -> int:
    """Write how the exception `exc` ends a worker's work to its event `log` (a final status, and
    an error event when it failed; the traceback to worker.log through `logger`), as every
    worker does; returns the worker's exit code."""
    from engine.errors import RunCancelled, RunPaused, RunPruned, TunegraphError

    if isinstance(exc, RunPaused):
        log.emit("status", state="paused", reason="paused by the user")
        return EXIT_PAUSED
    if isinstance(exc, RunPruned):
        log.emit("status", state="pruned", reason=str(exc))
        return EXIT_PRUNED
    if isinstance(exc, RunCancelled):
        log.emit("status", state="cancelled", reason="cancelled by the user")
        return EXIT_CANCELLED
    if isinstance(exc, TunegraphError):
        logger.error("%s failed: %s\n%s", what, exc, _traceback(exc))
        log.emit("error", **exc.as_dict())
        log.emit("status", state="failed", reason=exc.message)
        return EXIT_FAILED
    logger.error("%s crashed:\n%s", what, _traceback(exc))
    error = describe_crash(exc, what)
    log.emit("error", **error)
    log.emit("status", state="failed", reason=error["message"])
    return EXIT_FAILED


def exit_now(code: int) -> None:
    """End this worker process with `code` once its logs and output are flushed, skipping
    torch's slow interpreter teardown (the next queued run starts sooner)."""
    import sys

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _traceback(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(exc))


def write_pid(folder: Path | str, pid: int | None = None) -> None:
    """Record in `folder`'s PID_FILE the process that stands for its work (this one, or `pid`)
    with its start time, so a supervisor can tell it from a reused pid (atomic write)."""
    import psutil

    proc = psutil.Process(pid)
    info = {"pid": proc.pid, "create_time": proc.create_time(), "started": time.time()}
    tmp = Path(folder) / (PID_FILE + ".tmp")
    tmp.write_text(json.dumps(info), encoding="utf-8")
    os.replace(tmp, Path(folder) / PID_FILE)


def entry_module(name: str) -> str:
    """The module of the process entry point `name` (KeyError names the known ones)."""
    try:
        return ENTRY_POINTS[name]
    except KeyError:
        raise KeyError(
            f"no process entry point {name!r}; known: {', '.join(ENTRY_POINTS)}"
        ) from None


def entry_command(python: str, name: str, *args: str) -> list[str]:
    """`[python, -m, MODULE, ARGS…]` for the entry point `name`."""
    return [python, "-m", entry_module(name), *args]
