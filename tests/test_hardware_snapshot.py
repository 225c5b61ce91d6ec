"""The GPU snapshot without Qt: engine.hardware.holds_snapshot on plain data, and
engine.store.holds.hardware_snapshot over real holds, settings and spec.json files in a tmp
TUNEGRAPH_HOME (set by conftest), with fake GPUs."""

from __future__ import annotations

import json

from engine import hardware, paths
from engine import settings as settings_mod
from engine.store.holds import hardware_snapshot
from engine.store.index import Store

RUN_A = "20261122-130000-aaaaaa"
RUN_B = "20261122-130500-bbbbbb"
RUN_C = "20261122-131000-cccccc"


def test_holds_snapshot_sums_holds_per_gpu_and_lists_cpu_runs(monkeypatch):
    monkeypatch.setenv("TUNEGRAPH_CPU_SLOTS", "2")
    found = [hardware.Gpu(0, "A", 24.0, 20.0), hardware.Gpu(1, "B", 48.0, 48.0, fake=True)]
    holds = [
        {"run_id": "a", "gpu": 0, "gib": 6.0},
        {"run_id": "b", "gpu": "0", "gib": 2.5},
        {"run_id": "c", "gpu": "cpu", "gib": 0},
    ]
    names = {"a": "alpha", "b": "beta", "c": "gamma"}
    data = hardware.holds_snapshot(
        holds, suspended=[1], cpu_threads=3, name_of=names.__getitem__, found=found
    )
    first, second = data["gpus"]
    assert first["index"] == 0 and first["name"] == "A" and first["total_gib"] == 24.0
    assert first["free_gib"] == 20.0 and first["held_gib"] == 8.5
    assert first["holders"] == [
        {"run_id": "a", "name": "alpha", "gib": 6.0},
        {"run_id": "b", "name": "beta", "gib": 2.5},
    ]
    assert not first["suspended"] and second["suspended"]
    assert second["held_gib"] == 0.0 and second["holders"] == [] and second["fake"]
    assert data["cpu"]["slots"] == 2 and data["cpu"]["threads"] == 3
    assert data["cpu"]["runs"] == ["gamma"]
    assert data["cpu"]["cores"] >= 1


def test_holds_snapshot_defaults_to_this_machine(monkeypatch):
    monkeypatch.setenv("TUNEGRAPH_FAKE_GPUS", "RTX:24")
    monkeypatch.setenv("TUNEGRAPH_CPU_SLOTS", "1")
    data = hardware.holds_snapshot([])
    assert [(g["name"], g["total_gib"], g["held_gib"]) for g in data["gpus"]] == [
        ("RTX", 24.0, 0.0)
    ]
    assert data["cpu"]["threads"] == hardware.cpu_threads_per_run()
    assert data["cpu"]["runs"] == []


def test_hardware_snapshot_reads_holds_settings_and_run_names(monkeypatch):
    monkeypatch.setenv("TUNEGRAPH_FAKE_GPUS", "24,48")
    for run_id, name in ((RUN_A, "support bot"), (RUN_C, "on the cpu")):
        run_dir = paths.runs_dir() / run_id
        run_dir.mkdir()
        (run_dir / "spec.json").write_text(json.dumps({"name": name}), encoding="utf-8")
    with Store() as store:
        store.set_hold(RUN_A, 0, 6.0)
        store.set_hold(RUN_B, 0, 4.0)  # no run folder: named by its id
        store.set_hold(RUN_C, "cpu", 0.0)
    current = settings_mod.load()
    current.suspended_gpus = [1]
    current.cpu_threads = 5
    settings_mod.save(current)

    data = hardware_snapshot()

    first, second = data["gpus"]
    assert first["held_gib"] == 10.0
    assert sorted((h["name"], h["gib"]) for h in first["holders"]) == [
        (RUN_B, 4.0),
        ("support bot", 6.0),
    ]
    assert (first["suspended"], second["suspended"]) == (False, True)
    assert second["holders"] == [] and second["total_gib"] == 48.0
    assert data["cpu"]["runs"] == ["on the cpu"]
    assert data["cpu"]["threads"] == 5
