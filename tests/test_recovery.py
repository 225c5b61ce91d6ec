"""A crash costs minutes, never the run: a worker killed at any step is restarted by the
supervisor from its last checkpoint (or step 0) and ends where an uninterrupted twin ends; an
out-of-memory climbs the ladder (smaller micro-batch, checkpointing, 4-bit) and says what it
changed; every attempt stays in the run's history. Real supervisor, real workers, tiny model."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from engine.spec import JobSpec
from engine.store.queries import attempts_of
from engine.supervisor import client
from engine.supervisor.recovery import MAX_RETRIES, nothing_left, oom_fallback
from engine.training.checkpoints import checkpoints, has_checkpoint
from tests.helpers import (
    cpu_estimate,
    make_spec,
    wait_for,
    wait_until,
    worker_pid,
    write_chats,
)


def final_loss(store, run_id: str) -> float:
    return store.metrics(run_id)[-1]["loss"]


def settled(store, run_id: str, state: str, words: str, timeout: float) -> dict:
    """The run once it is in `state` with `words` in its reason (a worker's own `failed` comes
    a moment before the supervisor decides what to do about it)."""

    def check():
        store.ingest(Path(store.run_json(run_id)["run_dir"]))
        run = store.run_json(run_id)
        return run if run["state"] == state and words in (run["reason"] or "") else None

    return wait_until(check, timeout, f"{state} with {words!r}")


# -- the out-of-memory ladder, as data ---------------------------------------------------------
def test_the_ladder_halves_the_batch_then_checkpoints_then_goes_4bit(tmp_path):
    spec = make_spec(write_chats(tmp_path / "c.jsonl"), micro_batch_size=4, grad_accum=2)
    spec.training.gradient_checkpointing = "auto"
    steps = []
    current = spec
    while (rung := oom_fallback(current, "cuda")) is not None:
        current, what = rung
        steps.append(what)
    assert steps == [
        "micro-batch 4 → 2, gradient accumulation 2 → 4 (the same effective batch of 8)",
        "micro-batch 2 → 1, gradient accumulation 4 → 8 (the same effective batch of 8)",
        "gradient checkpointing auto → on",
        "base model auto → 4-bit (QLoRA)",
    ]
    assert current.lora.quantization == "4bit" and current.training.gradient_checkpointing == "on"
    assert spec.training.micro_batch_size == 4, "the ladder must not change the spec it was given"
    on_cpu = oom_fallback(oom_fallback(oom_fallback(spec, "cpu")[0], "cpu")[0], "cpu")[0]
    assert oom_fallback(on_cpu, "cpu") is None
    assert "4-bit (it needs a GPU)" in nothing_left(on_cpu, "cpu")
    gguf = JobSpec.from_dict({**on_cpu.to_dict(), "base_model": {"source": "gguf:/m.gguf"}})
    assert oom_fallback(gguf, "cuda") is None


def test_attempts_keep_every_start_and_why_it_ended():
    statuses = [
        {"ts": 1.0, "state": "queued"},
        {"ts": 2.0, "state": "starting"},
        {"ts": 3.0, "state": "training"},
        {"ts": 4.0, "state": "retrying", "reason": "interrupted: the worker exited with code -9"},
        {"ts": 4.1, "state": "queued", "reason": "retrying"},
        {"ts": 5.0, "state": "starting"},
        {"ts": 6.0, "state": "failed", "reason": "DataError: bad line"},
        {"ts": 7.0, "state": "queued", "reason": "resumed"},
        {"ts": 8.0, "state": "starting"},
    ]
    assert attempts_of(statuses) == [
        {
            "started_at": 2.0,
            "ended_at": 4.0,
            "reason": "interrupted: the worker exited with code -9",
        },
        {"started_at": 5.0, "ended_at": 6.0, "reason": "DataError: bad line"},
        {"started_at": 8.0, "ended_at": None, "reason": None},
    ]


# -- kill -9 ---------------------------------------------------------------------------------
@pytest.mark.parametrize("after_checkpoint", [False, True], ids=["before", "after"])
def test_a_killed_worker_is_restarted_and_ends_like_its_uninterrupted_twin(
    sup, data, after_checkpoint
):
    killed = make_spec(data, "killed", max_steps=24, save_steps=6)
    twin = make_spec(data, "twin", max_steps=24, save_steps=6)
    run_id, twin_id = [
        e["id"] for e in client.submit(sup, [killed, twin], [cpu_estimate(killed)] * 2)
    ]
    folder = Path(sup.run_json(run_id)["run_dir"])
    wait_for(sup, run_id, "training", 90, step=8 if after_checkpoint else 2)
    if after_checkpoint:
        wait_until(lambda: has_checkpoint(folder), 30, "the first checkpoint")
    os.kill(worker_pid(folder), signal.SIGKILL)

    run = wait_for(sup, run_id, "completed", 180)
    wait_for(sup, twin_id, "completed", 180)
    assert run["step"] == 24 and [m["step"] for m in sup.metrics(run_id)] == list(range(1, 25))
    assert final_loss(sup, run_id) == pytest.approx(final_loss(sup, twin_id), abs=1e-4)
    first, second = run["attempts"]
    assert "interrupted" in first["reason"] and second["reason"] == "completed"
    logs = "\n".join(sup.logs(run_id))
    if after_checkpoint:
        assert "restarting from its last checkpoint, retry 1 of 3" in logs
        assert "Resuming from checkpoint-" in logs
    else:
        assert "restarting from step 0 (no checkpoint yet), retry 1 of 3" in logs


# -- out of memory ------------------------------------------------------------------------------
def test_out_of_memory_halves_the_micro_batch_and_keeps_the_effective_batch(sup, data, monkeypatch):
    monkeypatch.setenv("TUNEGRAPH_FAULT_OOM", "2:batch>2")  # out of memory above 2 rows a step
    spec = make_spec(data, "oom batch", max_steps=6, micro_batch_size=4, grad_accum=1)
    [entry] = client.submit(sup, [spec], [cpu_estimate(spec)])
    run = wait_for(sup, entry["id"], "completed", 180)
    training = run["spec"]["training"]
    assert (training["micro_batch_size"], training["grad_accum"]) == (2, 2)
    assert JobSpec.load(Path(run["run_dir"]) / "spec.json").training.micro_batch_size == 2
    first, second = run["attempts"]
    assert "OutOfMemoryError" in first["reason"] and second["reason"] == "completed"
    logs = "\n".join(sup.logs(entry["id"]))
    assert "micro-batch 4 → 2, gradient accumulation 1 → 2 (the same effective batch of 4)" in logs


def test_out_of_memory_turns_checkpointing_on_when_a_smaller_batch_is_not_enough(
    sup, data, monkeypatch
):
    monkeypatch.setenv("TUNEGRAPH_FAULT_OOM", "2:no-checkpointing")
    saved = make_spec(data, "oom checkpointing", max_steps=6, micro_batch_size=2)
    [entry] = client.submit(sup, [saved], [cpu_estimate(saved)])
    run = wait_for(sup, entry["id"], "completed", 240)
    assert run["spec"]["training"]["micro_batch_size"] == 1
    assert run["spec"]["training"]["gradient_checkpointing"] == "on"
    assert len(run["attempts"]) == 3  # batch 2 → 1 did not help, checkpointing did


def test_out_of_memory_with_nothing_left_to_try_fails_saying_why(sup, data, monkeypatch):
    # the supervisor (and so every worker) takes the environment of the first submission
    monkeypatch.setenv("TUNEGRAPH_FAULT_OOM", "2")  # out of memory whatever changes
    hopeless = make_spec(data, "oom always", max_steps=6, micro_batch_size=1)
    hopeless.training.gradient_checkpointing = "on"
    [entry] = client.submit(sup, [hopeless], [cpu_estimate(hopeless)])
    run = settled(sup, entry["id"], "failed", "still out of memory", 120)
    assert "it needs a GPU" in run["reason"]
    assert len(run["attempts"]) == 1


def test_retries_stop_after_three_and_the_run_stays_resumable(sup, data, monkeypatch):
    monkeypatch.setenv("TUNEGRAPH_FAULT_OOM", "2")
    spec = make_spec(data, "oom forever", max_steps=6, micro_batch_size=8)
    [entry] = client.submit(sup, [spec], [cpu_estimate(spec)])
    run = settled(sup, entry["id"], "failed", "automatic retries", 300)
    assert "CUDA out of memory (after 3 automatic retries)" in run["reason"]
    assert len(run["attempts"]) == MAX_RETRIES + 1
    assert run["spec"]["training"]["micro_batch_size"] == 1  # 8 → 4 → 2 → 1
    assert all("OutOfMemoryError" in a["reason"] for a in run["attempts"])


def test_save_minutes_writes_checkpoints_between_save_steps(tmp_path, data):
    from engine.control import Control
    from engine.events import EventLog
    from engine.training.trainer import run_job

    spec = make_spec(data, "timed saves", max_steps=12, save_steps=0, save_total_limit=20)
    spec.training.save_minutes = 0.0001  # every step, on this machine
    folder = tmp_path / "run"
    folder.mkdir()
    with EventLog(folder / "events.jsonl") as log:
        run_job(spec, folder, log, Control(folder))
    steps = sorted(int(p.name.split("-")[1]) for p in checkpoints(folder))
    assert steps[-1] == 12 and len(steps) >= 6, steps
