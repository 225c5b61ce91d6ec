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

EOS becomes the template's end-of-turn token (runtimes that stop on EOS alone then stop where a turn
ends), but a template that writes `eos_token` itself keeps the EOS its authors meant: Phi-3's ends a
conversation with `<|end|>`, a newline and `<|endoftext|>`, and with EOS swapped it would teach
`<|end|>`, a newline and `<|end|>` instead. So before the swap such a template gets the first line
`{%- set eos_token = '<original EOS>' -%}` (`pin_eos`): it renders the base's own format wherever
it is copied, whatever EOS the tokenizer says, and generation stops on the end-of-turn token and
on that original EOS (`stop_token_ids`).
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
# the template variable `eos_token` (not `x.eos_token`, not `my_eos_token`)
_EOS_VARIABLE = re.compile(r"(?<![\w.])eos_token(?!\w)")
# the first line pin_eos writes: the original EOS as a Jinja string literal
_PINNED_EOS = re.compile(r"\A\{%- set eos_token = '((?:[^'\\]|\\.)*)' -%\}\n")
# tokenizers whose EOS prepare_tokenizer swapped for the end-of-turn token -> the EOS they had
_ORIGINAL_EOS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# tokenizers whose template prepare_tokenizer set from our fallback, so a second call still knows
_FALLBACK_SET: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# tokens that serve as padding in common vocabularies, in order of preference
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


def pin_eos(template: str, eos: str) -> str:
    """`template` rendering `eos_token` as `eos` whatever EOS the tokenizer has, by a first line
    `{%- set eos_token = '…' -%}`: it writes nothing, and its `-%}` drops the newline after it
    (and any whitespace the template itself starts with, which no family's template writes). A
    template that never names eos_token, or is pinned already, is returned as it is."""
    if pinned_eos(template) is not None or not _EOS_VARIABLE.search(template):
        return template
    return "{%- set eos_token = " + _jinja_str(eos) + " -%}\n" + template


def pinned_eos(template: str | None) -> str | None:
    """The EOS a template was pinned to by `pin_eos`, else None."""
    found = _PINNED_EOS.match(template or "")
    return re.sub(r"\\(.)", r"\1", found.group(1)) if found else None


def strip_eos_pin(template: str) -> str:
    """The template without the line `pin_eos` added (the text as the base or family ships it)."""
    return _PINNED_EOS.sub("", template, count=1)


def stop_tokens(tokenizer: Any, template: str) -> list[str]:
    """The token texts generation stops on: EOS, the template's end-of-turn token, and the EOS
    the base had before `prepare_tokenizer` made end-of-turn its EOS (known in the process that
    swapped it, and from a template `pin_eos` pinned)."""
    found = [
        tokenizer.eos_token,
        end_of_turn_token(tokenizer, template),
        _ORIGINAL_EOS.get(tokenizer),
        pinned_eos(template),
    ]
    return list(dict.fromkeys(t for t in found if t))


def stop_token_ids(tokenizer: Any, template: str) -> list[int]:
    """The ids generation stops on (`stop_tokens` that are one token of this vocabulary)."""
    ids = {single_token_id(tokenizer, token) for token in stop_tokens(tokenizer, template)}
    ids.add(tokenizer.eos_token_id)
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

    A template that writes `eos_token` itself is pinned to the original EOS first (`pin_eos`), so
    the swap changes which token ends generation, never the text the model is trained on.
    Changes the tokenizer in place (save this tokenizer with the adapter) and is idempotent. It adds
    a token only when the vocabulary has no usable pad at all; `added_tokens` then says so.
    """
    template, origin = chat_template_for(tokenizer)
    notes: list[str] = []
    if origin == FALLBACK_ORIGIN:
        notes.append("the base model has no chat template: training with Tunegraph's ChatML")
    eot = end_of_turn_token(tokenizer, template)
    swap = bool(eot) and eot != tokenizer.eos_token and single_token_id(tokenizer, eot) is not None
    if swap and tokenizer.eos_token:
        pinned = pin_eos(template, tokenizer.eos_token)
        if pinned != template:
            notes.append(
                f"the chat template writes eos_token itself: kept as {tokenizer.eos_token}, "
                "the base's own format"
            )
        template = pinned
    tokenizer.chat_template = template
    if origin == FALLBACK_ORIGIN:
        _FALLBACK_SET[tokenizer] = template
    if swap:
        notes.append(
            f"EOS set to the template's end-of-turn token {eot} (was {tokenizer.eos_token})"
        )
        if tokenizer.eos_token:
            _ORIGINAL_EOS[tokenizer] = tokenizer.eos_token
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
