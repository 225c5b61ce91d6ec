"""The data of the methods beyond SFT: the columns each needs, a quick look at a file's columns
(the compiler's check, reading only the first row and never importing torch), and rows converted
to TRL's conversational form.

Formats by method (engine.spec.METHODS):

- dpo, orpo, simpo: preference pairs `{prompt, chosen, rejected}`, each a string or a list of
  `{role, content}` turns (TRL's conversational form); without `prompt`, chosen and rejected are
  whole conversations that share every turn but their last (an implicit prompt);
- kto: single answers marked good or bad `{prompt, completion, label}` (label true/false, 1/0);
- grpo: prompts `{prompt}` (a string or turns) or `{messages}`, with an optional `answer` or
  `reference` column (for messages, else the last assistant turn) that reward scorers compare
  the sampled answers with;
- pretrain: plain text `{text}`.

A `system` column, when present, opens the prompt as a system turn. Every converted prompt is a
list of turns, so the run's chat template renders it as it renders the samples and the export.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from engine.data.formats import ROLES, parse_json_text
from engine.errors import DataError

# the row format each method trains on, and the columns that format needs
METHOD_FORMATS = {
    "dpo": "preference",
    "orpo": "preference",
    "simpo": "preference",
    "kto": "kto",
    "grpo": "prompt",
    "pretrain": "text",
}
FORMAT_COLUMNS = {
    "preference": ("prompt", "chosen", "rejected"),
    "kto": ("prompt", "completion", "label"),
    "prompt": ("prompt",),
    "text": ("text",),
}
FORMAT_NAMES = {
    "preference": "preference pairs",
    "kto": "answers marked good or bad",
    "prompt": "prompts",
    "text": "plain text",
}
ANSWER_COLUMNS = ("answer", "reference")
_TRUE = {"true", "1", "yes", "good", "desirable"}
_FALSE = {"false", "0", "no", "bad", "undesirable"}
_JSON_CHECK_LIMIT = 20 * 2**20  # a .json array larger than this is left to the worker


# -- the compiler's check ---------------------------------------------------------------------
def first_row(path: str | Path) -> dict | None:
    """The first row of a dataset file as a dict (CSV cells as text, parquet values as read), or
    None when it cannot be told cheaply (unreadable, malformed, a very large JSON array): the
    worker then reads the file and names what is wrong with it."""
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            with open(path, encoding="utf-8") as f:
                line = next((raw for raw in f if raw.strip()), "")
            row = json.loads(line) if line else None
        elif suffix == ".json":
            if path.stat().st_size > _JSON_CHECK_LIMIT:
                return None
            value = json.loads(path.read_text(encoding="utf-8"))
            row = value[0] if isinstance(value, list) and value else None
        elif suffix == ".csv":
            with open(path, encoding="utf-8", newline="") as f:
                row = next(csv.DictReader(f), None)
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.ParquetFile(path).read_row_group(0)
            row = table.slice(0, 1).to_pylist()[0] if table.num_rows else None
        else:
            return None
    except (OSError, UnicodeDecodeError, ValueError, StopIteration, IndexError):
        return None
    except Exception:  # noqa: BLE001 - a reader's error is the worker's to report, with its line
        return None
    return row if isinstance(row, dict) else None


def row_format(row: dict) -> str | None:
    """The method format a row is in by its own columns, whatever method trains on it:
    "preference" (chosen and rejected), "kto" (a completion with a label), or None (a chat or
    text format, engine.data.formats)."""
    if row.get("chosen") is not None and row.get("rejected") is not None:
        return "preference"
    if row.get("completion") is not None and row.get("label") is not None:
        return "kto"
    return None


def renamed(row: dict, columns: dict[str, str]) -> tuple[dict, list[str]]:
    """`row` with the Dataset node's column mapping applied (format name -> file column), and
    the mapped file columns the row does not have."""
    absent = [column for column in columns.values() if column not in row]
    out = {k: v for k, v in row.items() if k not in columns.values()}
    for key, column in columns.items():
        if column in row:
            out[key] = row[column]
    return out, absent


def missing_columns(row: dict, method: str) -> list[str]:
    """The columns `method` needs that `row` (a renamed first row) lacks; [] for sft and when
    nothing is missing."""
    fmt = METHOD_FORMATS.get(method)
    if fmt is None:
        return []
    needed = list(FORMAT_COLUMNS[fmt])
    if fmt == "preference" and isinstance(parse_json_text(row.get("chosen")), list):
        needed.remove("prompt")  # whole conversations: the prompt is their shared turns
    if fmt == "prompt" and "messages" in row:
        needed.remove("prompt")
    return [c for c in needed if c not in row]


def has_answer(row: dict) -> bool:
    """Whether a GRPO row gives reward scorers an answer to compare with."""
    return any(c in row for c in ANSWER_COLUMNS) or "messages" in row


def dataset_problem(
    path: str, columns: dict[str, str], method: str, needs_answer: bool = False
) -> str:
    """Why a dataset file cannot feed `method` ("" when it can, or cannot be told from its first
    row): the columns it lacks, by name, with the columns it has. `needs_answer`: a GRPO reward
    compares with the row's answer, so the rows need one."""
    fmt = METHOD_FORMATS.get(method)
    if fmt is None or not Path(path).expanduser().is_absolute():
        return ""
    row = first_row(path)
    if row is None:
        return ""
    row, absent = renamed(row, columns)
    if absent:
        return (
            f"the column mapping names {', '.join(absent)}, which the file does not have; its "
            f"columns: {', '.join(sorted(row)) or '(none)'}"
        )
    missing = missing_columns(row, method)
    has = ", ".join(sorted(row)) or "(none)"
    if missing:
        need = ", ".join(FORMAT_COLUMNS[fmt])
        also = " (or messages)" if fmt == "prompt" else ""
        return (
            f"method {method} trains on {FORMAT_NAMES[fmt]} with columns {need}{also}; this "
            f"file has no {', '.join(missing)} (its columns: {has}). Map the columns in the "
            "Dataset node, or choose a file in that format"
        )
    if fmt == "prompt" and needs_answer and not has_answer(row):
        return (
            "a reward compares the answers with each row's answer, but this file has no answer "
            f"or reference column (its columns: {has}). Add one, or use rewards that need none "
            "(regex:, json, length:, python:)"
        )
    return ""


# -- rows in TRL's conversational form ----------------------------------------------------------
def method_row(row: dict, method: str) -> dict:
    """One row converted for `method`'s trainer; DataError (without file and line: callers add
    them) when it does not fit.

    preference: {prompt: turns, chosen: [assistant turn], rejected: [assistant turn]};
    kto: {prompt, completion: [assistant turn], label: bool}; grpo: {prompt: turns, answer: text
    ("" when the row has none), row: the row as JSON text}; pretrain: {text}.
    """
    fmt = METHOD_FORMATS.get(method)
    if fmt == "text":
        text = row.get("text")
        if not isinstance(text, str) or not text.strip():
            raise DataError("'text' must be non-empty text")
        return {"text": text}
    if fmt == "preference":
        return _preference(row)
    if fmt == "kto":
        return {
            "prompt": _prompt(row),
            "completion": _answer(row, "completion"),
            "label": _label(row.get("label")),
        }
    if fmt == "prompt":
        return _prompt_row(row)
    raise DataError(f"method {method!r} has no row format of its own")


def step_text(row: dict) -> tuple[str, int]:
    """What a converted row (`method_row`) puts through the model in a training step, as text,
    and its number of turns (each adds its template's role markers): the prompt with both
    answers of a pair (two sequences), the prompt with its completion (KTO), the prompt (GRPO;
    the sampled answers come on top), or the text."""
    if "text" in row:
        return row["text"], 1
    prompt = [t["content"] for t in row["prompt"]]
    if "chosen" in row:
        answers = [t["content"] for key in ("chosen", "rejected") for t in row[key]]
        return "\n".join(prompt * 2 + answers), 2 * len(row["prompt"]) + len(answers)
    answers = [t["content"] for t in row.get("completion", [])]
    return "\n".join(prompt + answers), len(prompt) + len(answers)


def _turns(value: Any, what: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise DataError(f"'{what}' must be text or a non-empty list of turns")
    out = []
    for i, turn in enumerate(value):
        role = turn.get("role") if isinstance(turn, dict) else None
        content = turn.get("content") if isinstance(turn, dict) else None
        if role not in ROLES or not isinstance(content, str):
            raise DataError(
                f"'{what}' turn {i + 1} must be {{role, content}} with role one of "
                + ", ".join(ROLES)
            )
        out.append({"role": role, "content": content})
    return out


def _system(row: dict, turns: list[dict]) -> list[dict]:
    system = row.get("system")
    if isinstance(system, str) and system.strip() and turns[0]["role"] != "system":
        return [{"role": "system", "content": system}, *turns]
    return turns


def _prompt(row: dict) -> list[dict]:
    prompt = parse_json_text(row.get("prompt"))
    if isinstance(prompt, str):
        if not prompt.strip():
            raise DataError("'prompt' must be non-empty text")
        return _system(row, [{"role": "user", "content": prompt}])
    if prompt is None:
        raise DataError("missing 'prompt'")
    return _system(row, _turns(prompt, "prompt"))


def _answer(row: dict, key: str) -> list[dict]:
    value = parse_json_text(row.get(key))
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"'{key}' must be non-empty text")
        return [{"role": "assistant", "content": value}]
    turns = _turns(value, key)
    if turns[-1]["role"] != "assistant":
        raise DataError(f"'{key}' must end with an assistant turn")
    return turns


def _preference(row: dict) -> dict:
    chosen, rejected = _answer(row, "chosen"), _answer(row, "rejected")
    if row.get("prompt") is not None:
        return {"prompt": _prompt(row), "chosen": chosen, "rejected": rejected}
    if len(chosen) < 2 or chosen[:-1] != rejected[:-1]:
        raise DataError(
            "without a 'prompt', chosen and rejected must be whole conversations that share "
            "every turn but their last"
        )
    return {"prompt": _system(row, chosen[:-1]), "chosen": chosen[-1:], "rejected": rejected[-1:]}


def _label(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower() if value is not None else ""
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise DataError(f"'label' must be true or false (a good or a bad answer), got {value!r}")


def _prompt_row(row: dict) -> dict:
    answer = next((str(row[c]) for c in ANSWER_COLUMNS if row.get(c) not in (None, "")), None)
    if row.get("prompt") is not None:
        prompt = _prompt(row)
    else:
        turns = _system(row, _turns(parse_json_text(row.get("messages")), "messages"))
        if turns[-1]["role"] == "assistant":  # the last answer is the reference, not the prompt
            answer = turns[-1]["content"] if answer is None else answer
            turns = turns[:-1]
        if not turns:
            raise DataError("'messages' holds no turn before the answer to use as the prompt")
        prompt = turns
    return {"prompt": prompt, "answer": answer or "", "row": json.dumps(row, default=str)}
