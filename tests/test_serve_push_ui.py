"""The app's faces of serve and push: the Serve panel on a real tiny GGUF (URL, examples, requests
served, keep serving, Stop), the library's and the run panel's Serve and "Push to Hub…" entries,
and the push dialog against the Hub stand-in (progress, private by default, a refusal shown as a
sentence), the serve options (port; other machines only with the generated key) and the chat
pane's Serve. Screenshots go to /tmp/serve.png, /tmp/push.png, /tmp/serve_options.png and
/tmp/chat_serve.png."""

from __future__ import annotations

import gc

import psutil
import pytest

pytest.importorskip("pytestqt")

from openai import OpenAI  # noqa: E402

from app.library_tab import LibraryTab  # noqa: E402
from app.push_dialog import PushDialog  # noqa: E402
from app.run_panel import BUTTONS, RunRow  # noqa: E402
from app.serve_panel import ServeDialog, ServePanel  # noqa: E402
from engine.store.library import library_entries  # noqa: E402
from tests.hub_server import FakeHub  # noqa: E402
from tests.test_export import RUN_ID, build_exported_run  # noqa: E402
from tests.test_push import online, run_home  # noqa: E402, F401 - fixtures
from tests.test_serve import HELLO, free_port  # noqa: E402


@pytest.fixture(autouse=True)
def _no_gc_in_threads():
    gc.disable()
    yield
    gc.enable()
    gc.collect()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir):
    return build_exported_run(tmp_path_factory.getbasetemp(), tiny_model_dir)


def test_serve_panel_shows_the_endpoint_counts_requests_and_stops(qtbot, exported):
    panel = ServePanel(exported.artifact("gguf"), port=free_port())
    qtbot.addWidget(panel)
    panel.resize(720, 560)
    panel.show()
    server = panel.server
    assert server is not None and panel.url.text() == server.url
    qtbot.waitUntil(lambda: panel.copy_curl.isEnabled(), timeout=120_000)
    assert "tokenizer.chat_template" in panel.template.text()
    assert f"curl {server.url}/chat/completions" in panel.curl.toPlainText()
    assert f'base_url="{server.url}"' in panel.python.toPlainText()
    api = OpenAI(base_url=panel.url.text(), api_key="none", max_retries=0)
    api.chat.completions.create(model="m", messages=HELLO, max_tokens=4, temperature=0)
    api.models.list()
    qtbot.waitUntil(lambda: panel.requests.text() == "Requests served: 2", timeout=10_000)
    panel.copy_curl.click()
    from PySide6 import QtWidgets

    assert QtWidgets.QApplication.clipboard().text() == panel.curl.toPlainText()
    panel.grab().save("/tmp/serve.png")
    pid = server.proc.pid
    with qtbot.waitSignal(panel.stopped):
        panel.stop_button.click()
    assert not psutil.pid_exists(pid) and panel.state.text() == "Stopped."
    assert not panel.stop_button.isEnabled()


def test_keep_serving_leaves_the_endpoint_running_when_the_app_closes(qtbot, exported):
    panel = ServePanel(exported.artifact("gguf"), port=free_port())
    qtbot.addWidget(panel)
    qtbot.waitUntil(lambda: panel.copy_url.isEnabled(), timeout=120_000)
    server = panel.server
    panel.keep.setChecked(True)
    assert server.keep_path.exists()
    proc = server.proc
    panel.shutdown()  # what the app's shutdown does
    try:
        assert proc.poll() is None, "a kept endpoint was stopped with the app"
        assert OpenAI(base_url=server.url, api_key="none", max_retries=0).models.list().data
    finally:
        server.proc = proc
        server.stop()
    panel2 = ServePanel(exported.artifact("gguf"), port=free_port())
    qtbot.addWidget(panel2)
    proc2 = panel2.server.proc
    panel2.shutdown()  # not kept: it ends with the app
    assert proc2.poll() is not None


def test_a_port_in_use_shows_a_sentence_not_a_dead_panel(qtbot, exported):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        panel = ServePanel(exported.artifact("gguf"), port=port)
        qtbot.addWidget(panel)
    assert panel.server is None
    assert panel.state.text().startswith(f"Not serving: Port {port} on 127.0.0.1 is already in use")


def test_serving_to_other_machines_is_a_choice_and_needs_the_generated_key(qtbot, exported):
    import urllib.error
    import urllib.request

    import openai

    dialog = ServeDialog(exported.artifact("gguf"))
    qtbot.addWidget(dialog)
    options = dialog.options
    assert dialog.panel is None  # nothing is served before Start
    assert not options.allow_remote.isChecked()
    assert options.options() == ("127.0.0.1", options.port.value())
    port = free_port()
    options.port.setValue(port)
    options.allow_remote.setChecked(True)
    dialog.resize(560, 260)
    dialog.show()
    dialog.grab().save("/tmp/serve_options.png")
    options.start_button.click()
    panel = dialog.panel
    server = panel.server
    assert server is not None and (server.host, server.port) == ("0.0.0.0", port)
    assert panel.key.text() == server.api_key and server.api_key.startswith("tg-")
    qtbot.waitUntil(lambda: panel.copy_url.isEnabled(), timeout=120_000)
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url + "/models", timeout=10)
    assert refused.value.code == 401
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=url, api_key="tg-wrong", max_retries=0).models.list()
    assert OpenAI(base_url=url, api_key=server.api_key, max_retries=0).models.list().data
    assert f"Bearer {server.api_key}" in panel.curl.toPlainText()
    proc = server.proc
    dialog.close()  # closing the window ends the endpoint (no "keep serving")
    assert proc.poll() is not None


def test_the_chat_panes_serve_opens_the_serve_window_for_its_gguf(qtbot, exported):
    from PySide6 import QtWidgets

    from app.tools import install_tools

    window = QtWidgets.QMainWindow()
    qtbot.addWidget(window)
    tools = install_tools(window)
    try:
        gguf = str(exported.artifact("gguf"))
        column = tools.chat.add_model(gguf)
        with qtbot.waitSignal(column.idle, timeout=60_000):
            pass
        assert column.serve_button.isEnabled() and "OpenAI" in column.serve_button.toolTip()
        window.resize(1100, 520)
        window.show()
        tools.chat_dock.raise_()
        tools.chat.grab().save("/tmp/chat_serve.png")
        with qtbot.waitSignal(tools.chat.serveRequested) as asked:
            column.serve_button.click()
        assert asked.args == [gguf]
        (dialog,) = tools.serving
        assert dialog.gguf == exported.artifact("gguf") and dialog.isVisible()
        assert dialog.panel is None and dialog.options.start_button.isEnabled()
        dialog.options.port.setValue(free_port())
        dialog.options.start_button.click()
        proc = dialog.panel.server.proc
    finally:
        tools.shutdown()  # the app closes: the endpoint and the chat model end with it
    assert proc.poll() is not None


def test_library_and_run_panel_offer_serve_and_push(qtbot, exported, monkeypatch):
    monkeypatch.setenv("TUNEGRAPH_HOME", str(exported.home))
    tab = LibraryTab()
    qtbot.addWidget(tab)
    kinds = [e.get("kind") for e in tab.entries]
    gguf_row, zip_row = kinds.index("gguf"), kinds.index("adapter_zip")
    tab.table.selectRow(gguf_row)
    assert tab.serve_button.isEnabled() and tab.push_button.isEnabled()
    with qtbot.waitSignal(tab.serveRequested) as served:
        tab.serve_button.click()
    assert served.args == [str(exported.artifact("gguf"))]
    tab.table.selectRow(zip_row)
    assert not tab.serve_button.isEnabled() and tab.push_button.isEnabled()
    with qtbot.waitSignal(tab.pushRequested) as pushed:
        tab.push_button.click()
    assert pushed.args[0]["kind"] == "adapter_zip"
    assert BUTTONS["Serve"] == ("completed",) and BUTTONS["Push to Hub…"] == ("completed",)
    row = RunRow({"id": RUN_ID, "name": "bot", "state": "completed"})
    qtbot.addWidget(row)
    assert not row.buttons["Serve"].isHidden() and not row.buttons["Push to Hub…"].isHidden()
    with qtbot.waitSignal(row.action) as clicked:
        row.buttons["Serve"].click()
    assert clicked.args == ["Serve", RUN_ID]
    assert any(e["kind"] == "gguf" for e in library_entries())


def test_push_dialog_pushes_privately_with_progress(qtbot, exported, run_home, online, monkeypatch):  # noqa: F811
    dialog = PushDialog(RUN_ID, "support bot", is_run=True)
    qtbot.addWidget(dialog)
    assert not dialog.push_button.isEnabled()  # no repo name yet
    dialog.repo.setText("me/support-bot")
    dialog.gguf.setChecked(True)
    assert not dialog.public.isChecked()
    dialog.show()
    with FakeHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        dialog.push_button.click()
        assert dialog.cancel_button.isEnabled() and not dialog.repo.isEnabled()
        qtbot.waitUntil(lambda: dialog.thread is None, timeout=60_000)
    assert dialog.result is not None and dialog.progress.value() == 1000
    assert dialog.status.text().startswith("Pushed ") and "(private)" in dialog.status.text()
    assert fake.recorded.created[0]["visibility"] == "private"
    assert exported.artifact("gguf").name in fake.recorded.committed_files()
    dialog.grab().save("/tmp/push.png")


def test_push_dialog_shows_a_refusal_as_a_sentence(qtbot, run_home, online, monkeypatch):  # noqa: F811
    dialog = PushDialog(RUN_ID, "support bot", is_run=True)
    qtbot.addWidget(dialog)
    dialog.repo.setText("me/not-mine")
    with FakeHub(fail_commit=True) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        dialog.push_button.click()
        qtbot.waitUntil(lambda: dialog.thread is None, timeout=60_000)
    assert dialog.result is None
    assert dialog.status.text().startswith("Pushing to me/not-mine failed: 403")
    assert dialog.push_button.isEnabled() and dialog.close_button.isEnabled()
