"""The run confirmation (issue 20): totals and the scheduling sentence at the top, placed as the
supervisor places runs; RAM words and no CUDA lines for a run on the CPU; estimates streamed in
from a real helper process, one card at a time under a progress bar, kept per spec so the same
runs confirmed again start no helper; Cancel stops the helper."""

from __future__ import annotations

import json
import os

import psutil
import pytest

pytest.importorskip("pytestqt")

from app.confirm_dialog import ConfirmRunsDialog  # noqa: E402
from app.confirm_plan import Machine, PlannedRun, outcomes, schedule_sentence  # noqa: E402
from app.estimate_stream import CACHE, EstimateStream  # noqa: E402
from engine.formatting import format_rough_duration  # noqa: E402
from engine.hardware import Gpu  # noqa: E402
from engine.plan.report import cache_key, stream_estimates  # noqa: E402
from nodes import compile as compile_graph  # noqa: E402
from nodes import load_graph  # noqa: E402
from tests.app_helpers import gc_on_the_gui_thread  # noqa: E402, F401
from tests.helpers import cpu_estimate, make_graph  # noqa: E402
from tests.test_chain import chain_graph  # noqa: E402

THREE = {"alpha": {}, "beta": {"learning_rate": 5e-3}, "gamma": {"max_steps": 16}}
_estimates: dict[str, dict] = {}  # spec JSON -> its real estimate, made once per test session


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch):
    """Each test starts with an empty estimate cache and leaves none behind; no fake GPUs."""
    monkeypatch.delenv("TUNEGRAPH_FAKE_GPUS", raising=False)
    CACHE.clear()
    yield
    CACHE.clear()


def real_estimate(spec) -> dict:
    """The real CPU estimate of `spec` (in this process: torch is loaded once for the file)."""
    key = spec.to_json()
    if key not in _estimates:
        _estimates[key] = cpu_estimate(spec)
    return _estimates[key]


def modules_of(tmp_path, runs: dict = THREE):
    graph = load_graph(make_graph(tmp_path, runs))
    return graph, compile_graph(graph).modules


def entries(modules) -> list[dict]:
    return [
        {"name": m.name, "node_uuid": m.node_uuid, "estimate": real_estimate(m.spec)}
        for m in modules
    ]


def test_three_runs_on_two_cpu_slots_show_totals_and_how_they_are_scheduled(
    qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("TUNEGRAPH_CPU_SLOTS", "2")
    graph, modules = modules_of(tmp_path)
    given = entries(modules)
    dialog = ConfirmRunsDialog(modules, [], graph, estimates=given)
    qtbot.addWidget(dialog)
    low = sum(e["estimate"]["time_s"]["low"] for e in given)
    high = sum(e["estimate"]["time_s"]["high"] for e in given)
    assert dialog.totals.text() == (
        f"<b>3 runs</b> · CPU time <b>{format_rough_duration(low)} – "
        f"{format_rough_duration(high)}</b> in all"
    )
    assert dialog.schedule.text() == (
        "2 start now, 1 waits for a free CPU slot (this machine trains 2 runs at a time on "
        "the CPU)."
    )
    assert not dialog.progress.isVisible() and dialog.start_button.text() == "Start 3 runs"


def test_one_cpu_slot_runs_them_one_after_another_and_a_chained_run_waits(
    qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("TUNEGRAPH_CPU_SLOTS", "1")
    graph, _ = chain_graph(tmp_path)
    modules = compile_graph(graph).modules
    assert [m.name for m in modules] == ["sft", "dpo"]
    dialog = ConfirmRunsDialog(modules, [], graph, estimates=entries(modules))
    qtbot.addWidget(dialog)
    assert dialog.schedule.text() == (
        "1 starts now, 1 waits for “sft” to finish (this machine trains one run at a time on "
        "the CPU)."
    )
    assert "Starts from\nthe result of “sft”" in dialog.body.toPlainText()


def test_the_schedule_counts_live_runs_and_gpu_room_as_the_supervisor_does(tmp_path):
    _, modules = modules_of(tmp_path)
    runs = [PlannedRun(m.name, m.spec, real_estimate(m.spec)) for m in modules]
    busy = Machine(cpu_slots=2, cpu_busy=1, live=1)
    found = outcomes(runs, busy, {})
    assert schedule_sentence(found, busy) == (
        "1 starts now, 2 wait for a free CPU slot (this machine trains 2 runs at a time on the "
        "CPU); 1 run already going or queued come first."
    )
    # one 24 GiB GPU, 8 GiB already held: room for one 10 GiB run (HEADROOM 90%), not two
    gpu = Machine(gpus=[Gpu(0, "RTX 4090", 24.0, 24.0, fake=True)], held={0: 8.0}, live=1)
    for run in runs:
        run.estimate = {**run.estimate, "vram_gib": {"bf16": 10.0, "4bit": 4.0}, "mode": "lora"}
        run.spec.resources.device = "auto"
    runs[2].refused = True
    assert outcomes(runs, gpu, {}) == ["now", "gpu memory", "refused"]


def test_a_cpu_run_shows_ram_and_no_cuda_lines(qtbot, tmp_path):
    graph, modules = modules_of(tmp_path, {"solo": {}})
    dialog = ConfirmRunsDialog(modules, [], graph, estimates=entries(modules))
    qtbot.addWidget(dialog)
    text = dialog.body.toPlainText()
    assert "GiB of RAM on the CPU (no NVIDIA GPU found" in text
    assert "the training process itself takes about 0.5 GiB more" in text
    for word in ("CUDA", "VRAM", "4-bit"):
        assert word not in text, word
    assert "module" not in (text + dialog.totals.text() + dialog.schedule.text()).lower()


def test_cards_fill_one_by_one_from_the_helper_and_the_same_runs_again_start_none(qtbot, tmp_path):
    """A real helper process estimates three runs of the tiny model; each card fills as its line
    arrives while the progress bar advances. Confirming the same runs again takes the cache (no
    helper); an edited dataset file is estimated again, and Cancel stops that helper."""
    graph, modules = modules_of(tmp_path)
    started = EstimateStream.processes_started
    dialog = ConfirmRunsDialog(modules, [], graph)
    qtbot.addWidget(dialog)
    assert dialog.estimating and EstimateStream.processes_started == started + 1
    assert dialog.progress.format() == "estimating 1 of 3…"
    assert not dialog.start_button.isEnabled()
    seen = []
    dialog.stream.estimated.connect(
        lambda index, _entry: seen.append(
            (index, dialog.progress.value(), dialog.body.toPlainText().count("Parameters"))
        )
    )
    with qtbot.waitSignal(dialog.stream.finished, timeout=120_000):
        pass
    assert seen == [(0, 1, 1), (1, 2, 2), (2, 3, 3)]
    assert not dialog.estimating and dialog.start_button.isEnabled()
    assert not dialog.estimate_error and "3 runs" in dialog.totals.text()
    first = [dialog.estimate_for(m) for m in modules]
    assert all(e["dataset_rows"] == 40 and e["device"] == "cpu" for e in first)
    dialog.reject()  # the helper, exiting once it has answered, is stopped with the dialog

    again = ConfirmRunsDialog(modules, [], graph)
    qtbot.addWidget(again)
    assert EstimateStream.processes_started == started + 1  # all three from the cache
    assert not again.estimating and [again.estimate_for(m) for m in modules] == first
    assert again.body.toPlainText().count("Parameters") == 3 and again.start_button.isEnabled()

    data = modules[0].spec.datasets[0].path
    with open(data, "a", encoding="utf-8") as f:  # one more row: a new size and mtime
        turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
        f.write(json.dumps({"messages": turns}) + "\n")
    edited = ConfirmRunsDialog(modules, [], graph)
    qtbot.addWidget(edited)
    assert edited.estimating and EstimateStream.processes_started == started + 2
    pid = edited.stream.process.processId()
    assert psutil.pid_exists(pid)
    edited.reject()  # Cancel
    assert not edited.estimating
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_the_stream_writes_one_line_per_run_and_an_error_for_a_run_it_cannot_estimate(
    tmp_path,
):
    _, modules = modules_of(tmp_path, {"good": {}, "bad": {}})
    good, bad = (m.spec for m in modules)
    bad.base_model.source = str(tmp_path / "no-such-model")
    lines = []
    stream_estimates([good, bad], "cpu", lines.append)
    assert [(e["index"], e["name"]) for e in lines] == [(0, "good"), (1, "bad")]
    assert lines[0]["estimate"] == real_estimate(good) and "estimate" not in lines[1]
    assert "no-such-model" in lines[1]["error"]


def test_the_cache_key_follows_the_spec_the_dataset_file_and_the_gpus(tmp_path, monkeypatch):
    _, modules = modules_of(tmp_path, {"one": {}})
    spec = modules[0].spec
    key = cache_key(spec)
    assert cache_key(spec) == key and cache_key(spec, "cpu") != key
    spec.training.learning_rate = 2e-3
    assert cache_key(spec) != key
    key = cache_key(spec)
    path = spec.datasets[0].path
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert cache_key(spec) != key
    key = cache_key(spec)
    monkeypatch.setenv("TUNEGRAPH_FAKE_GPUS", "RTX 4090:24")
    assert cache_key(spec) != key
