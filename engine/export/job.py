"""One export's working state (`ExportJob`) and the library it fills: each artifact is moved into
`library/<artifact_id>/` with a `manifest.json` and announced with an `artifact` event.

`skip_existing(run_id, options)` is what keeps an export from being made twice: the parts of an
ExportSpec (adapter ZIP, GGUF bundle of one quantization, merged folder) that the library already
holds for the run are turned off, and their manifests returned so the caller can say where they are.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from engine import paths
from engine.errors import RunCancelled, TunegraphError
from engine.events import EventLog
from engine.export import artifacts
from engine.setup.streaming import CancelCheck
from engine.spec import ExportSpec, JobSpec

MANIFEST = "manifest.json"
# ExportSpec switch -> the artifact kind that delivers it (a GGUF counts per quantization)
EXPORT_PARTS = {"adapter_zip": "adapter_zip", "gguf": "gguf_bundle", "merged": "merged_dir"}
ARTIFACT_LABELS = {  # an artifact kind as people read it
    "adapter_dir": "Adapter folder",
    "adapter_zip": "Adapter ZIP",
    "merged_dir": "Merged 16-bit folder",
    "model_dir": "Model folder (full fine-tuning)",
    "gguf": "GGUF",
    "gguf_bundle": "GGUF bundle (Ollama)",
}

Progress = Callable[[str, float | None], None]


@dataclass
class ExportJob:
    """Everything one export needs: the run, where to work, and where to report."""

    run_dir: Path
    run_id: str
    spec: JobSpec
    adapter_dir: Path
    log: EventLog
    progress: Progress
    cancel: CancelCheck | None
    work_dir: Path

    def say(self, message: str, fraction: float | None = None) -> None:
        """A phase message: a `log` event (info) and the progress callback."""
        self.log.emit("log", level="info", message=message)
        self.progress(message, fraction)

    def check_cancel(self) -> None:
        """Raise RunCancelled when the user has cancelled the export."""
        if self.cancel is not None and self.cancel():
            raise RunCancelled()


def no_progress(message: str, fraction: float | None) -> None:
    """A progress callback that reports nowhere."""
    return None


def register(job: ExportJob, src: Path, kind: str, quant: str | None = None) -> dict:
    """Move `src` into `library/<artifact_id>/`, write its manifest and emit an `artifact` event."""
    art_id = f"{job.run_id}-{kind.replace('_', '-')}-{secrets.token_hex(2)}"
    folder = paths.library_dir() / art_id
    folder.mkdir(parents=True)
    dest = folder / src.name
    shutil.move(str(src), dest)
    info = artifacts.describe_dir(dest, kind)
    manifest = {
        "id": art_id,
        "run_id": job.run_id,
        "kind": kind,
        "path": dest.name,
        "bytes": info["bytes"],
        "sha256": info["sha256"],
        "created_at": time.time(),
        "base_model": job.spec.base_model.source,
        "quant": quant,
    }
    tmp = folder / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(folder / MANIFEST)
    emit_artifact(job.log, art_id, kind, dest, info["bytes"], info["sha256"])
    return {**manifest, "path": str(dest)}


def library_manifests(run_id: str | None = None) -> list[dict]:
    """Every readable manifest in the library (only `run_id`'s when given), newest first, each
    with `folder` and `file` (the artifact's path) added."""
    out = []
    for manifest in paths.library_dir().glob(f"*/{MANIFEST}"):
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a half-written manifest shows up at the next look
        if not isinstance(data, dict) or (run_id and data.get("run_id") != run_id):
            continue
        data["folder"] = str(manifest.parent)
        data["file"] = str(manifest.parent / str(data.get("path") or ""))
        out.append(data)
    return sorted(out, key=lambda d: (-float(d.get("created_at") or 0), str(d.get("id"))))


def existing_exports(run_id: str, options: ExportSpec) -> dict[str, dict]:
    """The parts `options` asks for that the library already holds for `run_id`: ExportSpec
    switch ("adapter_zip", "gguf", "merged") -> the newest manifest delivering it (a GGUF bundle
    only counts for the same quantization; an artifact whose file is gone does not count)."""
    found: dict[str, dict] = {}
    manifests = [m for m in library_manifests(run_id) if Path(m["file"]).exists()]
    for part, kind in EXPORT_PARTS.items():
        if not getattr(options, part):
            continue
        for entry in manifests:
            same_quant = part != "gguf" or entry.get("quant") == options.quant
            if entry.get("kind") == kind and same_quant:
                found[part] = entry
                break
    return found


def skip_existing(run_id: str, options: ExportSpec) -> tuple[ExportSpec, list[dict]]:
    """`options` with the parts already in the library turned off, and the manifests of those
    parts. Nothing left to make (no switch on) means the export would only repeat itself."""
    found = existing_exports(run_id, options)
    return replace(options, **{part: False for part in found}), list(found.values())


def nothing_to_make(options: ExportSpec) -> bool:
    """True when `options` asks for no artifact at all."""
    return not any(getattr(options, part) for part in EXPORT_PARTS)


def emit_artifact(
    log: EventLog, art_id: str, kind: str, path: Path, size: int, sha256: str
) -> None:
    """Announce an artifact; the event's own `kind` names the event, so the artifact's kind is
    carried as `artifact_kind` (what engine.store.ingest reads)."""
    log.emit("artifact", id=art_id, artifact_kind=kind, path=str(path), bytes=size, sha256=sha256)


def safe_name(text: str) -> str:
    """A file-name-safe version of a run name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._") or "model"


def base_file(spec: JobSpec, name: str) -> Path | None:
    """A file of the base model (e.g. tokenizer.model) from its folder or the local hub cache."""
    from engine.models.sources import resolve_source

    try:
        resolved = resolve_source(spec.base_model)
    except TunegraphError:
        return None
    if resolved.kind in ("folder", "builtin"):
        path = Path(resolved.location) / name
        return path if path.is_file() else None
    if resolved.kind == "hub":
        try:
            from huggingface_hub import hf_hub_download

            return Path(
                hf_hub_download(
                    resolved.location,
                    name,
                    revision=spec.base_model.revision or None,
                    local_files_only=True,
                )
            )
        except Exception:  # not in the cache, or the repo has no such file
            return None
    return None
