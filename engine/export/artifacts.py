"""Artifact descriptions: size and content hash of what a run produced (folders and files)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from engine.paths import sha256_file
from engine.rundir import ADAPTER_WEIGHTS, MODEL_WEIGHTS

# the file whose hash identifies a folder artifact (`model_dir`: a full fine-tuning run's model/,
# a whole model like merged_dir)
PRIMARY = {"adapter_dir": ADAPTER_WEIGHTS, "merged_dir": MODEL_WEIGHTS, "model_dir": MODEL_WEIGHTS}


def tree_bytes(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tree_sha256(path: Path) -> str:
    """A folder's hash: sha256 over its files' relative names and contents, in sorted order."""
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(p.relative_to(path).as_posix().encode() + b"\0")
        h.update(bytes.fromhex(sha256_file(p)))
    return h.hexdigest()


def describe_dir(path: Path, kind: str) -> dict:
    """The fields of an `artifact` event for a folder or file."""
    path = Path(path)
    if path.is_file():
        digest = sha256_file(path)
    else:
        primary = path / PRIMARY.get(kind, "")
        digest = (
            sha256_file(primary) if PRIMARY.get(kind) and primary.is_file() else tree_sha256(path)
        )
    return {"artifact_kind": kind, "path": str(path), "bytes": tree_bytes(path), "sha256": digest}
