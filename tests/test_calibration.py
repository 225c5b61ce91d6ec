"""The time range from this machine's own measured runs: what the supervisor records when a run
completes in one go, the fit it is read back with, and the estimate that uses it."""

from __future__ import annotations

import json

from engine import paths
from engine.plan import calibration
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


def test_one_sample_scales_and_an_unmeasured_export_is_not_guessed():
    one = [sample(10, 1000, 2.0)]
    work = {"micro_batches": 20, "computed_tokens": 2000, "gguf": False}
    assert calibration.calibrated_range(work, one) == {
        "low": round((5 + 4 + 2) / calibration.RANGE, 1),
        "high": round((5 + 4 + 2) * calibration.RANGE, 1),
    }
    assert calibration.calibrated_range({**work, "gguf": True}, one) is None
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
    assert after["time_basis"] == "measured on this machine (1 earlier runs of this model)"
    low, high = after["time_s"]["low"], after["time_s"]["high"]
    assert high / low <= calibration.RANGE**2 * 1.05  # (rounded to 0.1 s)
    assert high < before["time_s"]["high"]
