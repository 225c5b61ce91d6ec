"""Push a run's adapter (with its model card and base-model reference) and/or its GGUF bundle to
the Hugging Face Hub with huggingface_hub's upload API.

`stage(parts, folder, …)` lays out what goes into the repo: the adapter's files at the top (so
`PeftModel.from_pretrained("user/repo")` loads it), the GGUF bundle's model file, Modelfile and
install scripts beside them, and one README.md model card whose YAML header names the base model
(when it is a hub id), `library_name: peft` and tags. `push(files, repo_id, …)` creates the repo
(private unless asked otherwise), uploads file by file with progress and cancel, and commits.

The token comes from the OS keyring (engine.secrets; HF_TOKEN where there is no keyring), never
from a spec or a log. Offline mode refuses with a sentence before anything is sent.
"""

from __future__ import annotations

import io
import os
import re
import threading
import zipfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import secrets, settings
from engine.errors import TunegraphError

Progress = Callable[[str, float], None]  # (message, fraction done 0..1)
PUSH_KINDS = ("adapter_dir", "adapter_zip", "model_dir", "gguf_bundle", "gguf", "merged_dir")
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


class HubError(TunegraphError):
    """Pushing to the Hub cannot start or failed: offline, no token, a bad repo name, the server."""


class PushCancelled(HubError):
    """The user cancelled a push; nothing was committed."""


@dataclass
class Part:
    """One thing to push: an artifact kind and where it is on disk."""

    kind: str  # one of PUSH_KINDS
    path: Path


def check_can_push(repo_id: str) -> str:
    """The token to push with; HubError naming what to do when offline mode is on, the repo name is
    not `owner/name`, or no token is stored."""
    if settings.is_offline():
        raise HubError(
            "Offline mode is on: pushing to the Hugging Face Hub needs the network.",
            "Turn offline mode off in Settings, then push again.",
        )
    if not REPO_ID.match(repo_id or ""):
        raise HubError(
            f"{repo_id!r} is not a Hub repository name.",
            "Name it owner/name, e.g. your-user/support-bot-lora.",
        )
    token = secrets.get_hf_token()
    if not token:
        raise HubError(
            "No Hugging Face token is stored, so nothing can be pushed.",
            "Add a token with write access in Settings (it is kept in the OS keyring), "
            "or set HF_TOKEN.",
        )
    return token


def hub_base_model(source: str | None) -> str | None:
    """The base model as a hub id for the card's `base_model:` (None for a local folder, a GGUF
    file or the builtin tiny model, which the Hub cannot link to)."""
    if not source or ":" in source or source.startswith(("/", ".", "~")) or "\\" in source:
        return None
    if os.path.exists(source) or not REPO_ID.match(source):
        return None
    return source


# -- staging ----------------------------------------------------------------------------------------
def stage(parts: list[Part], folder: Path, title: str, base_model: str | None) -> dict[str, Path]:
    """Unpack `parts` under `folder` and write the model card; returns {path in repo: file}."""
    files: dict[str, Path] = {}
    cards: dict[str, str] = {}
    for i, part in enumerate(parts):
        if part.kind not in PUSH_KINDS:
            raise HubError(f"A {part.kind} cannot be pushed; push an adapter or a GGUF bundle.")
        if not part.path.exists():
            raise HubError(f"{part.path} is gone.", "Export the run again, then push.")
        src = part.path
        if part.kind in ("adapter_zip", "gguf_bundle"):
            src = folder / f"part{i}"
            with zipfile.ZipFile(part.path) as zf:
                zf.extractall(src)
        found = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
        for path in found:
            name = path.name if src.is_file() else path.relative_to(src).as_posix()
            if name == "README.md":
                cards[part.kind] = path.read_text(encoding="utf-8", errors="replace")
                continue
            files[name] = path
    card = folder / "README.md"
    card.write_text(model_card(parts, cards, title, base_model), encoding="utf-8")
    files["README.md"] = card
    return files


def model_card(parts: list[Part], cards: dict[str, str], title: str, base: str | None) -> str:
    """README.md for the repo: YAML metadata, the adapter's own card, then the GGUF bundle's."""
    kinds = {p.kind for p in parts}
    adapter = kinds & {"adapter_dir", "adapter_zip"}
    gguf = kinds & {"gguf", "gguf_bundle"}
    hub_id = hub_base_model(base)
    meta = ["---"]
    if hub_id:
        meta.append(f"base_model: {hub_id}")
    if adapter:
        meta.append("library_name: peft")
    tags = ["tunegraph"] + (["lora"] if adapter else []) + (["gguf"] if gguf else [])
    meta += ["tags:"] + [f"- {t}" for t in tags] + ["---", ""]
    body = []
    adapter_card = next(
        (cards[k] for k in ("adapter_dir", "adapter_zip", "model_dir") if k in cards), None
    )
    if adapter_card:
        body.append(adapter_card.strip())
    else:
        body.append(f"# {title}\n\nFine-tuned with Tunegraph from **{base or 'its base model'}**.")
    if not hub_id and base:
        body.append(f"Base model: `{base}` (a local model; not linked on the Hub).")
    for kind in ("gguf_bundle", "merged_dir"):
        if kind in cards:
            body.append(f"## {'GGUF (llama.cpp, Ollama)' if kind == 'gguf_bundle' else kind}\n")
            body.append(re.sub(r"^# ", "### ", cards[kind].strip(), flags=re.MULTILINE))
    return "\n".join(meta) + "\n\n".join(body) + "\n"


# -- uploading --------------------------------------------------------------------------------------
class _Reader(io.BufferedIOBase):
    """A file read for upload: counts bytes for the progress and stops when cancelled."""

    def __init__(self, path: Path, on_read: Callable[[int], None], cancel: threading.Event):
        self._file = open(path, "rb")  # noqa: SIM115 - closed with the reader
        self._on_read = on_read
        self._cancel = cancel

    def read(self, size: int | None = -1) -> bytes:
        if self._cancel.is_set():
            raise PushCancelled("The push was cancelled.")
        data = self._file.read(size)
        self._on_read(len(data))
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()
        super().close()


def _operation(path_in_repo: str, path: Path, on_read: Callable[[int], None], cancel: Any):
    """huggingface_hub's CommitOperationAdd whose upload reads go through `_Reader`."""
    from huggingface_hub import CommitOperationAdd

    class TrackedAdd(CommitOperationAdd):
        @contextmanager
        def as_file(self, with_tqdm: bool = False):  # noqa: ARG002 - our progress replaces tqdm
            reader = _Reader(path, on_read, cancel)
            try:
                yield reader
            finally:
                reader.close()

    return TrackedAdd(path_in_repo=path_in_repo, path_or_fileobj=path)


def push(
    files: dict[str, Path],
    repo_id: str,
    private: bool = True,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    message: str = "Upload from Tunegraph",
) -> str:
    """Create `repo_id` (private unless `private` is False; an existing repo is reused), upload
    `files` with progress, commit them; returns the repo URL. PushCancelled when `cancel` is set
    before the commit, HubError with the server's reason on failure."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    token = check_can_push(repo_id)
    cancel = cancel or threading.Event()
    report = progress or (lambda _m, _f: None)
    total = max(1, sum(p.stat().st_size for p in files.values()))
    done = [0]

    def on_read(n: int) -> None:
        done[0] = min(
            total, done[0] + n
        )  # a small file read twice (checked, then sent) counts once
        report(f"uploading ({done[0] / 2**20:.1f} of {total / 2**20:.1f} MiB)", done[0] / total)

    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    try:
        report(f"creating {repo_id} ({'private' if private else 'public'})", 0.0)
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        ops = [_operation(name, path, on_read, cancel) for name, path in sorted(files.items())]
        for op in ops:  # one file at a time: progress between files, cancel at any read
            if cancel.is_set():
                raise PushCancelled("The push was cancelled; nothing was committed.")
            report(f"uploading {op.path_in_repo}", done[0] / total)
            api.preupload_lfs_files(repo_id, additions=[op], repo_type="model")
        if cancel.is_set():
            raise PushCancelled("The push was cancelled; nothing was committed.")
        report("committing", min(done[0] / total, 0.99))
        api.create_commit(repo_id, ops, commit_message=message, repo_type="model")
    except PushCancelled:
        raise
    except (HfHubHTTPError, OSError, RuntimeError, ValueError) as exc:
        if cancel.is_set():
            raise PushCancelled("The push was cancelled; nothing was committed.") from exc
        raise HubError(f"Pushing to {repo_id} failed: {_reason(exc)}") from exc
    report(f"pushed to {url}", 1.0)
    return str(url)


def _reason(exc: BaseException) -> str:
    """The server's own words, without huggingface_hub's multi-line decorations."""
    while exc.__cause__ is not None and isinstance(exc, RuntimeError):
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
