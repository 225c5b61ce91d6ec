"""The engine set-up dialog, the About dialog and Run without an engine (pytest-qt, offscreen).

The dialog runs the real `tunegraph engine status` and `tunegraph engine setup` as subprocesses;
the GPU comes from a recorded nvidia-smi output (TUNEGRAPH_NVIDIA_SMI_OUTPUT)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6 import QtWidgets  # noqa: E402

from app.engine_setup_dialog import AboutDialog, EngineSetupDialog  # noqa: E402
from app.main_window_files import EXAMPLE_GRAPH  # noqa: E402
from engine import __version__  # noqa: E402
from engine.setup import bundle as engine_bundle
from engine.setup import environment as engine_env
from engine.setup import interpreters
from tests.app_helpers import gc_on_the_gui_thread, main_window_session  # noqa: F401, E402

SMI = Path(__file__).parent / "data" / "nvidia_smi"


@pytest.fixture
def no_torch_python(tmp_path) -> Path:
    """A real Python without torch (a fresh uv venv)."""
    venv = tmp_path / "empty-venv"
    uv = engine_env.uv_command()
    subprocess.run([*uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    return engine_env.venv_python(venv)


@pytest.fixture
def dialog(qtbot, monkeypatch):
    monkeypatch.setenv(engine_env.SMI_ENV, str(SMI / "rtx4090_driver550.csv"))
    dlg = EngineSetupDialog()
    qtbot.addWidget(dlg)
    with qtbot.waitSignal(dlg.statusLoaded, timeout=60000) as status:
        dlg.show()
    dlg.loaded = status.args[0]
    yield dlg
    dlg.shutdown()


def test_dialog_shows_the_detected_gpu_and_flavour(dialog):
    status = dialog.loaded
    assert status["ready"] is True  # this dev venv has torch
    assert status["detected"]["flavour"] == "cu128"
    text = dialog.gpu_label.text()
    assert "driver 550.120, compute capability 8.9" in text
    assert "Chosen flavour: cu128" in text and "not CUDA 13" in text
    assert dialog.flavour_combo.itemText(0) == "auto (cu128)"
    assert "GB free in" in dialog.space_label.text()
    assert dialog.state_label.text().startswith("Ready: torch 2.")
    dialog.flavour_combo.setCurrentIndex(dialog.flavour_combo.findData("cu126"))
    dialog.bundle_edit.setText("/media/usb/tunegraph-engine-cu126-py311-linux.tar")
    assert dialog.command_args() == [
        "engine",
        "setup",
        "--json-progress",
        "--yes",
        "--flavour",
        "cu126",
        "--bundle",
        "/media/usb/tunegraph-engine-cu126-py311-linux.tar",
    ]


def test_dialog_reports_a_bundle_for_another_flavour(dialog, qtbot, tmp_path):
    """A real `tunegraph engine setup --bundle` run that refuses the bundle, shown in the dialog."""
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "torch-2.13.0-cp311-cp311-linux_x86_64.whl").write_bytes(b"x" * 64)
    engine_bundle.write_manifest(
        folder,
        flavour="cu130",
        python_version=f"{sys.version_info[0]}.{sys.version_info[1]}",
        platform=engine_bundle.platform_name(),
    )
    dialog.flavour_combo.setCurrentIndex(dialog.flavour_combo.findData("cpu"))
    dialog.bundle_edit.setText(str(folder))
    with qtbot.waitSignal(dialog.finishedSetup, timeout=60000) as done:
        dialog.start()
        assert dialog.cancel_button.isEnabled() and not dialog.start_button.isEnabled()
    ok, message = done.args
    assert not ok
    assert "built for flavour cu130, but this set-up needs cpu" in message
    assert "built for flavour cu130" in dialog.error_label.text()
    assert dialog.start_button.isEnabled() and not dialog.cancel_button.isEnabled()
    assert dialog.log_path is not None and "flavour cpu" in dialog.log_view.toPlainText()


def test_dialog_cancel_stops_the_setup(dialog, qtbot, monkeypatch, tmp_path):
    """Start a real online set-up (it gets as far as creating the venv), then cancel it."""
    steps = []
    dialog.progressed.connect(lambda step, _f: steps.append(step))
    dialog.flavour_combo.setCurrentIndex(dialog.flavour_combo.findData("cpu"))
    with qtbot.waitSignal(dialog.progressed, timeout=60000):
        dialog.start()
    with qtbot.waitSignal(dialog.finishedSetup, timeout=30000) as done:
        dialog.cancel()
    ok, message = done.args
    assert not ok and "cancelled" in message
    assert not dialog.running()
    record = interpreters.read_record()
    assert record is None  # nothing was recorded
    engine = Path(interpreters.engine_dir())
    assert not list(engine.glob("venv-*"))  # the half-made environment is gone
    assert steps


def test_about_shows_version_and_folders(qtbot, tg_home):
    about = AboutDialog()
    qtbot.addWidget(about)
    assert f"Tunegraph {__version__}" in about.text
    assert str(tg_home) in about.text
    assert "Training engine:</b> ready" in about.text
    assert "kept when Tunegraph is upgraded or uninstalled" in about.text


def test_version_flag():
    out = subprocess.run(
        [sys.executable, "-m", "app", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"tunegraph {__version__}"


@pytest.fixture
def window(qtbot, tmp_path):
    yield from main_window_session(qtbot, tmp_path)


def test_run_without_engine_explains_and_offers_setup(window, monkeypatch, no_torch_python, qtbot):
    monkeypatch.setenv(interpreters.ENV_PYTHON, str(no_torch_python))
    window.open_file(EXAMPLE_GRAPH)
    assert window.canvas.nodes("FineTune")  # the canvas works without an engine
    assert window.run_all() is None
    box = window.engine_ui.prompt
    assert isinstance(box, QtWidgets.QMessageBox) and box.isVisible()
    assert "not set up on this machine" in box.text()
    assert "has no torch installed" in box.text()
    assert window.confirm_dialog is None and window.submitted == []
    setup = next(b for b in box.buttons() if b.text() == "Set up training engine…")
    with qtbot.waitSignal(window.engine_ui.setup_dialog_shown, timeout=5000):
        setup.click()
    dialog = window.engine_ui.setup_dialog
    assert isinstance(dialog, EngineSetupDialog) and dialog.isVisible()
    qtbot.waitUntil(lambda: dialog.status is not None, timeout=60000)
    assert dialog.status["ready"] is False
    assert dialog.state_label.text().startswith("Not set up:")


def test_help_menu_and_banner(window, monkeypatch, no_torch_python, qtbot):
    titles = [a.text() for a in window.menuBar().actions()]
    assert titles[-1] == "&Help"
    assert window.engine_ui.banner is None  # not offered under pytest
    monkeypatch.setenv(interpreters.ENV_PYTHON, str(no_torch_python))
    window.engine_ui.offer_if_missing()
    banner = window.engine_ui.banner
    assert (
        banner is not None
        and "not set up yet" in banner.widgetForAction(banner.actions()[0]).text()
    )
    window.engine_ui.dismiss_banner()
    assert window.engine_ui.banner is None
    about = window.engine_ui.show_about()
    assert "Training engine:</b> not set up" in about.text
    about.accept()
