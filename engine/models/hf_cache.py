"""The models already in the local Hugging Face cache, for the Base model node's picker.

`cached_models` lists the cache's model repositories (huggingface_hub.scan_cache_dir: it reads
the folder layout `models--org--name/snapshots/<revision>/…` and stats the files, no network, no
torch) with their size on disk, whether their weights were downloaded or only their config (an
estimate fetches config.json alone), and the GGUF files of their newest revision. A missing,
unreadable or half-broken cache gives what could be read, never an exception: the picker is a
convenience and must not stop the properties panel.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


@dataclass(frozen=True)
class CachedModel:
    """One model repository in the cache."""

    repo_id: str
    size_bytes: int
    last_modified: float  # Unix seconds
    has_config: bool  # config.json: loadable by transformers as a hub id
    has_weights: bool
    gguf_files: tuple[str, ...]  # absolute paths, in the newest revision


def hub_cache_dir() -> Path:
    """The cache folder as huggingface_hub would pick it now (HF_HUB_CACHE, else HF_HOME/hub, else
    ~/.cache/huggingface/hub), read from the environment at each call, not at import."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    home = os.environ.get("HF_HOME") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "huggingface"
    )
    return Path(home).expanduser() / "hub"


def cached_models(cache_dir: Path | str | None = None) -> list[CachedModel]:
    """The model repositories in the cache, newest first ([] when there is no readable cache)."""
    from huggingface_hub import scan_cache_dir

    folder = Path(cache_dir) if cache_dir else hub_cache_dir()
    if not folder.is_dir():
        return []
    try:
        info = scan_cache_dir(folder)
    except Exception as exc:  # noqa: BLE001 - a broken cache must never reach the UI
        log.warning("could not read the Hugging Face cache %s: %s", folder, exc)
        return []
    for warning in info.warnings:
        log.info("Hugging Face cache: %s", warning)
    out = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        try:
            out.append(_model(repo))
        except Exception as exc:  # noqa: BLE001 - one odd repository leaves the others listed
            log.info("skipped %s in the Hugging Face cache: %s", repo.repo_id, exc)
    return sorted(out, key=lambda m: (-m.last_modified, m.repo_id))


def _model(repo) -> CachedModel:
    names = {f.file_name for rev in repo.revisions for f in rev.files}
    newest = max(repo.revisions, key=lambda r: r.last_modified, default=None)
    ggufs = sorted(
        str(f.file_path) for f in (newest.files if newest else ()) if f.file_name.endswith(".gguf")
    )
    return CachedModel(
        repo_id=repo.repo_id,
        size_bytes=int(repo.size_on_disk),
        last_modified=float(repo.last_modified),
        has_config="config.json" in names,
        has_weights=any(n.endswith(WEIGHT_SUFFIXES) for n in names),
        gguf_files=tuple(ggufs),
    )
