"""One example to token ids and labels: the chat template applied, prompt tokens masked.

Labels are -100 everywhere except on assistant answers, including the end-of-turn token that
closes each answer, so the model learns to stop. Two ways to find the assistant tokens:

- the template has `{% generation %}` markers (our ChatML fallback, many recent templates):
  `apply_chat_template(..., return_assistant_tokens_mask=True)` gives the mask;
- it has none (most tokenizers' own templates): the conversation is rendered up to each assistant
  turn with the generation prompt, and again through that turn; the text between the two renders
  (right-trimmed of whitespace) is the answer with its end-of-turn token.
  Some real templates render a turn differently once later turns follow, so those renders are no
  prefix of the whole conversation: Phi-3's writes EOS after the last turn only, Qwen 3's writes
  an empty `<think>` block in the last answer only, Mistral's puts the system prompt into the
  last user turn only when that turn ends the conversation. Such a turn is found in the full
  render instead: its answer text, searched for after the previous turn, through the end-of-turn
  token that directly follows it. A turn found neither way is left untrained and counted in
  `skipped_turns`; `located_turns` counts the turns found by the search, and `unrendered` the other
  messages whose text the template does not write at all (Mistral's dropped system prompt).

The rendered chat is tokenized without special tokens, so a BOS written by the template is the
only one. Plain-text examples get the tokenizer's own BOS (if it adds one) and a closing EOS, and
are trained on every token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.data.templates import end_of_turn_token, has_generation_markers
from engine.errors import DataError

IGNORE = -100


@dataclass
class Encoded:
    """One encoded example: token ids, labels (IGNORE where nothing is trained) and what was cut."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False
    text: str = ""  # the rendered text, kept only when offsets were asked for
    offsets: list[tuple[int, int]] | None = None
    skipped_turns: int = 0  # assistant turns left untrained (not found in the render)
    located_turns: int = 0  # assistant turns found by searching the render (see the docstring)
    unrendered: int = 0  # system/user messages whose text the rendered chat does not hold

    @property
    def trained(self) -> int:
        """How many tokens carry a label."""
        return sum(1 for label in self.labels if label != IGNORE)


class Encoder:
    """Encodes examples ({"messages": [...]} or {"text": ...}) with one tokenizer and template."""

    def __init__(self, tokenizer: Any, template: str, max_seq_length: int):
        self.tokenizer = tokenizer
        self.template = template
        self.max_seq_length = max_seq_length
        self.markers = has_generation_markers(template)
        self._end_of_turn: str | None = None

    def encode(self, example: dict, with_offsets: bool = False) -> Encoded:
        """Token ids and labels of one example, truncated to max_seq_length.

        Raises DataError (without file and row; the caller adds them) when the chat template
        rejects the conversation.
        """
        if "text" in example:
            enc = self._encode_text(example["text"], with_offsets)
        else:
            try:
                enc = (
                    self._encode_marked(example["messages"], with_offsets)
                    if self.markers
                    else self._encode_by_prefix(example["messages"], with_offsets)
                )
            except DataError:
                raise
            except Exception as exc:  # jinja's TemplateError and the template's raise_exception
                raise DataError(f"the chat template rejected this conversation: {exc}") from exc
        if len(enc.input_ids) > self.max_seq_length:
            enc.input_ids = enc.input_ids[: self.max_seq_length]
            enc.labels = enc.labels[: self.max_seq_length]
            if enc.offsets is not None:
                enc.offsets = enc.offsets[: self.max_seq_length]
            enc.truncated = True
        return enc

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        """The conversation as text, through the run's template."""
        return self.tokenizer.apply_chat_template(
            messages,
            chat_template=self.template,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )

    def _encode_marked(self, messages: list[dict], with_offsets: bool) -> Encoded:
        out = self.tokenizer.apply_chat_template(
            messages,
            chat_template=self.template,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
            tokenizer_kwargs={"return_offsets_mapping": True} if with_offsets else None,
        )
        ids = list(out["input_ids"])
        labels = [t if m else IGNORE for t, m in zip(ids, out["assistant_masks"], strict=True)]
        if not with_offsets:
            return Encoded(ids, labels)
        return Encoded(
            ids,
            labels,
            text=self.render(messages),
            offsets=[tuple(o) for o in out["offset_mapping"]],
        )

    def _encode_by_prefix(self, messages: list[dict], with_offsets: bool) -> Encoded:
        full = self.render(messages)
        spans: list[tuple[int, int]] = []
        skipped = located = unrendered = cursor = 0
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                found = full.find(_text(message), cursor) if _text(message) else -1
                cursor = found + len(_text(message)) if found >= 0 else cursor
                unrendered += bool(_text(message)) and _text(message) not in full
                continue
            before = self.render(messages[:i], add_generation_prompt=True) if i else ""
            through = self.render(messages[: i + 1]).rstrip()
            span, searched = None, False
            if full.startswith(before) and full.startswith(through) and len(through) > len(before):
                span = (len(before), len(through))
            else:
                span, searched = self._locate(full, _text(message), cursor), True
            if span is None or span[0] < cursor:
                skipped += 1
                continue
            spans.append(span)
            located += searched
            cursor = span[1]
        enc = self.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        labels = [
            t if any(s < end and e > start for start, end in spans) else IGNORE
            for t, (s, e) in zip(ids, offsets, strict=True)
        ]
        return Encoded(
            ids,
            labels,
            text=full if with_offsets else "",
            offsets=offsets if with_offsets else None,
            skipped_turns=skipped,
            located_turns=located,
            unrendered=unrendered,
        )

    def _locate(self, full: str, answer: str, cursor: int) -> tuple[int, int] | None:
        """The span of `answer` in the full render at or after `cursor`, through the end-of-turn
        token that directly follows it; None when either is not there."""
        if self._end_of_turn is None:
            self._end_of_turn = end_of_turn_token(self.tokenizer, self.template) or ""
        eot = self._end_of_turn
        start = full.find(answer, cursor) if answer and eot else -1
        if start < 0 or not full.startswith(eot, start + len(answer)):
            return None
        return start, start + len(answer) + len(eot)

    def _encode_text(self, text: str, with_offsets: bool) -> Encoded:
        tok = self.tokenizer
        enc = tok(text, add_special_tokens=True, return_offsets_mapping=with_offsets)
        ids = list(enc["input_ids"])
        offsets = [tuple(o) for o in enc["offset_mapping"]] if with_offsets else None
        shown = text
        if tok.eos_token_id is not None and (not ids or ids[-1] != tok.eos_token_id):
            ids.append(tok.eos_token_id)  # so a model trained on documents learns where they end
            if offsets is not None:
                offsets.append((len(text), len(text) + len(tok.eos_token)))
                shown = text + tok.eos_token
        return Encoded(ids, list(ids), text=shown if with_offsets else "", offsets=offsets)


def _text(message: dict) -> str:
    """A message's text as templates write it (most trim it; only str content is searched)."""
    content = message.get("content")
    return content.strip() if isinstance(content, str) else ""


def segments(enc: Encoded, tokenizer: Any) -> list[tuple[str, bool]]:
    """The encoded text as (text, trained) pieces, consecutive tokens with the same mask merged.

    Each token's text runs from its start offset to the next token's, so the whitespace a
    tokenizer leaves out of its offsets stays visible; tokens with no span in the text (a BOS the
    tokenizer added) show as their token string.
    """
    if enc.offsets is None:
        raise ValueError("encode the example with with_offsets=True to get its segments")
    pieces: list[str] = []
    next_start = None
    for index in range(len(enc.offsets) - 1, -1, -1):
        start, end = enc.offsets[index]
        if end <= start:
            pieces.append(tokenizer.convert_ids_to_tokens(enc.input_ids[index]))
            continue
        stop = end if next_start is None else max(start, next_start)
        pieces.append(enc.text[start:stop])
        next_start = start
    pieces.reverse()
    merged: list[tuple[str, bool]] = []
    for piece, label in zip(pieces, enc.labels, strict=True):
        trained = label != IGNORE
        if merged and merged[-1][1] == trained:
            merged[-1] = (merged[-1][0] + piece, trained)
        else:
            merged.append((piece, trained))
    return [(text, trained) for text, trained in merged if text]
