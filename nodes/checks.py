"""The sentences the compiler shows for a value it refuses: a SpecError's reason, a dataset file
that cannot be read, a base-model file or folder that cannot be used. Files are checked only once
resolved to an absolute path; a relative one has no graph folder to resolve against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.errors import SpecError


def spec_reason(e: SpecError) -> str:
    """SpecError's sentence without its `field = value:` prefix, plus the value and hint."""
    prefix = f"{e.field} = {e.value!r}: "
    text = e.message[len(prefix) :] if e.message.startswith(prefix) else e.message
    if e.value not in ("", None, [], {}):
        text += f" (got {e.value!r})"
    return f"{text}. {e.hint}" if e.hint else text


def file_problem(value: Any) -> str:
    """Why a resolved dataset path cannot be read ("" when it can, or cannot be told here)."""
    if not isinstance(value, str) or not value.strip() or not Path(value).is_absolute():
        return ""
    path = Path(value)
    if path.is_dir():
        return f"{path} is a folder; choose a file in it"
    if not path.is_file():
        return f"the file {path} does not exist; check the path or choose the file again"
    return ""


def document_problem(value: Any) -> str:
    """Why a Generate node's document cannot be read ("" when it can): a missing file, or a PDF
    whose structure pypdf cannot open (its text is read by the data step's worker)."""
    problem = file_problem(value)
    if problem or not isinstance(value, str) or Path(value).suffix.lower() != ".pdf":
        return problem
    if not Path(value).is_absolute():
        return ""
    try:
        from pypdf import PdfReader

        pages = len(PdfReader(value).pages)
    except Exception as err:  # noqa: BLE001 - pypdf raises many kinds for a broken file
        return f"{Path(value).name} cannot be read as a PDF ({type(err).__name__}: {err})"
    return "" if pages else f"{Path(value).name} has no pages"


def model_problem(value: Any) -> str:
    """Why a resolved base-model source naming a local file or folder cannot be used ("" when it
    can, or is a hub id, a builtin or a GGUF shipped in a package)."""
    if not isinstance(value, str):
        return ""
    text = value.strip()
    if text.startswith("gguf:"):
        location = text[len("gguf:") :]
        tail = location.replace("\\", "/").rsplit("/", 1)[-1]
        if tail.startswith("pypi:") or not Path(location).is_absolute():
            return ""
        if not Path(location).is_file():
            return f"the GGUF file {location} does not exist; choose an existing .gguf file"
        return ""
    if text.startswith("builtin:") or not Path(text).is_absolute():
        return ""
    folder = Path(text)
    if not folder.is_dir():
        return f"the model folder {folder} does not exist; check the path or choose the folder"
    if not (folder / "config.json").is_file():
        return (
            f"the folder {folder} has no config.json, so it is not a Hugging Face model "
            "folder; pick the folder that holds config.json and the weights"
        )
    return ""
