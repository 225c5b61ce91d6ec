"""Dataset files in, normalized rows out: loading, format detection and conversion to messages.

Files are read with HF `datasets` (JSON lines, JSON arrays, CSV, Parquet). Every failure names the
file and, where there is one, the line (JSONL) or row, so the user knows what to fix. Formats:

- messages: `{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}` (OpenAI)
- sharegpt: `{"conversations": [{"from": "system"|"human"|"gpt", "value": "..."}, ...]}`
- alpaca: `{"instruction": ..., "input": ... (optional), "output": ...}`
- prompt_completion: `{"prompt": ..., "completion": ...}` (one user turn, one assistant turn)
- text: `{"text": ...}`: trained on every token, no chat template
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from engine import paths
from engine.errors import DataError
from engine.spec import DatasetSpec

FORMATS = ("messages", "sharegpt", "alpaca", "prompt_completion", "text")
FORMAT_KEYS = {
    "messages": "messages (a list of {role, content})",
    "sharegpt": "conversations (a list of {from, value})",
    "alpaca": "instruction, input (optional), output",
    "prompt_completion": "prompt, completion",
    "text": "text",
}
_LOADERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
ROLES = ("system", "user", "assistant")
_SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "gpt": "assistant",
    "user": "user",
    "assistant": "assistant",
}


def load_dataset_rows(ds: DatasetSpec) -> tuple[list[dict], str]:
    """Load a dataset file's rows (columns renamed per `ds.columns`, cut to `ds.max_rows`) and
    return them with their format (`ds.format`, or the detected one when it is "auto").

    Raises DataError naming the file (and the line of a malformed JSONL line) when the file is
    missing, unreadable, empty, or holds rows of no known format.
    """
    rows = read_rows(ds)
    path = Path(ds.path).expanduser()
    fmt = ds.format if ds.format and ds.format != "auto" else detect_format(rows, path)
    check_rows(rows, fmt, path)
    return rows, fmt


def read_rows(ds: DatasetSpec) -> list[dict]:
    """A dataset file's rows as dicts, columns renamed per `ds.columns` and cut to `ds.max_rows`,
    in no particular format; DataError naming the file (and line) when it cannot be read."""
    path = Path(ds.path).expanduser()
    where = str(path)
    loader = check_file(path)
    table = _read_table(path, loader)
    if table.num_rows == 0:
        raise DataError("the file holds no rows", where)
    table = _rename_columns(table, ds.columns, where)
    if ds.max_rows:
        table = table.select(range(min(ds.max_rows, table.num_rows)))
    return table.to_list()


def check_file(path: Path) -> str:
    """The reader of a dataset file ("json", "csv" or "parquet") after the checks every reader
    needs: a file, not a folder, of a known type, not empty, UTF-8 text; DataError otherwise."""
    where = str(path)
    if path.is_dir():
        raise DataError(
            "is a folder, not a file",
            where,
            hint="Choose a .jsonl, .json, .csv or .parquet file in it.",
        )
    loader = _LOADERS.get(path.suffix.lower())
    if loader is None:
        raise DataError(
            f"unsupported file type {path.suffix or '(none)'!r}",
            where,
            hint="Use a .jsonl, .json, .csv or .parquet file.",
        )
    if not path.is_file():
        raise DataError("file not found", where, hint="Check the Dataset node's file path.")
    if _is_blank(path):
        raise DataError("the file is empty", where)
    if loader != "parquet":
        check_utf8(path)
    return loader


def _is_blank(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(65536)
    except OSError as err:
        raise DataError(
            f"cannot be read: {err.strerror or err}",
            str(path),
            hint="Check that the file is readable by you and not locked by another program.",
        ) from err
    return not head.strip() and len(head) < 65536


_CHUNK = 1 << 20
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def check_utf8(path: str | Path) -> None:
    """Raise DataError naming the line and byte offset of the first byte that is not UTF-8.

    The readers do not all say so themselves: pyarrow's JSON reader accepts the bytes and fails
    later, deep inside, on the first row that holds them. One streaming pass, 1 MiB at a time.
    """
    path = Path(path)
    offset, line, line_start, carry = 0, 1, 0, b""  # offset: of buf[0] in the file
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            buf = carry + chunk
            if not buf:
                return
            try:
                buf.decode("utf-8")
                good = len(buf)
            except UnicodeDecodeError as err:
                # a character cut by the chunk boundary: decode it with the next chunk
                if chunk and err.end == len(buf) and len(buf) - err.start < 4:
                    good = err.start
                else:
                    good = err.start
                    bad = offset + good
                    line += buf.count(b"\n", 0, good)
                    newline = buf.rfind(b"\n", 0, good)
                    line_start = offset + newline + 1 if newline >= 0 else line_start
                    f.seek(line_start)
                    before = f.read(bad - line_start).decode("utf-8", errors="replace")
                    _raise_not_utf8(path, buf[good], bad, line, len(before) + 1, buf[:2])
            newline = buf.rfind(b"\n", 0, good)
            if newline >= 0:
                line_start = offset + newline + 1
            line += buf.count(b"\n", 0, good)
            offset += good
            carry = buf[good:]
            if not chunk:
                return


def _raise_not_utf8(path: Path, byte: int, offset: int, line: int, column: int, head: bytes):
    guess = " (it looks like UTF-16)" if offset == 0 and head in _UTF16_BOMS else ""
    raise DataError(
        f"the file is not UTF-8 text{guess}: byte 0x{byte:02X} at byte offset {offset} "
        f"(line {line}, column {column})",
        str(path),
        line,
        hint="Save it as UTF-8 (in Excel: Save As, CSV UTF-8; in a text editor: encoding UTF-8).",
    )


def _read_table(path: Path, loader: str) -> Any:
    import datasets

    datasets.disable_progress_bars()
    cache = paths.data_dir() / "cache" / "datasets"
    # the readers log their failures before raising; ours is the one message the user gets
    log = logging.getLogger("datasets")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        return datasets.load_dataset(
            loader, data_files=str(path), split="train", cache_dir=str(cache), keep_in_memory=True
        )
    except Exception as exc:  # every reader's error becomes one sentence
        if path.suffix.lower() == ".jsonl":
            raise_bad_jsonl_line(path)
        elif path.suffix.lower() == ".json":
            raise_bad_json(path)
        raise DataError(f"cannot read the file: {_root_cause(exc)}", str(path)) from exc
    finally:
        log.setLevel(level)


def raise_bad_jsonl_line(path: Path) -> None:
    """Find the first line that is not a JSON object and raise DataError naming it."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(
                    f"invalid JSON: {err.msg} (column {err.colno})",
                    str(path),
                    number,
                    hint="Each line must hold one JSON object.",
                ) from None
            if not isinstance(value, dict):
                raise DataError(
                    f"expected a JSON object, found {type(value).__name__}",
                    str(path),
                    number,
                    hint="Each line must hold one JSON object.",
                )


def raise_bad_json(path: Path) -> None:
    """Raise DataError for a .json file that is not JSON (naming the line) or not an array."""
    try:
        value = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as err:
        raise DataError(
            f"invalid JSON: {err.msg} (column {err.colno})", str(path), err.lineno
        ) from None
    if not isinstance(value, list):
        raise DataError(
            "expected a JSON array of objects (or JSON lines in a .jsonl file)", str(path)
        )


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _rename_columns(table: Any, columns: dict[str, str], where: str) -> Any:
    if not columns:
        return table
    present = set(table.column_names)
    renames = {}
    for key, column in columns.items():
        if column not in present:
            raise DataError(
                f"column {column!r} (mapped to {key!r}) is not in the file; its "
                "columns are " + ", ".join(sorted(present)),
                where,
            )
        if column != key:
            renames[column] = key
    clashing = [key for key in renames.values() if key in present and key not in renames]
    if clashing:
        table = table.remove_columns(clashing)
    return table.rename_columns(renames)


def detect_format(rows: list[dict], path: str | Path | None = None) -> str:
    """The format of the rows, judged by the first row's keys (and, for a turns list, the keys of
    its first turn). Raises DataError listing the known formats and the keys seen."""
    row = rows[0] if rows else {}
    for key in ("messages", "conversations"):
        turns = parse_json_text(row.get(key))
        if isinstance(turns, list) and turns and isinstance(turns[0], dict):
            if "from" in turns[0] and "value" in turns[0]:
                return "sharegpt"
            if "role" in turns[0]:
                return "messages"
    if _present(row, "instruction") and _present(row, "output"):
        return "alpaca"
    if _present(row, "prompt") and _present(row, "completion"):
        return "prompt_completion"
    if _present(row, "text"):
        return "text"
    known = "; ".join(f"{fmt}: {keys}" for fmt, keys in FORMAT_KEYS.items())
    seen = ", ".join(sorted(row)) or "(none)"
    raise DataError(
        f"rows match no known format (keys seen: {seen}); known formats: {known}",
        str(path) if path else None,
        hint="Rename the columns in the Dataset node's column mapping.",
    )


def _present(row: dict, key: str) -> bool:
    return row.get(key) is not None


def parse_json_text(value: Any) -> Any:
    """Turn lists stored as JSON text (CSV cells) into lists; anything else is returned as is."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def check_rows(rows: list[dict], fmt: str, path: Path) -> None:
    """Raise DataError for the first row that does not convert, naming its line or row."""
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; known formats: " + ", ".join(FORMATS), str(path))
    for index, row in enumerate(rows):
        try:
            if fmt == "text":
                _text(row)
            else:
                to_messages(row, fmt)
        except DataError as err:
            raise row_error(path, index, err.message) from None


def row_error(path: str | Path, index: int, message: str) -> DataError:
    """A DataError for row `index` (0-based): by line number for JSONL files, else by row."""
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        return DataError(message, str(path), _jsonl_line_of_row(path, index))
    return DataError(f"row {index + 1}: {message}", str(path))


def _jsonl_line_of_row(path: Path, index: int) -> int | None:
    seen = -1
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                seen += 1
                if seen == index:
                    return number
    return None


def _text(row: dict) -> str:
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataError("'text' must be non-empty text")
    return text


def to_messages(row: dict, fmt: str) -> list[dict]:
    """Normalize one row of a conversational format to [{"role", "content"}, ...].

    Raises DataError (without file and line; callers add them) for a row that does not fit the
    format: a missing or non-text content, an unknown role, or no assistant turn to train on.
    "text" rows have no messages: they are trained on all tokens without a template.
    """
    if fmt == "messages":
        messages = [
            _message(turn, i, "role", "content", {r: r for r in ROLES})
            for i, turn in enumerate(_turns(row, ("messages", "conversations")))
        ]
    elif fmt == "sharegpt":
        messages = [
            _message(turn, i, "from", "value", _SHAREGPT_ROLES)
            for i, turn in enumerate(_turns(row, ("conversations", "messages")))
        ]
    elif fmt == "alpaca":
        instruction = _field(row, "instruction")
        extra = row.get("input")
        user = (
            f"{instruction}\n\n{extra}" if isinstance(extra, str) and extra.strip() else instruction
        )
        messages = _with_system(
            row,
            [
                {"role": "user", "content": user},
                {"role": "assistant", "content": _field(row, "output")},
            ],
        )
    elif fmt == "prompt_completion":
        messages = _prompt_completion(row)
    elif fmt == "text":
        raise DataError("text rows have no messages: they are trained without a chat template")
    else:
        raise DataError(f"unknown format {fmt!r}; known formats: " + ", ".join(FORMATS))
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError("the conversation has no assistant turn to train on")
    return messages


def _turns(row: dict, keys: tuple[str, ...]) -> list:
    for key in keys:
        value = parse_json_text(row.get(key))
        if value is not None:
            if not isinstance(value, list) or not value:
                raise DataError(f"'{key}' must be a non-empty list of turns")
            return value
    raise DataError(f"missing '{keys[0]}'")


def _message(turn: Any, index: int, role_key: str, content_key: str, roles: dict[str, str]) -> dict:
    where = f"turn {index + 1}"
    if not isinstance(turn, dict):
        raise DataError(f"{where} must be an object with '{role_key}' and '{content_key}'")
    role = turn.get(role_key)
    if role not in roles:
        raise DataError(
            f"{where} has {role_key} {role!r}; expected one of " + ", ".join(dict.fromkeys(roles))
        )
    content = turn.get(content_key)
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        content = "".join(
            p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    if not isinstance(content, str):
        raise DataError(f"{where} ({role}) is missing its '{content_key}' text")
    return {"role": roles[role], "content": content}


def _field(row: dict, key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"'{key}' must be non-empty text")
    return value


def _with_system(row: dict, messages: list[dict]) -> list[dict]:
    system = row.get("system")
    if isinstance(system, str) and system.strip():
        return [{"role": "system", "content": system}, *messages]
    return messages


def _prompt_completion(row: dict) -> list[dict]:
    prompt = parse_json_text(row.get("prompt"))
    completion = parse_json_text(row.get("completion"))
    if isinstance(prompt, list) and isinstance(completion, list):  # TRL's conversational form
        turns = prompt + completion
        return [
            _message(turn, i, "role", "content", {r: r for r in ROLES})
            for i, turn in enumerate(turns)
        ]
    return _with_system(
        row,
        [
            {"role": "user", "content": _field(row, "prompt")},
            {"role": "assistant", "content": _field(row, "completion")},
        ],
    )


def normalize(row: dict, fmt: str) -> dict:
    """A row as the pipeline's example: {"messages": [...]} or, for text rows, {"text": ...}."""
    if fmt == "text":
        return {"text": _text(row)}
    return {"messages": to_messages(row, fmt)}
