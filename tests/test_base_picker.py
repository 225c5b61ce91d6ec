"""The Base model node's picker: the models in the local Hugging Face cache (a real cache folder
layout built here, read by huggingface_hub.scan_cache_dir), the library's GGUFs, the runs that
delivered a model, the built-in tiny model, and free text; read off the UI thread."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("pytestqt")

from app import model_choices  # noqa: E402
from app.model_choices import ModelChoice, base_model_choices  # noqa: E402
from app.param_widgets import VALUE_ROLE, ModelEditor  # noqa: E402
from engine import paths  # noqa: E402
from engine.models.hf_cache import cached_models  # noqa: E402
from engine.store.index import Store  # noqa: E402
from nodes.catalogue import CATALOGUE  # noqa: E402
from tests.app_helpers import gc_on_the_gui_thread  # noqa: E402,F401
from tests.synthetic_runs import SyntheticRun, make_spec  # noqa: E402

SOURCE = CATALOGUE["BaseModel"].parameter("source")


def cache_repo(cache: Path, repo_id: str, files: dict[str, bytes], rev: str = "a1" * 20) -> Path:
    """A model repository as huggingface_hub lays it out: blobs by hash, a snapshot of symlinks
    to them, refs/main naming the snapshot."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(rev)
    for name, content in files.items():
        blob = repo / "blobs" / hashlib.sha256(content).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        link = repo / "snapshots" / rev / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return repo


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hf-hub"
    config = json.dumps({"model_type": "llama"}).encode()
    cache_repo(cache, "acme/tiny-chat", {"config.json": config, "model.safetensors": b"w" * 4096})
    cache_repo(cache, "acme/config-only", {"config.json": config})
    cache_repo(cache, "acme/chat-GGUF", {"chat-Q4_K_M.gguf": b"GGUF" + b"\0" * 100})
    (cache / "models--broken--repo").mkdir()  # no snapshots: huggingface_hub warns, we skip it
    cache_repo(cache, "someone/a-dataset", {"data.jsonl": b"{}"}).rename(
        cache / "datasets--someone--a-dataset"
    )
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def library_gguf(name: str, run_id: str = "", kind: str = "gguf") -> Path:
    folder = paths.library_dir() / f"art-{name}"
    folder.mkdir(parents=True)
    (folder / name).write_bytes(b"GGUF" + b"\0" * 2048)
    manifest = {"id": f"art-{name}", "run_id": run_id, "kind": kind, "path": name}
    (folder / "manifest.json").write_text(json.dumps({**manifest, "created_at": 1.0}))
    return folder / name


def completed_run(name: str) -> str:
    with Store() as store:
        run = SyntheticRun(store, make_spec(name))
        run.status("completed")
        SyntheticRun(store, make_spec(name + " still training")).status("training")
    return run.id


# -- what is listed (no Qt) --------------------------------------------------------------------
def test_cached_models_read_a_real_cache_layout(hf_cache):
    found = {m.repo_id: m for m in cached_models()}
    assert set(found) == {"acme/tiny-chat", "acme/config-only", "acme/chat-GGUF"}  # no dataset
    assert found["acme/tiny-chat"].has_weights and found["acme/tiny-chat"].size_bytes > 4096
    assert found["acme/config-only"].has_config and not found["acme/config-only"].has_weights
    gguf = found["acme/chat-GGUF"]
    assert not gguf.has_config and [Path(p).name for p in gguf.gguf_files] == ["chat-Q4_K_M.gguf"]
    assert Path(gguf.gguf_files[0]).is_file()


@pytest.mark.parametrize("broken", ["missing", "a file", "unreadable repo"])
def test_a_broken_cache_lists_what_it_can_and_never_raises(tmp_path, monkeypatch, broken):
    cache = tmp_path / "hub"
    if broken == "a file":
        cache.write_text("not a folder")
    elif broken == "unreadable repo":
        repo = cache_repo(cache, "acme/ok", {"config.json": b"{}"})
        bad = cache_repo(cache, "acme/dangling", {"config.json": b"{}"})
        for blob in (bad / "blobs").iterdir():
            blob.unlink()  # a snapshot link to nowhere
        assert repo.is_dir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    names = [m.repo_id for m in cached_models()]
    assert names == (["acme/ok"] if broken == "unreadable repo" else [])
    assert ModelChoice("builtin:tiny-llama", *_builtin_label()) in base_model_choices()


def _builtin_label() -> tuple[str, str]:
    return "builtin:tiny-llama — a random test model (writes nonsense)", "Built in"


def test_choices_hold_the_cache_the_library_completed_runs_and_builtin(hf_cache):
    gguf = library_gguf("support-Q4_K_M.gguf")
    library_gguf("support-Q4_K_M-ollama.zip", kind="gguf_bundle")  # a ZIP: not a base
    run_id = completed_run("support lr 2e-3")
    choices = base_model_choices()
    by_value = {c.value: c for c in choices}
    assert [c.group for c in choices] == sorted(
        (c.group for c in choices), key=model_choices.GROUPS.index
    )
    assert by_value["acme/tiny-chat"].label.endswith(" KiB)")  # its size on disk
    assert "config only" in by_value["acme/config-only"].label
    cached_gguf = next(v for v in by_value if v.endswith("chat-Q4_K_M.gguf"))
    assert cached_gguf.startswith("gguf:") and Path(cached_gguf[5:]).is_file()
    assert by_value[f"gguf:{gguf}"].group == "Library GGUFs"
    assert not any(v.endswith(".zip") for v in by_value)
    runs = [c for c in choices if c.group == "Delivered by runs"]
    assert [c.value for c in runs] == [f"run:{run_id}"]  # the run still training is not listed
    assert runs[0].label.startswith("support lr 2e-3  (run ")
    assert by_value["builtin:tiny-llama"].group == "Built in"
    assert "Qwen/Qwen2.5-0.5B-Instruct" in by_value  # a hub id to start from


# -- the picker ---------------------------------------------------------------------------------
def picker_values(editor: ModelEditor) -> list[str]:
    combo = editor.combo
    return [
        combo.itemData(i, VALUE_ROLE) for i in range(combo.count()) if combo.itemData(i, VALUE_ROLE)
    ]


def test_the_picker_reads_again_when_opened_and_stores_values(qtbot, hf_cache):
    shared = model_choices.shared()
    shared.wait()
    editor = ModelEditor(SOURCE)
    qtbot.addWidget(editor)
    editor.set_value("builtin:tiny-llama")
    gguf = library_gguf("mine.gguf")  # made after the last read: only a new read shows them
    run_id = completed_run("sft run")
    assert f"run:{run_id}" not in picker_values(editor)

    editor.combo.showPopup()  # opening the list reads again, off the UI thread
    assert shared.wait()
    values = picker_values(editor)
    for value in ("acme/tiny-chat", f"gguf:{gguf}", f"run:{run_id}", "builtin:tiny-llama"):
        assert value in values
    assert editor.combo.currentText() == "builtin:tiny-llama"  # what was there stays
    combo = editor.combo
    headings = [
        combo.itemText(i) for i in range(combo.count()) if not combo.itemData(i, VALUE_ROLE)
    ]
    assert headings[:3] == ["Hugging Face cache", "Library GGUFs", "Delivered by runs"]
    editor.combo.hidePopup()

    index = next(
        i
        for i in range(editor.combo.count())
        if editor.combo.itemData(i, VALUE_ROLE) == f"run:{run_id}"
    )
    with qtbot.waitSignal(editor.committed) as got:
        editor.combo.activated.emit(index)  # what a click on the entry sends
    assert got.args == [f"run:{run_id}"]  # the value, not the label
    assert editor.combo.currentText() == f"run:{run_id}"

    editor.combo.setEditText("  org/free-text  ")
    with qtbot.waitSignal(editor.committed) as got:
        editor.combo.lineEdit().editingFinished.emit()
    assert got.args == ["org/free-text"]
