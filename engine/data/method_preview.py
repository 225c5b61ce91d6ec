"""Preference and KTO rows as their TRL trainer tokenizes them, in trained and untrained pieces.

TRL's DPO trainer (ORPO and SimPO train on the same pairs) and its KTO trainer render the prompt
with the generation prompt, and the prompt followed by each answer, through the chat template.
An answer's tokens are those after the common prefix of the two tokenizations
(`trl.trainer.dpo_trainer`: `prompt_len = common_prefix_length(...)`, the smaller one for a pair);
the loss is computed on them only. A sequence longer than `max_length` keeps its start, so the
answer's tokens past it are cut, and a row whose prompt alone fills `max_length` is dropped.

`encode_method_row(row, tokenizer, template, max_length)` takes a row converted by
`engine.data.method_formats.method_row` and returns the prompt once and each answer's pieces,
which is what the dataset preview shows side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ANSWER_KEYS = {"preference": ("chosen", "rejected"), "kto": ("completion",)}


@dataclass
class Answer:
    """One answer after the shared prompt: (text, trained) pieces and its figures."""

    segments: list[tuple[str, bool]]
    tokens: int  # prompt and answer together, before truncation
    trained: int  # answer tokens within max_length: the ones the loss is computed on
    truncated: bool


@dataclass
class MethodRow:
    """A preference pair or a KTO row as the trainer sees it."""

    kind: str  # "preference" or "kto"
    prompt: str  # the rendered prompt both answers share, special tokens included
    prompt_tokens: int
    answers: dict[str, Answer] = field(default_factory=dict)  # chosen/rejected, or completion
    label: bool | None = None  # KTO: a good (True) or a bad (False) answer
    dropped: bool = False  # the prompt alone fills max_length: the trainer leaves the row out

    @property
    def tokens(self) -> int:
        """The longest sequence of the row (prompt and its longest answer)."""
        return max(a.tokens for a in self.answers.values())

    @property
    def trained(self) -> int:
        """Trained tokens of every answer together."""
        return 0 if self.dropped else sum(a.trained for a in self.answers.values())

    @property
    def truncated(self) -> bool:
        """Whether an answer runs past max_length."""
        return any(a.truncated for a in self.answers.values())

    def as_dict(self) -> dict:
        """The JSON shape of a preview row (engine.plan.preview)."""
        return {
            "kind": self.kind,
            "prompt": self.prompt,
            "prompt_tokens": self.prompt_tokens,
            "answers": {
                key: {
                    "segments": [[text, trained] for text, trained in a.segments],
                    "tokens": a.tokens,
                    "trained": a.trained,
                    "truncated": a.truncated,
                }
                for key, a in self.answers.items()
            },
            "label": self.label,
            "dropped": self.dropped,
            "tokens": self.tokens,
            "truncated": self.truncated,
        }


def encode_method_row(row: dict, tokenizer: Any, template: str, max_length: int) -> MethodRow:
    """`row` (method_row's form: prompt turns, chosen and rejected or completion and label) split
    the way TRL's trainers split it; see the module docstring."""
    kind = "preference" if "chosen" in row else "kto"
    keys = ANSWER_KEYS[kind]
    prompt_ids, _, _ = _tokenize(tokenizer, template, row["prompt"], generation_prompt=True)
    full = {key: _tokenize(tokenizer, template, row["prompt"] + row[key]) for key in keys}
    shared = min(_common_prefix(prompt_ids, ids) for ids, _, _ in full.values())
    first_ids, first_text, first_offsets = full[keys[0]]
    prompt_text = first_text[: _start(first_offsets, shared, first_text)]
    out = MethodRow(
        kind,
        prompt_text,
        shared,
        label=bool(row["label"]) if kind == "kto" else None,
        dropped=shared >= max_length,
    )
    for key, (ids, text, offsets) in full.items():
        pieces = _pieces(tokenizer, ids, text, offsets)
        kept = max(0, min(len(ids), max_length) - shared)
        segments = _merge(
            (piece, index < shared + kept) for index, piece in enumerate(pieces) if index >= shared
        )
        out.answers[key] = Answer(segments, len(ids), kept, len(ids) > max_length)
    return out


def _tokenize(
    tokenizer: Any, template: str, messages: list[dict], generation_prompt: bool = False
) -> tuple[list[int], str, list[tuple[int, int]]]:
    """Ids, rendered text and offsets of `messages` through `template`, tokenized as
    apply_chat_template(tokenize=True) does: no special tokens added to the rendered text."""
    text = tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=generation_prompt
    )
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), text, [tuple(o) for o in enc["offset_mapping"]]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _start(offsets: list[tuple[int, int]], index: int, text: str) -> int:
    """Where token `index` starts in the text (the end of the text past the last token)."""
    for start, end in offsets[index:]:
        if end > start:
            return start
    return len(text)


def _pieces(tokenizer: Any, ids: list[int], text: str, offsets: list[tuple[int, int]]) -> list[str]:
    """Each token's text, from its start to the next token's start, so the whitespace a
    tokenizer leaves out of its offsets stays visible (as engine.data.encode.segments does)."""
    pieces: list[str] = []
    next_start = None
    for index in range(len(offsets) - 1, -1, -1):
        start, end = offsets[index]
        if end <= start:
            pieces.append(tokenizer.convert_ids_to_tokens(ids[index]))
            continue
        stop = end if next_start is None else max(start, next_start)
        pieces.append(text[start:stop])
        next_start = start
    pieces.reverse()
    return pieces


def _merge(pieces) -> list[tuple[str, bool]]:
    merged: list[tuple[str, bool]] = []
    for piece, trained in pieces:
        if merged and merged[-1][1] == trained:
            merged[-1] = (merged[-1][0] + piece, trained)
        else:
            merged.append((piece, trained))
    return [(text, trained) for text, trained in merged if text]
