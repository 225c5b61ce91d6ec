"""The library on disk: every registered artifact in `<data_dir>/library/<artifact_id>/`.

Each folder holds the artifact (a file or a folder) and a `manifest.json` (run id, kind, base
model, sizes, sha256). The files are the truth; the index only mirrors them, so deleting an
artifact removes its folder and its index row, and never touches a run directory: artifacts
outlive their runs.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

from engine import paths
from engine.export.job import library_manifests
from engine.rundir import SPEC_FILE


def run_name(run_id: str | None) -> str:
    """A run's name from its spec.json; the run id when that cannot be read ("" for no id)."""
    if not run_id:
        return ""
    try:
        spec = json.loads((paths.runs_dir() / run_id / SPEC_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return run_id
    name = spec.get("name") if isinstance(spec, dict) else None
    return str(name or run_id)


def library_entries() -> list[dict]:
    """Every artifact with a readable manifest, newest first, with `folder`, `file` and `run_name`."""
    out = library_manifests()
    names: dict[str, str] = {}
    for data in out:
        run_id = data.get("run_id") or ""
        if run_id not in names:
            names[run_id] = run_name(run_id)
        data["run_name"] = names[run_id]
    return _with_preference_datasets(out)


def _with_preference_datasets(entries: list[dict]) -> list[dict]:
    """`entries` and the preference datasets voted in the chat pane (engine.data.preferences:
    kind "dataset", their files in `<data_dir>/datasets/`), newest first."""
    from engine.data.preferences import library_entries as preference_entries

    merged = entries + preference_entries()
    return sorted(merged, key=lambda d: (-float(d.get("created_at") or 0), str(d.get("id"))))


def delete_artifact(entry: dict) -> None:
    """Remove one artifact's folder and its index row, and nothing outside the library."""
    folder = Path(entry["folder"]).resolve()
    library = paths.library_dir().resolve()
    if folder.parent != library:
        raise ValueError(f"{folder} is not an artifact folder of {library}")
    shutil.rmtree(folder)
    if entry.get("id"):  # the index forgets it too (the run's own row stays)
        from engine.store.index import Store

        with Store() as store:
            store.forget_artifact(str(entry["id"]))


def export_artifact(entry: dict, dest_dir: Path | str) -> Path:
    """Copy the artifact (file or folder) into `dest_dir`, never overwriting; returns the copy."""
    src = Path(entry["file"])
    dest = Path(dest_dir) / src.name
    if dest.exists():
        raise FileExistsError(f"{dest} already exists; choose another folder or remove it.")
    if src.is_dir():
        shutil.copytree(src, dest)
    else:
        shutil.copy2(src, dest)
    return dest


def unpack_bundle(entry: dict, dest_dir: Path | str) -> Path:
    """Unzip a GGUF bundle into `dest_dir`; returns the folder holding its Modelfile."""
    with zipfile.ZipFile(entry["file"]) as zf:
        zf.extractall(dest_dir)
    modelfiles = sorted(Path(dest_dir).rglob("Modelfile"))
    if not modelfiles:
        raise FileNotFoundError(f"{entry['file']} holds no Modelfile")
    return modelfiles[0].parent
