"""Appending to a JSON-lines file so that a crash never costs more than the line being written:
each batch of rows is one `write` followed by an fsync, and a last line cut short by a crash is
dropped (or a whole last line given its newline) before the next append."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path


def append_rows(path: Path | str, rows: Iterable[dict]) -> None:
    """Append `rows` to a JSON-lines file (made when missing) with one write, then fsync."""
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
    if not data:
        return
    drop_torn_tail(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def drop_torn_tail(path: Path | str) -> None:
    """End a JSON-lines file with a newline: a last line that is a whole JSON object gets its
    newline, one that is not (a write cut short by a crash) is removed."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        return
    if size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        start = data.rfind(b"\n") + 1
        try:
            json.loads(data[start:])
            f.seek(size)
            f.write(b"\n")
        except ValueError:
            f.truncate(start)
        f.flush()
        os.fsync(f.fileno())
