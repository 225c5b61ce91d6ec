"""A run directory's file names and the engine's process entry points, named once.

`<data_dir>/runs/<run_id>/` holds the frozen spec, the two event logs (one writer each), the
control file, the worker's pid record and log, checkpoints and the adapter (DESIGN.md "Run
directory and event logs"). Every process the engine starts is a module run with `-m`; its name
and module are in `ENTRY_POINTS`, and launchers build their command lines with `entry_command`.
"""

from __future__ import annotations

SPEC_FILE = "spec.json"  # frozen at submission
WORKER_LOG = "events.jsonl"  # written only by the worker
SUPERVISOR_LOG = "supervisor.jsonl"  # written only by the supervisor
CONTROL_FILE = "control.json"  # supervisor -> worker requests
PID_FILE = "worker.pid"  # pid and process start time of the worker
LOG_FILE = "worker.log"  # the worker's Python logging (tracebacks go here)
CHECKPOINTS = "checkpoints"  # the Trainer's output_dir
ADAPTER = "adapter"  # the saved PEFT adapter
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # what peft writes into it (and a checkpoint)

# name -> module run as `python -m MODULE ARGS`
ENTRY_POINTS = {
    "worker": "engine.training.worker",  # RUN_DIR: train one run
    "supervisor": "engine.supervisor.process",  # the background supervisor of a data directory
    "estimate": "engine.plan.report",  # RUN_DIR, or --specs DEVICE with specs on stdin
    "preview": "engine.plan.preview",  # REQUEST_JSON: a Dataset node's preview
    "chat_server": "engine.chat.server",  # a llama-cpp chat server on stdin/stdout
    "gguf_tools": "engine.export.gguf_tools",  # quantize SRC DST QUANT THREADS
    "ray_bridge": "engine.cluster.bridge",  # ADDRESS: relays cluster runs' logs home
    "converter_setup": "engine.setup.converter",  # installs the HF->GGUF converter
}


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
