"""One export's working state (`ExportJob`) and the library it fills: each artifact is moved into
`library/<artifact_id>/` with a `manifest.json` and announced with an `artifact` event.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine import paths
from engine.errors import RunCancelled, TunegraphError
from engine.events import EventLog
from engine.export import artifacts
from engine.setup.streaming import CancelCheck
from engine.spec import JobSpec

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
    tmp = folder / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(folder / "manifest.json")
    emit_artifact(job.log, art_id, kind, dest, info["bytes"], info["sha256"])
    return {**manifest, "path": str(dest)}


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
