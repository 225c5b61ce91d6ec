"""Library over a real export, Settings with the token in a test keyring (and nowhere else),
offline mode, the hardware view with fake GPUs, and install_tools on a bare QMainWindow."""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail
from keyring.errors import PasswordDeleteError

pytest.importorskip("pytestqt")

from app.hardware_view import HardwareView  # noqa: E402
from app.library_tab import LibraryTab  # noqa: E402
from app.settings_dialog import NO_KEYRING, SettingsDialog  # noqa: E402
from engine import paths, secrets  # noqa: E402
from engine import settings as settings_mod  # noqa: E402
from engine.errors import SettingsError, TunegraphError  # noqa: E402
from engine.store.index import Store  # noqa: E402
from engine.store.library import library_entries  # noqa: E402
from tests.test_export import RUN_ID, build_exported_run  # noqa: E402

TOKEN = "hf_TunegraphTestSecret0123456789"


class MemoryKeyring(KeyringBackend):
    """A keyring that lives in this process only."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service, username):
        return self.store.get((service, username))

    def set_password(self, service, username, password):
        self.store[(service, username)] = password

    def delete_password(self, service, username):
        if self.store.pop((service, username), None) is None:
            raise PasswordDeleteError("no such password")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No automatic gc (collect on the GUI thread), no user config folder, no HF_TOKEN."""
    monkeypatch.setenv("TUNEGRAPH_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    gc.disable()
    yield
    gc.enable()
    gc.collect()


@pytest.fixture
def memory_keyring():
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir):
    return build_exported_run(tmp_path_factory.getbasetemp(), tiny_model_dir)


@pytest.fixture
def library(exported):
    """This test's data directory holds a copy of the exported run's library and spec."""
    shutil.copytree(exported.home / "library", paths.library_dir(), dirs_exist_ok=True)
    run_dir = paths.runs_dir() / RUN_ID
    run_dir.mkdir()
    shutil.copy2(exported.run_dir / "spec.json", run_dir / "spec.json")
    return paths.library_dir()


# -- library ------------------------------------------------------------------------------------
def test_library_lists_a_real_export_and_deletes_only_what_was_asked(qtbot, library, tmp_path):
    answers = []
    tab = LibraryTab(confirm=lambda _parent, _title, text: answers.pop(0))
    qtbot.addWidget(tab)
    kinds = sorted(e["kind"] for e in tab.entries)
    assert kinds == ["adapter_zip", "gguf", "gguf_bundle", "merged_dir"]
    assert tab.table.rowCount() == 4
    texts = [[tab.table.item(r, c).text() for c in range(6)] for r in range(4)]
    assert all(row[1] == f"support bot · {RUN_ID[-6:]}" for row in texts)  # name · short id
    assert {row[3] for row in texts} == {"", "Q4_K_M"}
    assert all(row[4].endswith(("KiB", "MiB", "GiB")) for row in texts)

    from engine.store.index import Store

    with Store() as store:
        store.ingest_library()
        assert len(store.artifacts()) == 4
    bundle = next(i for i, e in enumerate(tab.entries) if e["kind"] == "gguf_bundle")
    tab.table.selectRow(bundle)
    target = Path(tab.selected()["folder"])
    assert not tab.ollama_button.isEnabled() or shutil.which("ollama")

    answers.append(False)  # the user says no
    assert not tab.delete_selected()
    assert target.is_dir() and tab.table.rowCount() == 4

    answers.append(True)
    assert tab.delete_selected()
    assert not target.exists()
    assert sorted(e["kind"] for e in library_entries()) == ["adapter_zip", "gguf", "merged_dir"]
    assert tab.table.rowCount() == 3
    with Store() as store:  # the index forgot the deleted artifact, and only that one
        assert sorted(a["kind"] for a in store.artifacts()) == ["adapter_zip", "gguf", "merged_dir"]
    assert (paths.runs_dir() / RUN_ID / "spec.json").is_file()  # the run is untouched

    zip_row = next(i for i, e in enumerate(tab.entries) if e["kind"] == "adapter_zip")
    tab.table.selectRow(zip_row)
    copy = tab.export_to(tab.selected(), tmp_path)
    assert copy == tmp_path / Path(tab.selected()["file"]).name and copy.is_file()
    assert tab.export_to(tab.selected(), tmp_path) is None  # never overwrites
    assert "already exists" in tab.status.text()


# -- settings -------------------------------------------------------------------------------------
def test_settings_round_trip_token_in_keyring_only(qtbot, memory_keyring):
    dialog = SettingsDialog()
    qtbot.addWidget(dialog)
    assert dialog.token.echoMode() == dialog.token.EchoMode.Password
    dialog.offline.setChecked(True)
    dialog.gpu_policy.setCurrentIndex(dialog.gpu_policy.findData("refuse"))
    dialog.cpu_threads.setValue(1)
    dialog.theme.setCurrentIndex(dialog.theme.findData("light"))
    dialog.token.setText(TOKEN)
    assert not dialog.test_button.isEnabled()  # offline: the token is not checked
    with qtbot.waitSignal(dialog.saved):
        assert dialog.save()

    assert secrets.get_hf_token() == TOKEN
    assert memory_keyring.store == {(secrets.SERVICE, secrets.HF_TOKEN_KEY): TOKEN}
    saved = settings_mod.load()
    assert (saved.offline, saved.gpu_policy, saved.cpu_threads, saved.theme) == (
        True,
        "refuse",
        1,
        "light",
    )
    assert dialog.token.text() == ""
    for file in [*paths.data_dir().rglob("*"), *paths.location_file().parent.rglob("*")]:
        if file.is_file():
            assert TOKEN.encode() not in file.read_bytes(), f"the token is in {file}"

    again = SettingsDialog()
    qtbot.addWidget(again)
    assert again.offline.isChecked() and again.gpu_policy.currentData() == "refuse"
    assert again.token.text() == "" and "stored in the keyring" in again.token.placeholderText()
    again.clear_token()
    assert secrets.get_hf_token() is None and memory_keyring.store == {}


def test_without_a_keyring_the_dialog_points_to_hf_token(qtbot):
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        dialog = SettingsDialog()
        qtbot.addWidget(dialog)
        assert not dialog.token.isEnabled()
        assert dialog.token_status.text().startswith(NO_KEYRING)
        assert "HF_TOKEN" in dialog.token_status.text()
        assert dialog.save()  # the rest of the settings still save
    finally:
        keyring.set_keyring(previous)


def test_settings_file_offline_mode_and_data_dir(monkeypatch, tmp_path):
    with pytest.raises(SettingsError, match="gpu_policy"):
        settings_mod.Settings(gpu_policy="sometimes")
    assert settings_mod.load() == settings_mod.Settings()
    settings_mod.settings_path().write_text("{not json")
    assert settings_mod.load() == settings_mod.Settings()  # a damaged file: defaults

    offline = settings_mod.Settings(offline=True, cpu_threads=3)
    env = settings_mod.worker_env({"PATH": "/bin"}, offline)
    assert env["HF_HUB_OFFLINE"] == "1" and env["OMP_NUM_THREADS"] == "3"
    assert "HF_HUB_OFFLINE" not in settings_mod.worker_env(
        {"PATH": "/bin"}, settings_mod.Settings()
    )
    with pytest.raises(TunegraphError, match="not in the Hugging Face cache") as err:
        settings_mod.check_hub_id("nobody/not-a-cached-model", settings=offline)
    assert "Turn offline mode off" in err.value.hint
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    settings_mod.check_hub_id("nobody/not-a-cached-model", settings=settings_mod.Settings())

    assert paths.chosen_data_dir() is None
    paths.choose_data_dir(tmp_path / "elsewhere")
    assert paths.chosen_data_dir() == (tmp_path / "elsewhere").resolve()
    paths.choose_data_dir(None)
    assert paths.chosen_data_dir() is None


# -- hardware -------------------------------------------------------------------------------------
def _record_command(action: str, gpu: int) -> None:
    store = Store()
    try:
        store.add_command(action, gpu=gpu)
    finally:
        store.close()


def test_hardware_view_shows_fake_gpus_and_suspend_sends_the_command(qtbot, monkeypatch):
    monkeypatch.setenv("TUNEGRAPH_FAKE_GPUS", "24,48")
    store = Store()
    store.set_hold("20261122-130000-aaaaaa", 0, 6.0)
    view = HardwareView(sender=_record_command, interval_ms=60000)
    qtbot.addWidget(view)
    try:
        if not view.cards:
            with qtbot.waitSignal(view.updated, timeout=10000):
                pass
        assert sorted(view.cards) == [0, 1]
        first, second = view.cards[0], view.cards[1]
        assert (first.bar.total, first.bar.held) == (24.0, 6.0)
        assert (second.bar.total, second.bar.held) == (48.0, 0.0)
        assert "6.0 GiB held" in first.figures.text()
        assert "18.0 GiB available" in first.figures.text()
        assert "20261122-130000-aaaaaa (6.0 GiB)" in first.holders.text()
        assert "cores" in view.cpu.text()

        with qtbot.waitSignal(view.command_sent, timeout=10000) as sent:
            second.suspend.setChecked(True)
        assert sent.args == ["suspend_gpu", 1]
        commands = store.take_commands()
        assert [(c["action"], c["args"]) for c in commands] == [("suspend_gpu", {"gpu": 1})]
        assert settings_mod.load().suspended_gpus == [1]
        with qtbot.waitSignal(view.updated, timeout=10000):
            view.refresh()
        assert second.suspend.isChecked() and not first.suspend.isChecked()

        with qtbot.waitSignal(view.command_sent, timeout=10000):
            second.suspend.setChecked(False)
        assert [c["action"] for c in store.take_commands()] == ["unsuspend_gpu"]
        assert settings_mod.load().suspended_gpus == []
    finally:
        view.shutdown()
        store.close()


# -- install_tools ----------------------------------------------------------------------------------
def test_install_tools_adds_docks_menu_and_opens_a_run_in_chat(qtbot, library):
    from PySide6 import QtWidgets

    from app.tools import install_tools

    window = QtWidgets.QMainWindow()
    window.setCentralWidget(QtWidgets.QLabel("canvas"))
    window.menuBar().addMenu("&View")
    qtbot.addWidget(window)
    tools = install_tools(window, hardware_sender=_record_command)
    try:
        window.show()
        titles = [a.text() for a in window.menuBar().actions()]
        assert "&Tools" in titles
        tools_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Tools")
        assert [a.text() for a in tools_menu.actions() if a.text()] == ["Open GGUF…", "Settings…"]
        assert window.findChild(QtWidgets.QDockWidget, "library").widget() is tools.library
        assert tools.library.table.rowCount() == 4

        assert tools.open_run_in_chat("20990101-000000-000000") is None
        assert "has no GGUF export" in tools.chat.status.text()
        column = tools.open_run_in_chat(RUN_ID)
        assert column is not None
        with qtbot.waitSignal(column.idle, timeout=60000):
            pass
        assert column.ready, column.error
    finally:
        tools.shutdown()


def test_token_check_is_online_only_and_never_echoes_the_token(qtbot, memory_keyring, monkeypatch):
    import huggingface_hub

    from app.settings_dialog import check_token

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    dialog = SettingsDialog()
    qtbot.addWidget(dialog)
    assert not dialog.test_button.isEnabled()  # nothing to test yet
    dialog.token.setText(TOKEN)
    assert dialog.test_button.isEnabled()
    dialog.offline.setChecked(True)
    assert not dialog.test_button.isEnabled()
    assert "Offline" in dialog.test_button.toolTip()

    monkeypatch.setattr(huggingface_hub, "whoami", lambda token: {"name": "alice"})
    assert check_token(TOKEN) == "Valid token for alice."

    def refuse(token):
        raise RuntimeError(f"401 Client Error: Invalid credentials ({token})")

    monkeypatch.setattr(huggingface_hub, "whoami", refuse)
    text = check_token(TOKEN)
    assert text.startswith("The token was not accepted") and TOKEN not in text
