"""Which chat template and stop tokens a GGUF answers with: one choice for the chat pane's process
(engine.chat.server) and the OpenAI-compatible endpoint (engine.chat.serve).

The GGUF's own `tokenizer.chat_template` (the one the export embedded and checked), else the
family template for its architecture (engine.export.ollama), else plain text — never
llama-cpp-python's silent llama-2 fallback. Generation stops on EOS, EOT and the family's turn
tokens; llama-cpp-python's Jinja formatter alone would stop on EOS only (shared/NOTES.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import TunegraphError

PLAIN_TEMPLATE = "{% for m in messages %}{{ m['content'] }}\n\n{% endfor %}"


@dataclass
class ChatFormat:
    """The template a GGUF is prompted with, where it came from, and the texts that end a turn."""

    template: str
    source: str  # "gguf", "family:<name>" or "plain"
    name: str  # a sentence saying which template, for the user
    family: str | None
    architecture: str | None
    stop_texts: list[str] = field(default_factory=list)


def choose_chat_format(path: Path | str) -> ChatFormat:
    """Read the GGUF's metadata (no weights) and choose its template and stop texts; a missing,
    foreign or truncated file raises engine.export.gguf_tools.GGUFFileError."""
    from engine.export import gguf_tools, ollama

    info = gguf_tools.read_gguf(path)
    vocab = set(info.special_tokens.values())
    family = ollama.detect_family(info.chat_template, info.architecture, vocab)
    if info.chat_template:
        template, source = info.chat_template, "gguf"
        name = "the model's own template (tokenizer.chat_template in the GGUF)"
    elif family is not None:
        template, source = family.jinja_template, f"family:{family.name}"
        name = (
            f"{family.label} (by architecture {info.architecture}; the GGUF has no chat template)"
        )
    else:
        template, source = PLAIN_TEMPLATE, "plain"
        name = (
            f"plain text (the GGUF has no chat template and its architecture "
            f"{info.architecture} matches no known family)"
        )
    stops = ollama.stop_strings(family, [family.end_of_turn if family else None])
    return ChatFormat(
        template=template,
        source=source,
        name=name,
        family=family.name if family else None,
        architecture=info.architecture,
        stop_texts=[t for t in stops if t],
    )


def build_formatter(llm: Any, chosen: ChatFormat) -> tuple[Any, list[int]]:
    """llama-cpp-python's Jinja formatter for `chosen` on a loaded `llama_cpp.Llama`, and the stop
    ids (EOS, EOT and the single-token stop texts) it ends generation on."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from engine.export import gguf_tools

    eos, bos = llm.token_eos(), llm.token_bos()
    text = llm._model.token_get_text
    stop_ids = gguf_tools.llama_stop_ids(llm, chosen.stop_texts)
    try:
        formatter = Jinja2ChatFormatter(
            chosen.template,
            eos_token=text(eos) if eos >= 0 else "",
            bos_token=text(bos) if bos >= 0 else "",
            add_generation_prompt=True,
            stop_token_ids=stop_ids,
        )
    except Exception as exc:  # a template llama-cpp-python's Jinja cannot compile
        raise TunegraphError(f"The chat template cannot be parsed: {exc}") from exc
    return formatter, stop_ids
