"""The supervisor with real processes on the CPU: queueing on CPU slots and fake GPUs, cancel,
pause and resume, crash recovery, refusal, continue, and the estimate's parameter count."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from engine.errors import TunegraphError
from engine.events import read_events
from engine.hardware import Gpu, parse_fake
from engine.rundir import WORKER_LOG
from engine.supervisor import client, scheduler
from engine.supervisor.process import ensure_supervisor, supervisor_pid
from engine.training.checkpoints import has_checkpoint
from tests.helpers import (
    GPU_RUN,
    cpu_estimate,
    gpu_of_holds,
    make_graph,
    make_spec,
    schedule_events,
    wait_for,
    wait_until,
    worker_pid,
)

REPO = Path(__file__).resolve().parents[1]


def run_dir(store, run_id: str) -> Path:
    return Path(store.run_json(run_id)["run_dir"])


def no_holds(store):
    return lambda: not store.holds()


def worker_metric_steps(folder: Path) -> list[int]:
    return [e["step"] for e in read_events(folder / WORKER_LOG) if e.kind == "metric"]


# -- scheduling, continue ---------------------------------------------------------------------
def test_three_runs_on_two_cpu_slots_the_third_waits_and_continue(sup, data, capsys):
    """Three runs on two CPU slots: two start, the third waits for a slot. The first (trained by
    epochs) is then continued from its final checkpoint while the third still trains."""
    from app.cli.main import main

    specs = [
        make_spec(data, "parent", max_steps=0, epochs=1.0, save_steps=4),
        make_spec(data, "slot 1", max_steps=4),
        make_spec(data, "slot 2", max_steps=4),
    ]
    entries = client.submit(sup, specs, [cpu_estimate(s) for s in specs])
    assert [e["state"] for e in entries] == ["queued"] * 3
    ids = [e["id"] for e in entries]

    # the first two start at once (in the round after the submissions are answered, as one
    # group sharing the base); the third waits for a slot
    wait_until(lambda: {h["run_id"] for h in sup.holds()} == set(ids[:2]), 10, "two to start")
    assert sup.run_json(ids[2])["state"] == "queued"

    parent = wait_for(sup, ids[0], "completed", 120)
    final = parent["step"]
    assert final == parent["max_steps"] and has_checkpoint(parent["run_dir"])
    capsys.readouterr()
    assert main(["continue", "parent", "--epochs", "1", "--json"]) == 0
    child_entry = json.loads(capsys.readouterr().out)
    assert child_entry["parent"] == parent["id"] and child_entry["state"] == "queued"

    runs = [parent] + [wait_for(sup, run_id, "completed", 120) for run_id in ids[1:]]
    order = schedule_events(sup, ids)
    placed = {run_id: ts for ts, run_id, what in order if what == "placed"}
    queued = {run_id: ts for ts, run_id, what in order if what == "queued"}
    assert set(placed) == set(ids) and set(queued) == set(ids)
    assert placed[ids[2]] > max(placed[ids[0]], placed[ids[1]])
    first_done = min(runs[0]["finished_at"], runs[1]["finished_at"])
    assert placed[ids[2]] >= first_done, "the third run started before a slot was free"
    assert queued[ids[2]] < first_done, "the third run was not queued at submission"
    for run in runs:
        assert run["device"] == "cpu" and run["step"] == run["max_steps"]
        assert "adapter_dir" in [a["kind"] for a in run["artifacts"]]

    child = wait_for(sup, child_entry["id"], "completed", 120)
    assert child["parent"] == parent["id"] and child["name"] == "parent (+1 ep)"
    assert child["max_steps"] > parent["max_steps"] and child["step"] == child["max_steps"]
    assert sup.metrics(child["id"])[0]["step"] == final + 1  # resumed, not from scratch
    assert f"Resuming from checkpoint-{final}" in "\n".join(sup.logs(child["id"]))
    assert sup.run_json(parent["id"])["parent"] is None
    wait_until(no_holds(sup), 10, "the holds to be released")


def test_two_runs_placed_on_two_fake_gpus_the_third_is_held(sup, data, monkeypatch):
    monkeypatch.setenv("TUNEGRAPH_FAKE_GPUS", "24,24")
    big = {
        "params": 1,
        "trainable_params": 1,
        "vram_gib": {"bf16": 15.0, "4bit": 6.0},
        "mode": "lora",
        "device": "cuda:0",
    }
    specs = [make_spec(data, f"gpu run {i}", device="auto", max_steps=3) for i in range(3)]
    ids = [e["id"] for e in client.submit(sup, specs, [big] * 3)]

    holds = {h["run_id"]: h for h in sup.holds()}
    assert {str(holds[ids[0]]["gpu"]), str(holds[ids[1]]["gpu"])} == {"0", "1"}
    assert holds[ids[0]]["gib"] == holds[ids[1]]["gib"] == 15.0
    schedule = sup.events(ids[1], kinds="schedule")[0]
    assert "needs 15.0 GiB" in schedule["message"] and "GPU" in schedule["message"]
    # 15 GiB more fits neither GPU (90% of 24 minus 15 held): the third waits without a hold
    time.sleep(1.0)
    assert ids[2] not in {h["run_id"] for h in sup.holds()}
    assert sup.run_json(ids[2])["state"] == "queued"
    with pytest.raises(TunegraphError, match="a queued run cannot be paused"):
        client.control(sup, "pause", ids[2])
    client.control(sup, "cancel", ids[2])  # a queued run is cancelled without any worker
    third = wait_for(sup, ids[2], "cancelled", 10)
    assert not (Path(third["run_dir"]) / WORKER_LOG).exists()
    assert sup.events(ids[2], kinds="schedule") == []

    for run_id in ids[:2]:
        assert wait_for(sup, run_id, "completed", 120)["step"] == 3
    wait_until(no_holds(sup), 10, "the holds to be released")


def test_refused_at_submission_with_the_numbers_while_the_valid_module_is_queued(
    sup, tmp_path, monkeypatch
):
    monkeypatch.setenv("TUNEGRAPH_FAKE_GPUS", "8")
    graph = make_graph(
        tmp_path,
        {"small": {"max_steps": 3}, "huge": {"micro_batch_size": 512, "max_seq_length": 2048}},
    )
    out = subprocess.run(
        [sys.executable, "-m", "app", "run", str(graph), "--detach", "--json", "--yes"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert out.returncode != 0
    entries = {e["name"]: e for e in json.loads(out.stdout)}
    assert entries["small"]["state"] == "queued" and "error" not in entries["small"]
    huge = entries["huge"]
    assert huge["state"] == "refused"
    message = huge["error"]["message"]
    assert "needs ~" in message and "GiB" in message and "largest GPU has 8 GiB" in message
    assert "micro batch size" in huge["error"]["hint"]  # 4-bit was already chosen
    assert "refused" in out.stderr and "Traceback" not in out.stderr

    run = sup.run_json(huge["id"])
    assert run["state"] == "refused" and run["error"]["message"] == message
    assert not (Path(run["run_dir"]) / WORKER_LOG).exists()  # never started
    cancel = subprocess.run(
        [sys.executable, "-m", "app", "cancel", "small"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert cancel.returncode == 0, cancel.stderr
    assert wait_for(sup, entries["small"]["id"], "cancelled", 20)["state"] == "cancelled"


# -- cancel, pause, resume ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("worker_said", "ends_as"),
    [("completed", "completed"), ("failed", "cancelled"), ("training", "cancelled")],
)
def test_a_cancel_that_lands_after_the_run_completed_leaves_it_completed(
    store, data, worker_said, ends_as
):
    """The user's stop reaches a worker that may have finished first: its adapter and exports
    are written, so the run stays completed. One that failed while being stopped, or was killed
    before writing a state, ends cancelled, as the user asked."""
    from engine.events import run_state
    from engine.supervisor.service import Supervisor
    from tests.helpers import a_run_whose_worker_said

    supervisor = Supervisor(store, idle_exit_s=0)
    run_id, folder = a_run_whose_worker_said(store, data, worker_said)
    supervisor.cancelling[run_id] = time.time()
    supervisor.finish(run_id, 0)
    assert run_state(folder)[0] == ends_as and run_id not in supervisor.cancelling


def test_cancel_mid_run_kills_the_worker_tree_and_keeps_metrics(sup, data):
    spec = make_spec(data, "to cancel", max_steps=2000)
    [entry] = client.submit(sup, [spec])  # no estimate: the supervisor gets one from a helper
    run_id = entry["id"]
    assert entry["state"] == "queued"
    assert sup.run_json(run_id)["estimate"]["params"] == cpu_estimate(spec)["params"]
    wait_for(sup, run_id, "training", 90, step=3)
    worker = psutil.Process(worker_pid(run_dir(sup, run_id)))
    tree = [worker, *worker.children(recursive=True)]

    t0 = time.time()
    client.control(sup, "cancel", run_id)
    _, alive = psutil.wait_procs(tree, timeout=max(0.0, 2.0 - (time.time() - t0)))
    assert not alive, f"worker still alive {time.time() - t0:.1f} s after cancel"

    run = wait_for(sup, run_id, "cancelled", 10)
    assert len(sup.metrics(run_id)) >= 3
    assert run["metrics"]["loss"] is not None and run["step"] >= 3
    assert not (run_dir(sup, run_id) / "adapter").exists()
    assert run["artifacts"] == []
    wait_until(no_holds(sup), 10, "the hold to be released")
    assert run_id in [r["id"] for r in sup.list_runs()]
    with pytest.raises(TunegraphError, match="already cancelled"):
        client.control(sup, "cancel", run_id)


def test_pause_and_resume_continue_the_uninterrupted_curve(sup, data):
    paused = make_spec(data, "paused", max_steps=60)
    twin = make_spec(data, "uninterrupted", max_steps=60)
    ids = [e["id"] for e in client.submit(sup, [paused, twin], [cpu_estimate(paused)] * 2)]
    run_id, twin_id = ids

    wait_for(sup, run_id, "training", 90, step=2)
    worker = worker_pid(run_dir(sup, run_id))
    os.kill(worker, signal.SIGSTOP)  # so it cannot run to the end before the request lands
    try:
        client.control(sup, "pause", run_id)
    finally:
        os.kill(worker, signal.SIGCONT)
    run = wait_for(sup, run_id, "paused", 30)
    pause_step = run["step"]
    assert 2 <= pause_step < 60
    assert has_checkpoint(run_dir(sup, run_id))
    wait_until(lambda: run_id not in {h["run_id"] for h in sup.holds()}, 10, "hold release")
    with pytest.raises(TunegraphError, match="only a training run can be paused"):
        client.control(sup, "pause", run_id)

    assert client.control(sup, "resume", run_id)["state"] == "queued"
    run = wait_for(sup, run_id, "completed", 120)
    wait_for(sup, twin_id, "completed", 120)
    assert run["id"] == run_id and run["step"] == 60

    resumed = sup.metrics(run_id)
    reference = sup.metrics(twin_id)
    assert [m["step"] for m in resumed] == list(range(1, 61))
    assert [m["step"] for m in reference] == list(range(1, 61))
    raw = worker_metric_steps(run_dir(sup, run_id))
    assert len(raw) == len(set(raw)) == 60, "the curve holds duplicate steps"
    for a, b in zip(resumed, reference, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4), f"loss at step {a['step']}"
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-6), f"lr at step {a['step']}"
    logs = "\n".join(sup.logs(run_id))
    assert f"Resuming from checkpoint-{pause_step}" in logs


# -- crash recovery ----------------------------------------------------------------------------
def test_crash_recovery_reconciles_dead_workers_and_readopts_live_ones(sup, data):
    """The supervisor is killed with two workers running; one of them is killed too. A new
    supervisor re-adopts the live one, which completes, and restarts the dead one from its last
    checkpoint on its own (retrying, interrupted); it completes with a whole curve."""
    doomed = make_spec(data, "killed worker", max_steps=40, save_steps=2)
    orphan = make_spec(data, "orphaned worker", max_steps=40)
    for spec in (doomed, orphan):  # a worker each (a group's crash: tests/test_share_base.py)
        spec.resources.share_base = False
    ids = [e["id"] for e in client.submit(sup, [doomed, orphan], [cpu_estimate(doomed)] * 2)]
    doomed_id, orphan_id = ids
    # each worker is frozen (SIGSTOP) as soon as it trains, so neither can finish meanwhile
    wait_for(sup, doomed_id, "training", 90, step=3)
    doomed_pid = worker_pid(run_dir(sup, doomed_id))
    os.kill(doomed_pid, signal.SIGSTOP)
    wait_for(sup, orphan_id, "training", 90, step=1)
    orphan_pid = worker_pid(run_dir(sup, orphan_id))
    os.kill(orphan_pid, signal.SIGSTOP)
    try:
        assert has_checkpoint(run_dir(sup, doomed_id))
        old = supervisor_pid()
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: supervisor_pid() is None, 10, "the supervisor to die")
        os.kill(doomed_pid, signal.SIGKILL)
        wait_until(lambda: not _alive(doomed_pid), 10, "the worker to die")
        assert ensure_supervisor() != old

        def first_attempt_ended():
            sup.ingest(run_dir(sup, doomed_id))
            attempts = sup.run_json(doomed_id)["attempts"]
            return attempts[0] if attempts and attempts[0]["ended_at"] else None

        ended = wait_until(first_attempt_ended, 20, "the dead worker to be retried")
        assert orphan_id in [h["run_id"] for h in sup.holds()]  # the live one keeps its hold
    finally:
        os.kill(orphan_pid, signal.SIGCONT)
    assert "interrupted: the worker died while nobody was watching" in ended["reason"]
    assert "restarting from its last checkpoint, retry 1 of 3" in ended["reason"]

    orphan_run = wait_for(sup, orphan_id, "completed", 120)
    assert orphan_run["step"] == 40
    assert any("re-adopted" in line for line in sup.logs(orphan_id))
    assert len(worker_metric_steps(run_dir(sup, orphan_id))) == 40

    run = wait_for(sup, doomed_id, "completed", 120)
    assert run["step"] == 40 and run["id"] == doomed_id
    assert [m["step"] for m in sup.metrics(doomed_id)] == list(range(1, 41))
    assert (run_dir(sup, doomed_id) / "adapter" / "adapter_config.json").exists()
    wait_until(no_holds(sup), 10, "the holds to be released")


def test_a_failed_run_without_a_checkpoint_resumes_from_step_0_and_keeps_why_it_failed(
    sup, data, tmp_path
):
    moved = tmp_path / "elsewhere.jsonl"
    spec = make_spec(data, "no checkpoint", max_steps=4)
    [entry] = client.submit(sup, [spec], [cpu_estimate(spec)])
    run_id = entry["id"]
    data.rename(moved)  # the worker cannot read its data: failed before any checkpoint
    run = wait_for(sup, run_id, "failed", 120)
    assert not has_checkpoint(run_dir(sup, run_id))
    moved.rename(data)
    assert client.control(sup, "resume", run_id)["state"] == "queued"
    run = wait_for(sup, run_id, "completed", 120)
    assert [m["step"] for m in sup.metrics(run_id)] == [1, 2, 3, 4]
    assert any("restarted from the beginning: no checkpoint yet" in x for x in sup.logs(run_id))
    first, second = run["attempts"]
    assert "does not exist" in first["reason"] or "not found" in first["reason"], first
    assert second["reason"] == "completed"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# -- estimates and placement (no processes) ----------------------------------------------------
def test_estimate_parameter_count_equals_the_loaded_model(data):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from engine.models.tiny import ensure_builtin_tiny_model
    from engine.plan.estimate import trainable_params
    from engine.plan.shape import model_shape

    folder = ensure_builtin_tiny_model()
    shape = model_shape(AutoConfig.from_pretrained(folder))
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert shape.params == model.num_parameters() == sum(p.numel() for p in model.parameters())

    spec = make_spec(data)
    peft = get_peft_model(
        model,
        LoraConfig(
            r=spec.lora.r, lora_alpha=spec.lora.alpha, target_modules=spec.lora.target_modules
        ),
    )
    assert trainable_params(shape, spec) == peft.get_nb_trainable_parameters()[0]


def est(bf16: float, four: float, mode: str = "lora") -> dict:
    return {"vram_gib": {"bf16": bf16, "4bit": four}, "mode": mode}


def test_place_spreads_runs_over_gpus_and_waits_when_full():
    gpus = parse_fake("24,24")
    first = scheduler.place(est(15, 6), gpus, {}, set(), 1, True, 0)
    assert first.device == "cuda" and first.gpus == [0] and first.hold_gib == 15
    second = scheduler.place(est(15, 6), gpus, {0: 15}, set(), 1, True, 0)
    assert second.gpus == [1]
    assert scheduler.place(est(15, 6), gpus, {0: 15, 1: 15}, set(), 1, True, 0) is None
    # a 4-bit run holds its 4-bit figure and fits beside them
    small = scheduler.place(est(15, 6, "qlora"), gpus, {0: 15, 1: 15}, set(), 1, True, 0)
    assert small.gpus == [0] and small.hold_gib == 6
    # a suspended GPU accepts nothing new
    assert scheduler.place(est(15, 6), gpus, {0: 15}, {1}, 1, True, 0) is None
    # DDP takes two GPUs at once, or waits
    assert scheduler.place(est(10, 4), gpus, {}, set(), 2, True, 0).gpus == [0, 1]
    assert scheduler.place(est(10, 4), gpus, {0: 15}, set(), 2, True, 0) is None


def test_place_on_the_cpu_uses_slots():
    assert scheduler.place(est(1, 1), [], {}, set(), 1, True, 1).device == "cpu"
    assert scheduler.place(est(1, 1), [], {}, set(), 1, True, 0) is None
    gpus = [Gpu(0, "fake", 24, 24, fake=True)]
    assert scheduler.place(est(1, 1), gpus, {}, set(), 1, False, 1).device == "cpu"


def test_refusal_gives_the_numbers_and_what_to_change():
    gpus = parse_fake("RTX 4090:24")
    refused = scheduler.refusal(est(31.2, 25.0, "qlora"), gpus, 1, True)
    assert "needs ~31.2 GiB (25.0 GiB in 4-bit), largest GPU has 24 GiB" in refused.message
    assert refused.hint.startswith("Lower micro batch size")
    # forced to 16-bit where only 4-bit would fit: it would wait forever, so it is refused
    forced = scheduler.refusal(est(31.2, 12.0), gpus, 1, True)
    assert "needs ~31.2 GiB" in forced.message and forced.hint.startswith("Enable 4-bit")
    assert scheduler.refusal(est(31.2, 12.0, "qlora"), gpus, 1, True) is None
    assert scheduler.refusal(est(99, 99), gpus, 1, False) is None  # CPU runs are never refused
    assert scheduler.refusal(est(99, 99), [], 1, True) is None  # no GPU: the CPU takes it
    assert "asks for 2 GPUs" in scheduler.refusal(est(1, 1), gpus, 2, True).message
    no_gpu = scheduler.refusal(est(1, 1), [], 1, True, requires_gpu=True)
    assert "asks for a CUDA GPU" in no_gpu.message and "cpu" in no_gpu.hint


def test_a_torn_checkpoint_does_not_count_and_is_dropped_before_a_resume(tmp_path):
    from transformers.trainer_utils import get_last_checkpoint

    from engine.training.checkpoints import checkpoints, drop_torn_checkpoints

    folder = tmp_path / "checkpoints"
    (folder / "checkpoint-2").mkdir(parents=True)
    (folder / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (folder / "checkpoint-4").mkdir()  # the worker was killed while writing it
    (folder / "checkpoint-4" / "adapter_model.safetensors").write_bytes(b"partial")
    assert checkpoints(tmp_path) == [folder / "checkpoint-2"] and has_checkpoint(tmp_path)
    drop_torn_checkpoints(tmp_path)
    assert get_last_checkpoint(str(folder)) == str(folder / "checkpoint-2")
    assert not has_checkpoint(tmp_path / "elsewhere")


def test_a_run_without_a_training_engine_fails_with_the_fix_instead_of_looping(
    sup, data, monkeypatch, tmp_path
):
    """A frozen app whose engine is not set up: the run fails once, naming what to do."""
    spec = make_spec(data, "no engine")
    estimate = cpu_estimate(spec)
    monkeypatch.setenv("TUNEGRAPH_ENGINE_PYTHON", str(tmp_path / "missing" / "python"))
    [entry] = client.submit(sup, [spec], [estimate])
    run = wait_for(sup, entry["id"], "failed", 30)
    assert "training engine is not set up" in run["reason"]
    assert "engine setup" in run["error"]["hint"]
    wait_until(no_holds(sup), 10, "the hold to be released")


# -- no run is placed blind ---------------------------------------------------------------------
def test_a_run_the_helper_cannot_estimate_is_refused_with_its_error_while_the_other_starts(
    sup, data, tmp_path
):
    """On a machine without a GPU: both runs come without an estimate, so the supervisor's
    helper estimates them. The one whose base model is missing is refused with the helper's own
    error; the other is estimated, queued and trains on the CPU."""
    from engine.spec import BaseModelSpec

    missing = tmp_path / "no-such-model"
    broken = make_spec(data, "unestimable")
    broken.base_model = BaseModelSpec(source=str(missing))
    fine = make_spec(data, "estimable", max_steps=3)
    refused, queued = client.submit(sup, [broken, fine])

    assert refused["state"] == "refused"
    message = refused["error"]["message"]
    assert message.startswith(
        "unestimable: not estimated, and no run is placed without an estimate: "
        "the estimate helper failed: Base model"
    )
    assert str(missing) in message  # the helper's own words, naming the missing folder
    assert "Traceback" not in message and "ModelError" not in message
    assert refused["error"]["hint"] == "Fix what the error names, then start it again."
    run = sup.run_json(refused["id"])
    assert run["state"] == "refused" and run["reason"] == message and run["estimate"] is None
    assert not (Path(run["run_dir"]) / WORKER_LOG).exists()  # never started

    assert queued["state"] == "queued"
    run = wait_for(sup, queued["id"], "completed", 120)
    assert run["estimate"]["params"] == cpu_estimate(fine)["params"]
    assert run["device"] == "cpu" and run["step"] == 3
    wait_until(no_holds(sup), 10, "the hold to be released")


@pytest.fixture
def in_process(monkeypatch, tg_home, tmp_path):
    """A Supervisor in this process (driven by hand: handle, watch_estimates) whose estimate
    helper is `helper.sh`, a stand-in for the engine's Python that the test writes."""
    from engine.store.index import Store
    from engine.supervisor.service import Supervisor

    script = tmp_path / "helper.sh"
    monkeypatch.setenv("TUNEGRAPH_ENGINE_PYTHON", str(script))
    store = Store()
    supervisor = Supervisor(store, idle_exit_s=0)
    yield supervisor, script
    supervisor.abandon_estimates()
    store.close()


def submit_by_hand(supervisor, spec) -> tuple[str, int, dict | None]:
    """Create a run and hand its submit command (without an estimate) to `supervisor`."""
    from engine.training.launch import create_run

    run_id = create_run(spec, supervisor.store)
    cmd_id = supervisor.store.add_command("submit", run_id, estimate=None)
    [cmd] = supervisor.store.take_commands()
    return run_id, cmd_id, supervisor.handle(cmd)


def test_a_helper_that_gives_no_answer_in_time_is_killed_and_the_run_refused(
    in_process, data, monkeypatch
):
    from engine.supervisor import commands

    supervisor, script = in_process
    script.write_text("#!/bin/sh\nexec sleep 60\n")
    script.chmod(0o755)
    monkeypatch.setattr(commands, "ESTIMATE_TIMEOUT_S", 1.0)
    run_id, cmd_id, answer = submit_by_hand(supervisor, make_spec(data, "slow"))
    assert answer is None  # answered once the helper is done
    helper = supervisor.estimating[run_id][0]
    supervisor.watch_estimates()
    assert run_id in supervisor.estimating  # not yet
    time.sleep(1.2)
    supervisor.watch_estimates()
    assert not supervisor.estimating and helper.returncode is not None
    result = supervisor.store.command(cmd_id)["result"]
    assert result["state"] == "refused"
    assert result["error"]["message"] == (
        "slow: not estimated, and no run is placed without an estimate: "
        "the estimate helper gave no answer in 1 s"
    )
    assert supervisor.store.run_json(run_id)["state"] == "refused"


def test_without_an_engine_to_estimate_in_the_run_is_refused_at_once(in_process, data):
    supervisor, script = in_process  # the script is never written: there is no engine
    run_id, _, answer = submit_by_hand(supervisor, make_spec(data, "no engine"))
    assert answer["state"] == "refused" and not supervisor.estimating
    message = answer["error"]["message"]
    assert "the estimate helper could not start: The training engine is not set up" in message
    assert "engine setup" in answer["error"]["hint"]
    assert supervisor.store.run_json(run_id)["state"] == "refused"


def test_a_run_still_being_estimated_when_the_supervisor_stops_is_refused(in_process, data):
    supervisor, script = in_process
    script.write_text("#!/bin/sh\nexec sleep 60\n")
    script.chmod(0o755)
    run_id, cmd_id, _ = submit_by_hand(supervisor, make_spec(data, "late"))
    supervisor.abandon_estimates()
    result = supervisor.store.command(cmd_id)["result"]
    assert result["state"] == "refused"
    assert result["error"]["message"].endswith(
        "no run is placed without an estimate: the supervisor stopped before the run was estimated"
    )
    assert supervisor.store.run_json(run_id)["state"] == "refused"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (
            "from engine.errors import ModelError\nraise ModelError('Base model: gone.', 'Pick one.')",
            "Base model: gone. Pick one.",
        ),
        ("raise KeyError('hidden_size')", "KeyError: 'hidden_size'"),
        ("import sys\nsys.exit('tunegraph: the config is broken')", "the config is broken"),
        ('print(\'{"error": {"message": "no such dataset"}}\')', "no such dataset"),
        ("import sys\nsys.exit(3)", "it exited with code 3 and printed no error"),
        ("print('not json')", "it printed no estimate"),
    ],
)
def test_the_helper_error_is_its_last_meaningful_line_or_its_json_error(code, expected):
    from engine.supervisor.commands import EstimateHelper, read_estimate

    helper = EstimateHelper([sys.executable, "-c", code])
    helper.wait(30)
    assert read_estimate(helper) == (None, expected)


def test_a_helper_that_prints_an_estimate_gives_it():
    from engine.supervisor.commands import EstimateHelper, last_error_line, read_estimate

    printed = json.dumps(est(1.5, 0.8))
    helper = EstimateHelper([sys.executable, "-c", f"print({printed!r})"])
    helper.wait(30)
    assert read_estimate(helper) == (est(1.5, 0.8), "")
    assert last_error_line("warning: slow\n\nValueError: bad\n   ^^^^\n\n") == "ValueError: bad"
    assert last_error_line("") == ""


# -- GPU policy "refuse" and suspended GPUs (fake GPUs, a real supervisor) ----------------------
def test_the_refuse_gpu_policy_refuses_a_run_that_does_not_fit_now_instead_of_queueing(
    sup, data, monkeypatch
):
    """Settings gpu_policy "refuse", one fake 24 GiB GPU: a 15 GiB run that fits is placed; a
    second one, which could fit the GPU but not now (15 GiB held), is refused at submission with
    why and what to do, never started, and stays refused when the GPU frees up. Under the
    default "queue" policy the same run waits instead, and starts once the GPU is free."""
    from engine import settings

    monkeypatch.setenv("TUNEGRAPH_FAKE_GPUS", "24")
    settings.save(settings.Settings(gpu_policy="refuse"))
    [first] = client.submit(
        sup, [make_spec(data, "first", device="auto", max_steps=2000)], [GPU_RUN]
    )
    assert first["state"] == "queued"
    # placed in the supervisor's tick right after it answered the submission
    wait_until(lambda: gpu_of_holds(sup) == {first["id"]: "0"}, 10, "the first run's placement")

    [busy] = client.submit(sup, [make_spec(data, "busy", device="auto", max_steps=3)], [GPU_RUN])
    assert busy["state"] == "refused"
    assert busy["error"]["message"] == (
        "busy: every GPU is busy and the GPU policy is to refuse rather than queue"
    )
    assert "set the GPU policy to queue in Settings" in busy["error"]["hint"]
    run = sup.run_json(busy["id"])
    assert run["state"] == "refused" and run["reason"] == busy["error"]["message"]
    assert not (Path(run["run_dir"]) / WORKER_LOG).exists()  # never started
    assert sup.events(busy["id"], kinds="schedule") == [] and busy["id"] not in gpu_of_holds(sup)

    settings.save(settings.Settings(gpu_policy="queue"))  # read at each submission
    [waits] = client.submit(sup, [make_spec(data, "waits", device="auto", max_steps=3)], [GPU_RUN])
    run = sup.run_json(waits["id"])
    assert waits["state"] == run["state"] == "queued"
    assert run["reason"].startswith("waiting for GPU memory: needs 15.0 GiB on one GPU; GPU 0 has")
    client.control(sup, "cancel", first["id"])
    wait_until(lambda: gpu_of_holds(sup) == {waits["id"]: "0"}, 20, "the waiting run's placement")
    assert wait_for(sup, waits["id"], "completed", 120)["step"] == 3
    assert sup.run_json(busy["id"])["state"] == "refused"  # a refusal is final: never placed
    assert sup.events(busy["id"], kinds="schedule") == []
    wait_until(no_holds(sup), 10, "the holds to be released")


def test_gpus_suspended_in_settings_get_no_new_runs_until_unsuspended(sup, data, monkeypatch):
    """Two fake 24 GiB GPUs, GPU 0 suspended in settings before the supervisor starts: the first
    15 GiB run goes to GPU 1 although GPU 0 comes first, and the second waits, saying GPU 0 is
    suspended, while GPU 0 stays empty. The `unsuspend_gpu` command (what the hardware view
    sends) places it on GPU 0 at once."""
    from engine import settings

    monkeypatch.setenv("TUNEGRAPH_FAKE_GPUS", "24,24")
    settings.save(settings.Settings(suspended_gpus=[0]))
    specs = [make_spec(data, f"gpu run {i}", device="auto", max_steps=2000) for i in range(2)]
    first, second = client.submit(sup, specs, [GPU_RUN] * 2)
    assert (first["state"], second["state"]) == ("queued", "queued")
    # the supervisor answers the submissions once it has placed what fits in that round
    assert gpu_of_holds(sup) == {first["id"]: "1"}
    run = sup.run_json(second["id"])
    assert "GPU 0 is suspended" in run["reason"] and "GPU 1 has 6.6 GiB" in run["reason"]
    assert sup.events(second["id"], kinds="schedule") == []

    assert client.send(sup, "unsuspend_gpu", gpu=0) == {"ok": True}
    wait_until(
        lambda: gpu_of_holds(sup) == {first["id"]: "1", second["id"]: "0"}, 10, "the placement"
    )
    # the hold is written a moment before the placement's event
    wait_until(lambda: sup.events(second["id"], kinds="schedule"), 10, "the placement event")
    [placed] = sup.events(second["id"], kinds="schedule")
    assert "placed on GPU 0 with hold 15.0 GiB" in placed["message"]
    for entry in (first, second):
        client.control(sup, "cancel", entry["id"])
        wait_for(sup, entry["id"], "cancelled", 20)
    wait_until(no_holds(sup), 10, "the holds to be released")


def test_the_refuse_policy_does_not_accept_two_runs_for_one_place(sup, data, monkeypatch):
    """Two 15 GiB runs whose submissions the supervisor takes in one round (before either is
    placed), on one fake 24 GiB GPU under the refuse policy: the second is refused, never
    queued behind the first."""
    from engine import settings
    from engine.training.launch import create_run

    monkeypatch.setenv("TUNEGRAPH_FAKE_GPUS", "24")
    settings.save(settings.Settings(gpu_policy="refuse"))
    specs = [make_spec(data, name, device="auto", max_steps=2000) for name in ("a", "b")]
    run_ids = [create_run(spec, sup, estimate=GPU_RUN) for spec in specs]
    commands = [sup.add_command("submit", run_id, estimate=GPU_RUN) for run_id in run_ids]
    ensure_supervisor()  # it finds both commands waiting and answers them in one round
    first, second = (client.await_result(sup, c, "submit") for c in commands)
    assert (first["state"], second["state"]) == ("queued", "refused"), (first, second)
    assert "every GPU is busy" in second["error"]["message"]
    wait_until(lambda: gpu_of_holds(sup) == {run_ids[0]: "0"}, 10, "the first placement")
    client.control(sup, "cancel", run_ids[0])
    wait_until(no_holds(sup), 20, "the hold to be released")
