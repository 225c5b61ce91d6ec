"""The Ray executor against a real local Ray cluster (head on 127.0.0.1, CPUs only), started and
stopped by a module fixture: cluster runs train like local runs of the same spec, their artifacts
arrive in the local library, cancel ends the Ray actor, a killed actor is reconciled and resumes
from the checkpoints that came back, and a lost connection is `retrying`, then re-attached."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from engine import settings
from engine.cluster.executor import STATE_FILE, node_summary, ray_installed, read_state
from engine.cluster.node_files import NODE_HOME_ENV
from engine.events import read_events
from engine.rundir import WORKER_LOG
from engine.supervisor import client
from engine.training.checkpoints import has_checkpoint
from tests.helpers import (
    cpu_estimate,
    home_processes,
    make_graph,
    make_spec,
    wait_for,
    wait_until,
)

RAY = Path(sys.executable).with_name("ray")
START_TIMEOUT_S = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_processes(temp: Path) -> list[psutil.Process]:
    """The processes of the cluster whose temp dir is `temp`, with everything they started."""
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter():
        try:
            if any(str(temp) in arg for arg in proc.cmdline()):
                found[proc.pid] = proc
                for child in proc.children(recursive=True):
                    found[child.pid] = child
        except psutil.Error:
            continue
    return list(found.values())


@pytest.fixture(scope="module")
def ray_cluster():
    """A one-node Ray cluster on 127.0.0.1 with 2 CPUs and no GPU; yields (address, node home).

    Stopped by killing exactly its own processes (`ray stop` would end every Ray of this user)."""
    if not ray_installed():
        pytest.skip("Ray is not installed (the `cluster` extra: pip install 'tunegraph[cluster]')")
    temp = Path(tempfile.mkdtemp(prefix="tgray-", dir="/tmp"))  # short: Ray's socket paths
    node_home = temp / "node"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "TUNEGRAPH_HOME"}
    env.update({"RAY_USAGE_STATS_ENABLED": "0", NODE_HOME_ENV: str(node_home)})
    command = [
        str(RAY),
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--num-cpus=2",
        "--num-gpus=0",
        "--include-dashboard=false",
        f"--temp-dir={temp / 'ray'}",
        "--object-store-memory=200000000",
        "--disable-usage-stats",
    ]
    try:
        out = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S
        )
        if out.returncode != 0:
            pytest.fail(f"ray start failed:\n{out.stdout}\n{out.stderr}")
        yield f"127.0.0.1:{port}", node_home
    finally:
        procs = _cluster_processes(temp)
        for proc in procs:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=10)
        shutil.rmtree(temp, ignore_errors=True)


def cluster_spec(data: Path, name: str, **training):
    spec = make_spec(data, name, **training)
    spec.resources.target = "cluster"
    return spec


def node_worker_pid(node_home: Path, run_id: str) -> int | None:
    try:
        info = json.loads((node_home / "runs" / run_id / "worker.pid").read_text())
        return int(info["pid"])
    except (OSError, ValueError, KeyError):
        return None


def gone(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def placed(run_dir: str | Path) -> dict:
    """ray.json once the actor's node and pid are known."""
    return wait_until(
        lambda: read_state(Path(run_dir)) if read_state(Path(run_dir)).get("actor_pid") else None,
        60,
        "the run's Ray actor",
    )


# -- tests --------------------------------------------------------------------------------------
def test_cluster_runs_match_local_runs_and_bring_their_artifacts_home(
    sup, data, ray_cluster, monkeypatch
):
    address, node_home = ray_cluster
    monkeypatch.setenv("TUNEGRAPH_RAY_ADDRESS", address)
    specs = [
        cluster_spec(data, "cluster a", max_steps=6, seed=1),
        cluster_spec(data, "cluster b", max_steps=6, seed=2),
        make_spec(data, "local a", max_steps=6, seed=1),
        make_spec(data, "local b", max_steps=6, seed=2),
    ]
    entries = client.submit(sup, specs, [cpu_estimate(specs[0])] * 4)
    assert [e["state"] for e in entries] == ["queued"] * 4
    ids = [e["id"] for e in entries]
    runs = [wait_for(sup, run_id, "completed", 150) for run_id in ids]

    for cluster, local in zip(runs[:2], runs[2:], strict=True):
        node = read_state(Path(cluster["run_dir"]))["node"]
        assert cluster["device"] == f"ray:{node}" and local["device"] == "cpu"
        assert cluster["step"] == local["step"] == 6
        remote, here = sup.metrics(cluster["id"]), sup.metrics(local["id"])
        assert [m["step"] for m in remote] == [m["step"] for m in here] == list(range(1, 7))
        for a, b in zip(remote, here, strict=True):
            assert a["loss"] == pytest.approx(b["loss"], abs=1e-4), f"loss at step {a['step']}"
        assert cluster["metrics"]["loss"] == pytest.approx(local["metrics"]["loss"], abs=1e-4)
        assert len(cluster["samples"]) == len(local["samples"]) > 0
    assert runs[0]["metrics"]["loss"] != runs[1]["metrics"]["loss"]  # two different runs

    library = Path(os.environ["TUNEGRAPH_HOME"]) / "library"
    for run in runs[:2]:
        run_dir = Path(run["run_dir"])
        seqs = [e.seq for e in read_events(run_dir / WORKER_LOG)]
        assert seqs == list(range(1, len(seqs) + 1)), "the relayed log's seq is not contiguous"
        kinds = {a["kind"]: a for a in run["artifacts"]}
        assert set(kinds) == {"adapter_dir", "adapter_zip"}
        adapter = Path(kinds["adapter_dir"]["path"])
        assert adapter == run_dir / "adapter"
        assert (adapter / "adapter_model.safetensors").is_file()
        archive = Path(kinds["adapter_zip"]["path"])
        assert archive.is_file() and archive.is_relative_to(library)
        assert archive.stat().st_size == kinds["adapter_zip"]["bytes"]
        manifest = json.loads((archive.parent / "manifest.json").read_text())
        assert (
            manifest["run_id"] == run["id"] and manifest["sha256"] == kinds["adapter_zip"]["sha256"]
        )
        wait_until(lambda d=run_dir: read_state(d)["active"] is False, 20, "the actor's release")
        assert not (node_home / "runs" / run["id"]).exists(), "the node kept the run's files"
    sup.rebuild()  # the index rebuilt from disk finds the same artifacts
    assert {a["path"] for a in sup.run_json(ids[0])["artifacts"]} == {
        a["path"] for a in runs[0]["artifacts"]
    }


def test_a_two_gpu_cluster_run_trains_through_ray_train_like_a_local_ddp_run(
    sup, data, ray_cluster, monkeypatch
):
    """gpu_count 2 on a cluster: two Ray Train workers (1 CPU each, the run's actor none), each
    running one rank of the unchanged worker; rank 0's events reach the supervisor with their
    seq, the adapter comes home, and the curve is the one a local torchrun (gloo) run draws."""
    address, node_home = ray_cluster
    monkeypatch.setenv("TUNEGRAPH_RAY_ADDRESS", address)
    specs = [
        cluster_spec(data, "ddp cluster", max_steps=4, seed=3),
        make_spec(data, "ddp local", max_steps=4, seed=3),
    ]
    for spec in specs:
        spec.resources.gpu_count = 2
    entries = client.submit(sup, specs, [cpu_estimate(specs[0])] * 2)
    cluster, local = [wait_for(sup, e["id"], "completed", 180) for e in entries]

    run_dir = Path(cluster["run_dir"])
    state = read_state(run_dir)
    assert state["asked"]["ray_train"] == {
        "num_workers": 2,
        "use_gpu": False,
        "resources_per_worker": {"CPU": 1},
    }
    assert state["asked"]["num_cpus"] == 0  # the ranks hold the CPUs, not the actor
    ranks = state["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert {r["world_size"] for r in ranks} == {2} and len({r["master"] for r in ranks}) == 1
    assert len({r["pid"] for r in ranks}) == 2
    assert cluster["device"] == f"ray:{ranks[0]['node']}" and local["device"] == "cpu"
    remote, here = sup.metrics(cluster["id"]), sup.metrics(local["id"])
    assert [m["step"] for m in remote] == [m["step"] for m in here] == [1, 2, 3, 4]
    # the same two ranks on the same data shards with the same seed: only the thread count and
    # the rendezvous differ, neither of which changes the arithmetic beyond float noise
    for a, b in zip(remote, here, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4), f"loss at step {a['step']}"
    seqs = [e.seq for e in read_events(run_dir / WORKER_LOG)]
    assert seqs == list(range(1, len(seqs) + 1)), "the relayed log's seq is not contiguous"
    kinds = {a["kind"]: a for a in cluster["artifacts"]}
    assert set(kinds) == {"adapter_dir", "adapter_zip"}
    assert Path(kinds["adapter_dir"]["path"]) == run_dir / "adapter"
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    archive = Path(kinds["adapter_zip"]["path"])
    assert archive.is_file() and archive.stat().st_size == kinds["adapter_zip"]["bytes"]
    wait_until(lambda: read_state(run_dir)["active"] is False, 20, "the actor's release")
    assert not (node_home / "runs" / cluster["id"]).exists(), "the node kept the run's files"
    assert not list((node_home / "train").glob(f"{cluster['id']}-*")), "a rank kept its files"


def test_pause_resume_and_cancel_reach_every_ray_train_rank(sup, data, ray_cluster, monkeypatch):
    """A pause reaches rank 0 through the actor and the worker's agree() stops both ranks at
    one step, with the checkpoint brought home; the resumed run continues from it on new Ray
    Train workers; cancel ends them and their workers."""
    address, _ = ray_cluster
    monkeypatch.setenv("TUNEGRAPH_RAY_ADDRESS", address)
    spec = cluster_spec(data, "ddp long", max_steps=2000)
    spec.resources.gpu_count = 2
    [entry] = client.submit(sup, [spec], [cpu_estimate(spec)])
    run_id = entry["id"]
    run = wait_for(sup, run_id, "training", 120, step=2)
    run_dir = Path(run["run_dir"])
    first = wait_until(lambda: read_state(run_dir).get("ranks"), 30, "the ranks")

    client.control(sup, "pause", run_id)
    run = wait_for(sup, run_id, "paused", 60)
    paused_at = run["step"]
    assert has_checkpoint(run_dir), "the pause checkpoint did not come back"
    wait_until(lambda: all(gone(r["pid"]) for r in first), 30, "the paused ranks to end")
    assert client.control(sup, "resume", run_id)["state"] == "queued"
    wait_for(sup, run_id, "training", 120, step=paused_at + 2)
    assert f"Resuming from checkpoint-{paused_at}" in "\n".join(sup.logs(run_id))
    ranks = wait_until(
        lambda: (r := read_state(run_dir).get("ranks")) and r[0]["pid"] != first[0]["pid"] and r,
        30,
        "the new ranks",
    )
    assert len(ranks) == 2

    client.control(sup, "cancel", run_id)
    run = wait_for(sup, run_id, "cancelled", 60)
    wait_until(lambda: all(gone(r["pid"]) for r in ranks), 30, "the ranks' workers to end")
    assert run["artifacts"] == []
    steps = [m["step"] for m in sup.metrics(run_id)]
    assert steps == list(range(1, len(steps) + 1))
    wait_until(lambda: read_state(run_dir)["active"] is False, 20, "the actor's release")


def test_pause_resume_and_cancel_a_cluster_run(sup, tmp_path, ray_cluster, capsys):
    """Submitted with `tunegraph run --cluster`: pause saves a checkpoint that comes back and
    ends the actor; resume continues from it on a new actor; cancel ends the actor and its
    worker."""
    from app.cli.main import main

    address, node_home = ray_cluster
    graph = make_graph(tmp_path, {"long": {"max_steps": 2000}}, device="cpu")
    capsys.readouterr()
    assert main(["run", str(graph), "--cluster", address, "--detach", "--json", "--yes"]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    run_id = entry["id"]
    run = wait_for(sup, run_id, "training", 90, step=2)
    run_dir = Path(run["run_dir"])
    assert json.loads((run_dir / "submission.json").read_text())["ray_address"] == address
    first = placed(run_dir)

    client.control(sup, "pause", run_id)
    run = wait_for(sup, run_id, "paused", 30)
    paused_at = run["step"]
    assert has_checkpoint(run_dir), "the pause checkpoint did not come back"
    wait_until(lambda: gone(first["actor_pid"]), 20, "the paused run's actor to end")
    assert client.control(sup, "resume", run_id)["state"] == "queued"
    wait_for(sup, run_id, "training", 90, step=paused_at + 2)
    assert f"Resuming from checkpoint-{paused_at}" in "\n".join(sup.logs(run_id))
    state = placed(run_dir)
    assert state["actor"] != first["actor"]
    worker = wait_until(lambda: node_worker_pid(node_home, run_id), 30, "the node's worker")

    client.control(sup, "cancel", run_id)
    run = wait_for(sup, run_id, "cancelled", 30)
    wait_until(lambda: gone(state["actor_pid"]), 20, "the Ray actor's process to end")
    assert gone(worker)
    assert run["artifacts"] == [] and run["metrics"]["loss"] is not None
    steps = [m["step"] for m in sup.metrics(run_id)]
    assert steps == list(range(1, len(steps) + 1))
    wait_until(lambda: read_state(run_dir)["active"] is False, 20, "the actor's release")


def test_a_killed_ray_actor_is_reconciled_resumes_and_survives_a_lost_connection(
    sup, data, ray_cluster, monkeypatch
):
    """Killing the Ray worker that hosts the actor interrupts the run and ends the node's worker;
    the supervisor retries it at once from the checkpoint that came back. Then the supervisor's
    link to the cluster drops: the run is retrying, re-attaches, and completes with a whole
    curve."""
    address, node_home = ray_cluster
    monkeypatch.setenv("TUNEGRAPH_RAY_ADDRESS", address)
    spec = cluster_spec(data, "killed actor", max_steps=40, save_steps=2)
    [entry] = client.submit(sup, [spec], [cpu_estimate(spec)])
    run_id = entry["id"]
    run = wait_for(sup, run_id, "training", 90, step=3)
    run_dir = Path(run["run_dir"])
    wait_until(lambda: has_checkpoint(run_dir), 30, "a checkpoint to come back")
    first = placed(run_dir)
    worker = node_worker_pid(node_home, run_id)
    os.kill(worker, signal.SIGSTOP)  # it must not finish before the actor is killed
    try:
        os.kill(first["actor_pid"], signal.SIGKILL)  # the Ray worker hosting the actor
        ended = wait_until(lambda: first_attempt_ended(sup, run_id), 30, "the retry")
    finally:
        os.kill(worker, signal.SIGCONT)
    assert "interrupted" in ended["reason"] and "Ray actor died" in ended["reason"]
    assert "restarting from its last checkpoint" in ended["reason"]
    wait_until(lambda: gone(worker), 20, "the node's worker to end with its actor")

    wait_until(lambda: read_state(run_dir)["actor"] != first["actor"], 30, "a new actor")
    second = placed(run_dir)
    old = worker
    worker = wait_until(
        lambda: (pid := node_worker_pid(node_home, run_id)) != old and not gone(pid) and pid,
        60,
        "the new worker",
    )
    os.kill(worker, signal.SIGSTOP)  # it must not finish while the link is down
    try:
        [bridge] = [
            p for p in home_processes(tg_home_of(sup)) if "engine.cluster.bridge" in p.cmdline()
        ]
        bridge.kill()  # the supervisor's link to the cluster drops
        run = wait_for(sup, run_id, "retrying", 20)
        assert "Ray cluster" in run["reason"]
    finally:
        os.kill(worker, signal.SIGCONT)
    run = wait_for(sup, run_id, "completed", 150)
    assert read_state(run_dir)["actor"] == second["actor"]  # re-attached, not restarted
    reasons = [e.get("reason") for e in sup.events(run_id, kinds="status", source="supervisor")]
    assert "re-attached to the Ray cluster" in reasons
    assert run["step"] == 40 and [m["step"] for m in sup.metrics(run_id)] == list(range(1, 41))
    assert any("Resuming from checkpoint-" in line for line in sup.logs(run_id))
    seqs = [e.seq for e in read_events(run_dir / WORKER_LOG)]
    assert seqs == list(range(1, len(seqs) + 1))


def first_attempt_ended(store, run_id: str) -> dict | None:
    """The run's first attempt once it has ended (with why), else None."""
    store.ingest(Path(store.run_json(run_id)["run_dir"]))
    attempts = store.run_json(run_id)["attempts"]
    return attempts[0] if attempts and attempts[0]["ended_at"] else None


def tg_home_of(store) -> Path:
    return Path(store.path).parent


# -- without a cluster ----------------------------------------------------------------------------
def test_a_cluster_run_without_an_address_is_refused_with_what_to_set(sup, data, monkeypatch):
    monkeypatch.delenv("TUNEGRAPH_RAY_ADDRESS", raising=False)
    guess = {"vram_gib": {"bf16": 1.0, "4bit": 0.5}, "mode": "lora"}
    [entry] = client.submit(sup, [cluster_spec(data, "nowhere")], [guess])
    assert entry["state"] == "refused"
    assert "no Ray cluster is named" in entry["error"]["message"]
    assert (
        "TUNEGRAPH_RAY_ADDRESS" in entry["error"]["hint"] and "--cluster" in entry["error"]["hint"]
    )
    assert not (Path(sup.run_json(entry["id"])["run_dir"]) / STATE_FILE).exists()


def test_the_ray_address_setting_round_trips_and_the_environment_overrides_it(monkeypatch):
    from engine.cluster.executor import resolve_address

    monkeypatch.delenv("TUNEGRAPH_RAY_ADDRESS", raising=False)
    settings.save(settings.Settings(ray_address=" ray://head:10001 "))
    assert settings.load().ray_address == "ray://head:10001"
    assert resolve_address() == "ray://head:10001"
    monkeypatch.setenv("TUNEGRAPH_RAY_ADDRESS", "10.0.0.5:6379")
    assert resolve_address() == "10.0.0.5:6379"
    assert resolve_address("127.0.0.1:6380") == "127.0.0.1:6380"


def test_the_supervisor_and_the_executor_import_neither_ray_nor_torch():
    code = (
        "import sys, engine.supervisor.service, engine.cluster.executor, engine.training.executors;"
        "print(sorted(m for m in ('ray', 'torch') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_node_summary_reads_cpus_gpus_and_the_vram_resource():
    node = {
        "NodeManagerAddress": "10.0.0.7",
        "Alive": True,
        "Resources": {
            "CPU": 32.0,
            "GPU": 4.0,
            "accelerator_type:A100": 1.0,
            "vram_gib": 320.0,
            "memory": 256 * 2**30,
        },
    }
    assert node_summary(node) == {
        "node": "10.0.0.7",
        "cpus": 32,
        "gpus": 4,
        "gpu_type": "A100",
        "vram_gib": 320.0,
        "memory_gib": 256.0,
    }


# -- the widgets ----------------------------------------------------------------------------------
def test_settings_dialog_tests_the_connection_and_saves_the_address(qtbot, ray_cluster):
    from app.settings_dialog import SettingsDialog

    address, _ = ray_cluster
    dialog = SettingsDialog()
    qtbot.addWidget(dialog)
    assert not dialog.cluster_button.isEnabled()  # nothing to test yet
    dialog.ray_address.setText("127.0.0.1:1")  # nobody listens there
    with qtbot.waitSignal(dialog.cluster_probe.failed, timeout=60000):
        dialog.cluster_button.click()
    assert dialog.cluster_status.text().startswith("Could not connect:")
    dialog.ray_address.setText(f" {address} ")
    with qtbot.waitSignal(dialog.cluster_probe.finished, timeout=60000):
        dialog.cluster_button.click()
        assert not dialog.cluster_button.isEnabled()  # one question at a time
    assert dialog.cluster_status.text() == (f"Connected to {address}: 1 node, 2 CPUs, 0 GPUs.")
    assert dialog.save() and settings.load().ray_address == address


def test_confirm_dialog_says_where_each_run_goes(qtbot, tmp_path, monkeypatch):
    from app.confirm_dialog import ConfirmRunsDialog
    from nodes import compile as compile_nodes
    from nodes import load_graph

    graph = load_graph(make_graph(tmp_path, {"here": {}, "there": {}}))
    modules = list(compile_nodes(graph).modules)
    there = next(m for m in modules if m.name == "there")
    there.spec.resources.target = "cluster"
    monkeypatch.setenv("TUNEGRAPH_RAY_ADDRESS", "10.0.0.5:6379")
    dialog = ConfirmRunsDialog(modules, [], graph, estimates=[])
    qtbot.addWidget(dialog)
    text = dialog.body.toPlainText()
    assert "this workstation" in text and "cluster (10.0.0.5:6379)" in text
    assert len(dialog.startable()) == 2

    monkeypatch.delenv("TUNEGRAPH_RAY_ADDRESS")
    dialog = ConfirmRunsDialog(modules, [], graph, estimates=[])
    qtbot.addWidget(dialog)
    assert [m.name for m in dialog.startable()] == ["here"]
    assert "no Ray cluster is named" in dialog.body.toPlainText()
    assert dialog.start_button.text() == "Run the 1 valid Fine-Tune node"  # the other named


def test_hardware_view_lists_the_cluster_nodes_next_to_the_local_ones(
    qtbot, ray_cluster, monkeypatch
):
    from app.hardware_view import HardwareView

    address, _ = ray_cluster
    monkeypatch.setenv("TUNEGRAPH_RAY_ADDRESS", address)
    view = HardwareView(sender=lambda *_: None, interval_ms=60000)
    qtbot.addWidget(view)
    try:
        answer = qtbot.waitSignal(view.cluster.updated, timeout=60000)
        answer.wait()
        assert isinstance(answer.args[0], dict), answer.args[0]
        assert not view.cluster.isHidden()
        assert view.cluster.title() == f"Ray cluster at {address}"
        assert "2 CPUs · 0 GPUs" in view.cluster.nodes.text()
        assert view.cpu.text()  # the local CPU entry is still there
    finally:
        view.shutdown()


def test_a_failed_checkpoint_copy_keeps_the_local_ones(tmp_path):
    """The node rotated checkpoint-2 away and wrote checkpoint-4, but copying checkpoint-4 fails
    (its actor died mid-copy): checkpoint-2 stays, so the run can still be resumed. Once the copy
    succeeds, the rotated one goes."""
    from engine.cluster.bridge import Attempt, Bridge

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (run_dir / "checkpoints" / "checkpoint-2" / "trainer_state.json").write_text("{}")
    node_run = tmp_path / "node" / "runs" / "r1"
    (node_run / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    (node_run / "checkpoints" / "checkpoint-4" / "trainer_state.json").write_text("{}")

    class Failing(Bridge):
        broken = True

        def __init__(self):  # no cluster: only the mirroring is under test
            pass

        def fetch(self, att, path, dest):
            if self.broken:
                raise RuntimeError("actor died")
            shutil.copytree(path, dest)

    bridge = Failing()
    att = Attempt(actor=None, name="r1", home=str(tmp_path / "node"))
    bridge.mirror_checkpoints(att, "r1", run_dir, ["checkpoint-4"])
    assert has_checkpoint(run_dir) and (run_dir / "checkpoints" / "checkpoint-2").is_dir()
    assert att.checkpoints is None  # tried again at the next poll
    bridge.broken = False
    bridge.mirror_checkpoints(att, "r1", run_dir, ["checkpoint-4"])
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["checkpoint-4"]
