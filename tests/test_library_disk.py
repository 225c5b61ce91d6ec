"""The library on disk (engine.store.library) without Qt: real manifests in a tmp TUNEGRAPH_HOME
(set by conftest), listed newest first with run names from spec.json, copied without overwriting,
deleted with their index row only, GGUF bundles unpacked."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from engine import paths
from engine.store.index import Store
from engine.store.library import (
    delete_artifact,
    export_artifact,
    library_entries,
    run_name,
    unpack_bundle,
)

RUN_ID = "20261122-130000-aaaaaa"


def add_run(run_id: str, name: str) -> None:
    run_dir = paths.runs_dir() / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "spec.json").write_text(json.dumps({"name": name}), encoding="utf-8")


def add_artifact(art_id: str, kind: str, created_at: float, run_id: str | None = RUN_ID) -> Path:
    """An artifact folder as engine.export.job.register writes it; returns the artifact path."""
    folder = paths.library_dir() / art_id
    folder.mkdir()
    if kind == "merged_dir":
        dest = folder / "merged"
        dest.mkdir()
        (dest / "model.safetensors").write_bytes(b"w" * 64)
    elif kind == "gguf_bundle":
        dest = folder / "bundle.zip"
        with zipfile.ZipFile(dest, "w") as zf:
            zf.writestr("support-bot/Modelfile", "FROM ./model.gguf\n")
            zf.writestr("support-bot/model.gguf", b"GGUF")
    else:
        dest = folder / f"{art_id}.bin"
        dest.write_bytes(b"x" * 100)
    manifest = {
        "id": art_id,
        "run_id": run_id,
        "kind": kind,
        "path": dest.name,
        "bytes": 100,
        "sha256": "0" * 64,
        "created_at": created_at,
        "base_model": "builtin:tiny-llama",
        "quant": None,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return dest


def test_entries_are_newest_first_with_run_names_and_skip_broken_manifests():
    add_run(RUN_ID, "support bot")
    add_artifact("old", "adapter_zip", 100.0)
    add_artifact("new", "gguf", 300.0)
    add_artifact("orphan", "merged_dir", 200.0, run_id="20990101-000000-gone00")
    broken = paths.library_dir() / "half-written"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json", encoding="utf-8")
    listed = paths.library_dir() / "a-list"
    listed.mkdir()
    (listed / "manifest.json").write_text("[1, 2]", encoding="utf-8")
    (paths.library_dir() / "no-manifest").mkdir()

    entries = library_entries()
    assert [e["id"] for e in entries] == ["new", "orphan", "old"]
    assert [e["run_name"] for e in entries] == [
        "support bot",
        "20990101-000000-gone00",
        "support bot",
    ]
    new = entries[0]
    assert new["folder"] == str(paths.library_dir() / "new")
    assert Path(new["file"]) == paths.library_dir() / "new" / "new.bin"
    assert Path(new["file"]).is_file()
    assert new["kind"] == "gguf" and new["bytes"] == 100


def test_run_name_falls_back_to_the_id():
    add_run(RUN_ID, "support bot")
    assert run_name(RUN_ID) == "support bot"
    assert run_name("20990101-000000-gone00") == "20990101-000000-gone00"
    assert run_name(None) == ""
    bad = paths.runs_dir() / "20261122-140000-bbbbbb"
    bad.mkdir()
    (bad / "spec.json").write_text("{", encoding="utf-8")
    assert run_name(bad.name) == bad.name


def test_delete_removes_the_folder_and_its_index_row_only():
    add_run(RUN_ID, "support bot")
    add_artifact("keep", "adapter_zip", 100.0)
    add_artifact("drop", "merged_dir", 200.0)
    with Store() as store:
        assert store.ingest_library() == 2
    drop = next(e for e in library_entries() if e["id"] == "drop")

    delete_artifact(drop)

    assert not (paths.library_dir() / "drop").exists()
    assert (paths.library_dir() / "keep" / "manifest.json").is_file()
    assert [e["id"] for e in library_entries()] == ["keep"]
    with Store() as store:
        assert [a["id"] for a in store.artifacts()] == ["keep"]
    assert (paths.runs_dir() / RUN_ID / "spec.json").is_file()  # the run is untouched


def test_delete_refuses_a_folder_outside_the_library(tmp_path):
    outside = tmp_path / "precious"
    outside.mkdir()
    with pytest.raises(ValueError, match="not an artifact folder"):
        delete_artifact({"id": "x", "folder": str(outside), "file": str(outside)})
    nested = paths.library_dir() / "art" / "inner"
    nested.mkdir(parents=True)
    with pytest.raises(ValueError):
        delete_artifact({"id": "art", "folder": str(nested), "file": str(nested)})
    assert outside.is_dir() and nested.is_dir()


def test_export_copies_files_and_folders_and_never_overwrites(tmp_path):
    add_artifact("zip", "adapter_zip", 100.0)
    add_artifact("merged", "merged_dir", 200.0)
    by_id = {e["id"]: e for e in library_entries()}

    copy = export_artifact(by_id["zip"], tmp_path)
    assert copy == tmp_path / "zip.bin" and copy.read_bytes() == b"x" * 100
    folder = export_artifact(by_id["merged"], tmp_path)
    assert (folder / "model.safetensors").read_bytes() == b"w" * 64
    with pytest.raises(FileExistsError, match="already exists"):
        export_artifact(by_id["zip"], tmp_path)
    assert Path(by_id["zip"]["file"]).is_file()  # the library keeps its own


def test_unpack_bundle_finds_the_modelfile(tmp_path):
    add_artifact("bundle", "gguf_bundle", 100.0)
    add_artifact("plain", "adapter_zip", 200.0)
    entry = next(e for e in library_entries() if e["id"] == "bundle")
    folder = unpack_bundle(entry, tmp_path / "out")
    assert folder == tmp_path / "out" / "support-bot"
    assert (folder / "Modelfile").read_text() == "FROM ./model.gguf\n"

    no_modelfile = paths.library_dir() / "plain" / "empty.zip"
    with zipfile.ZipFile(no_modelfile, "w") as zf:
        zf.writestr("README.md", "nothing")
    with pytest.raises(FileNotFoundError, match="no Modelfile"):
        unpack_bundle({"file": str(no_modelfile)}, tmp_path / "other")
