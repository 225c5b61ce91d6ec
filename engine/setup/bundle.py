"""The air-gapped engine bundle and the engine's requirement list.

A bundle is a `.tar` (or the folder it unpacks to) holding `manifest.json` and wheels, built by
`packaging/build_bundle.py`. The manifest names the flavour, Python version and platform it was
built for and every wheel with its sha256; `open_bundle` checks all of that before anything is
installed, so a wrong or damaged bundle fails with a sentence that says which part is wrong.

The engine's requirements are the tunegraph package's own (from its wheel's METADATA or the
repository's pyproject.toml) minus the GUI-only packages: the engine environment never needs Qt.
"""

from __future__ import annotations

import json
import re
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import EngineSetupError
from engine.paths import sha256_file

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
FLAVOURS = ("cpu", "cu126", "cu128", "cu130")
# Qt and the canvas belong to the GUI, which carries its own copies.
APP_ONLY = {"pyside6-essentials", "pyside6", "nodegraphqt", "pyqtgraph"}
# llama-cpp-python's `server` extra (the `chat` extra asks for it): what `tunegraph serve` runs on
SERVER_PACKAGES = ("fastapi", "uvicorn", "sse-starlette", "starlette-context", "pydantic-settings")


def platform_name(plat: str | None = None) -> str:
    """`linux`, `windows` or `macos` for a sys.platform value."""
    plat = plat or sys.platform
    if plat.startswith("win"):
        return "windows"
    if plat == "darwin":
        return "macos"
    return "linux"


def canonical(name: str) -> str:
    """A distribution name normalised as PEP 503 does (`Foo_Bar.baz` → `foo-bar-baz`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> str:
    """The canonical distribution name a requirement string starts with, or ""."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    return canonical(match.group(1)) if match else ""


def pinned(req: str, version: str) -> str:
    """`req` pinned to `version` with its extras kept (`llama-cpp-python[server]>=0.3,<0.4`, 0.3.16
    → `llama-cpp-python[server]==0.3.16`), so pip also fetches what the extras need."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?", req)
    if not match:
        raise ValueError(f"not a requirement: {req!r}")
    extras = (match.group(2) or "").replace(" ", "")
    return f"{match.group(1)}{extras}=={version}"


def without_extras(req: str) -> str:
    """`req` without its extras (`llama-cpp-python[server]>=0.3` → `llama-cpp-python>=0.3`)."""
    return re.sub(r"\[[^\]]*\]", "", req, count=1)


def missing_wheels(files: list[str], names: tuple[str, ...] | list[str]) -> list[str]:
    """The distributions of `names` that no wheel file name in `files` is for."""
    have = {canonical(Path(f).name.split("-")[0]) for f in files}
    return [n for n in names if canonical(n) not in have]


def _extra(req: str) -> str | None:
    match = re.search(r"""extra\s*==\s*['"]([^'"]+)['"]""", req)
    return match.group(1) if match else None


def engine_requirements(requires: list[str], flavour: str) -> dict[str, list[str]]:
    """Split tunegraph's Requires-Dist into what the engine installs, by step.

    Returns {"torch": [...], "engine": [...], "llama": [...]}: torch alone (installed first, from
    the flavour's index), the other base dependencies minus the GUI ones plus the `gpu` extra on
    CUDA flavours, and the `chat` extra (llama-cpp-python).
    """
    out: dict[str, list[str]] = {"torch": [], "engine": [], "llama": []}
    for req in requires:
        name, extra = requirement_name(req), _extra(req)
        if name in APP_ONLY:
            continue
        if extra is None:
            out["torch" if name == "torch" else "engine"].append(req)
        elif extra == "gpu" and flavour != "cpu":
            out["engine"].append(req.split(";")[0].strip())
        elif extra == "chat":
            out["llama"].append(req.split(";")[0].strip())
    return out


def wheel_requires(wheel: Path) -> tuple[str, list[str]]:
    """(version, Requires-Dist lines) read from a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(meta).decode("utf-8")
    version = re.search(r"^Version:\s*(\S+)", text, re.M)
    requires = re.findall(r"^Requires-Dist:\s*(.+)$", text, re.M)
    return (version.group(1) if version else ""), [r.strip() for r in requires]


def project_requires(root: Path) -> tuple[str, list[str]]:
    """(version, requirements with extras as markers) from a checkout's pyproject.toml."""
    import tomllib

    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requires = list(project.get("dependencies", []))
    for extra, reqs in project.get("optional-dependencies", {}).items():
        requires += [f'{r}; extra == "{extra}"' for r in reqs]
    return project.get("version", ""), requires


@dataclass
class Bundle:
    """A verified bundle: its folder (wheels beside manifest.json) and manifest."""

    folder: Path
    manifest: dict

    def wheel(self, name: str) -> Path | None:
        """The bundled wheel of distribution `name`, if any."""
        for entry in self.manifest["wheels"]:
            if canonical(entry["file"].split("-")[0]) == canonical(name):
                return self.folder / entry["file"]
        return None

    @property
    def serves(self) -> bool:
        """True when llama-cpp-python's server packages are bundled (`tunegraph serve` works)."""
        files = [entry["file"] for entry in self.manifest["wheels"]]
        return not missing_wheels(files, SERVER_PACKAGES)

    @property
    def flavour(self) -> str:
        """The torch flavour the bundle's wheels were built for (e.g. cu128, cpu)."""
        return self.manifest["flavour"]


def _find_manifest(folder: Path) -> Path | None:
    if (folder / MANIFEST).is_file():
        return folder
    subs = [p for p in folder.iterdir() if p.is_dir() and (p / MANIFEST).is_file()]
    return subs[0] if len(subs) == 1 else None


def unpack(path: Path, into: Path) -> Path:
    """The folder holding the bundle's manifest: `path` itself, or the tar unpacked into `into`."""
    path = Path(path).expanduser()
    if not path.exists():
        raise EngineSetupError(f"The offline bundle {path} does not exist.")
    if path.is_dir():
        folder = _find_manifest(path)
        if folder is None:
            raise EngineSetupError(
                f"{path} is not an engine bundle: it has no {MANIFEST}.",
                "Pick the .tar made by packaging/build_bundle.py, or the folder it unpacks to.",
            )
        return folder
    if not tarfile.is_tarfile(path):
        raise EngineSetupError(
            f"{path} is not an engine bundle (not a tar archive).",
            "Pick the tunegraph-engine-….tar made by packaging/build_bundle.py.",
        )
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path) as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 (Debian 12 ships 3.11.2)
            try:
                tar.extractall(into, filter="data")
            except tarfile.FilterError as err:
                raise EngineSetupError(
                    f"{path} is not a safe engine bundle: {err}.",
                    "Rebuild it with packaging/build_bundle.py.",
                ) from None
        else:
            _refuse_unsafe_members(tar, path)
            tar.extractall(into)  # noqa: S202 - every member was checked just above
    folder = _find_manifest(into)
    if folder is None:
        raise EngineSetupError(f"{path} is not an engine bundle: it has no {MANIFEST}.")
    return folder


def peek_manifest(path: Path) -> dict | None:
    """The manifest inside a bundle .tar without unpacking it (None if it has none)."""
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if Path(member.name).name == MANIFEST and member.isfile():
                    return json.loads(tar.extractfile(member).read().decode("utf-8"))
    except (OSError, ValueError, tarfile.TarError):
        return None
    return None


def check_target(
    manifest: dict, flavour: str, python_version: str, platform: str, where: Path | str
) -> None:
    """Raise when the manifest was made for another flavour, Python version or platform."""
    try:
        built = (manifest["flavour"], manifest["python_version"], manifest["platform"])
        manifest["wheels"]
    except (KeyError, TypeError) as err:
        raise EngineSetupError(
            f"The bundle's {MANIFEST} in {where} is unreadable (no {err})."
        ) from None
    wanted = (flavour, python_version, platform)
    labels = ("flavour", "Python version", "platform")
    for label, have, want in zip(labels, built, wanted, strict=True):
        if have != want:
            raise EngineSetupError(
                f"This bundle was built for {label} {have}, but this set-up needs {want} "
                f"(bundle: {built[0]}, Python {built[1]}, {built[2]}).",
                f"Build one with `python packaging/build_bundle.py --flavour {flavour} "
                f"--python-version {python_version} --platform {platform}`"
                + (f", or choose the flavour {have}." if label == "flavour" else "."),
            )


def verify(folder: Path, flavour: str, python_version: str, platform: str) -> Bundle:
    """Check the manifest against what is being set up and every wheel against its sha256."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise EngineSetupError(
            f"The bundle's {MANIFEST} in {folder} is unreadable ({err})."
        ) from None
    check_target(manifest, flavour, python_version, platform, folder)
    for entry in manifest["wheels"]:
        path = folder / entry["file"]
        if not path.is_file():
            raise EngineSetupError(
                f"The bundle is incomplete: {entry['file']} is missing from {folder}."
            )
        if sha256_file(path) != entry["sha256"]:
            raise EngineSetupError(
                f"The bundle is damaged: {entry['file']} does not match its sha256 in {MANIFEST}.",
                "Copy the bundle again (the transfer may have been cut short).",
            )
    return Bundle(folder, manifest)


def write_manifest(folder: Path, **fields: Any) -> dict:
    """Write manifest.json listing every wheel in `folder` with its size and sha256."""
    wheels = [
        {"file": p.name, "bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.glob("*.whl"))
    ]
    manifest = {"format": MANIFEST_FORMAT, **fields, "wheels": wheels}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    return manifest


def _refuse_unsafe_members(tar: tarfile.TarFile, path: Path) -> None:
    """What the "data" filter refuses, for Pythons without it: absolute or `..` paths, links
    and device files."""
    for member in tar.getmembers():
        name = Path(member.name)
        unsafe = name.is_absolute() or ".." in name.parts
        if unsafe or not (member.isfile() or member.isdir()):
            raise EngineSetupError(
                f"{path} is not a safe engine bundle: it holds {member.name!r}.",
                "Rebuild it with packaging/build_bundle.py.",
            )
