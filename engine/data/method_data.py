"""The data of a run whatever its method: `prepare_run_data(spec, tokenizer, max_seq_length)`.

sft goes through engine.data.prepare (chat template, assistant-only labels). The other methods read
their own row formats (engine.data.method_formats), shuffled with the run's seed and split like
SFT data:

- dpo, orpo, simpo, kto, grpo: rows in TRL's conversational form, which TRL's trainers tokenize
  with the tokenizer's chat template (the run's one template, set here by `prepare_tokenizer`);
  grpo holds nothing out (it is not evaluated during training);
- pretrain: continued pretraining on plain text. Each text is tokenized (with the base's BOS
  when it adds one) and closed with the base's own EOS (not the chat template's end of turn), the texts are concatenated in shuffled order and cut into
  blocks of `max_seq_length` tokens, labels = input ids: the loss is on every token and nothing
  is truncated away (the eval split is cut from whole texts before packing).

Every result is an engine.data.prepare.PreparedData, so the trainer, the samples and the model
card treat all methods alike.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from engine.data.formats import read_rows, row_error
from engine.data.method_formats import METHOD_FORMATS, method_row
from engine.data.prepare import (
    FEW_ROWS,
    SAMPLE_PROMPTS,
    DataStats,
    PreparedData,
    eval_size,
    prepare_datasets,
)
from engine.data.templates import prepare_tokenizer
from engine.errors import DataError
from engine.paths import sha256_file
from engine.spec import JobSpec


def prepare_run_data(spec: JobSpec, tokenizer: Any, max_seq_length: int) -> PreparedData:
    """The run's train and eval sets for its method (see the module docstring); DataError naming
    the file and line or row of any row that does not fit the method."""
    method = spec.method.method
    if method not in METHOD_FORMATS:
        return prepare_datasets(spec, tokenizer, max_seq_length)
    if max_seq_length < 1:
        raise ValueError(f"max_seq_length must be at least 1, got {max_seq_length}")
    document_end = tokenizer.eos_token_id  # the base's own EOS, before the chat template's swap
    setup = prepare_tokenizer(tokenizer)
    stats = DataStats()
    rows = _load(spec, stats)
    random.Random(spec.training.seed).shuffle(rows)
    split = 0.0 if method == "grpo" else spec.training.eval_split
    n_eval = eval_size(len(rows), split)
    train, held = rows[: len(rows) - n_eval], rows[len(rows) - n_eval :]
    if method == "pretrain":
        pack = (tokenizer, document_end, max_seq_length)
        train_set, eval_set = _packed(train, *pack, stats), None
        if held:
            eval_set = _packed(held, *pack, DataStats())
        stats.train_rows, stats.eval_rows = len(train_set), len(eval_set) if eval_set else 0
        prompts = _text_prompts(held or train)
    else:
        train_set, eval_set = _dataset(train), _dataset(held) if held else None
        stats.train_rows, stats.eval_rows = len(train), len(held)
        prompts = _chat_prompts(held or train)
    stats.warnings += _warnings(spec, stats, rows)
    return PreparedData(
        train=train_set,
        eval=eval_set,
        stats=stats,
        sample_prompts=prompts,
        chat_template=setup.template,
        template_origin=setup.origin,
        notes=setup.notes,
        added_tokens=setup.added_tokens,
        eval_examples=[e for e in map(_example, held) if e is not None],
    )


def _load(spec: JobSpec, stats: DataStats) -> list[dict]:
    method = spec.method.method
    out: list[dict] = []
    for ds in spec.datasets:
        rows = read_rows(ds)
        for index, row in enumerate(rows):
            try:
                out.append(method_row(row, method))
            except DataError as err:
                raise row_error(ds.path, index, err.message) from None
        stats.datasets.append(
            {
                "path": str(ds.path),
                "format": METHOD_FORMATS[method],
                "rows": len(rows),
                "sha256": sha256_file(Path(ds.path).expanduser()),
            }
        )
    stats.rows = len(out)
    if not out:
        raise DataError("the datasets hold no rows")
    return out


def _dataset(rows: list[dict]) -> Any:
    import datasets

    return datasets.Dataset.from_list(rows)


def _packed(rows: list[dict], tokenizer: Any, end: int | None, block: int, stats: DataStats) -> Any:
    """Texts tokenized, each closed with `end` (EOS), concatenated and cut into `block`-token
    blocks."""
    import datasets

    stream: list[int] = []
    for row in rows:
        stream += tokenizer(row["text"])["input_ids"] + ([end] if end is not None else [])
    blocks = [stream[i : i + block] for i in range(0, len(stream), block)]
    if len(blocks) > 1 and len(blocks[-1]) < block // 2:
        blocks.pop()  # a short tail would be a step on little data: its tokens are left out
    lengths = [len(b) for b in blocks]
    stats.tokens_min, stats.tokens_max = min(lengths), max(lengths)
    stats.tokens_mean = round(sum(lengths) / len(lengths), 1)
    stats.trained_tokens = sum(lengths)
    return datasets.Dataset.from_dict({"input_ids": blocks, "labels": [list(b) for b in blocks]})


def _example(row: dict) -> dict | None:
    """A held-out row as the eval sets see examples (engine.data.prepare: {"messages"} or
    {"text"}): a pair's prompt with its chosen answer, a good KTO answer; None for a bad one."""
    if "text" in row:
        return {"text": row["text"]}
    if "chosen" in row:
        return {"messages": row["prompt"] + row["chosen"]}
    if row.get("label"):
        return {"messages": row["prompt"] + row["completion"]}
    return None


def _chat_prompts(rows: list[dict]) -> list[dict]:
    """End-of-run sample prompts: the prompt turns, with the chosen (or good, or reference)
    answer as the reference."""
    out = []
    for row in rows[-SAMPLE_PROMPTS:]:
        if "chosen" in row:
            reference = row["chosen"][-1]["content"]
        elif "completion" in row:
            reference = row["completion"][-1]["content"] if row["label"] else None
        else:
            reference = row.get("answer") or None
        out.append({"messages": row["prompt"], "reference": reference})
    return out


def _text_prompts(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows[-SAMPLE_PROMPTS:]:
        words = row["text"].split(" ")
        half = max(1, len(words) // 2)
        out.append({"text": " ".join(words[:half]), "reference": " ".join(words[half:])})
    return out


def _warnings(spec: JobSpec, stats: DataStats, rows: list[dict]) -> list[str]:
    out = []
    if stats.rows < FEW_ROWS:
        out.append(
            f"only {stats.rows} examples: fewer than 1,000 rows usually teach a style more "
            "than new knowledge; add data for a stronger fine-tune"
        )
    if spec.method.method == "kto":
        good = sum(1 for r in rows if r["label"])
        if good in (0, len(rows)):
            kind = "good" if good else "bad"
            out.append(
                f"every KTO row is marked {kind}: KTO learns most from both kinds of answers"
            )
    if spec.method.method == "grpo" and spec.training.eval_split > 0:
        out.append("grpo runs are not evaluated during training: no rows were held out")
    elif spec.training.eval_split > 0 and stats.eval_rows == 0:
        out.append("too few rows for an eval split (needs at least 10): no evaluation")
    return out
