"""Chat templates: which one a run trains with, our ChatML fallback, and the tokens around it.

One template per run (DESIGN.md "Export"): the tokenizer's own when it has one, else our ChatML
fallback. The template the run trained with is the one saved beside the adapter, embedded in the
GGUF (with the `{% generation %}` markers stripped) and used by the chat pane.

The fallback never adds tokens when the base already has what it needs (shared/NOTES.md "Chat
templates and stop tokens"): new special tokens mean resized embeddings with untrained rows and a
vocabulary-size mismatch in the GGUF. So the end-of-turn token is `<|im_end|>` when the vocabulary
already holds it as a single token, else the tokenizer's own EOS; `<|im_start|>` is used as is and,
when the vocabulary lacks it, is simply text (a few ordinary tokens). BOS is written by the template
only when the tokenizer itself puts BOS in front of plain text, and the rendered chat is tokenized
without special tokens, so it never appears twice.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field
from typing import Any

from engine.errors import ModelError

CHATML_END = "<|im_end|>"
CHATML_START = "<|im_start|>"
FALLBACK_ORIGIN = "fallback:chatml"
TOKENIZER_ORIGIN = "tokenizer"

_GENERATION_TAG = re.compile(r"\{%-?\s*(end)?generation\s*-?%\}")
# tokens that serve as padding in common vocabularies, in order of preference
# tokenizers whose template prepare_tokenizer set from our fallback, so a second call still knows
_FALLBACK_SET: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PAD_CANDIDATES = (
    "<pad>",
    "<|pad|>",
    "[PAD]",
    "<|finetune_right_pad_id|>",
    "<|endoftext|>",
    "<unk>",
)


def chatml_template(end_of_turn: str = CHATML_END, bos_token: str | None = None) -> str:
    """ChatML with `{% generation %}` around each assistant answer and its end-of-turn token.

    The assistant's end-of-turn token is inside the markers, so it is trained and the model learns
    to stop; the newline after it is not. Token texts are written into the template literally, so
    the file reads the same everywhere it is copied to (adapter, GGUF, chat pane).
    """
    eot = _jinja_str(end_of_turn)
    start = _jinja_str(CHATML_START)
    bos = "{{- " + _jinja_str(bos_token) + " }}\n" if bos_token else ""
    return (
        bos
        + "{%- for message in messages %}\n"
        + "{%- if message['role'] == 'assistant' %}\n"
        + "{{- "
        + start
        + " + 'assistant\\n' }}\n"
        + "{%- generation %}{{- message['content'] + "
        + eot
        + " }}{%- endgeneration %}\n"
        + "{{- '\\n' }}\n"
        + "{%- else %}\n"
        + "{{- "
        + start
        + " + message['role'] + '\\n' + message['content'] + "
        + eot
        + " + '\\n' }}\n"
        + "{%- endif %}\n"
        + "{%- endfor %}\n"
        + "{%- if add_generation_prompt %}{{- "
        + start
        + " + 'assistant\\n' }}{%- endif %}\n"
    )


def _jinja_str(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def has_generation_markers(template: str) -> bool:
    """Whether the template marks assistant text with `{% generation %}` (assistant-only masks)."""
    return bool(_GENERATION_TAG.search(template))


def strip_generation_markers(template: str) -> str:
    """The template without `{% generation %}` / `{% endgeneration %}` (for GGUF and runtimes that
    do not know the tag); the rendered text is unchanged."""
    return _GENERATION_TAG.sub("", template)


def single_token_id(tokenizer: Any, text: str | None) -> int | None:
    """The id of `text` when the vocabulary holds it as one token, else None."""
    if not text:
        return None
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1 or (ids[0] == tokenizer.unk_token_id and text != tokenizer.unk_token):
        return None
    return ids[0]


def adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts BOS in front of plain text by itself."""
    bos_id = tokenizer.bos_token_id
    if bos_id is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == bos_id


def fallback_template(tokenizer: Any) -> str:
    """Our ChatML for a base whose tokenizer has no template, using only tokens it already has."""
    if single_token_id(tokenizer, CHATML_END) is not None:
        eot = CHATML_END
    elif tokenizer.eos_token:
        eot = tokenizer.eos_token
    else:
        raise ModelError(
            "the tokenizer has neither an end-of-sequence token nor <|im_end|>",
            "Choose a base model whose tokenizer defines eos_token.",
        )
    return chatml_template(eot, tokenizer.bos_token if adds_bos(tokenizer) else None)


def chat_template_for(tokenizer: Any) -> tuple[str, str]:
    """(template, origin): the tokenizer's own template, or our ChatML fallback for bases without
    one. origin is "tokenizer" or "fallback:chatml"."""
    own = getattr(tokenizer, "chat_template", None)
    if own is not None and _FALLBACK_SET.get(tokenizer) == own:
        return own, FALLBACK_ORIGIN
    if isinstance(own, dict):  # several named templates: the default one is the chat template
        own = own.get("default")
    if isinstance(own, str) and own.strip():
        return own, TOKENIZER_ORIGIN
    return fallback_template(tokenizer), FALLBACK_ORIGIN


def end_of_turn_token(tokenizer: Any, template: str) -> str | None:
    """The token the template writes right after an assistant answer (e.g. `<|im_end|>`,
    `<|eot_id|>`, `<end_of_turn>`), found by rendering a probe chat; None if there is none."""
    probe = "Tunegraph probe answer"
    try:
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": "probe"}, {"role": "assistant", "content": probe}],
            chat_template=template,
            tokenize=False,
        )
    except Exception:  # a template with rules of its own (e.g. a required system turn)
        return None
    at = rendered.rfind(probe)
    if at < 0:
        return None
    tail = rendered[at + len(probe) :]
    special = {t for t in tokenizer.all_special_tokens if t} | set(_added_tokens(tokenizer))
    best: tuple[int, str] | None = None
    for token in special:
        pos = tail.find(token)
        if pos >= 0 and (
            best is None or pos < best[0] or (pos == best[0] and len(token) > len(best[1]))
        ):
            best = (pos, token)
    return best[1] if best else None


def stop_token_ids(tokenizer: Any, template: str) -> list[int]:
    """The ids generation stops on: EOS and the template's end-of-turn token (when it is one
    token of this vocabulary)."""
    ids = {
        tokenizer.eos_token_id,
        single_token_id(tokenizer, end_of_turn_token(tokenizer, template)),
    }
    return sorted(i for i in ids if i is not None)


def _added_tokens(tokenizer: Any) -> list[str]:
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    return [str(tok) for tok in decoder.values()]


@dataclass
class TokenizerSetup:
    """What `prepare_tokenizer` decided; `notes` are sentences for the run log."""

    template: str
    origin: str
    end_of_turn: str | None
    notes: list[str] = field(default_factory=list)
    added_tokens: int = 0  # > 0: the model's embeddings must be resized to len(tokenizer)


def prepare_tokenizer(tokenizer: Any) -> TokenizerSetup:
    """Make the tokenizer ready to train a chat: pick the template, set it on the tokenizer, make
    EOS the template's end-of-turn token and pad a token different from EOS.

    Changes the tokenizer in place (save this tokenizer with the adapter) and is idempotent. It adds
    a token only when the vocabulary has no usable pad at all; `added_tokens` then says so.
    """
    template, origin = chat_template_for(tokenizer)
    tokenizer.chat_template = template
    if origin == FALLBACK_ORIGIN:
        _FALLBACK_SET[tokenizer] = template
    notes: list[str] = []
    if origin == FALLBACK_ORIGIN:
        notes.append("the base model has no chat template: training with Tunegraph's ChatML")
    eot = end_of_turn_token(tokenizer, template)
    if eot and eot != tokenizer.eos_token and single_token_id(tokenizer, eot) is not None:
        notes.append(
            f"EOS set to the template's end-of-turn token {eot} (was {tokenizer.eos_token})"
        )
        tokenizer.eos_token = eot
    added = 0
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        pad = next(
            (
                t
                for t in _PAD_CANDIDATES
                if t != tokenizer.eos_token and single_token_id(tokenizer, t) is not None
            ),
            None,
        )
        if pad is None:
            pad = "<pad>"
            added = tokenizer.add_special_tokens({"pad_token": pad})
            notes.append("added a <pad> token: the vocabulary had none distinct from EOS")
        else:
            tokenizer.pad_token = pad
            notes.append(f"pad token set to {pad} so EOS stays trained")
    return TokenizerSetup(template, origin, eot, notes, added)
