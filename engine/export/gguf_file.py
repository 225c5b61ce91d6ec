"""A GGUF file's header: read its metadata and tensor table fast, patch metadata keys.

`read_gguf` parses the header directly (PyPI gguf's GGUFReader builds a numpy view per array
element and needs 8-10 s for a 128k-token vocabulary with its merges; an export reads the header
several times) and says clearly when a path is missing, not a GGUF, or truncated.
`patch_metadata` sets or removes keys (chat template, EOS/EOT ids, tokenizer settings) and copies
everything else byte for byte.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ModelError
from engine.models.gguf_base import ARRAY_TYPE, SCALAR_FORMATS, STRING_TYPE

KEY_TEMPLATE = "tokenizer.chat_template"
KEY_EOS = "tokenizer.ggml.eos_token_id"
KEY_EOT = "tokenizer.ggml.eot_token_id"
KEY_BOS = "tokenizer.ggml.bos_token_id"
KEY_ADD_BOS = "tokenizer.ggml.add_bos_token"
KEY_SPACE_PREFIX = "tokenizer.ggml.add_space_prefix"
KEY_NAME = "general.name"


class GGUFFileError(ModelError):
    """A GGUF path is missing, is not a GGUF file, is truncated, or cannot be read."""


@dataclass
class GGUFInfo:
    """What a GGUF file says about itself (metadata and tensor types; no weights read)."""

    path: str
    bytes: int
    version: int
    architecture: str | None
    name: str | None
    file_type: int | None
    tensor_count: int
    tensor_types: dict[str, int]  # GGML type name -> number of tensors
    chat_template: str | None
    bos_id: int | None
    eos_id: int | None
    eot_id: int | None
    add_bos: bool | None
    vocab_size: int
    special_tokens: dict[int, str] = field(default_factory=dict)  # control/user-defined tokens
    metadata: dict[str, Any] = field(default_factory=dict)  # scalar keys only

    def token_text(self, token_id: int | None) -> str | None:
        """The text of a special token id (None when unknown or not special)."""
        return None if token_id is None else self.special_tokens.get(token_id)

    def token_id(self, text: str) -> int | None:
        """The id of a special token given its text, or None."""
        for tid, tok in self.special_tokens.items():
            if tok == text:
                return tid
        return None


def read_gguf(path: Path | str) -> GGUFInfo:
    """Read a GGUF file's metadata and tensor table; raise GGUFFileError naming what is wrong."""
    path = Path(path)
    if not path.exists():
        raise GGUFFileError(f"{path} does not exist.", "Choose an existing .gguf file.")
    if not path.is_file():
        raise GGUFFileError(f"{path} is a folder, not a GGUF file.")
    size = path.stat().st_size
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise GGUFFileError(
            f"{path} is not a GGUF file (it does not start with the GGUF magic bytes).",
            "Choose a .gguf model file.",
        )
    try:
        header = _parse_header(path)
    except Exception as exc:  # struct/index/decode errors on cut-off or damaged headers
        raise GGUFFileError(
            f"{path} is truncated or damaged: its header cannot be read "
            f"({type(exc).__name__}: {exc}).",
            "Copy or download the file again.",
        ) from exc
    end = max((offset + nbytes for _, _, offset, nbytes in header.tensors), default=0)
    if end > size:
        raise GGUFFileError(
            f"{path} is truncated: its tensors need {end:,} bytes but the file has {size:,}.",
            "Copy or download the file again.",
        )
    return _info(path, size, header)


@dataclass
class _Header:
    scalars: dict[str, Any]
    tokens: list[str] | None
    token_types: list[int] | None
    tensors: list[tuple[str, str, int, int]]  # name, GGML type name, absolute offset, bytes
    kv_spans: dict[str, tuple[int, int]]  # where each key-value entry lies in the file
    tensor_info: tuple[int, int]  # where the tensor table lies
    data_start: int  # where tensor data begins (aligned)


_KEEP_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type")


def _parse_header(path: Path) -> _Header:
    """Scalars, the vocabulary's tokens and types, and the tensor table of a GGUF file (v2/v3)."""
    import mmap
    import struct

    import gguf

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        unpack = struct.unpack_from
        version, tensor_count, kv_count = unpack("<IQQ", data, 4)
        pos = 24
        scalars: dict[str, Any] = {
            "GGUF.version": version,
            "GGUF.tensor_count": tensor_count,
            "GGUF.kv_count": kv_count,
        }
        arrays: dict[str, list] = {}

        def string(at: int) -> tuple[str, int]:
            (n,) = unpack("<Q", data, at)
            if at + 8 + n > len(data):
                raise IndexError("a string runs past the end of the file")
            return data[at + 8 : at + 8 + n].decode("utf-8", errors="replace"), at + 8 + n

        def value(kind: int, at: int, keep: bool) -> tuple[Any, int]:
            if kind == STRING_TYPE:
                return string(at)
            if kind in SCALAR_FORMATS:
                fmt = SCALAR_FORMATS[kind]
                return unpack(fmt, data, at)[0], at + struct.calcsize(fmt)
            if kind != ARRAY_TYPE:
                raise ValueError(f"unknown metadata value type {kind}")
            sub, n = unpack("<IQ", data, at)
            at += 12
            if sub in SCALAR_FORMATS:
                width = struct.calcsize(SCALAR_FORMATS[sub])
                if at + n * width > len(data):
                    raise IndexError("an array runs past the end of the file")
                items = list(unpack(f"<{n}{SCALAR_FORMATS[sub][1]}", data, at)) if keep else None
                return items, at + n * width
            items = [] if keep else None
            for _ in range(n):
                item, at = value(sub, at, keep)
                if keep:
                    items.append(item)
            return items, at

        spans: dict[str, tuple[int, int]] = {}
        for _ in range(kv_count):
            entry = pos
            key, pos = string(pos)
            (kind,) = unpack("<I", data, pos)
            item, pos = value(kind, pos + 4, key in _KEEP_ARRAYS)
            spans[key] = (entry, pos)
            if kind == ARRAY_TYPE:
                if item is not None:
                    arrays[key] = item
            else:
                scalars[key] = item
        table, info_start = [], pos
        for _ in range(tensor_count):
            name, pos = string(pos)
            (n_dims,) = unpack("<I", data, pos)
            dims = unpack(f"<{n_dims}Q", data, pos + 4)
            kind, offset = unpack("<IQ", data, pos + 4 + 8 * n_dims)
            pos += 4 + 8 * n_dims + 12
            table.append((name, kind, offset, dims))
    align = int(scalars.get("general.alignment", gguf.GGUF_DEFAULT_ALIGNMENT))
    start = pos + (-pos % align)
    tensors = []
    for name, kind, offset, dims in table:
        qtype = gguf.GGMLQuantizationType(kind)
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        count = 1
        for d in dims:
            count *= d
        tensors.append((name, qtype.name, start + offset, count // block * type_size))
    return _Header(
        scalars,
        arrays.get("tokenizer.ggml.tokens"),
        arrays.get("tokenizer.ggml.token_type"),
        tensors,
        spans,
        (info_start, pos),
        start,
    )


def _info(path: Path, size: int, header: _Header) -> GGUFInfo:
    scalars, tokens, kinds = header.scalars, header.tokens, header.token_types
    vocab_size = len(tokens) if tokens is not None else 0
    special: dict[int, str] = {}
    if tokens is not None and kinds is not None:
        for tid, kind in enumerate(kinds):
            if kind in (3, 4):  # CONTROL, USER_DEFINED
                special[tid] = tokens[tid]
    for key in (KEY_BOS, KEY_EOS, KEY_EOT):  # make sure their texts are known even if "normal"
        tid = scalars.get(key)
        if isinstance(tid, int) and tokens is not None and 0 <= tid < vocab_size:
            special.setdefault(tid, tokens[tid])
    counts = Counter(kind for _, kind, _, _ in header.tensors)

    def _int(key: str) -> int | None:
        value = scalars.get(key)
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else None

    return GGUFInfo(
        path=str(path),
        bytes=size,
        version=int(scalars.get("GGUF.version", 0)),
        architecture=scalars.get("general.architecture"),
        name=scalars.get("general.name"),
        file_type=_int("general.file_type"),
        tensor_count=len(header.tensors),
        tensor_types=dict(counts),
        chat_template=scalars.get(KEY_TEMPLATE),
        bos_id=_int(KEY_BOS),
        eos_id=_int(KEY_EOS),
        eot_id=_int(KEY_EOT),
        add_bos=scalars.get(KEY_ADD_BOS),
        vocab_size=vocab_size,
        special_tokens=special,
        metadata=scalars,
    )


def patch_metadata(
    path: Path | str, updates: dict[str, str | int | bool], remove: tuple[str, ...] = ()
) -> None:
    """Rewrite `path` with some metadata keys set (chat template, EOS/EOT ids…) or removed.

    The other key-value entries, the tensor table and the tensor data are copied byte for byte
    (tensor offsets count from the aligned start of the data, so a header of another length
    changes nothing else). The new file is written beside the old one and renamed over it, so a
    failure leaves the original intact. Integer values are written as uint32 (token ids), strings
    and bools as such; a key that is set keeps its place, a new one is appended.
    """
    import struct

    path = Path(path)
    header = _parse_header(path)
    align = int(header.scalars.get("general.alignment", 32))
    pending = dict(updates)
    entries: list[bytes] = []
    tmp = path.with_name(path.name + ".patching")
    try:
        with open(path, "rb") as src:
            for key, (start, end) in header.kv_spans.items():
                if key in remove:
                    continue
                if key in pending:
                    entries.append(_kv_entry(key, pending.pop(key)))
                    continue
                src.seek(start)
                entries.append(src.read(end - start))
            entries += [_kv_entry(key, value) for key, value in pending.items()]
            src.seek(header.tensor_info[0])
            table = src.read(header.tensor_info[1] - header.tensor_info[0])
            version = int(header.scalars["GGUF.version"])
            tensors = int(header.scalars["GGUF.tensor_count"])
            with open(tmp, "wb") as out:
                out.write(b"GGUF" + struct.pack("<IQQ", version, tensors, len(entries)))
                for entry in entries:
                    out.write(entry)
                out.write(table)
                out.write(b"\0" * (-out.tell() % align))
                src.seek(header.data_start)
                shutil.copyfileobj(src, out, 2**24)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _kv_entry(key: str, value: str | int | bool) -> bytes:
    """One GGUF key-value entry: key, value type, value (uint32 ints, bools, strings)."""
    import struct

    def text(item: str) -> bytes:
        raw = item.encode("utf-8")
        return struct.pack("<Q", len(raw)) + raw

    if isinstance(value, bool):
        body = struct.pack("<I?", 7, value)
    elif isinstance(value, int):
        body = struct.pack("<II", 4, value)
    elif isinstance(value, str):
        body = struct.pack("<I", STRING_TYPE) + text(value)
    else:
        raise TypeError(f"cannot write {type(value).__name__} metadata")
    return text(key) + body
