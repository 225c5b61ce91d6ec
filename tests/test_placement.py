"""Placement counts memory used by other programs: a GPU's room is the smaller of its unheld
memory (within 90% of its size) and NVML's free memory less 0.5 GiB. NVML is faked here: by a
reader function fed to engine.hardware.nvml_gpus, and by TUNEGRAPH_FAKE_GPUS entries with a free
figure (`TOTAL/FREE`) for the real supervisor."""

from __future__ import annotations

import pytest

from engine import hardware
from engine.hardware import GIB, Gpu, parse_fake
from engine.supervisor import client, scheduler
from tests.helpers import make_spec, wait_for, wait_until, write_chats


def est(bf16: float, four: float, mode: str = "lora") -> dict:
    return {"vram_gib": {"bf16": bf16, "4bit": four}, "mode": mode}


# -- the fake NVML reader (no processes) -------------------------------------------------------
def test_nvml_gpus_take_total_and_free_memory_from_the_reader():
    def reader():
        return [(b"NVIDIA H200", 141 * GIB, 20 * GIB), ("RTX 4090", 24 * GIB, int(23.5 * GIB))]

    found = hardware.nvml_gpus(reader)
    assert found == [
        Gpu(0, "NVIDIA H200", 141.0, 20.0),
        Gpu(1, "RTX 4090", 24.0, 23.5),
    ]
    assert hardware.nvml_gpus(list) == []  # no driver: no GPU


def test_gpus_reads_nvml_through_the_reader_unless_fake_gpus_are_set(monkeypatch):
    monkeypatch.delenv("TUNEGRAPH_FAKE_GPUS", raising=False)
    monkeypatch.setattr(hardware, "read_nvml", lambda: [("A100", 80 * GIB, 2 * GIB)])
    assert hardware.gpus() == [Gpu(0, "A100", 80.0, 2.0)]
    monkeypatch.setenv("TUNEGRAPH_FAKE_GPUS", "A6000:48/4,24")
    assert hardware.gpus() == [
        Gpu(0, "A6000", 48.0, 4.0, fake=True),
        Gpu(1, "Fake GPU 1", 24.0, 24.0, fake=True),
    ]


def test_fake_gpu_entries_take_an_optional_free_figure():
    assert parse_fake("RTX 4090:24/3.5, 8 ,16/99") == [
        Gpu(0, "RTX 4090", 24.0, 3.5, fake=True),
        Gpu(1, "Fake GPU 1", 8.0, 8.0, fake=True),
        Gpu(2, "Fake GPU 2", 16.0, 16.0, fake=True),  # never more free than there is
    ]


# -- scheduler functions on plain data ---------------------------------------------------------
def test_room_is_the_smaller_of_unheld_memory_and_nvml_free_memory():
    busy, idle = parse_fake("48/4,24")
    assert scheduler.room_gib(busy, 0.0) == pytest.approx(3.5)  # NVML: 4 GiB free, 0.5 spare
    assert scheduler.room_gib(idle, 0.0) == pytest.approx(21.6)  # 90% of 24
    assert scheduler.room_gib(idle, 15.0) == pytest.approx(6.6)
    assert scheduler.room_text(busy, 0.0) == (
        "GPU 0 has 3.5 GiB (NVML reports 4.0 GiB free of 48.0 GiB, less 0.5 GiB kept spare)"
    )
    assert scheduler.room_text(idle, 15.0) == (
        "GPU 1 has 6.6 GiB (90% of 24.0 GiB less 15.0 GiB held by runs)"
    )
    # a reading below the spare is no room at all, not a negative one
    assert "has 0.0 GiB" in scheduler.room_text(Gpu(0, "full", 24.0, 0.2), 0.0)


def test_a_gpu_with_enough_total_but_little_free_memory_is_not_chosen():
    gpus = parse_fake("A6000:48/4,RTX 4090:24")
    placed = scheduler.place(est(10, 4), gpus, {}, set(), 1, True, 0)
    assert placed.gpus == [1] and placed.hold_gib == 10
    assert "needs 10.0 GiB / 21.6 free; placed on GPU 1" in placed.message
    # with all of its memory free the larger GPU is the one chosen
    assert scheduler.place(est(10, 4), parse_fake("48,24"), {}, set(), 1, True, 0).gpus == [0]
    # a small run fits in what is free on the busy GPU too
    assert scheduler.place(est(3, 1), gpus, {1: 20}, set(), 1, True, 0).gpus == [0]
    # DDP over both needs room on both
    assert scheduler.place(est(10, 4), gpus, {}, set(), 2, True, 0) is None


def test_waiting_says_why_in_gib():
    gpus = parse_fake("A6000:48/4,RTX 4090:24")
    assert scheduler.waiting(est(10, 4), gpus, {}, set(), 1, True, 0) is None
    why = scheduler.waiting(est(15, 6), gpus, {1: 15.0}, set(), 1, True, 0)
    assert why == (
        "waiting for GPU memory: needs 15.0 GiB on one GPU; "
        "GPU 0 has 3.5 GiB (NVML reports 4.0 GiB free of 48.0 GiB, less 0.5 GiB kept spare); "
        "GPU 1 has 6.6 GiB (90% of 24.0 GiB less 15.0 GiB held by runs)"
    )
    # the 4-bit figure is what a QLoRA run waits for
    assert "needs 6.0 GiB" in scheduler.waiting(
        est(15, 6, "qlora"), gpus, {1: 18}, set(), 1, True, 0
    )
    suspended = scheduler.waiting(est(10, 4), gpus, {}, {1}, 1, True, 0)
    assert "GPU 1 is suspended" in suspended and "GPU 0 has 3.5 GiB" in suspended
    assert "on each of 2 GPUs" in scheduler.waiting(est(10, 4), gpus, {}, set(), 2, True, 0)
    assert scheduler.waiting(est(1, 1), [], {}, set(), 1, True, 0).startswith(
        "waiting for a CPU slot"
    )
    assert scheduler.waiting(est(1, 1), [], {}, set(), 1, True, 1) is None


def test_a_run_that_only_lacks_free_memory_now_is_not_refused():
    """Refusal judges GPU sizes (it can never fit); free memory only makes a run wait."""
    gpus = parse_fake("A6000:48/4")
    assert scheduler.refusal(est(30, 12), gpus, 1, True) is None
    assert scheduler.place(est(30, 12), gpus, {}, set(), 1, True, 0) is None
    never = scheduler.refusal(est(60, 50), gpus, 1, True)
    assert "largest GPU has 48 GiB" in never.message


# -- the real supervisor with a fake NVML reading ------------------------------------------------
def test_the_supervisor_counts_memory_used_by_other_programs(sup, tmp_path, monkeypatch):
    """GPU 0 (48 GiB) has only 4 GiB free (other programs use the rest), GPU 1 (24 GiB) is idle.
    The first run goes to GPU 1; the second waits in the queue, saying why in GiB, and starts on
    GPU 1 once the first is done; a run larger than any GPU is refused at submission as ever."""
    monkeypatch.setenv("TUNEGRAPH_FAKE_GPUS", "A6000:48/4,RTX 4090:24")
    data = write_chats(tmp_path / "chats.jsonl")
    specs = [make_spec(data, name, device="auto", max_steps=3) for name in ("first", "second")]
    specs.append(make_spec(data, "too big", device="auto"))
    estimates = [est(15, 6), est(15, 6), est(60, 50, "qlora")]
    first, second, big = client.submit(sup, specs, estimates)

    assert first["state"] == "queued" and second["state"] == "queued"
    assert {h["run_id"]: str(h["gpu"]) for h in sup.holds()} == {first["id"]: "1"}
    placed = sup.events(first["id"], kinds="schedule")[0]["message"]
    assert "needs 15.0 GiB / 21.6 free; placed on GPU 1 with hold 15.0 GiB" in placed
    waiting = sup.run_json(second["id"])
    assert waiting["state"] == "queued" and waiting["reason"] == (
        "waiting for GPU memory: needs 15.0 GiB on one GPU; "
        "GPU 0 has 3.5 GiB (NVML reports 4.0 GiB free of 48.0 GiB, less 0.5 GiB kept spare); "
        "GPU 1 has 6.6 GiB (90% of 24.0 GiB less 15.0 GiB held by runs)"
    )

    assert big["state"] == "refused"
    assert "needs ~60.0 GiB (50.0 GiB in 4-bit), largest GPU has 48 GiB" in big["error"]["message"]
    assert sup.run_json(big["id"])["state"] == "refused"

    done = wait_for(sup, first["id"], "completed", 120)
    run = wait_for(sup, second["id"], "completed", 120)
    assert sup.events(second["id"], kinds="schedule")[0]["ts"] >= done["finished_at"]
    assert "placed on GPU 1" in sup.events(second["id"], kinds="schedule")[0]["message"]
    assert run["step"] == 3
    wait_until(lambda: not sup.holds(), 10, "the holds to be released")


# -- the confirmation's words for runs without an estimate --------------------------------------
def test_the_confirmation_says_runs_it_could_not_estimate_are_refused_unless_estimated(
    request, tmp_path
):
    pytest.importorskip("pytestqt")
    qtbot = request.getfixturevalue("qtbot")
    from app.confirm_dialog import ConfirmRunsDialog
    from nodes import compile as compile_graph
    from nodes import load_graph
    from tests.helpers import make_graph

    graph = load_graph(make_graph(tmp_path))
    modules = compile_graph(graph).modules
    dialog = ConfirmRunsDialog(modules, [], graph, estimates=[])
    qtbot.addWidget(dialog)
    dialog._on_failed("the engine broke")
    status = dialog.status.text()
    assert status.startswith("Could not estimate: the engine broke. On Start the supervisor")
    assert "refused with the error" in status and "can still start" not in status
    assert "refused if that fails too" in dialog.body.toPlainText()
    assert dialog.start_button.isEnabled()  # the supervisor may still estimate them
