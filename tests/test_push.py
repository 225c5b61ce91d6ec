"""`tunegraph push`: a run's adapter (with its model card and base-model reference) and its GGUF
bundle go to a Hub repo through huggingface_hub's real upload API, pointed (HF_ENDPOINT,
HF_HUB_DISABLE_XET=1) at a small Hub stand-in on 127.0.0.1 (tests/hub_server.py) that records
what arrives: the files byte for byte, the private flag, the token. Progress, cancel, offline
mode, a missing token, a bad repo name and a server refusal each end in one sentence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import zipfile

import keyring
import pytest
from keyring.backend import KeyringBackend

from engine import secrets, settings
from engine.errors import NotFoundError, TunegraphError
from engine.export import hub
from engine.export.hub import HubError, Part, PushCancelled
from tests.hub_server import FakeHub
from tests.test_export import RUN_ID, build_exported_run

TOKEN = "hf_PushTestToken0123456789"


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
        self.store.pop((service, username), None)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir):
    return build_exported_run(tmp_path_factory.getbasetemp(), tiny_model_dir)


@pytest.fixture
def online(monkeypatch):
    """Online, the token in a test keyring, huggingface_hub as HF_HUB_DISABLE_XET=1 makes it (its
    constants are read once, at import, from this process's environment)."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_XET", True)
    previous = keyring.get_keyring()
    keyring.set_keyring(MemoryKeyring())
    secrets.set_hf_token(TOKEN)
    yield
    keyring.set_keyring(previous)


@pytest.fixture
def run_home(exported, monkeypatch):
    """The exported run's data directory, with the run in its index."""
    from engine.store.index import Store

    monkeypatch.setenv("TUNEGRAPH_HOME", str(exported.home))
    with Store() as store:
        store.ingest(exported.run_dir)
    return exported.home


def _members(zip_path) -> dict[str, bytes]:
    with zipfile.ZipFile(zip_path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def test_cli_pushes_the_adapter_and_gguf_bundle_privately(exported, run_home, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
    env.update(
        HF_HUB_DISABLE_XET="1",
        HF_TOKEN=TOKEN,  # no keyring backend in a headless child: the documented alternative
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
    )
    with FakeHub() as fake:
        env["HF_ENDPOINT"] = fake.url
        out = subprocess.run(
            [sys.executable, "-m", "app", "push", RUN_ID, "me/support-bot", "--gguf", "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["private"] is True and result["url"] == f"{fake.url}/me/support-bot"
    rec = fake.recorded
    assert rec.created == [
        {"name": "support-bot", "organization": "me", "visibility": "private", "type": "model"}
    ]
    hub_calls = [auth for method, _p, auth in rec.requests if method == "POST"]
    assert hub_calls and all(auth == f"Bearer {TOKEN}" for auth in hub_calls)  # PUTs go to storage
    assert len(rec.commits) == 1
    files = rec.committed_files()
    adapter = _members(exported.artifact("adapter_zip"))
    bundle = _members(exported.artifact("gguf_bundle"))
    for name, content in {**adapter, **bundle}.items():
        if name != "README.md":
            assert files[name] == content, name
    assert set(files) == (set(adapter) | set(bundle)) and sorted(result["files"]) == sorted(files)
    gguf = exported.artifact("gguf").name
    assert files[gguf] == exported.artifact("gguf").read_bytes()
    lfs_paths = {line["value"]["path"] for line in rec.commits[0] if line.get("key") == "lfsFile"}
    assert {"adapter_model.safetensors", gguf} <= lfs_paths  # sent through LFS, not inline
    card = files["README.md"].decode()
    assert card.startswith("---\nlibrary_name: peft\ntags:\n- tunegraph\n- lora\n- gguf\n---\n")
    assert "base_model:" not in card.split("---")[1]  # a local folder: no hub link…
    base = json.loads((exported.run_dir / "spec.json").read_text())["base_model"]["source"]
    assert f"Base model: `{base}` (a local model; not linked on the Hub)." in card  # …in words
    assert "## GGUF (llama.cpp, Ollama)" in card
    assert adapter["README.md"].decode().strip().splitlines()[0] in card


def test_push_reports_progress_and_a_public_repo(exported, run_home, online, monkeypatch):
    from app.cli.push import push_target

    seen: list[tuple[str, float]] = []
    with FakeHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        result = push_target(
            exported.artifact("adapter_zip").parent.name,  # an artifact id
            "team/adapter-only",
            public=True,
            progress=lambda m, f: seen.append((m, f)),
        )
    assert fake.recorded.created[0]["visibility"] == "public" and result["private"] is False
    files = fake.recorded.committed_files()
    assert set(files) == set(_members(exported.artifact("adapter_zip")))
    fractions = [f for _m, f in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(m.startswith("uploading adapter_model.safetensors") for m, _f in seen)
    assert seen[-1][0] == f"pushed to {fake.url}/team/adapter-only"


def test_cancel_stops_before_the_commit(exported, online, monkeypatch, tmp_path):
    cancel = threading.Event()

    def progress(message: str, fraction: float) -> None:
        if message.startswith("uploading (") and fraction > 0:
            cancel.set()  # the user pressed Cancel while the weights were being sent

    files = hub.stage([Part("gguf", exported.artifact("gguf"))], tmp_path, "bot", None)
    with FakeHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        with pytest.raises(PushCancelled, match="nothing was committed"):
            hub.push(files, "me/cancelled", progress=progress, cancel=cancel)
    assert fake.recorded.created and not fake.recorded.commits


def test_offline_mode_refuses_before_sending_anything(exported, run_home, online, monkeypatch):
    from app.cli.push import push_target

    settings.save(settings.Settings(offline=True))
    try:
        with FakeHub() as fake:
            monkeypatch.setenv("HF_ENDPOINT", fake.url)
            with pytest.raises(HubError) as err:
                push_target(RUN_ID, "me/bot")
        assert str(err.value).startswith("Offline mode is on: pushing to the Hugging Face Hub")
        assert "Settings" in err.value.hint and fake.recorded.requests == []
    finally:
        settings.save(settings.Settings())


def test_a_missing_token_is_one_sentence(run_home, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
    env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.null.Keyring"
    out = subprocess.run(
        [sys.executable, "-m", "app", "push", RUN_ID, "me/bot"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip() == (
        "tunegraph: No Hugging Face token is stored, so nothing can be pushed. Add a token with "
        "write access in Settings (it is kept in the OS keyring), or set HF_TOKEN."
    )


def test_bad_names_and_a_server_refusal_are_sentences(exported, run_home, online, monkeypatch):
    from app.cli.push import push_target

    with pytest.raises(HubError, match="'no-owner' is not a Hub repository name"):
        push_target(RUN_ID, "no-owner")
    with pytest.raises(NotFoundError, match="No run or artifact matches 'nothing-like-this'"):
        push_target("nothing-like-this", "me/bot")
    with pytest.raises(TunegraphError, match="an artifact is pushed as it is"):
        push_target(exported.artifact("gguf").parent.name, "me/bot", gguf=True)
    with FakeHub(fail_commit=True) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        with pytest.raises(HubError) as err:
            push_target(RUN_ID, "me/not-mine")
    assert str(err.value).startswith("Pushing to me/not-mine failed: 403")


def test_model_card_links_a_hub_base_only():
    assert hub.hub_base_model("HuggingFaceTB/SmolLM2-135M-Instruct") == (
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
    for local in ("builtin:tiny-llama", "gguf:/x/model.gguf", "/home/me/model", "./model", ""):
        assert hub.hub_base_model(local) is None
    parts = [Part("adapter_zip", None), Part("gguf_bundle", None)]  # type: ignore[arg-type]
    card = hub.model_card(parts, {"adapter_zip": "# bot\n\nAn adapter."}, "bot", "org/base-1B")
    assert card.startswith("---\nbase_model: org/base-1B\nlibrary_name: peft\n")
    assert "# bot\n\nAn adapter." in card
