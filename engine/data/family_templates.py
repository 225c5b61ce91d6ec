"""The chat templates a user can pick on the Base model node, and setting the picked one.

A run trains with one chat template (DESIGN.md "Export"). The Base model node's `chat_template`
says which: `tokenizer` (the default) takes the base's own; a base without one is refused with a
sentence that names the choices, never given a template silently. The other choices are:

- `chatml`: Tunegraph's ChatML (`engine.data.templates.fallback_template`), built from the
  vocabulary: answers end with `<|im_end|>` when it is one token, else with the base's own EOS.
  The safe pick for a pretrained-only base, whose turn tokens were often never trained (Gemma 3
  270M's `<end_of_turn>`, Llama 3's `<|eot_id|>`): with tied embeddings LoRA cannot teach the
  model to emit an untrained token, so it would never stop (shared/NOTES.md).
- the families `llama3` … `gemma3`: the model family's original template, shipped with Tunegraph
  (engine.data.family_template_texts, copied from trl's chat_templates), so an exported model
  chats the way the family's tools expect. Picking one replaces the base's own template; it is
  refused when the template's end-of-turn token is not one token of the base's vocabulary (the
  model could never learn to stop).

`apply_choice` sets the picked template on a loaded tokenizer and remembers where it came from
(`origin_of`, `note_of`), so the run log and the model card can name it.
"""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass
from typing import Any

from engine.data.family_template_texts import TEXTS
from engine.data.templates import end_of_turn_token, fallback_template, single_token_id
from engine.errors import ModelError
from engine.spec import CHAT_TEMPLATES

TOKENIZER = "tokenizer"
CHATML = "chatml"
TRL_SOURCE = "trl 1.16.0, chat_templates/{name}.jinja, Apache-2.0"


@dataclass(frozen=True)
class FamilyTemplate:
    """One pickable template: its name (the node's value), what it is and where it comes from."""

    name: str
    label: str
    source: str
    end_of_turn: str  # the token that closes an answer; "" when it depends on the vocabulary
    architectures: tuple[str, ...] = ()  # model types (GGUF/HF) whose own template this is
    sha256: str = ""  # of the shipped text; "" for chatml, built from the vocabulary

    def text(self, tokenizer: Any = None) -> str:
        """The Jinja text; chatml needs the tokenizer (its end-of-turn comes from the vocabulary)."""
        if self.name == CHATML:
            if tokenizer is None:
                raise ValueError("the chatml template is built from a tokenizer's vocabulary")
            return fallback_template(tokenizer)
        return TEXTS[self.name]


def _trl(name: str, label: str, eot: str, archs: tuple[str, ...], sha: str) -> FamilyTemplate:
    return FamilyTemplate(name, label, TRL_SOURCE.format(name=name), eot, archs, sha)


FAMILIES: dict[str, FamilyTemplate] = {
    f.name: f
    for f in (
        FamilyTemplate(
            CHATML,
            "ChatML",
            "Tunegraph's ChatML (engine/data/templates.py): <|im_end|> ends answers when the "
            "vocabulary has it, else the base's own end-of-text token",
            "",
        ),
        _trl(
            "llama3",
            "Llama 3",
            "<|eot_id|>",
            (),
            "ba03a121d097859c7b5b9cd03af99aafe95275210d2876f642ad9929a150f122",
        ),
        _trl(
            "llama3_1",
            "Llama 3.1",
            "<|eot_id|>",
            (),
            "e10ca381b1ccc5cf9db52e371f3b6651576caee0a630b452e2816b2d404d4b65",
        ),
        _trl(
            "llama3_2",
            "Llama 3.2",
            "<|eot_id|>",
            (),
            "5816fce10444e03c2e9ee1ef8a4a1ea61ae7e69e438613f3b17b69d0426223a4",
        ),
        _trl(
            "qwen2_5",
            "Qwen2.5",
            "<|im_end|>",
            ("qwen2",),
            "cd8e9439f0570856fd70470bf8889ebd8b5d1107207f67a5efb46e342330527f",
        ),
        _trl(
            "qwen3",
            "Qwen3",
            "<|im_end|>",
            ("qwen3",),
            "a55ee1b1660128b7098723e0abcd92caa0788061051c62d51cbe87d9cf1974d8",
        ),
        _trl(
            "phi3",
            "Phi-3",
            "<|end|>",
            (),
            "dcaee66df77bfbb789ec541fe713218da30225a526f1db97138fc39ee6dc56aa",
        ),
        _trl(
            "phi3_5",
            "Phi-3.5",
            "<|end|>",
            ("phi3",),
            "78d976a442bcde2f0be15aafbb8e3050e1104f86732266f68403251b89982a90",
        ),
        _trl(
            "gemma",
            "Gemma / Gemma 2",
            "<end_of_turn>",
            ("gemma", "gemma2"),
            "ecd6ae513fe103f0eb62e8ab5bfa8d0fe45c1074fa398b089c93a7e70c15cfd6",
        ),
        _trl(
            "gemma3",
            "Gemma 3",
            "<end_of_turn>",
            ("gemma3", "gemma3_text"),
            "7de1c58e208eda46e9c7f86397df37ec49883aeece39fb961e0a6b24088dd3c4",
        ),
    )
}

# tokenizer -> (origin, template text, note) for tokenizers whose template apply_choice set
_SET_BY_CHOICE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def text_sha256(text: str) -> str:
    """The sha256 of a template text (UTF-8), as recorded in FAMILIES."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def known_as(template: str | None) -> str | None:
    """The family whose shipped text `template` is, byte for byte (e.g. a Qwen2.5 model's own
    template is "qwen2_5"); None for any other text."""
    if not template:
        return None
    digest = text_sha256(template)
    return next((f.name for f in FAMILIES.values() if f.sha256 == digest), None)


def family_for_architecture(architecture: str | None, vocab: Any = ()) -> str | None:
    """The family template native to a model architecture (GGUF `general.architecture` or HF
    `model_type`), None when the architecture does not tell (`llama` is shared by Llama 2 and 3,
    SmolLM, Mistral and others; `vocab`, when given, tells Llama 3 by `<|start_header_id|>`)."""
    arch = (architecture or "").lower()
    for family in FAMILIES.values():
        if arch in family.architectures:
            return family.name
    if arch == "llama" and "<|start_header_id|>" in vocab:
        return "llama3"
    return None


def choices_hint(architecture: str | None, eos: str | None = None, vocab: Any = ()) -> str:
    """What to pick on the Base model node for a base without a chat template, naming the
    architecture's family when it is known."""
    end = f" ({eos})" if eos else ""
    family = family_for_architecture(architecture, vocab)
    native = (
        f", or {family} ({FAMILIES[family].label}'s own turns, for a base whose turn tokens were "
        "trained)"
        if family
        else ", or its family's template (llama3 … gemma3)"
    )
    return (
        "Pick one in the Base model node's Chat template: chatml (answers end with the base's own "
        f"end-of-text token{end}; safe for a pretrained-only base){native}."
    )


def apply_choice(
    tokenizer: Any, choice: str, base: str, architecture: str | None = None
) -> str | None:
    """Set the template a run trains with on a freshly loaded tokenizer, as the Base model node's
    `chat_template` says; returns a sentence for the run log (None when the tokenizer's own
    template is kept).

    ModelError when `choice` is `tokenizer` and the base has no template (naming what to pick),
    and when a family's end-of-turn token is not one token of this vocabulary. `base` names the
    base model in the sentence.
    """
    own = getattr(tokenizer, "chat_template", None)
    if choice == TOKENIZER:
        if own:
            return None
        raise ModelError(
            f"Base model {base}: its tokenizer has no chat template, and the node says to take "
            "the tokenizer's",
            choices_hint(architecture, tokenizer.eos_token, tokenizer.get_vocab()),
        )
    family = FAMILIES.get(choice)
    if family is None:
        raise ModelError(
            f"Base model {base}: unknown chat template {choice!r}",
            "Choose one of: " + ", ".join(CHAT_TEMPLATES) + ".",
        )
    text = family.text(tokenizer)
    if family.end_of_turn:
        eot = end_of_turn_token(tokenizer, text)
        if eot != family.end_of_turn or single_token_id(tokenizer, eot) is None:
            raise ModelError(
                f"Base model {base}: the {family.name} template ends answers with "
                f"{family.end_of_turn}, which is not one token of this model's vocabulary, so "
                "the model could never learn to stop",
                "Pick the template of this model's own family, or chatml.",
            )
    tokenizer.chat_template = text
    replaced = " (replacing the base's own template)" if own else ""
    note = f"chat template: {family.name} from {family.source}{replaced}"
    _SET_BY_CHOICE[tokenizer] = (f"family:{family.name}", text, note)
    return note


def origin_of(tokenizer: Any) -> str | None:
    """`family:NAME` when `apply_choice` set the tokenizer's current template from a pick, else
    None (the tokenizer's own template, or one set by other code since). A first line put in
    front of the picked text (engine.data.templates.pin_eos) keeps the origin."""
    origin, text, _ = _SET_BY_CHOICE.get(tokenizer, (None, None, None))
    current = getattr(tokenizer, "chat_template", None)
    return origin if origin and isinstance(current, str) and current.endswith(text) else None


def note_of(tokenizer: Any) -> str | None:
    """The run-log sentence `apply_choice` returned for the tokenizer's current template (which
    family, from where), or None (see `origin_of`)."""
    return _SET_BY_CHOICE[tokenizer][2] if origin_of(tokenizer) else None
