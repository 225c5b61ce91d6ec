"""Eval sets: any file the Dataset node reads, as prompts and references.

The file is read by the data wing's loaders (engine.data.formats: messages, ShareGPT, Alpaca,
prompt/completion; CSV, JSON, JSONL, Parquet), so every bad file or line gets the same sentence it
gets on a Dataset node. A row's prompt is every turn before its last assistant turn and that turn
is the reference. A row without an assistant turn (or a file of plain `text` rows) is one
EvalError naming the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.data.formats import load_dataset_rows, row_error, to_messages
from engine.errors import DataError, EvalError
from engine.paths import sha256_file
from engine.spec import DatasetSpec

NO_REFERENCE_HINT = (
    "Every row of an eval set needs an assistant turn: the last one is the reference answer."
)


@dataclass
class EvalRow:
    """One row: the prompt's turns, the reference answer, and the row as the file holds it."""

    index: int  # 0-based row of the file
    messages: list[dict]  # the turns before the reference
    reference: str
    row: dict = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        """The last user turn (the whole prompt when there is no user turn), for display."""
        users = [m["content"] for m in self.messages if m["role"] == "user"]
        return users[-1] if users else "\n".join(m["content"] for m in self.messages)

    def scorer_row(self) -> dict:
        """What a scorer's `row` argument holds: the file's row plus `prompt_messages`."""
        return {**self.row, "prompt_messages": [dict(m) for m in self.messages]}


@dataclass
class EvalSet:
    """An eval set read from one file."""

    name: str  # the file's name, how results name the set
    path: str
    format: str
    rows: list[EvalRow]
    sha256: str = ""


def load_eval_set(path: str | Path, max_rows: int | None = None) -> EvalSet:
    """Read an eval set (at most `max_rows` rows); DataError/EvalError name the file and line of
    anything that cannot be used."""
    path = Path(path).expanduser()
    try:
        raw, fmt = load_dataset_rows(DatasetSpec(path=str(path), max_rows=max_rows or 0))
    except DataError as err:
        if "no assistant turn" in err.message:  # the data wing words it for training
            message = err.message.replace(
                "the conversation has no assistant turn to train on",
                "the row has no assistant turn to take as the reference",
            )
            raise EvalError(message, NO_REFERENCE_HINT) from None
        raise
    if fmt == "text":
        raise EvalError(
            f"{path}: the rows are plain text, with no assistant turns to take as references",
            NO_REFERENCE_HINT + " Use messages, ShareGPT, Alpaca or prompt/completion rows.",
        )
    rows = []
    for index, row in enumerate(raw):
        messages = to_messages(row, fmt)
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        if last == 0:
            err = row_error(path, index, "the reference (the last assistant turn) has no prompt")
            raise EvalError(err.message, "Put the question in a user turn before the answer.")
        rows.append(EvalRow(index, messages[:last], messages[last]["content"], row))
    return EvalSet(path.name, str(path.resolve()), fmt, rows, sha256_file(path))


def rows_eval_set(name: str, rows: list[dict], max_rows: int | None = None) -> EvalSet:
    """An eval set of rows already in memory, as the data wing normalizes them (`{"messages":
    [...]}`): the run's held-out split. Rows with no prompt before their last assistant turn are
    left out; plain-text rows (`{"text": ...}`) hold no reference, an EvalError."""
    out = []
    for index, row in enumerate(rows):
        messages = row.get("messages")
        if not messages:
            raise EvalError(
                f"{name}: the rows are plain text, with no assistant turns to take as references",
                NO_REFERENCE_HINT + " Choose an eval set file for this Eval node.",
            )
        answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        if not answers or answers[-1] == 0:
            continue
        last = answers[-1]
        out.append(EvalRow(index, messages[:last], messages[last]["content"], row))
        if max_rows and len(out) >= max_rows:
            break
    if not out:
        raise EvalError(f"{name}: no row has a prompt and an answer to score", NO_REFERENCE_HINT)
    return EvalSet(name, "", "messages", out)
