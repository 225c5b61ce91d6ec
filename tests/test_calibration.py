"""The time range from this machine's own measured runs: what the supervisor records when a run
completes in one go, the fit it is read back with, and the estimate that uses it."""

from __future__ import annotations

import json

from engine import paths
from engine.plan import calibration, probe
from engine.plan.report import estimate_spec
from engine.supervisor import client
from tests.helpers import (
    cpu_estimate,
    make_spec,
    wait_for,
    wait_until,
    write_chats,
)


def sample(micro: int, tokens: float, train_s: float, gguf: bool = False, **times) -> dict:
    return {
        "rows": 40,
        "micro_batches": micro,
        "computed_tokens": tokens,
        "eval_tokens": 0,
        "gguf": gguf,
        "start_s": times.get("start_s", 5.0),
        "train_s": train_s,
        "end_s": times.get("end_s", 2.0),
    }


def test_the_training_phase_is_fitted_per_micro_batch_and_per_token():
    # 0.05 s per micro-batch + 1 ms per token, measured exactly on three shapes
    measured = [sample(m, t, 0.05 * m + 0.001 * t) for m, t in ((10, 1000), (40, 2000), (20, 8000))]
    work = {"micro_batches": 30, "computed_tokens": 5000, "gguf": False}
    predicted = 5.0 + (0.05 * 30 + 0.001 * 5000) + 2.0
    assert calibration.calibrated_range(work, measured) == {
        "low": round(predicted / calibration.RANGE, 1),
        "high": round(predicted * calibration.RANGE, 1),
    }


def test_one_sample_scales_and_an_unmeasured_export_comes_from_the_size_model():
    one = [sample(10, 1000, 2.0)]
    work = {"micro_batches": 20, "computed_tokens": 2000, "gguf": False}
    assert calibration.calibrated_range(work, one) == {
        "low": round((5 + 4 + 2) / calibration.RANGE, 1),
        "high": round((5 + 4 + 2) * calibration.RANGE, 1),
    }
    # a GGUF export never measured for this shape: the measured phases plus the export's part
    assert calibration.calibrated_range({**work, "gguf": True}, one, (3.0, 40.0)) == {
        "low": round((5 + 4 + 2) / calibration.RANGE + 3.0, 1),
        "high": round((5 + 4 + 2) * calibration.RANGE + 40.0, 1),
    }
    # only exports measured: a run without one is not guessed from them
    assert calibration.calibrated_range(work, [sample(10, 1000, 2.0, gguf=True)]) is None
    assert calibration.calibrated_range(work, []) is None


def test_samples_are_kept_per_device_and_shape(tg_home):
    for i in range(calibration.KEEP + 3):
        calibration.record("cpu:2|1|2|64", sample(i + 1, 100.0, 1.0))
    calibration.record("cuda:H200|1|2|64", sample(1, 100.0, 1.0))
    kept = calibration.samples("cpu:2|1|2|64")
    assert len(kept) == calibration.KEEP and kept[-1]["micro_batches"] == calibration.KEEP + 3
    assert len(calibration.samples("cuda:H200|1|2|64")) == 1
    (paths.data_dir() / calibration.TIMING_FILE).write_text("not json")
    assert calibration.samples("cpu:2|1|2|64") == []


def test_a_completed_run_teaches_the_next_estimate_of_the_same_model(sup, tmp_path):
    data = write_chats(tmp_path / "chats.jsonl")
    spec = make_spec(data, "first", max_steps=6)
    before = cpu_estimate(spec)
    assert before["time_basis"].startswith("from the model's size")
    [entry] = client.submit(sup, [spec], [before])
    run = wait_for(sup, entry["id"], "completed", 120)
    table = paths.data_dir() / calibration.TIMING_FILE
    wait_until(table.is_file, 10, "the run's timing to be recorded")
    [(key, [measured])] = json.loads(table.read_text()).items()
    assert key == before["calibration_key"]
    assert measured["micro_batches"] == before["work"]["micro_batches"] == 6
    phases = measured["start_s"] + measured["train_s"] + measured["end_s"]
    assert 0 < phases <= run["finished_at"] - run["attempts"][0]["started_at"] + 1.0

    after = estimate_spec(make_spec(data, "second", max_steps=12), "cpu")
    assert after["time_basis"] == "measured on this machine (1 earlier run of this model)"
    low, high = after["time_s"]["low"], after["time_s"]["high"]
    assert high / low <= calibration.RANGE**2 * 1.05  # (rounded to 0.1 s)
    assert high < before["time_s"]["high"]


# -- the speed check: a model's first estimate on a device ------------------------------------------
def test_a_models_first_estimate_runs_a_speed_check_and_keeps_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEGRAPH_SPEED_CHECK", "1")
    monkeypatch.setattr(probe, "BUSY_PERCENT", 101.0)  # other tests' processes may load the CPU
    data = write_chats(tmp_path / "chats.jsonl")
    spec = make_spec(data, "first", max_steps=30, eval_split=0.1, micro_batch_size=2)
    first = estimate_spec(spec, "cpu")
    assert first["time_basis"] == (
        f"measured on this machine (a {probe.PROBE_STEPS}-step speed check of this model)"
    )
    [measured] = calibration.samples(first["calibration_key"])
    assert measured["speed_check"] is True
    # the steps after the first are timed: PROBE_STEPS - 1 of them, at the run's own batch shape
    assert measured["micro_batches"] == probe.PROBE_STEPS - 1
    per_micro = first["work"]["computed_tokens"] / first["work"]["micro_batches"]
    assert measured["computed_tokens"] == round((probe.PROBE_STEPS - 1) * per_micro)
    assert measured["start_s"] > 0 and measured["train_s"] > 0 and measured["end_s"] > 0
    low, high = first["time_s"]["low"], first["time_s"]["high"]
    assert high / low <= calibration.RANGE**2 * 1.05
    assert not any((paths.data_dir() / "speed-checks").iterdir())  # its run folder is gone

    # the next estimate of the same shape reuses it: no second check
    again = estimate_spec(make_spec(data, "second", max_steps=60), "cpu")
    assert len(calibration.samples(first["calibration_key"])) == 1
    assert again["time_s"]["high"] > high  # twice the steps take longer

    # a GGUF export was never measured: its part comes from the model's size, and it says so
    spec.export.gguf = True
    with_gguf = estimate_spec(spec, "cpu")
    assert with_gguf["time_basis"].endswith("; the GGUF export's part from the model's size")
    assert with_gguf["time_s"]["high"] > high


def test_the_speed_check_is_cut_to_a_few_steps_without_export_or_checkpoints(tmp_path):
    spec = make_spec(tmp_path / "d.jsonl", "run", max_steps=500, grad_accum=4, keep_best=True)
    spec.export.gguf = spec.export.adapter_zip = True
    cut = probe.probe_spec(spec)
    assert cut.training.max_steps == probe.PROBE_STEPS * 4
    assert (cut.training.save_steps, cut.training.save_minutes, cut.training.keep_best) == (
        0,
        0.0,
        False,
    )
    assert not (cut.export.gguf or cut.export.adapter_zip or cut.export.merged)
    assert spec.training.max_steps == 500 and spec.export.gguf  # the run's own spec is untouched


def test_a_failed_speed_check_leaves_the_size_based_range_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEGRAPH_SPEED_CHECK", "1")
    monkeypatch.setenv("TUNEGRAPH_FAULT_OOM", "2")  # the check's worker runs out of memory
    monkeypatch.setattr(probe, "BUSY_PERCENT", 101.0)
    data = write_chats(tmp_path / "chats.jsonl")
    est = estimate_spec(make_spec(data, "first", max_steps=30), "cpu")
    assert est["time_basis"].startswith("from the model's size (the speed check failed: ")
    assert "out of memory" in est["time_basis"].lower()
    assert calibration.samples(est["calibration_key"]) == []


def test_no_speed_check_on_a_gpu_without_room_for_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEGRAPH_SPEED_CHECK", "1")
    monkeypatch.setenv("TUNEGRAPH_FAKE_GPUS", "H200:140/0.5")  # another program holds the GPU
    data = write_chats(tmp_path / "chats.jsonl")
    est = estimate_spec(make_spec(data, "first", max_steps=30, device="cuda"), "cuda")
    assert est["time_basis"].startswith("from the model's size (no GPU has ")
    assert "free to measure this model's speed now" in est["time_basis"]


def test_the_speed_check_setting_turns_it_off(tmp_path, monkeypatch):
    from engine import settings

    monkeypatch.delenv("TUNEGRAPH_SPEED_CHECK")
    settings.save(settings.Settings(speed_check=False))
    data = write_chats(tmp_path / "chats.jsonl")
    est = estimate_spec(make_spec(data, "first", max_steps=30), "cpu")
    assert est["time_basis"].startswith("from the model's size (no earlier run")


def test_no_speed_check_on_a_busy_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEGRAPH_SPEED_CHECK", "1")
    monkeypatch.setattr(probe, "BUSY_PERCENT", 0.0)  # any use at all counts as busy
    data = write_chats(tmp_path / "chats.jsonl")
    est = estimate_spec(make_spec(data, "first", max_steps=30), "cpu")
    assert est["time_basis"].startswith("from the model's size (the CPU is ")
    assert "busy: a speed check now would time the load" in est["time_basis"]
    assert calibration.samples(est["calibration_key"]) == []


def test_the_check_times_the_faster_steps_after_the_first(tmp_path):
    from engine.events import Event

    spec = make_spec(tmp_path / "d.jsonl", "run", max_steps=100)
    ts = [10.0, 11.0, 11.1, 11.2, 11.3, 14.0, 14.1, 14.2]  # step 1 warms up; step 5 hit a burst
    events = [Event(1, 5.0, "status", {"state": "training"})]
    events += [Event(i + 2, t, "metric", {"step": i + 1}) for i, t in enumerate(ts)]
    events += [Event(20, 15.0, "status", {"state": "evaluating"})]
    events += [Event(21, 16.5, "status", {"state": "completed"})]
    sample = probe.measured_sample(events, 1.0, probe.probe_spec(spec), 100.0)
    assert sample["micro_batches"] == 7 and sample["computed_tokens"] == 700
    assert sample["train_s"] == round(0.1 * 7, 3)  # the burst's 2.7 s step is not the speed
    # start-up: process start to training, plus the first step's excess over a normal one
    assert sample["start_s"] == round(5.0 - 1.0 + (10.0 - 5.0 - 0.1), 3)
    assert sample["end_s"] == 1.5
