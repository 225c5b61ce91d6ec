"""The run panel's "Open in TensorBoard": on a real tiny run that reported to TensorBoard, the
button starts TensorBoard's own server on 127.0.0.1, which answers and lists the run's loss; the
URL shows on the row and goes to the browser; the viewer ends when the panel closes (and when the
app dies without closing it). Without TensorBoard in the engine's Python the button is disabled
and says what to install. A screenshot of the row goes to /tmp/run_panel_tensorboard.png."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import urllib.request
import venv

import psutil
import pytest

pytest.importorskip("pytestqt")
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None, reason="tracking extra"
)

from PySide6 import QtCore, QtGui  # noqa: E402

from app.run_bridge import RunBridge  # noqa: E402
from app.run_panel import RunPanel, RunRow  # noqa: E402
from engine.rundir import TENSORBOARD as TB_DIR  # noqa: E402
from engine.setup import interpreters  # noqa: E402
from engine.training.tensorboard_server import TensorBoardProcess  # noqa: E402
from tests.test_tracking import TRACKER_ENV, _tiny_run  # noqa: E402


@pytest.fixture(scope="module")
def tb_run(tmp_path_factory, tiny_model_dir):
    """A 4-step tiny run with report_to=tensorboard, as the run panel's run dict."""
    folder = tmp_path_factory.mktemp("tb-run")
    with pytest.MonkeyPatch.context() as mp:
        for name in TRACKER_ENV:  # report_to sets them in this (the test) process
            mp.delenv(name, raising=False)
        _spec, run_dir, _events = _tiny_run(folder, tiny_model_dir, "tensorboard", "tb-run")
        for name in TRACKER_ENV:
            os.environ.pop(name, None)
    spec = json.loads((run_dir / "spec.json").read_text(encoding="utf-8"))
    return {
        "id": "tb-run",
        "name": "support bot",
        "state": "completed",
        "run_dir": str(run_dir),
        "spec": spec,
        "step": 4,
        "max_steps": 4,
        "metrics": {"loss": 2.5},
    }


class UrlCatcher(QtCore.QObject):
    """Takes the place of the browser for http URLs (QDesktopServices.setUrlHandler)."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    @QtCore.Slot(QtCore.QUrl)
    def open(self, url: QtCore.QUrl) -> None:
        self.urls.append(url.toString())


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as reply:
        assert reply.status == 200
        return json.loads(reply.read())


def test_open_in_tensorboard_serves_the_runs_loss_and_ends_with_the_panel(qtbot, tb_run):
    catcher = UrlCatcher()
    QtGui.QDesktopServices.setUrlHandler("http", catcher, "open")
    bridge = RunBridge()
    panel = RunPanel(bridge)
    qtbot.addWidget(panel)
    try:
        panel.on_runs_changed([tb_run])
        row = panel.rows["tb-run"]
        board = row.tensorboard
        assert board.isVisibleTo(row) and board.button.isEnabled()
        assert "browser" in board.button.toolTip() and not board.link.isVisibleTo(row)
        with qtbot.waitSignal(panel.tensorboards.opened, timeout=30_000) as opened:
            board.button.click()
        viewer = panel.tensorboards.viewers["tb-run"]
        url = viewer.url
        assert opened.args == ["tb-run", url] and url.startswith("http://127.0.0.1:")
        assert catcher.urls == [url]
        assert board.link.isVisibleTo(row) and url in board.link.text()
        # TensorBoard's own HTTP API lists the run and its loss once it has read the files
        qtbot.waitUntil(lambda: _get_json(url + "data/runs") == ["."], timeout=15_000)
        tags = _get_json(url + "data/plugin/scalars/tags")
        assert "train/loss" in tags["."]
        panel.resize(1500, 120)
        panel.show()
        row.grab().save("/tmp/run_panel_tensorboard.png")
        pid = viewer.proc.pid
        board.button.click()  # a second click shows the same viewer again
        assert panel.tensorboards.viewers["tb-run"].proc.pid == pid
        assert catcher.urls == [url, url]
        panel.close_panel()
        assert not psutil.pid_exists(pid) and panel.tensorboards.viewers == {}
    finally:
        QtGui.QDesktopServices.unsetUrlHandler("http")
        panel.close_panel()


def test_tensorboard_ends_when_the_app_dies_without_stopping_it(tb_run):
    """The app killed (here: a process that starts a viewer, then exits at once): the viewer's
    watch on its parent ends it."""
    logdir = os.path.join(tb_run["run_dir"], TB_DIR)
    code = (
        "import os\n"
        "from engine.training.tensorboard_server import TensorBoardProcess\n"
        f"v = TensorBoardProcess({logdir!r})\n"
        "v.wait_ready(60)\n"
        "print(v.proc.pid, flush=True)\n"
        "os._exit(0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=90, check=True
    )
    orphan = psutil.Process(int(out.stdout.strip()))
    gone, _ = psutil.wait_procs([orphan], timeout=10)
    assert gone, "TensorBoard outlived the process that started it"


def test_without_tensorboard_the_button_is_disabled_and_names_the_install(
    qtbot, tb_run, tmp_path, monkeypatch
):
    bare = tmp_path / "bare"
    venv.create(bare, with_pip=False)  # a Python with nothing installed: no tensorboard
    python = bare / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    monkeypatch.setenv(interpreters.ENV_PYTHON, str(python))
    row = RunRow(tb_run)
    qtbot.addWidget(row)
    assert row.tensorboard.isVisibleTo(row) and not row.tensorboard.button.isEnabled()
    assert "pip install 'tunegraph[tracking]'" in row.tensorboard.button.toolTip()
    untracked = dict(tb_run, id="plain", spec={"training": {"report_to": "none"}})
    plain = RunRow(untracked)
    qtbot.addWidget(plain)
    assert not plain.tensorboard.isVisibleTo(plain)


def test_a_viewer_that_cannot_start_says_why(tmp_path):
    import socket

    from engine.errors import TunegraphError

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        viewer = TensorBoardProcess(tmp_path, port=busy.getsockname()[1], python=sys.executable)
        with pytest.raises(TunegraphError, match="TensorBoard ended: .*already in use"):
            viewer.wait_ready(30)
    assert viewer.proc is None
