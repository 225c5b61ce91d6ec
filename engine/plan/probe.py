"""The speed check: a short real run the first time a device × model shape is seen.

The size-based time model (engine.plan.timing) has to cover every machine, so before a model's
first run its range is wide. `speed_check` instead runs the worker itself (`python -m engine
worker`, the code path of every run) on a copy of the spec cut to PROBE_STEPS optimizer steps,
without export or checkpoints: the same process start-up, imports, weights, data encoding, batch
shape, evaluation, samples and saving as the real run, only fewer steps. What it measures is
recorded like a completed run (engine.plan.calibration), with the training phase counted from the
second step on (the first carries one-off warm-up) at the speed of its faster steps (the lower
quartile: a burst of other work slows a few steps of so short a check, not the run's typical
speed), so the estimate that asked for it and every later one of the same shape predict from this
machine's own speed.

It runs only on a machine quiet enough to measure: on the CPU when under BUSY_PERCENT of it is in
use, on a GPU where one GPU has room for the run's estimated peak; otherwise the estimate keeps
the size-based range and says why. The setting `speed_check` (or
TUNEGRAPH_SPEED_CHECK=0) turns it off.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine import hardware, paths
from engine.events import read_events
from engine.plan import calibration
from engine.rundir import SPEC_FILE, WORKER_LOG, entry_command
from engine.spec import JobSpec

PROBE_STEPS = 10
BUSY_PERCENT = 60.0  # a CPU busier than this would time the load, not the model
PROBE_TIMEOUT_S = 240.0
GPU_MARGIN_GIB = 1.0


def enabled() -> bool:
    """Whether estimates may run a speed check (setting `speed_check`; TUNEGRAPH_SPEED_CHECK=0
    turns it off for this process)."""
    if os.environ.get("TUNEGRAPH_SPEED_CHECK", "").strip() in ("0", "false", "no"):
        return False
    from engine.settings import load_or_defaults

    return load_or_defaults().speed_check


def probe_spec(spec: JobSpec) -> JobSpec:
    """The run cut to a speed check: PROBE_STEPS steps, no export, no checkpoints, no early stop."""
    probe = JobSpec.from_dict(spec.to_dict())
    probe.name = f"{spec.name} (speed check)"
    t = probe.training
    t.max_steps = PROBE_STEPS * t.grad_accum
    t.save_steps, t.save_minutes, t.keep_best = 0, 0.0, False
    t.eval_steps, t.early_stopping_patience = 0, 0
    probe.export.gguf = probe.export.adapter_zip = probe.export.merged = False
    probe.export.ollama_name = ""
    return probe


def gpu_with_room(need_gib: float) -> int | None:
    """The index of the GPU with the most free memory, when it can hold `need_gib` more."""
    found = [g for g in hardware.gpus() if g.free_gib >= need_gib + GPU_MARGIN_GIB]
    return max(found, key=lambda g: g.free_gib).index if found else None


def cpu_busy_percent() -> float:
    """How much of the CPU other work uses now (sampled over half a second)."""
    import psutil

    return float(psutil.cpu_percent(interval=0.5))


def speed_check(
    spec: JobSpec, key: str, device: str, need_gib: float, tokens_per_micro: float
) -> str | None:
    """Run the speed check for `spec` and record it under `key`; None when it ran, else why not
    (a sentence for the estimate's basis). `tokens_per_micro` is what the estimate predicts one
    micro-batch of this run computes (padding included), the unit the samples are fitted in. The worker's own error is returned, never raised: a
    failed check leaves the estimate as it was and the real run reports the problem."""
    env = {**os.environ, "TUNEGRAPH_THREADS": str(hardware.cpu_threads_per_run())}
    if device != "cuda":
        busy = cpu_busy_percent()
        if busy >= BUSY_PERCENT:
            return (
                f"the CPU is {busy:.0f}% busy: a speed check now would time the load, not the model"
            )
    else:
        index = gpu_with_room(need_gib)
        if index is None:
            return f"no GPU has {need_gib:.1f} GiB free to measure this model's speed now"
        env["CUDA_VISIBLE_DEVICES"] = str(index)
    root = paths.data_dir() / "speed-checks"
    root.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="check-", dir=root))
    try:
        probe = probe_spec(spec)
        probe.save(run_dir / SPEC_FILE)
        started = time.time()
        try:
            proc = subprocess.run(
                entry_command(sys.executable, "worker", str(run_dir)),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                timeout=PROBE_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"the speed check took over {PROBE_TIMEOUT_S:.0f} s"
        events = list(read_events(run_dir / WORKER_LOG))
        if proc.returncode != 0:
            errors = [e.data.get("message") for e in events if e.kind == "error"]
            return "the speed check failed" + (f": {errors[-1]}" if errors else "")
        sample = measured_sample(events, started, probe, tokens_per_micro)
        if sample is None:
            return "the speed check reported too few steps to measure"
        calibration.record(key, sample)
        return None
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def measured_sample(
    events: list, started: float, probe: JobSpec, tokens_per_micro: float
) -> dict | None:
    """A calibration sample from a speed check's events, None without at least two timed steps.

    Start-up runs from the process start to the first step, plus whatever the first step took
    beyond a normal one (one-off warm-up every run pays); training is the steps after the first
    (the lower quartile of the step times: see the module docstring); the end is evaluation, samples
    and saving."""
    state_ts = {e.data["state"]: e.ts for e in events if e.kind == "status"}
    steps = sorted({e.data["step"]: e.ts for e in events if e.kind == "metric"}.items())
    if len(steps) < 3 or not {"training", "evaluating", "completed"} <= state_ts.keys():
        return None
    gaps = [b[1] - a[1] for a, b in zip(steps, steps[1:], strict=False)]
    per_step = statistics.quantiles(gaps, n=4, method="inclusive")[0]
    warm_up = max(0.0, steps[0][1] - state_ts["training"] - per_step)
    micro = len(gaps) * probe.training.grad_accum
    return {
        "rows": None,
        "micro_batches": micro,
        "computed_tokens": round(micro * tokens_per_micro),
        "eval_tokens": None,
        "gguf": False,
        "start_s": round(state_ts["training"] - started + warm_up, 3),
        "train_s": round(per_step * len(gaps), 3),
        "end_s": round(state_ts["completed"] - state_ts["evaluating"], 3),
        "speed_check": True,
    }
