"""Shared helpers for the real-process tests: small graphs and specs with fast settings, waiting
on run states, and a supervisor fixture that always stops the supervisor and its workers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.spec import BaseModelSpec, DatasetSpec, ExportSpec, JobSpec, LoraSpec, TrainingSpec
from engine.store.index import Store
from nodes.graphfile import GraphBuilder, save_graph

# the keys of a run in DESIGN.md "JSON shapes" (`show --json`, `runs --json`, Store.run_json)
RUN_KEYS = {
    "id",
    "name",
    "state",
    "reason",
    "warnings",
    "parent",
    "created_at",
    "started_at",
    "finished_at",
    "step",
    "max_steps",
    "epoch",
    "device",
    "metrics",
    "estimate",
    "error",
    "run_dir",
    "method",
    "upstream",
    "attempts",
    "eval",
    "artifacts",
    "samples",
}

# Fast enough that one tiny run trains in a few seconds after its ~5 s of imports.
FAST_TRAINING = {
    "epochs": 1.0,
    "max_steps": 8,
    "micro_batch_size": 4,
    "max_seq_length": 128,
    "eval_split": 0.1,
    "save_steps": 0,
    "warmup_ratio": 0.0,
    "packing": True,
    "lr_scheduler": "linear",
    "learning_rate": 1e-3,
}
FAST_LORA = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
FAST_EXPORT = {"adapter_zip": True, "gguf": False, "merged": False}  # a GGUF costs ~10 s a run

TOPICS = (
    "my router blinks red",
    "I was billed twice",
    "the wifi drops at night",
    "how do I change my password",
    "can I pause my plan",
    "the modem will not start",
    "my speed is slow",
    "I moved house",
    "the TV box has no signal",
    "I lost my bill",
)


def write_chats(path: Path, rows: int = 40) -> Path:
    """A small OpenAI-messages JSONL file of short support chats."""
    lines = []
    for i in range(rows):
        topic = TOPICS[i % len(TOPICS)]
        lines.append(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": f"Hi, {topic} (ticket {i})."},
                        {
                            "role": "assistant",
                            "content": f"Sorry about that. For ticket {i}: restart the "
                            f"device, wait a minute, then tell me if {topic} "
                            "still happens.",
                        },
                    ]
                }
            )
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_spec(data: Path, name: str = "tiny", device: str = "cpu", **training) -> JobSpec:
    """A job spec on the builtin tiny model with fast settings (override any training field)."""
    spec = JobSpec(
        name=name,
        base_model=BaseModelSpec(source="builtin:tiny-llama"),
        datasets=[DatasetSpec(path=str(data))],
        training=TrainingSpec(**{**FAST_TRAINING, **training}),
        lora=LoraSpec(**FAST_LORA),
        export=ExportSpec(**FAST_EXPORT),
    )
    spec.resources.device = device
    spec.validate()
    return spec


def make_graph(
    folder: Path,
    modules: dict[str, dict] | None = None,
    *,
    data: Path | None = None,
    base: str | None = "builtin:tiny-llama",
    device: str = "auto",
    filename: str = "graph.json",
) -> Path:
    """A graph file with one Fine-Tune module per entry of `modules` (name -> training overrides),
    all sharing one base model, dataset and LoRA config. A module's overrides may hold `device`
    and `gpu_count` for its Fine-Tune node. `base=None` leaves the base model unconnected."""
    modules = modules or {"tiny": {}}
    data = data or write_chats(folder / "chats.jsonl")
    g = GraphBuilder(seed=7)
    model = g.add_node("BaseModel", "base", source=base) if base else None
    dataset = g.add_node("Dataset", "chats", path=str(data))
    lora = g.add_node("LoraConfig", "lora", **FAST_LORA)
    export = g.add_node("Export", "export", **FAST_EXPORT)
    for name, overrides in modules.items():
        overrides = dict(overrides)
        resources = {
            "device": overrides.pop("device", device),
            "gpu_count": overrides.pop("gpu_count", 1),
        }
        train = g.add_node("TrainingConfig", f"train {name}", **{**FAST_TRAINING, **overrides})
        module = g.add_node("FineTune", name, **resources)
        if model:
            g.connect(model, module, "base_model")
        g.connect(dataset, module, "dataset")
        g.connect(train, module, "training_config")
        g.connect(lora, module, "lora_config")
        g.connect(export, module, "export")
    return save_graph(g.to_dict(), folder / filename)


def tiny_module(
    g: GraphBuilder,
    name: str = "student",
    pos: tuple[float, float] = (600, 0),
    export: bool = True,
    **training,
) -> str:
    """A Fine-Tune node `name` on the CPU with its tiny feeders (builtin:tiny-llama, a fast
    training config with `training` over it, LoRA, and an Export node writing only the adapter
    folder unless `export` is off), wired; its node id. The data and eval inputs are the
    caller's."""
    ft = g.add_node("FineTune", name, pos, device="cpu")
    feeders = [
        ("BaseModel", "base", {"source": "builtin:tiny-llama"}, "base_model"),
        ("TrainingConfig", "train", {**FAST_TRAINING, **training}, "training_config"),
        ("LoraConfig", "lora", FAST_LORA, "lora_config"),
    ]
    if export:
        feeders.append(("Export", "export", {**FAST_EXPORT, "adapter_zip": False}, "export"))
    for kind, label, values, port in feeders:
        g.connect(g.add_node(kind, label, **values), ft, port)
    return ft


def wait_for(
    store: Store,
    run_id: str,
    states: str | tuple[str, ...],
    timeout: float = 60.0,
    step: int | None = None,
) -> dict:
    """Poll the store until the run is in one of `states` (and at `step` or later, if given);
    returns the run (run_json shape). Fails the test with the run's recent log on timeout."""
    states = (states,) if isinstance(states, str) else tuple(states)
    deadline = time.time() + timeout
    run = store.run_json(run_id)
    while time.time() < deadline:
        store.ingest(Path(run["run_dir"]))  # also without a supervisor watching
        run = store.run_json(run_id)
        if run["state"] in states and (step is None or (run["step"] or 0) >= step):
            return run
        time.sleep(0.1)
    tail = "\n".join(store.logs(run_id)[-15:])
    pytest.fail(
        f"run {run['name']} ({run_id}) is {run['state']} at step {run['step']} after "
        f"{timeout:.0f} s, not {'/'.join(states)}:\n{tail}"
    )


def worker_pid(run_dir: Path, timeout: float = 30.0) -> int:
    """The pid of a run's worker once it has written worker.pid."""
    from engine.training.launch import read_pid

    deadline = time.time() + timeout
    while time.time() < deadline:
        info = read_pid(Path(run_dir))
        if info:
            return int(info["pid"])
        time.sleep(0.05)
    pytest.fail(f"no worker.pid in {run_dir} after {timeout:.0f} s")


def home_processes(home: Path) -> list:
    """Live processes (supervisors, workers) whose TUNEGRAPH_HOME is `home`."""
    import psutil

    home = str(home)
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get("TUNEGRAPH_HOME") == home:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def schedule_events(store: Store, run_ids: list[str]) -> list[tuple[float, str, str]]:
    """(ts, run_id, what) for the supervisor's queued status and schedule events of the runs,
    in time order; `what` is "queued" or "placed"."""
    out = []
    for run_id in run_ids:
        for event in store.events(run_id, kinds=["status", "schedule"], source="supervisor"):
            if event["kind"] == "schedule" and "hold tightened" not in event["message"]:
                out.append((event["ts"], run_id, "placed"))
            elif event["kind"] == "status" and event.get("state") == "queued":
                out.append((event["ts"], run_id, "queued"))
    return sorted(out)


def wait_until(condition, timeout: float = 30.0, what: str = "condition"):
    """Poll `condition()` until it returns something truthy; returns it, or fails the test."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def stop_everything(home: Path) -> None:
    """Stop the supervisor of `home` and kill whatever of its workers still runs."""
    import psutil

    from engine.supervisor.process import stop_supervisor

    stop_supervisor()
    procs = home_processes(home)
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)


def supervisor_session(monkeypatch, home: Path, cpu_slots: int = 2):
    """Fixture body: a short idle timeout and `cpu_slots` CPU slots for the supervisor the test
    starts (through the client), a Store to drive it with, and everything stopped afterwards."""
    monkeypatch.setenv("TUNEGRAPH_SUPERVISOR_IDLE", "5")
    monkeypatch.setenv("TUNEGRAPH_CPU_SLOTS", str(cpu_slots))
    store = Store()
    try:
        yield store
    finally:
        stop_everything(home)
        store.close()


def cpu_estimate(spec: JobSpec) -> dict:
    """The estimate the CLI would pass with a CPU run's submission."""
    from engine.plan.report import estimate_spec

    return estimate_spec(spec, "cpu")


def cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """`python -m app ARGS` in a subprocess from the repository root (this test's environment
    unless `env`)."""
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        timeout=timeout,
    )


# what a 15 GiB run estimates: one fits a 24 GiB GPU (90% usable), two do not
GPU_RUN = {
    "params": 1,
    "trainable_params": 1,
    "vram_gib": {"bf16": 15.0, "4bit": 6.0},
    "mode": "lora",
    "device": "cuda:0",
}


def gpu_of_holds(store: Store) -> dict[str, str]:
    """Run id -> the GPU(s) it holds memory on."""
    return {h["run_id"]: str(h["gpu"]) for h in store.holds()}


def interruptible() -> None:
    """A child process's `preexec_fn`: SIGINT delivered and handled as on a terminal. The
    whole suite's pytest process can hand its children SIGINT blocked or ignored (seen only in
    a full run: Ctrl-C tests then never see their signal), so a test that sends Ctrl-C to a
    command it started sets its child up as a shell would."""
    import signal

    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def a_run_whose_worker_said(store: Store, data: Path, state: str) -> tuple[str, Path]:
    """A run (id, folder) whose worker's own log ends with `state`: what the supervisor finds
    when it settles a worker that has ended."""
    from engine.events import EventLog
    from engine.rundir import WORKER_LOG
    from engine.training.launch import create_run

    run_id = create_run(make_spec(data, "ended"), store)
    run_dir = Path(store.run_json(run_id)["run_dir"])
    with EventLog(run_dir / WORKER_LOG) as log:
        log.emit("status", state=state)
    return run_id, run_dir
