"""The whole-file check of a dataset before any run is started from it (issue "the node tells the
truth"): every row is read and converted as the worker would, so a missing or unreadable file, a
malformed line N, rows of no known format, a conversation without an assistant turn or a row that
does not fit the method is one sentence naming the file and line, on the Dataset node, before any
worker starts.

Pure Python (json, csv; pyarrow for Parquet): the app runs it in a background thread, the command
line and the submission in process, without the `datasets` library or torch. Results are kept per
file size and modification time (and the node's format, columns, row cut and the method), so an
unchanged file is read once per process.
"""

from __future__ import annotations

import csv
import json
import threading
from collections.abc import Iterator
from pathlib import Path

from engine.data.formats import (
    check_file,
    check_rows,
    detect_format,
    raise_bad_json,
    raise_bad_jsonl_line,
    row_error,
)
from engine.data.method_formats import METHOD_FORMATS, method_row, renamed
from engine.errors import DataError
from engine.spec import DatasetSpec

_cache: dict[tuple, str] = {}
_lock = threading.Lock()


def check_dataset(ds: DatasetSpec, method: str = "sft") -> str:
    """Why the rows of `ds` cannot train a run of `method` ("" when they can): DataError's
    sentence with the file, the line (JSONL) or row, and the hint. A relative path is not checked
    (it has no graph folder to resolve against; the worker reports it)."""
    path = Path(ds.path).expanduser()
    if not ds.path.strip() or not path.is_absolute():
        return ""
    key = cache_key(ds, method)
    with _lock:
        if key is not None and key in _cache:
            return _cache[key]
    try:
        check_rows_of(ds, method)
        problem = ""
    except DataError as err:
        problem = str(err)
    if key is not None:
        with _lock:
            _cache[key] = problem
    return problem


def cached_problem(ds: DatasetSpec, method: str = "sft") -> str | None:
    """The result `check_dataset` would give from its cache, or None when the file (as it is
    now) has not been checked yet."""
    key = cache_key(ds, method)
    with _lock:
        return _cache.get(key) if key is not None else None


def cache_key(ds: DatasetSpec, method: str) -> tuple | None:
    """What a check's result depends on: the file (path, size, modification time), how the
    node reads it and the method; None for a path that cannot be looked at (not cached)."""
    path = Path(ds.path).expanduser()
    try:
        stat = path.stat()
    except OSError:
        return None
    columns = tuple(sorted((ds.columns or {}).items()))
    return (str(path), stat.st_size, stat.st_mtime_ns, ds.format, columns, ds.max_rows, method)


def dataset_rows(ds: DatasetSpec) -> Iterator[dict]:
    """The rows of `ds` one by one, columns renamed per the node's mapping and cut to its
    `max_rows`, read with plain json/csv (pyarrow for Parquet) after the checks every reader
    needs (engine.data.formats.check_file); DataError naming the file and the line of a
    malformed JSONL line, or the column mapping that does not fit."""
    path = Path(ds.path).expanduser()
    loader = check_file(path)
    for index, row in enumerate(read_rows(path, loader)):
        if ds.max_rows and index >= ds.max_rows:
            return
        row, absent = renamed(row, ds.columns or {})
        if absent:
            raise DataError(
                f"the column mapping names {', '.join(absent)}, which the file does not have; "
                f"its columns: {', '.join(sorted(row)) or '(none)'}",
                str(path),
                hint="Fix the Dataset node's column mapping.",
            )
        yield row


def check_rows_of(ds: DatasetSpec, method: str) -> None:
    """Read every row of `ds` and convert it for `method`; DataError naming the first problem."""
    path = Path(ds.path).expanduser()
    rows = list(dataset_rows(ds))
    if not rows:
        raise DataError("the file holds no rows", str(path))
    if METHOD_FORMATS.get(method) is not None:
        for index, row in enumerate(rows):
            try:
                method_row(row, method)
            except DataError as err:
                raise row_error(path, index, err.message) from None
        return
    fmt = ds.format if ds.format and ds.format != "auto" else detect_format(rows, path)
    check_rows(rows, fmt, path)


def read_rows(path: Path, loader: str) -> Iterator[dict]:
    """The rows of a dataset file as dicts (CSV cells as text); DataError naming the line of a
    malformed JSONL line or the problem of a JSON file."""
    if loader == "parquet":
        import pyarrow.parquet as pq

        try:
            yield from pq.read_table(path).to_pylist()
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types
            raise DataError(f"cannot read the Parquet file: {exc}", str(path)) from exc
        return
    if path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            yield from csv.DictReader(f)
        return
    if path.suffix.lower() == ".json":
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise_bad_json(path)
            raise
        if not isinstance(value, list):
            raise_bad_json(path)
        for index, row in enumerate(value):
            if not isinstance(row, dict):
                raise DataError(
                    f"row {index + 1}: expected a JSON object, found {type(row).__name__}",
                    str(path),
                )
            yield row
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if not isinstance(row, dict):
                raise_bad_jsonl_line(path)  # names the line and what is wrong with it
            yield row
