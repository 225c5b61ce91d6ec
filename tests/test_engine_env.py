"""The engine environment: flavour choice from recorded nvidia-smi outputs, bundle manifests,
free space, offline messages, which Python runs what, `tunegraph engine status`, and (slow) a real
offline set-up from a CPU bundle that then trains the tiny model."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from engine.errors import EngineMissingError, EngineSetupError
from engine.hardware import GIB
from engine.setup import bundle as engine_bundle
from engine.setup import environment as engine_env
from engine.setup import interpreters

DATA = Path(__file__).parent / "data"
SMI = DATA / "nvidia_smi"
UV_OUT = DATA / "uv_output"
ROOT = Path(__file__).resolve().parents[1]


def smi(name: str) -> str:
    return (SMI / name).read_text(encoding="utf-8", errors="replace")


# -- flavour choice ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fixture", "platform", "flavour", "words"),
    [
        ("h100_driver580.csv", "linux", "cu130", "CUDA 13"),
        ("four_h100_driver580.csv", "linux", "cu130", "4 GPUs"),
        ("rtx4090_driver550.csv", "linux", "cu128", "not CUDA 13"),
        ("gtx1080_driver535.csv", "linux", "cu126", "start at compute capability 7.5"),
        ("t4_driver470.csv", "linux", "cpu", "older than 525.60.13"),
        ("mixed_a6000_v100_driver570.csv", "linux", "cu126", "lowest compute capability 7.0"),
        ("a100_driver525.60.13.csv", "linux", "cu128", "525.60.13 or newer"),
        ("a100_driver525.60.11.csv", "linux", "cpu", "Update the NVIDIA driver"),
        ("windows_driver528.24.csv", "win32", "cpu", "older than 528.33"),
        ("windows_driver528.33.csv", "win32", "cu128", "528.33 or newer"),
        ("windows_driver528.24.csv", "linux", "cu128", "525.60.13 or newer"),
        ("no_gpu_empty.csv", "linux", "cpu", "No NVIDIA GPU"),
        ("driver_not_loaded.csv", "linux", "cpu", "No NVIDIA GPU"),
        ("old_smi_no_compute_cap.csv", "linux", "cpu", "No NVIDIA GPU"),
        ("garbage.csv", "linux", "cpu", "No NVIDIA GPU"),
    ],
)
def test_flavour_from_recorded_nvidia_smi(fixture, platform, flavour, words):
    chosen = engine_env.choose_flavour(smi(fixture), platform=platform)
    assert chosen.name == flavour
    assert words in chosen.reason
    assert chosen.reason.endswith(".")
    assert chosen.index_url == f"https://download.pytorch.org/whl/{flavour}"
    assert ("bitsandbytes" in chosen.packages) == (flavour != "cpu")


def test_flavour_without_nvidia_smi():
    assert engine_env.choose_flavour(None).name == "cpu"


def test_detect_reads_the_recorded_output(monkeypatch):
    monkeypatch.setenv(engine_env.SMI_ENV, str(SMI / "rtx4090_driver550.csv"))
    assert engine_env.detect_flavour().name == "cu128"
    chosen = engine_env.flavour_named("cu126")
    assert chosen.name == "cu126" and "detected: cu128" in chosen.reason
    with pytest.raises(EngineSetupError, match="Unknown engine flavour"):
        engine_env.flavour_named("rocm")


def test_detect_without_nvidia_smi_on_path(monkeypatch):
    monkeypatch.delenv(engine_env.SMI_ENV, raising=False)
    monkeypatch.setenv("PATH", "")
    assert engine_env.nvidia_smi_output() is None
    assert engine_env.detect_flavour().name == "cpu"


# -- requirements, bundles -----------------------------------------------------------------------
def test_engine_requirements_leave_out_the_gui():
    version, requires = engine_bundle.project_requires(ROOT)
    cpu = engine_bundle.engine_requirements(requires, "cpu")
    cuda = engine_bundle.engine_requirements(requires, "cu128")
    names = {engine_bundle.requirement_name(r) for r in cpu["engine"]}
    assert [engine_bundle.requirement_name(r) for r in cpu["torch"]] == ["torch"]
    assert {"transformers", "peft", "uv", "keyring"} <= names
    assert not names & {"pyside6-essentials", "nodegraphqt", "pyqtgraph", "torch", "pytest"}
    assert "bitsandbytes" not in names
    assert any(r.startswith("bitsandbytes") for r in cuda["engine"])
    assert [engine_bundle.requirement_name(r) for r in cpu["llama"]] == ["llama-cpp-python"]
    assert version


def test_the_bundle_fetches_llama_cpp_with_its_server_extra(tmp_path):
    """build_bundle.py downloads llama-cpp-python pinned with its extras kept, so the server
    extra's packages (what `tunegraph serve` imports) come along; a bundle records whether they
    did, and set-up from an older bundle without them installs plain llama-cpp-python."""
    from importlib import metadata

    _, requires = engine_bundle.project_requires(ROOT)
    (llama,) = engine_bundle.engine_requirements(requires, "cpu")["llama"]
    assert engine_bundle.pinned(llama, "0.3.36") == "llama-cpp-python[server]==0.3.36"
    assert engine_bundle.pinned("torch>=2.4", "2.13.0+cpu") == "torch==2.13.0+cpu"
    assert engine_bundle.without_extras(llama) == "llama-cpp-python>=0.3.8,<0.4"
    server = {
        engine_bundle.requirement_name(r)
        for r in metadata.requires("llama-cpp-python") or []
        if 'extra == "server"' in r
    }
    assert set(engine_bundle.SERVER_PACKAGES) <= server  # what the real extra asks for
    folder = fake_bundle(tmp_path / "b")
    assert not engine_bundle.verify(folder, "cpu", "3.11", "linux").serves
    for wheel in (
        "fastapi-0.115.0-py3-none-any.whl",
        "uvicorn-0.30.0-py3-none-any.whl",
        "sse_starlette-2.1.0-py3-none-any.whl",
        "starlette_context-0.3.6-py3-none-any.whl",
    ):
        (folder / wheel).write_bytes(os.urandom(64))
    files = [p.name for p in folder.glob("*.whl")]
    assert engine_bundle.missing_wheels(files, engine_bundle.SERVER_PACKAGES) == [
        "pydantic-settings"
    ]
    (folder / "pydantic_settings-2.5.0-py3-none-any.whl").write_bytes(os.urandom(64))
    engine_bundle.write_manifest(folder, flavour="cpu", python_version="3.11", platform="linux")
    assert engine_bundle.verify(folder, "cpu", "3.11", "linux").serves
    script = (ROOT / "packaging" / "build_bundle.py").read_text(encoding="utf-8")
    assert 'engine_bundle.pinned(reqs["llama"][0], version_pin)' in script


def fake_bundle(folder: Path, flavour="cpu", python="3.11", platform="linux") -> Path:
    folder.mkdir(parents=True)
    for name in (
        "torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl",
        "tunegraph-0.1.0-py3-none-any.whl",
    ):
        (folder / name).write_bytes(os.urandom(256))
    engine_bundle.write_manifest(
        folder, flavour=flavour, python_version=python, platform=platform, torch="2.13.0+cpu"
    )
    return folder


def test_bundle_manifest_verifies_and_finds_wheels(tmp_path):
    folder = fake_bundle(tmp_path / "b")
    bundle = engine_bundle.verify(folder, "cpu", "3.11", "linux")
    assert bundle.wheel("torch").name.startswith("torch-2.13.0")
    assert bundle.wheel("llama-cpp-python") is None
    assert {w["file"] for w in bundle.manifest["wheels"]} == {p.name for p in folder.glob("*.whl")}


@pytest.mark.parametrize(
    ("wanted", "words"),
    [
        (("cu128", "3.11", "linux"), "built for flavour cpu, but this set-up needs cu128"),
        (("cpu", "3.12", "linux"), "built for Python version 3.11, but this set-up needs 3.12"),
        (("cpu", "3.11", "windows"), "built for platform linux, but this set-up needs windows"),
    ],
)
def test_bundle_for_another_machine_is_refused(tmp_path, wanted, words):
    folder = fake_bundle(tmp_path / "b")
    with pytest.raises(EngineSetupError, match=words) as err:
        engine_bundle.verify(folder, *wanted)
    assert "build_bundle.py" in str(err.value)


def test_damaged_or_incomplete_bundle_is_refused(tmp_path):
    folder = fake_bundle(tmp_path / "b")
    wheel = next(folder.glob("torch-*.whl"))
    damaged = bytearray(wheel.read_bytes())
    damaged[-1] ^= 0xFF  # always a different byte (the content is random)
    wheel.write_bytes(bytes(damaged))
    with pytest.raises(EngineSetupError, match="damaged: torch-.*does not match its sha256"):
        engine_bundle.verify(folder, "cpu", "3.11", "linux")
    wheel.unlink()
    with pytest.raises(EngineSetupError, match="incomplete: torch-.* is missing"):
        engine_bundle.verify(folder, "cpu", "3.11", "linux")
    (folder / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(EngineSetupError, match="unreadable"):
        engine_bundle.verify(folder, "cpu", "3.11", "linux")


def test_bundle_archive_unpacks_and_non_bundles_are_named(tmp_path):
    folder = fake_bundle(tmp_path / "tunegraph-engine-cpu-py311-linux")
    archive = tmp_path / "bundle.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(folder, arcname=folder.name)
    assert engine_bundle.peek_manifest(archive)["flavour"] == "cpu"
    engine = tmp_path / "engine"
    with pytest.raises(
        EngineSetupError, match="built for flavour cpu, but this set-up needs cu126"
    ):
        engine_env.setup("cu126", bundle=archive, engine_dir=engine)
    assert not (engine / "bundle").exists() and not list(engine.glob("venv-*"))
    unpacked = engine_bundle.unpack(archive, tmp_path / "out")
    assert engine_bundle.verify(unpacked, "cpu", "3.11", "linux").flavour == "cpu"
    assert engine_bundle.unpack(tmp_path, tmp_path / "x") == folder  # the folder holding it
    not_tar = tmp_path / "notes.txt"
    not_tar.write_text("hello", encoding="utf-8")
    with pytest.raises(EngineSetupError, match="not a tar archive"):
        engine_bundle.unpack(not_tar, tmp_path / "y")
    with pytest.raises(EngineSetupError, match="has no manifest.json"):
        engine_bundle.unpack(_empty(tmp_path / "empty"), tmp_path / "z")
    with pytest.raises(EngineSetupError, match="does not exist"):
        engine_bundle.unpack(tmp_path / "missing.tar", tmp_path / "w")


def _empty(folder: Path) -> Path:
    folder.mkdir()
    return folder


# -- free space, offline, cancel -----------------------------------------------------------------
def test_free_space_error_names_the_folder_and_numbers(tmp_path):
    free = engine_env.free_bytes(tmp_path)
    with pytest.raises(EngineSetupError) as err:
        engine_env.check_free_space(tmp_path / "not-yet" / "engine", free + 1000 * GIB)
    text = str(err.value)
    assert str(tmp_path / "not-yet" / "engine") in text
    assert f"{free / GIB:.1f} GB free" in text and "GB needed" in text
    engine_env.check_free_space(tmp_path, 1)


def test_setup_checks_free_space_before_anything(tmp_path, monkeypatch):
    monkeypatch.setitem(engine_env.FREE_NEEDED, "cpu", 10**18)
    target = tmp_path / "engine"
    with pytest.raises(EngineSetupError, match="Not enough free space"):
        engine_env.setup(engine_env.Flavour("cpu", "test"), engine_dir=target)
    assert not target.exists()


def test_offline_is_recognised_in_recorded_uv_output():
    offline = (UV_OUT / "offline_pytorch_index.txt").read_text(encoding="utf-8")
    assert "failed to lookup address" in engine_env.network_error(offline)
    missing = (UV_OUT / "bundle_missing_package.txt").read_text(encoding="utf-8")
    assert engine_env.network_error(missing) is None


def _echo_and_fail(path: Path) -> list[str]:
    code = f"import sys; sys.stdout.write(open({str(path)!r}).read()); sys.exit(2)"
    return [sys.executable, "-c", code]


def test_a_failed_download_says_no_network_and_offers_the_bundle(tmp_path):
    runner = engine_env.StepRunner(tmp_path / "setup.log", None)
    with pytest.raises(EngineSetupError) as err:
        runner.run(_echo_and_fail(UV_OUT / "offline_pytorch_index.txt"), "Installing torch")
    assert err.value.message.startswith("No network: Installing torch")
    assert "--bundle" in err.value.hint and "offline bundle" in err.value.hint
    with pytest.raises(EngineSetupError) as err:
        runner.run(_echo_and_fail(UV_OUT / "bundle_missing_package.txt"), "Installing torch")
    assert "torch was not found in the provided package locations" in err.value.message
    assert str(tmp_path / "setup.log") in err.value.hint
    assert "dns error" in (tmp_path / "setup.log").read_text(encoding="utf-8")


def test_cancel_kills_the_running_step(tmp_path):
    cancel = threading.Event()
    runner = engine_env.StepRunner(tmp_path / "setup.log", cancel)
    threading.Timer(0.5, cancel.set).start()
    t0 = time.monotonic()
    with pytest.raises(engine_env.SetupCancelled):
        runner.run([sys.executable, "-c", "import time; time.sleep(60)"], "Sleeping")
    assert time.monotonic() - t0 < 10


def test_cancel_also_ends_what_the_step_started(tmp_path):
    """pip and uv start builds of their own: cancelling the step stops its whole process group."""
    import psutil

    cancel = threading.Event()
    runner = engine_env.StepRunner(tmp_path / "setup.log", cancel)
    parent = (
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "print('child', child.pid, flush=True); time.sleep(60)"
    )
    threading.Timer(1.5, cancel.set).start()
    t0 = time.monotonic()
    with pytest.raises(engine_env.SetupCancelled):
        runner.run([sys.executable, "-c", parent], "Building")
    assert time.monotonic() - t0 < 10
    log = (tmp_path / "setup.log").read_text(encoding="utf-8")
    child = int(re.search(r"^child (\d+)$", log, re.M).group(1))
    assert "cancelled" in log
    deadline = time.monotonic() + 10
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the step's child outlived the cancel"
        time.sleep(0.1)


# -- which Python runs what ----------------------------------------------------------------------
@pytest.mark.parametrize("data_filter", [True, False], ids=["data-filter", "python-3.11.2"])
def test_bundle_unpack_refuses_escaping_members_with_or_without_tar_filters(
    tmp_path, monkeypatch, data_filter
):
    """Debian 12's Python 3.11.2 has no tarfile filters: the same members are refused there."""
    if not data_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    folder = fake_bundle(tmp_path / "tunegraph-engine-cpu-py311-linux")
    good = tmp_path / "good.tar"
    with tarfile.open(good, "w") as tar:
        tar.add(folder, arcname=folder.name)
    assert engine_bundle.unpack(good, tmp_path / "ok").name == folder.name
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        tar.add(folder, arcname=folder.name)
        tar.add(folder / "manifest.json", arcname="../escaped.json")
    with pytest.raises(EngineSetupError):
        engine_bundle.unpack(evil, tmp_path / "bad" / "into")
    assert not (tmp_path / "bad" / "escaped.json").exists()


def test_tunegraph_and_entry_commands(monkeypatch):
    from app.cli.main import tunegraph_command

    assert tunegraph_command("engine", "status") == [
        sys.executable,
        "-m",
        "app",
        "engine",
        "status",
    ]
    assert interpreters.app_entry_command("supervisor") == [
        sys.executable,
        "-m",
        "engine.supervisor.process",
    ]
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert tunegraph_command("engine", "status") == [sys.executable, "engine", "status"]
    assert interpreters.app_entry_command("supervisor") == [
        sys.executable,
        "-m",
        "engine.supervisor.process",
    ]


def test_engine_python_resolution_order(monkeypatch, tmp_path, tg_home):
    monkeypatch.delenv(interpreters.ENV_PYTHON, raising=False)
    monkeypatch.delenv(interpreters.ENV_DIR, raising=False)
    assert interpreters.engine_dir() == tg_home / "engine"
    # 3. this interpreter has torch (a dev checkout)
    assert interpreters.engine_python() == sys.executable
    assert interpreters.engine_status()["source"] == "self"
    # 2. what set-up recorded wins over this interpreter
    fake = tmp_path / "python"
    fake.write_text("", encoding="utf-8")
    interpreters.write_record({"python": str(fake), "flavour": "cu128", "torch": "2.13.0+cu128"})
    assert interpreters.engine_python() == str(fake)
    status = interpreters.engine_status()
    assert (status["source"], status["flavour"], status["torch"]) == (
        "setup",
        "cu128",
        "2.13.0+cu128",
    )
    # 1. the environment variable wins over everything
    monkeypatch.setenv(interpreters.ENV_PYTHON, sys.executable)
    assert interpreters.engine_python() == sys.executable
    # a recorded engine that is gone: back to this interpreter, and in a frozen app, an error
    monkeypatch.delenv(interpreters.ENV_PYTHON)
    fake.unlink()
    assert interpreters.engine_python() == sys.executable
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    with pytest.raises(EngineMissingError) as err:
        interpreters.engine_python()
    assert "is gone" in str(err.value) and "tunegraph engine setup" in str(err.value)
    status = interpreters.engine_status()
    assert not status["ready"] and status["python"] is None and "is gone" in status["reason"]


def test_frozen_without_engine_raises_with_the_way_out(monkeypatch):
    monkeypatch.delenv(interpreters.ENV_PYTHON, raising=False)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    with pytest.raises(EngineMissingError, match="no engine has been set up in") as err:
        interpreters.engine_python()
    assert "Set up training engine" in err.value.hint
    from engine.training.launch import worker_command

    with pytest.raises(EngineMissingError):
        worker_command(Path("run"))


def test_launches_use_the_engine_python(monkeypatch, tmp_path):
    other = tmp_path / "engine-python"
    other.write_text("", encoding="utf-8")
    monkeypatch.setenv(interpreters.ENV_PYTHON, str(other))
    from engine.training.launch import worker_command

    assert worker_command(tmp_path)[:3] == [str(other), "-m", "engine.training.worker"]
    assert worker_command(tmp_path, 2)[:3] == [str(other), "-m", "torch.distributed.run"]


@pytest.fixture
def no_torch_python(tmp_path) -> Path:
    """A real Python (a fresh venv made with uv) that has no torch."""
    uv = engine_env.uv_command()
    assert uv, "uv is a base dependency"
    venv = tmp_path / "empty-venv"
    subprocess.run([*uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    return engine_env.venv_python(venv)


def test_status_json_names_what_is_missing(no_torch_python, monkeypatch):
    env = {
        **os.environ,
        interpreters.ENV_PYTHON: str(no_torch_python),
        engine_env.SMI_ENV: str(SMI / "h100_driver580.csv"),
    }
    out = subprocess.run(
        [sys.executable, "-m", "app", "engine", "status", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert out.returncode == 1
    status = json.loads(out.stdout)
    assert status["ready"] is False and status["python"] is None
    assert "has no torch installed" in status["reason"]
    assert status["detected"]["flavour"] == "cu130"
    env[interpreters.ENV_PYTHON] = sys.executable
    out = subprocess.run(
        [sys.executable, "-m", "app", "engine", "status", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    status = json.loads(out.stdout)
    assert status["ready"] is True and status["torch"].startswith("2.")
    assert set(status) >= {"ready", "python", "flavour", "torch", "engine_dir", "reason"}


def test_estimates_run_in_the_engine_python_when_not_here(tmp_path, monkeypatch, tiny_model_dir):
    from engine.plan import report as estimate_report
    from tests.helpers import make_spec, write_chats

    spec = make_spec(write_chats(tmp_path / "chats.jsonl"))
    spec.base_model.source = str(tiny_model_dir)
    here = estimate_report.estimate_specs([spec], "cpu")
    monkeypatch.setattr(estimate_report, "engine_in_process", lambda: False)
    monkeypatch.setenv(interpreters.ENV_PYTHON, sys.executable)
    there = estimate_report.estimate_specs([spec], "cpu")
    assert there == here and there[0]["params"] > 0
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.delenv(interpreters.ENV_PYTHON)
    with pytest.raises(EngineMissingError):
        estimate_report.estimate_specs([spec], "cpu")


# -- the real thing: an offline set-up from a CPU bundle ------------------------------------------
BUNDLE_ENV = "TUNEGRAPH_TEST_BUNDLE"


@pytest.mark.slow
def test_offline_setup_from_cpu_bundle_trains_the_tiny_model(tmp_path, monkeypatch, tg_home):
    """Build (or take from TUNEGRAPH_TEST_BUNDLE) a cpu bundle, set the engine up from it with no
    index at all, and train the tiny model through that interpreter."""
    bundle = os.environ.get(BUNDLE_ENV)
    if not bundle:
        bundle = str(tmp_path / "bundle.tar")
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "packaging" / "build_bundle.py"),
                "--flavour",
                "cpu",
                "--torch-index",
                "pip",
                "--torch-version",
                "2.13.0+cpu",
                "--llama-from-cache",
                "--out",
                bundle,
            ],
            check=True,
        )
    engine = tmp_path / "engine"
    monkeypatch.setenv(interpreters.ENV_DIR, str(engine))
    monkeypatch.delenv(interpreters.ENV_PYTHON, raising=False)
    for var in ("UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_FIND_LINKS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("UV_OFFLINE", "1")  # nothing may come from the network
    steps: list[tuple[str, float]] = []
    t0 = time.monotonic()
    record = engine_env.setup("cpu", bundle=bundle, progress=lambda s, f: steps.append((s, f)))
    took = time.monotonic() - t0
    print(f"offline cpu set-up: {took:.1f} s, bundle {Path(bundle).stat().st_size / 1e6:.0f} MB")
    assert record["flavour"] == "cpu" and record["torch"].startswith("2.13.0")
    assert steps[-1] == ("Ready", 1.0)
    assert [f for _, f in steps] == sorted(f for _, f in steps)
    python = interpreters.engine_python()
    assert python == record["python"] and Path(python).is_relative_to(engine)
    check = "import torch, transformers, peft, engine.training.worker, llama_cpp; print(engine.training.worker.__file__)"
    out = subprocess.run(
        [python, "-c", check], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert str(engine) in out.stdout  # the engine's own installed tunegraph, not this checkout
    # PySide6 stays out of the engine
    gui = subprocess.run(
        [python, "-c", "import PySide6"], capture_output=True, check=False, cwd=tmp_path
    )
    assert gui.returncode != 0
    # train the tiny model once through the engine's Python (its own CLI, run in the foreground)
    from tests.helpers import make_graph

    graph = make_graph(tmp_path)
    env = {**os.environ, "TUNEGRAPH_HOME": str(tg_home)}
    try:
        result = subprocess.run(
            [python, "-m", "app", "run", str(graph), "--device", "cpu", "--yes", "--json"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=540,
            check=False,
        )
    finally:
        subprocess.run(
            [python, "-m", "app", "supervisor", "--stop"], env=env, cwd=tmp_path, check=False
        )
    print(f"tiny training run through the engine's Python: {time.monotonic() - t0 - took:.1f} s")
    assert result.returncode == 0, result.stderr[-2000:]
    runs = json.loads(result.stdout)
    assert runs[0]["state"] == "completed" and runs[0]["metrics"]["loss"] is not None
