"""Make a freshly converted GGUF read chats as the run's HF tokenizer does.

`check_and_fix` puts the run's chat template, EOS and end-of-turn ids into the file; `align_tokenizer`
finds the tokenizer settings (space prefix, BOS, Phi-3's name-keyed token attributes) under which
llama.cpp gives the rendered prompts the HF token ids, and writes them. Both patch the file's
metadata only (engine.export.gguf_file.patch_metadata).
"""

from __future__ import annotations

from itertools import product
from pathlib import Path
from typing import Any

from engine.data.templates import end_of_turn_token
from engine.errors import ExportError
from engine.export import gguf_tools


def check_and_fix(path: Path, tokenizer: Any, template: str) -> list[str]:
    """Make the GGUF's chat template, EOS and EOT ids match the run's; patch what drifted.

    Returns the metadata keys it patched; raises ExportError when the file's vocabulary does not
    even hold the expected EOS id or a patch did not take.
    """
    info = gguf_tools.read_gguf(path)
    updates: dict[str, str | int] = {}
    if info.chat_template != template:
        updates[gguf_tools.KEY_TEMPLATE] = template
    eos = tokenizer.eos_token_id
    if eos is not None and info.eos_id != eos:
        updates[gguf_tools.KEY_EOS] = eos
    eot_text = end_of_turn_token(tokenizer, template)
    eot = tokenizer.convert_tokens_to_ids(eot_text) if eot_text else None
    if isinstance(eot, int) and eot != eos and info.eot_id != eot:
        updates[gguf_tools.KEY_EOT] = eot
    if info.vocab_size and (eos or 0) >= info.vocab_size:
        raise ExportError(f"The GGUF vocabulary ({info.vocab_size} tokens) has no EOS id {eos}.")
    if not updates:
        return []
    gguf_tools.patch_metadata(path, updates)
    fixed = gguf_tools.read_gguf(path)
    if fixed.chat_template != template or (eos is not None and fixed.eos_id != eos):
        raise ExportError(f"Writing the chat template / EOS into {path.name} did not take.")
    return sorted(updates)


def align_tokenizer(path: Path, tokenizer: Any, texts: list[str]) -> list[str]:
    """Make llama.cpp tokenize rendered chats like the HF tokenizer; returns the keys patched.

    Three settings of the file decide how llama.cpp tokenizes a chat, and the converter can get
    each one wrong for a run:
    - `add_space_prefix`: llama.cpp's sentencepiece tokenizer puts a space in front of the text
      after every special token when it is set, which HF tokenizers with `legacy=False` (Mistral,
      Phi-3 under transformers 5) never do, so the first word of every turn differs;
    - `add_bos_token`: the converter copies it from the tokenizer, but a run trains on the rendered
      chat with no BOS of its own when the template writes none (Phi-3's), so llama.cpp must not
      add one either;
    - `general.name`: llama.cpp gives Phi-3's special tokens their `rstrip` (the newline after
      `<|user|>` belongs to the token) only when the model's name contains "phi3" or "phi-3",
      and the converter writes the run's name.
    When the ids differ, the combinations of those settings are tried (as load-time overrides,
    nothing written) and the first one that makes every text's ids equal is written into the
    file; when none does, the file is left as it was and the parity check reports the difference.
    """
    expected = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    if not texts or gguf_tools.llama_vocab_ids(path, texts) == expected:
        return []
    info = gguf_tools.read_gguf(path)
    changes: list[dict[str, bool | str]] = []
    if info.metadata.get("tokenizer.ggml.model") == "llama":
        space_prefix = bool(info.metadata.get(gguf_tools.KEY_SPACE_PREFIX, True))
        changes.append({gguf_tools.KEY_SPACE_PREFIX: not space_prefix})
    if info.bos_id is not None:
        changes.append({gguf_tools.KEY_ADD_BOS: not (info.add_bos is None or info.add_bos)})
    name = info.name or ""
    if info.architecture == "phi3" and not any(k in name.lower() for k in ("phi3", "phi-3")):
        changes.append({gguf_tools.KEY_NAME: f"{name[:100]} (Phi-3)".strip()})
    for picked in sorted(product((False, True), repeat=len(changes)), key=sum)[1:]:
        updates = {
            k: v
            for use, change in zip(picked, changes, strict=True)
            if use
            for k, v in change.items()
        }
        if gguf_tools.llama_vocab_ids(path, texts, updates) == expected:
            gguf_tools.patch_metadata(path, updates)
            return sorted(updates)
    return []
