"""Shared fixtures: an isolated data directory, the tiny model built once per session, and a
guard that fails any test leaving a child process behind."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

# what `make test` installs and whose absence would silently skip whole test files
REQUIRED = {"pytestqt": "pytest-qt (the dev extra)", "ray": "Ray (the cluster extra)"}


def pytest_configure(config):
    """Stop, rather than skip ~80 tests, when pytest-qt or Ray is missing;
    TUNEGRAPH_ALLOW_MISSING=1 runs what it can (a machine without the cluster extra)."""
    if os.environ.get("TUNEGRAPH_ALLOW_MISSING") == "1":
        return
    missing = [what for name, what in REQUIRED.items() if importlib.util.find_spec(name) is None]
    if missing:
        raise pytest.UsageError(
            "the test suite needs "
            + " and ".join(missing)
            + ": `make test` installs them; TUNEGRAPH_ALLOW_MISSING=1 skips their tests instead"
        )


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def tg_home(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own TUNEGRAPH_HOME; the builtin tiny model is shared via a symlink."""
    home = tmp_path_factory.mktemp("tg-home")
    monkeypatch.setenv("TUNEGRAPH_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    # the speed check (a short real run before a model's first estimate, engine.plan.probe) would
    # add a worker run to every test's first estimate: off, except in the tests of it
    monkeypatch.setenv("TUNEGRAPH_SPEED_CHECK", "0")
    shared = os.environ.get("TUNEGRAPH_TEST_MODELS")
    if shared:
        (home / "models").symlink_to(shared, target_is_directory=True)
    return home


@pytest.fixture
def store(tg_home):
    """The run index of the test's data folder (a real SQLite file)."""
    from engine.store.index import Store

    with Store() as index:
        yield index


@pytest.fixture(scope="session", autouse=True)
def _shared_models(tmp_path_factory):
    """One models/ folder for the whole session, so builtin:tiny-llama is built once."""
    models = tmp_path_factory.mktemp("shared-models")
    os.environ["TUNEGRAPH_TEST_MODELS"] = str(models)
    yield models
    os.environ.pop("TUNEGRAPH_TEST_MODELS", None)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama with a sentencepiece tokenizer, built once per session."""
    from engine.models.tiny import build_tiny_model

    out = tmp_path_factory.mktemp("tiny-model")
    build_tiny_model(out)
    return out


@pytest.fixture(autouse=True)
def _no_leftover_processes(tg_home):
    """Fail a test that leaves a process behind: a child of this one, or any process of its data
    directory (supervisor and workers are detached, so they are found by their TUNEGRAPH_HOME)."""
    yield
    import psutil

    me = psutil.Process()
    alive = {p.pid: p for p in me.children(recursive=True)}
    home = str(tg_home)
    for proc in psutil.process_iter():
        try:
            if proc.pid != me.pid and proc.environ().get("TUNEGRAPH_HOME") == home:
                alive[proc.pid] = proc
        except psutil.Error:
            continue
    left = []
    for p in alive.values():
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                left.append((p, " ".join(p.cmdline()[:4])))
        except psutil.Error:
            continue
    if left:
        for p, _ in left:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs([p for p, _ in left], timeout=5)
        pytest.fail("test left processes behind: " + ", ".join(f"{p.pid} {cmd}" for p, cmd in left))


@pytest.fixture
def sup(monkeypatch, tg_home):
    """A Store to drive a real supervisor with (started on demand by the client), stopped
    afterwards together with any worker it left."""
    from tests.helpers import supervisor_session

    yield from supervisor_session(monkeypatch, tg_home)


@pytest.fixture
def data(tmp_path) -> Path:
    """A small chat dataset (tests.helpers.write_chats)."""
    from tests.helpers import write_chats

    return write_chats(tmp_path / "chats.jsonl")


@pytest.fixture
def canvas(qtbot):
    """A Canvas in a holder widget for the Qt tests (pytest-qt's qtbot), its undo stack left
    clean so closing it asks nothing."""
    from PySide6 import QtWidgets

    from app.canvas import Canvas

    holder = QtWidgets.QWidget()
    qtbot.addWidget(holder)
    canvas = Canvas(holder)
    yield canvas
    canvas.graph.undo_stack().setClean()
