"""Rows in and out of the data steps, and the texts a step looks at in a row.

A step reads any file the Dataset node reads, with the data wing's plain reader (rows come back
exactly as written, so a step changes nothing it does not mean to); every bad file or line is a
DataError naming the file (and line). Rows are appended as JSON lines (engine.data.jsonl: one
`write` and fsync per batch, and a line cut short by a crash dropped before the next append).

The texts: `row_text` (every turn, in order), `prompt_text` (the turns before the answer) and
`answer_text` (the last assistant turn, the chosen answer of a pair, a completion, an output or a
text row's text), in any format the data wing knows: messages, ShareGPT, Alpaca,
prompt/completion, preference pairs, KTO rows, plain text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine.data.formats import parse_json_text
from engine.errors import DataError
from engine.spec import DatasetSpec

ORIGIN = "origin"  # the side field where a generated row keeps where it came from
_TURN_KEYS = ("messages", "conversations")
_PROMPT_KEYS = ("system", "instruction", "input", "prompt")
_ANSWER_KEYS = ("chosen", "completion", "output", "text")


def read_table(path: Path | str) -> list[dict]:
    """The rows of a dataset file, read as the data wing reads a Dataset node's file without a
    tokenizer (engine.data.check.dataset_rows: plain JSON lines and CSV, pyarrow for Parquet);
    DataError naming the file (and line) when it cannot be read or holds no rows."""
    from engine.data.check import dataset_rows

    path = Path(path).expanduser()
    rows = list(dataset_rows(DatasetSpec(path=str(path))))
    if not rows:
        raise DataError("the file holds no rows", str(path))
    return rows


def write_rows(path: Path | str, rows: Iterable[dict]) -> int:
    """Write `rows` as a new JSON-lines file (replacing any); returns how many."""
    lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in rows]
    Path(path).write_text("".join(lines), encoding="utf-8")
    return len(lines)


def read_lines(path: Path | str) -> list[dict]:
    """The JSON objects of a JSON-lines file written by `append_rows` ([] when it is missing)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# -- the texts of a row ---------------------------------------------------------------------------
def turns(row: dict) -> list[tuple[str, str]]:
    """The row's turns as (role, text), in order: chat turns as they are; the columns of the
    other formats as user turns (system, instruction, input, prompt) and assistant turns
    (chosen, rejected, completion, output, text)."""
    for key in _TURN_KEYS:
        value = parse_json_text(row.get(key))
        if isinstance(value, list) and value:
            return [_turn(t) for t in value if isinstance(t, dict)]
    out: list[tuple[str, str]] = []
    for key in _PROMPT_KEYS:
        default = "system" if key == "system" else "user"
        out += [(role or default, t) for role, t in _texts(row.get(key))]
    for key in ("chosen", "rejected", "completion", "output", "text"):
        out += [(role or "assistant", t) for role, t in _texts(row.get(key))]
    return out


def row_text(row: dict) -> str:
    """Every turn's text, one after another (what length filters and deduplication read)."""
    return "\n".join(text for _, text in turns(row))


def answer_text(row: dict) -> str:
    """The answer a scorer grades: the last assistant turn of a conversation, else the chosen
    answer, completion, output or text column ("" when the row has none)."""
    for key in _TURN_KEYS:
        value = parse_json_text(row.get(key))
        if isinstance(value, list) and value:
            said = [_turn(t) for t in value if isinstance(t, dict)]
            answers = [text for role, text in said if role in ("assistant", "gpt")]
            return answers[-1] if answers else ""
    for key in _ANSWER_KEYS:
        found = _texts(row.get(key))
        if found:
            return found[-1][1]
    return ""


def prompt_turns(row: dict) -> list[dict]:
    """The turns before the answer, as [{role, content}] (the judge's question)."""
    for key in _TURN_KEYS:
        value = parse_json_text(row.get(key))
        if isinstance(value, list) and value:
            said = [_turn(t) for t in value if isinstance(t, dict)]
            answers = [i for i, (role, _) in enumerate(said) if role in ("assistant", "gpt")]
            last = answers[-1] if answers else len(said)
            return [{"role": _role(r), "content": t} for r, t in said[:last]]
    out = []
    for key in _PROMPT_KEYS:
        default = "system" if key == "system" else "user"
        out += [{"role": _role(r or default), "content": t} for r, t in _texts(row.get(key))]
    return out


def prompt_text(row: dict) -> str:
    """The text of the turns before the answer."""
    return "\n".join(t["content"] for t in prompt_turns(row))


def reference_text(row: dict) -> str:
    """What a scorer compares an answer with: the row's reference or answer column, else the
    passage or seed the row was generated from (its origin), else ""."""
    for key in ("reference", "answer"):
        if isinstance(row.get(key), str) and row[key].strip():
            return row[key]
    origin = row.get(ORIGIN)
    if isinstance(origin, dict):
        return str(origin.get("passage") or origin.get("seed") or "")
    return ""


def _turn(turn: dict) -> tuple[str, str]:
    role = str(turn.get("role") or turn.get("from") or "")
    content = turn.get("content", turn.get("value"))
    if isinstance(content, list):  # OpenAI content parts
        content = "".join(p.get("text") or "" for p in content if isinstance(p, dict))
    return role, content if isinstance(content, str) else ""


def _texts(value: Any) -> list[tuple[str, str]]:
    """(role, text) of a column holding text or a list of turns."""
    value = parse_json_text(value)
    if isinstance(value, str):
        return [("", value)] if value.strip() else []
    if isinstance(value, list):
        return [_turn(t) for t in value if isinstance(t, dict)]
    return []


def _role(role: str) -> str:
    return {"human": "user", "gpt": "assistant"}.get(role, role)
