"""The data pipeline of a run: files to tokenized, masked train and eval sets, with their stats.

`prepare_datasets` loads every dataset of a job (engine/data_formats.py), normalizes the rows to
conversations (or plain text), concatenates them, shuffles with the run's seed, holds out the eval
split, applies the run's one chat template and masks all but the assistant tokens
(engine/data_encode.py). The train and eval sets carry two columns, `input_ids` and `labels`
(-100 where not trained); `make_collator` turns them into padding-free or padded batches for
transformers' Trainer. `preview_rows` shows what a Dataset node's first rows look like to the model.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.data.encode import IGNORE, Encoded, Encoder, segments
from engine.data.family_templates import note_of, origin_of
from engine.data.formats import (
    FORMATS,
    detect_format,
    load_dataset_rows,
    normalize,
    row_error,
    to_messages,
)
from engine.data.templates import prepare_tokenizer
from engine.errors import DataError
from engine.paths import sha256_file
from engine.spec import DatasetSpec, JobSpec

__all__ = [
    "FORMATS",
    "DataStats",
    "PreparedData",
    "PreviewRow",
    "detect_format",
    "format_preview",
    "load_dataset_rows",
    "make_collator",
    "prepare_datasets",
    "preview_rows",
    "to_messages",
]

FEW_ROWS = 1000
SAMPLE_PROMPTS = 3
COLUMNS = ("input_ids", "labels")


@dataclass
class DataStats:
    """What went into a run's data; JSON-able with dataclasses.asdict."""

    rows: int = 0  # rows loaded from all files
    train_rows: int = 0
    eval_rows: int = 0
    datasets: list[dict] = field(default_factory=list)  # {path, format, rows, sha256}
    tokens_min: int = 0  # example lengths in tokens, after truncation
    tokens_mean: float = 0.0
    tokens_max: int = 0
    trained_tokens: int = 0  # tokens with a label in the train set
    truncated_rows: int = 0
    dropped_rows: int = 0  # nothing left to train on after truncation
    skipped_turns: int = 0  # assistant turns the chat template's render gave no place to train
    unrendered_rows: int = 0  # rows with a system/user message the chat template does not write
    warnings: list[str] = field(default_factory=list)


@dataclass
class PreparedData:
    """Tokenized train/eval sets (columns `input_ids`, `labels`), stats, and the prompts for the
    end-of-run samples: {"messages": [prompt turns], "reference": held-out answer} for chats,
    {"text": first half, "reference": second half} when the data is plain text only."""

    train: Any  # datasets.Dataset
    eval: Any | None
    stats: DataStats
    sample_prompts: list[dict]
    chat_template: str
    template_origin: str
    notes: list[str] = field(default_factory=list)  # what was changed on the tokenizer
    added_tokens: int = 0  # > 0: resize the model's embeddings to len(tokenizer)
    eval_examples: list[dict] = field(default_factory=list)  # the eval split's rows, normalized


@dataclass
class PreviewRow:
    """One example as the model sees it: text pieces with whether each is trained."""

    segments: list[tuple[str, bool]]
    tokens: int
    truncated: bool
    format: str


@dataclass
class _Example:
    data: dict  # {"messages": [...]} or {"text": ...}
    source: int  # index into the job's datasets
    row: int  # row index within its file


def prepare_datasets(spec: JobSpec, tokenizer: Any, max_seq_length: int) -> PreparedData:
    """Load, normalize, split, template, tokenize, truncate and mask the job's datasets.

    Sets the run's chat template on the tokenizer and makes its EOS the template's end-of-turn
    token and its pad a different token (engine.data.templates.prepare_tokenizer): save this tokenizer
    with the adapter. Raises DataError naming the file and line or row of any bad input.
    """
    if max_seq_length < 1:
        raise ValueError(f"max_seq_length must be at least 1, got {max_seq_length}")
    setup = prepare_tokenizer(tokenizer)
    setup.origin = origin_of(tokenizer) or setup.origin  # a family picked on the Base model node
    if note_of(tokenizer):
        setup.notes.append(note_of(tokenizer))
    stats = DataStats()
    examples: list[_Example] = []
    for source, ds in enumerate(spec.datasets):
        rows, fmt = load_dataset_rows(ds)
        stats.datasets.append(
            {
                "path": str(ds.path),
                "format": fmt,
                "rows": len(rows),
                "sha256": sha256_file(Path(ds.path).expanduser()),
            }
        )
        examples += [_Example(normalize(row, fmt), source, i) for i, row in enumerate(rows)]
    stats.rows = len(examples)
    if not examples:
        raise DataError("the datasets hold no rows")

    order = list(range(len(examples)))
    random.Random(spec.training.seed).shuffle(order)
    n_eval = eval_size(len(examples), spec.training.eval_split)
    train_part = [examples[i] for i in order[: len(order) - n_eval]]
    eval_part = [examples[i] for i in order[len(order) - n_eval :]]

    encoder = Encoder(tokenizer, setup.template, max_seq_length)
    train_enc = _encode_all(encoder, train_part, spec.datasets, stats)
    eval_enc = _encode_all(encoder, eval_part, spec.datasets, stats)
    if not train_enc:
        raise DataError(
            f"no example has a trained token within {max_seq_length} tokens",
            hint="Raise max_seq_length or check that rows hold assistant answers.",
        )
    stats.train_rows, stats.eval_rows = len(train_enc), len(eval_enc)
    lengths = [len(e.input_ids) for e in train_enc + eval_enc]
    stats.tokens_min, stats.tokens_max = min(lengths), max(lengths)
    stats.tokens_mean = round(sum(lengths) / len(lengths), 1)
    stats.trained_tokens = sum(e.trained for e in train_enc)
    stats.warnings += _warnings(stats, spec, max_seq_length)

    held_out = eval_part or train_part[-SAMPLE_PROMPTS:]
    return PreparedData(
        train=_to_dataset(train_enc),
        eval=_to_dataset(eval_enc) if eval_enc else None,
        stats=stats,
        sample_prompts=sample_prompts(held_out or train_part),
        chat_template=setup.template,
        template_origin=setup.origin,
        notes=setup.notes,
        added_tokens=setup.added_tokens,
        eval_examples=[e.data for e in eval_part],
    )


def eval_size(rows: int, split: float) -> int:
    """Rows held out for evaluation: none below 10 rows, else at least 1 when split > 0."""
    if split <= 0 or rows < 10:
        return 0
    return min(rows - 1, max(1, round(rows * split)))


def _encode_all(
    encoder: Encoder, part: list[_Example], datasets: list[DatasetSpec], stats: DataStats
) -> list[Encoded]:
    out = []
    for example in part:
        try:
            enc = encoder.encode(example.data)
        except DataError as err:
            raise row_error(datasets[example.source].path, example.row, err.message) from None
        stats.truncated_rows += enc.truncated
        stats.skipped_turns += enc.skipped_turns
        stats.unrendered_rows += enc.unrendered > 0
        if enc.trained == 0:
            stats.dropped_rows += 1
            continue
        out.append(enc)
    return out


def _to_dataset(encoded: list[Encoded]) -> Any:
    import datasets

    return datasets.Dataset.from_dict(
        {"input_ids": [e.input_ids for e in encoded], "labels": [e.labels for e in encoded]}
    )


def _warnings(stats: DataStats, spec: JobSpec, max_seq_length: int) -> list[str]:
    out = []
    if stats.rows < FEW_ROWS:
        out.append(
            f"only {stats.rows} examples: fewer than 1,000 rows usually teach a style "
            "more than new knowledge; add data for a stronger fine-tune"
        )
    if stats.truncated_rows:
        out.append(
            f"{stats.truncated_rows} examples were longer than {max_seq_length} tokens "
            "and were truncated"
        )
    if stats.dropped_rows:
        out.append(
            f"{stats.dropped_rows} examples had no assistant tokens left within "
            f"{max_seq_length} tokens and were left out"
        )
    if stats.skipped_turns:
        out.append(
            f"{stats.skipped_turns} assistant turns were left untrained: the chat template "
            "renders them differently once later turns follow, and their text was not found "
            "in the rendered conversation"
        )
    if stats.unrendered_rows:
        out.append(
            f"in {stats.unrendered_rows} examples the chat template leaves a system or user "
            "message out of the rendered conversation (Mistral's template writes the system "
            "prompt only before a final user turn), so their answers are trained without it"
        )
    if spec.training.eval_split > 0 and stats.eval_rows == 0:
        out.append("too few rows for an eval split (needs at least 10): no evaluation")
    return out


def sample_prompts(part: list[_Example], count: int = SAMPLE_PROMPTS) -> list[dict]:
    """Prompts for the end-of-run samples: each conversation up to its last assistant answer,
    with that answer as the reference; plain text is split in half."""
    chats = [e.data["messages"] for e in part if "messages" in e.data]
    out = []
    for messages in chats[-count:]:
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        out.append({"messages": messages[:last], "reference": messages[last]["content"]})
    if out:
        return out
    for example in part[-count:]:
        words = example.data["text"].split(" ")
        half = max(1, len(words) // 2)
        out.append({"text": " ".join(words[:half]), "reference": " ".join(words[half:])})
    return out


def make_collator(tokenizer: Any, packing: bool) -> Any:
    """The Trainer's data collator for sets with `input_ids` and `labels`.

    packing=True: padding-free batches (DataCollatorWithFlattening): one row of all sequences with
    `position_ids` restarting at 0 per sequence, which the model turns into attention that never
    crosses sequence borders (SDPA and eager included); keep `use_cache=False` while training.
    packing=False: dynamic padding to the longest sequence (multiple of 8), labels padded with -100,
    with an attention_mask.
    """
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

    if packing:
        return DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE)
    return DataCollatorForSeq2Seq(
        tokenizer,
        padding=True,
        label_pad_token_id=IGNORE,
        pad_to_multiple_of=8,
        return_tensors="pt",
    )


def preview_rows(
    ds: DatasetSpec, tokenizer: Any, n: int = 3, max_seq_length: int = 2048
) -> list[PreviewRow]:
    """The dataset's first `n` rows through the chat template, as trained/untrained pieces.

    Uses the template a run would (prepare_tokenizer sets it on the tokenizer). Only the first
    `n` rows are checked, so the preview stays quick on large files.
    """
    setup = prepare_tokenizer(tokenizer)
    rows, fmt = load_dataset_rows(dataclasses.replace(ds, max_rows=min(ds.max_rows or n, n)))
    encoder = Encoder(tokenizer, setup.template, max_seq_length)
    out = []
    for index, row in enumerate(rows[:n]):
        try:
            enc = encoder.encode(normalize(row, fmt), with_offsets=True)
        except DataError as err:
            raise row_error(ds.path, index, err.message) from None
        out.append(PreviewRow(segments(enc, tokenizer), len(enc.input_ids), enc.truncated, fmt))
    return out


_GREEN, _RESET = "\033[32m", "\033[0m"


def format_preview(rows: list[PreviewRow], color: bool = False) -> str:
    """Preview rows for a terminal: trained text in green (color) or between [[ and ]]."""
    blocks = []
    for number, row in enumerate(rows, 1):
        head = f"--- example {number} ({row.format}, {row.tokens} tokens"
        head += ", truncated)" if row.truncated else ")"
        body = "".join(
            (f"{_GREEN}{text}{_RESET}" if color else f"[[{text}]]") if trained else text
            for text, trained in row.segments
        )
        blocks.append(f"{head} ---\n{body}")
    legend = "trained text is green" if color else "trained text is between [[ and ]]"
    return "\n\n".join(blocks) + f"\n\n({legend})"
