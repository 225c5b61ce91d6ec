"""Runs that share a base model (issue 23), through the real supervisor.

Two runs of one tiny base submitted together train in one group process (one pid, one
`group` in their schedule events), each to its own step count, with its own adapter; a run
cancelled in the group leaves it while the other trains on to the end; `tunegraph run
--no-share-base` (and Share base off) trains each run in a process of its own. In the
supervisor: the group's need is one base, each run's adapter and the largest step (a group
that does not fit is made smaller); a member split from its group (an out-of-memory there)
is started again alone, Share base off in its spec, charged one retry.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.events import read_events, run_state
from engine.plan import sharing
from engine.rundir import SPEC_FILE, WORKER_LOG
from engine.spec import JobSpec
from engine.supervisor import client
from tests.helpers import cli, cpu_estimate, make_graph, make_spec, wait_for, wait_until


def starting_pids(run_dir: Path) -> set[int]:
    """The worker pids the run's `starting` status events name."""
    return {
        e["pid"]
        for e in read_events(Path(run_dir) / WORKER_LOG)
        if e.kind == "status" and e["state"] == "starting"
    }


def group_of(store, run_id: str) -> str | None:
    """The group the run's last placement put it in (None: alone)."""
    placed = store.events(run_id, kinds="schedule")
    return placed[-1].get("group") if placed else None


def test_two_runs_submitted_together_train_in_one_process_each_to_its_own_end(sup, data):
    specs = [
        make_spec(data, "short", max_steps=3),
        make_spec(data, "long", max_steps=6, learning_rate=5e-4),
    ]
    ids = [e["id"] for e in client.submit(sup, specs, [cpu_estimate(s) for s in specs])]
    runs = [wait_for(sup, run_id, "completed", 180) for run_id in ids]

    groups = {group_of(sup, run_id) for run_id in ids}
    assert len(groups) == 1 and None not in groups
    [pid] = set.union(*(starting_pids(run["run_dir"]) for run in runs))  # one process
    for run, spec in zip(runs, specs, strict=True):
        assert run["step"] == spec.training.max_steps
        assert [m["step"] for m in sup.metrics(run["id"])][-1] == spec.training.max_steps
        assert "adapter_dir" in [a["kind"] for a in run["artifacts"]]
        placed = sup.events(run["id"], kinds="schedule")[-1]
        assert "with 1 other run sharing one copy of builtin:tiny-llama" in placed["message"]
        assert any("Shares one copy" in line for line in sup.logs(run["id"]))
    peak_lr = [max(m["lr"] for m in sup.metrics(r)) for r in ids]  # each its own schedule
    assert peak_lr[1] == pytest.approx(5e-4) and peak_lr[0] != peak_lr[1]
    wait_until(lambda: not sup.holds(), 10, "the holds to be released")


def test_a_run_cancelled_in_its_group_leaves_it_and_the_other_trains_on(sup, data):
    specs = [
        make_spec(data, "cancel me", max_steps=200),
        make_spec(data, "goes on", max_steps=12),
    ]
    ids = [e["id"] for e in client.submit(sup, specs, [cpu_estimate(s) for s in specs])]
    wait_until(lambda: (sup.run_json(ids[0])["step"] or 0) >= 2, 120, "the first run to train")
    client.control(sup, "cancel", ids[0])
    cancelled = wait_for(sup, ids[0], "cancelled", 60)
    other = wait_for(sup, ids[1], "completed", 180)
    assert cancelled["step"] < 200 and other["step"] == 12
    assert group_of(sup, ids[0]) == group_of(sup, ids[1]) is not None
    assert starting_pids(cancelled["run_dir"]) == starting_pids(other["run_dir"])
    assert "adapter_dir" in [a["kind"] for a in other["artifacts"]]


def test_no_share_base_trains_each_run_in_a_process_of_its_own(sup, tmp_path):
    graph = make_graph(tmp_path, {"one": {"max_steps": 2}, "two": {"max_steps": 2}}, device="cpu")
    out = cli("run", str(graph), "--no-share-base", "--detach", "--json", "--yes")
    assert out.returncode == 0, out.stderr
    ids = [e["id"] for e in json.loads(out.stdout)]
    runs = [wait_for(sup, run_id, "completed", 180) for run_id in ids]
    assert [group_of(sup, run_id) for run_id in ids] == [None, None]
    assert starting_pids(runs[0]["run_dir"]).isdisjoint(starting_pids(runs[1]["run_dir"]))
    for run in runs:
        assert JobSpec.load(Path(run["run_dir"]) / SPEC_FILE).resources.share_base is False


def test_run_prints_which_runs_will_share_a_base(tg_home, tmp_path):
    from app.cli.submit import prepare_runs, sharing_lines

    graph = make_graph(tmp_path, {"one": {}, "two": {}}, device="cpu")

    specs, estimates, _ = prepare_runs(str(graph), device="cpu", quiet=True)
    [line] = sharing_lines(specs, estimates)
    saves = sharing.saving_gib(estimates)
    assert line == f"2 runs share one copy of builtin:tiny-llama (saves {saves:.1f} GiB): one, two"
    specs, estimates, _ = prepare_runs(str(graph), device="cpu", quiet=True, share_base=False)
    assert sharing_lines(specs, estimates) == []


# -- the group's memory and placement (a supervisor in this process, fake GPUs) ----------------
def gpu_estimate(weights: float, lora: float, step: float) -> dict:
    """A 16-bit LoRA run's estimate on a GPU with these parts (GiB)."""
    parts = {"weights": weights, "lora": lora, "activations": step, "logits": 0.0}
    parts["context_and_slack"] = 0.5
    need = round(sum(parts.values()), 2)
    return {"mode": "lora", "vram_gib": {"bf16": need, "4bit": need / 2}, "vram_parts_gib": parts}


def test_the_group_need_is_one_base_each_adapter_and_the_largest_step():
    a, b, c = gpu_estimate(8.0, 0.4, 3.0), gpu_estimate(8.0, 0.8, 2.0), gpu_estimate(8.0, 0.2, 1.0)
    # a LoRA part is 16 bytes a parameter: weight, gradient, two AdamW moments; only the run
    # whose turn it is holds its gradients (4 of the 16), the largest counts
    need = 8.0 + 0.5 + 3.0 + (0.4 + 0.8 + 0.2) * 12 / 16 + 0.8 * 4 / 16
    assert sharing.group_need_gib([a, b, c]) == round(need, 2)
    assert sharing.separate_gib([a, b, c]) == round(11.9 + 11.3 + 9.7, 2)
    assert sharing.saving_gib([a, b, c]) == round(32.9 - round(need, 2), 2)
    assert sharing.group_need_gib([a]) == sharing.separate_gib([a]) == 11.9  # one: as alone
    shares = sharing.hold_shares({"a": a, "b": b, "c": c})
    assert shares == {"a": 11.5 + 0.3 + 0.2, "b": 0.6, "c": 0.15}
    assert sum(shares.values()) == pytest.approx(sharing.group_need_gib([a, b, c]))


@pytest.fixture
def supervisor(monkeypatch, tg_home):
    from engine.store.index import Store
    from engine.supervisor.service import Supervisor

    store = Store()
    yield Supervisor(store, idle_exit_s=0)
    store.close()


def queued(supervisor, data, names: list[str], estimate: dict) -> list:
    """Runs made (not started) on the tiny base, with `estimate`: the scheduler's ready list."""
    from engine.training.launch import create_run

    ready = []
    for name in names:
        spec = make_spec(data, name, device="auto")
        run_id = create_run(spec, supervisor.store, estimate=estimate)
        ready.append((supervisor.store.run_json(run_id), spec))
    return ready


def test_a_group_is_made_as_large_as_fits_one_gpu(supervisor, data, monkeypatch):
    from engine import hardware

    monkeypatch.setenv("TUNEGRAPH_FAKE_GPUS", "24")
    estimate = gpu_estimate(8.0, 1.0, 4.0)  # 13.5 GiB alone: one per 24 GiB GPU
    ready = queued(supervisor, data, ["a", "b", "c", "d", "e"], estimate)
    members, place = supervisor.group_for(ready[0], ready, hardware.gpus())
    # 90% of 24 GiB = 21.6: 8 + 0.5 + 4 + 0.25 (one run's gradients) + 0.75 a run: 11 would fit
    assert len(members) == 5 and place.hold_gib == sharing.group_need_gib([estimate] * 5)
    monkeypatch.setenv("TUNEGRAPH_FAKE_GPUS", "24/15.6")  # 15.1 GiB to take: 3 runs fit
    members, place = supervisor.group_for(ready[0], ready, hardware.gpus())
    assert [r["name"] for r, _ in members] == ["a", "b", "c"] and place.gpus == [0]

    off = [(run, make_spec(data, run["name"], device="auto")) for run, _ in ready]
    for _, spec in off:
        spec.resources.share_base = False
    assert supervisor.group_for(off[0], off, hardware.gpus()) is None


def test_a_member_split_from_its_group_is_started_again_alone(supervisor, data):
    from engine.events import EventLog
    from engine.supervisor import scheduler

    [(run, _)] = queued(supervisor, data, ["split"], cpu_estimate(make_spec(data)))
    run_id, run_dir = run["id"], Path(run["run_dir"])
    group_dir = run_dir.parent.parent / "groups" / "group-test"
    group_dir.mkdir(parents=True)  # a group process that has ended (no worker.pid)
    supervisor.grouped.member_of[run_id] = group_dir
    supervisor.hold(run_id, scheduler.Placement("cpu", [], 0.0, "placed"), group="group-test")
    supervisor.procs[run_id] = supervisor.grouped
    with EventLog(run_dir / WORKER_LOG) as log:
        log.emit("status", state="training")
        reason = "run x ran out of memory; each run of the group is started again alone"
        log.emit("log", level="warning", message=f"leaves its group: {reason}", left_group=reason)
    supervisor.watch_workers()

    assert run_state(run_dir)[0] == "queued" and run_id not in supervisor.procs
    retrying = supervisor.store.events(run_id, kinds="status", source="supervisor")[-2]
    assert retrying["state"] == "retrying" and retrying["change"] == "training alone"
    assert "left its group: run x ran out of memory" in retrying["reason"]
    assert JobSpec.load(run_dir / SPEC_FILE).resources.share_base is False
    assert supervisor.auto_retries(run_id) == 1


def test_when_the_member_holding_the_base_ends_another_holds_it(supervisor, data, monkeypatch):
    from engine.events import EventLog
    from engine.supervisor import scheduler

    monkeypatch.setenv("TUNEGRAPH_FAKE_GPUS", "24")
    first, second = gpu_estimate(8.0, 1.0, 4.0), gpu_estimate(8.0, 0.5, 3.0)
    [(a, _)] = queued(supervisor, data, ["a"], first)
    [(b, _)] = queued(supervisor, data, ["b"], second)
    group_dir = Path(a["run_dir"]).parent.parent / "groups" / "group-test"
    group_dir.mkdir(parents=True)
    shares = sharing.hold_shares({a["id"]: first, b["id"]: second})
    for run in (a, b):
        supervisor.grouped.member_of[run["id"]] = group_dir
        place = scheduler.Placement("cuda", [0], shares[run["id"]], "placed")
        supervisor.hold(run["id"], place, group="group-test")
        supervisor.procs[run["id"]] = supervisor.grouped
    assert sum(h["gib"] for h in supervisor.store.holds()) == pytest.approx(
        sharing.group_need_gib([first, second])
    )
    with EventLog(Path(a["run_dir"]) / WORKER_LOG) as log:
        log.emit("status", state="completed")
    supervisor.finish(a["id"], None)
    [hold] = supervisor.store.holds()
    assert hold["run_id"] == b["id"] and hold["gib"] == sharing.group_need_gib([second])


def test_a_paused_run_leaves_its_group_and_resumes_while_the_other_trains_on(sup, data):
    specs = [
        make_spec(data, "paused", max_steps=16, save_steps=2),
        make_spec(data, "goes on", max_steps=16),
    ]
    ids = [e["id"] for e in client.submit(sup, specs, [cpu_estimate(s) for s in specs])]
    wait_until(lambda: (sup.run_json(ids[0])["step"] or 0) >= 2, 120, "the first run to train")
    client.control(sup, "pause", ids[0])
    paused = wait_for(sup, ids[0], "paused", 60)
    assert paused["step"] < 16 and sup.run_json(ids[1])["state"] in ("queued", "training")
    client.control(sup, "resume", ids[0])
    runs = [wait_for(sup, run_id, "completed", 180) for run_id in ids]
    assert [r["step"] for r in runs] == [16, 16]
    assert [m["step"] for m in sup.metrics(ids[0])] == list(range(1, 17))  # no step lost
    assert f"Resuming from checkpoint-{paused['step']}" in "\n".join(sup.logs(ids[0]))


@pytest.mark.slow  # ~40 s: a supervisor killed and started again, then the group process killed
def test_a_restarted_supervisor_adopts_the_group_and_a_killed_group_retries_each_run(sup, data):
    import os
    import signal

    from engine.supervisor.process import ensure_supervisor, supervisor_pid
    from tests.helpers import worker_pid

    specs = [make_spec(data, name, max_steps=30, save_steps=2) for name in ("one", "two")]
    ids = [e["id"] for e in client.submit(sup, specs, [cpu_estimate(s) for s in specs])]
    run_dirs = [Path(sup.run_json(r)["run_dir"]) for r in ids]
    wait_until(lambda: all((sup.run_json(r)["step"] or 0) >= 3 for r in ids), 120, "training")
    pid = worker_pid(run_dirs[0])
    assert worker_pid(run_dirs[1]) == pid  # one process for both
    os.kill(pid, signal.SIGSTOP)  # neither can finish meanwhile
    try:
        old = supervisor_pid()
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: supervisor_pid() is None, 10, "the supervisor to die")
        assert ensure_supervisor() != old
        wait_until(
            lambda: all(any("re-adopted" in line for line in sup.logs(r)) for r in ids),
            20,
            "the group's runs to be re-adopted",
        )
        assert {h["run_id"] for h in sup.holds()} == set(ids)
        os.kill(pid, signal.SIGKILL)  # the group crashes: both runs go down with it
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    runs = [wait_for(sup, run_id, "completed", 240) for run_id in ids]
    for run in runs:
        first = run["attempts"][0]
        assert first["reason"].startswith("interrupted: the worker")  # adopted: no exit code
        assert "restarting from its last checkpoint, retry 1 of 3" in first["reason"]
        assert run["step"] == 30
        assert [m["step"] for m in sup.metrics(run["id"])] == list(range(1, 31))


@pytest.mark.slow  # ~40 s: a group split by an out-of-memory, then each run alone
def test_an_out_of_memory_in_a_group_splits_it_and_each_run_finishes_alone(sup, data, monkeypatch):
    monkeypatch.setenv("TUNEGRAPH_FAULT_OOM", "2:batch>2")  # out of memory above 2 rows a step
    specs = [
        make_spec(data, "big batch", max_steps=6, micro_batch_size=4, grad_accum=1),
        make_spec(data, "small batch", max_steps=6, micro_batch_size=2, save_steps=1),
    ]
    ids = [e["id"] for e in client.submit(sup, specs, [cpu_estimate(s) for s in specs])]
    big, small = (wait_for(sup, run_id, "completed", 300) for run_id in ids)
    assert group_of(sup, ids[0]) is None and group_of(sup, ids[1]) is None  # alone at the end
    for run in (big, small):
        assert run["step"] == 6
        first = run["attempts"][0]
        assert "left its group: run" in first["reason"] and "ran out of memory" in first["reason"]
        assert JobSpec.load(Path(run["run_dir"]) / SPEC_FILE).resources.share_base is False
    # alone, the big batch ran out of memory again and climbed the ladder
    assert len(big["attempts"]) == 3 and big["spec"]["training"]["micro_batch_size"] == 2
    assert len(small["attempts"]) == 2 and small["spec"]["training"]["micro_batch_size"] == 2
    assert [m["step"] for m in sup.metrics(small["id"])] == list(range(1, 7))
