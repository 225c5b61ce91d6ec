"""The engine set-up's building blocks: finding uv and the base Python, where the tunegraph package
comes from, free space and network-failure checks, and `StepRunner`, which runs one uv/pip step
with its output in the set-up log and a cancel that stops the step's whole process group.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import EngineSetupError, RunCancelled
from engine.hardware import GIB
from engine.paths import SOURCE_ROOT
from engine.setup import bundle as engine_bundle
from engine.setup import interpreters
from engine.setup.streaming import run_streaming

BASE_PYTHON_ENV = "TUNEGRAPH_BASE_PYTHON"  # the Python the engine venv is made from
APP_WHEEL_ENV = "TUNEGRAPH_APP_WHEEL"  # the tunegraph wheel installed into the engine
# beside a frozen app's executable: the relocatable CPython the installer ships, and its wheels
SHIPPED_PYTHON = "python/python.exe" if os.name == "nt" else "python/bin/python3"
FREE_NEEDED = {"cpu": 5 * GIB, "cu126": 15 * GIB, "cu128": 15 * GIB, "cu130": 15 * GIB}
NETWORK_PATTERNS = (
    "failed to fetch",
    "dns error",
    "failed to lookup address",
    "temporary failure in name resolution",
    "name or service not known",
    "network is unreachable",
    "connection refused",
    "tcp connect error",
    "error sending request",
    "could not connect",
    "operation timed out",
    "connection reset",
    "no such host is known",
)


# -- free space, network errors ----------------------------------------------------------------
def free_bytes(folder: Path) -> int:
    """Free bytes on the volume that holds `folder` (or its nearest existing parent)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def check_free_space(folder: Path, needed: int) -> None:
    """Raise EngineSetupError naming the folder and the numbers when there is too little room."""
    free = free_bytes(folder)
    if free < needed:
        raise EngineSetupError(
            f"Not enough free space for the training engine in {folder}: "
            f"{free / GIB:.1f} GB free, {needed / GIB:.0f} GB needed.",
            "Free some space on that drive, or set TUNEGRAPH_ENGINE_DIR to a folder on a "
            "larger one.",
        )


def network_error(output: str) -> str | None:
    """The line of uv/pip output that shows the network was unreachable (the innermost cause),
    or None."""
    found = None
    for line in output.splitlines():
        low = line.lower()
        if any(p in low for p in NETWORK_PATTERNS):
            found = line.strip().removeprefix("cause: ")
    return found


class SetupCancelled(EngineSetupError):
    """The user cancelled the engine set-up."""

    def __init__(self):
        super().__init__("The engine set-up was cancelled; nothing was changed.")


@dataclass
class StepRunner:
    """Runs uv/pip steps: output to the log, cancel kills the step."""

    log_path: Path
    cancel: threading.Event | None
    env: dict = field(default_factory=dict)

    def run(self, cmd: list[str], what: str, extra_env: dict | None = None) -> str:
        """Run one step, its output appended to the log; returns the output, raises on failure."""
        env = {**os.environ, **self.env, **(extra_env or {})}
        lines: list[str] = []
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"\n$ {' '.join(cmd)}\n")
            log.flush()

            def keep(line: str) -> None:
                lines.append(line + "\n")
                log.write(line + "\n")
                log.flush()

            try:  # cancel, Ctrl-C: the step (and what it started) must not outlive us
                returncode, _ = run_streaming(
                    cmd,
                    env=env,
                    on_line=keep,
                    cancel=self.cancel.is_set if self.cancel is not None else None,
                    new_session=True,
                )
            except RunCancelled:
                log.write("cancelled\n")
                raise SetupCancelled() from None
        output = "".join(lines)
        if returncode != 0:
            offline = network_error(output)
            if offline:
                raise EngineSetupError(
                    f"No network: {what} needs to download packages, and the download failed "
                    f"({offline}).",
                    "Use an offline bundle: `tunegraph engine setup --bundle FILE`, or "
                    "“Use offline bundle…” in the set-up dialog.",
                )
            tail = [ln.strip() for ln in output.splitlines() if ln.strip()][-3:]
            raise EngineSetupError(
                f"{what} failed: " + (" ".join(tail) or f"exit code {returncode}"),
                f"The full output is in {self.log_path}.",
            )
        return output


def uv_command() -> list[str] | None:
    """How to run uv: the one shipped beside a frozen app, the PyPI `uv` package's binary, or
    one on PATH; None without uv."""
    if interpreters.frozen():
        shipped = Path(sys.executable).parent / ("uv.exe" if os.name == "nt" else "uv")
        if shipped.is_file():
            return [str(shipped)]
    try:
        import uv

        return [uv.find_uv_bin()]
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        return [found] if found else None


def base_python(python: str | None) -> str:
    """The Python the engine venv is made from: `python`, else this one when it is real Python."""
    if python:
        if not Path(python).is_file():
            raise EngineSetupError(f"{python} does not exist (given as the Python to use).")
        return python
    env = os.environ.get(BASE_PYTHON_ENV)
    if env:
        return base_python(env)
    if interpreters.frozen():
        shipped = Path(sys.executable).parent / SHIPPED_PYTHON
        if shipped.is_file():
            return str(shipped)
        raise EngineSetupError(
            "This app is a packaged executable and cannot make the engine from itself, and no "
            f"Python ships beside it ({shipped} is missing).",
            f"Pass a Python 3.11+ with --python, or set {BASE_PYTHON_ENV}.",
        )
    return sys.executable


def venv_python(venv: Path) -> Path:
    """The Python interpreter of the virtual environment at `venv`."""
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def app_source(app_wheel: str | Path | None, bundle: engine_bundle.Bundle | None) -> Path:
    """The tunegraph package to install: a given wheel, the bundle's, or this checkout."""
    if app_wheel:
        path = Path(app_wheel).expanduser()
        if not path.is_file():
            raise EngineSetupError(f"The app wheel {path} does not exist.")
        return path
    env = os.environ.get(APP_WHEEL_ENV)
    if env:
        return app_source(env, None)
    if interpreters.frozen():
        shipped = sorted((Path(sys.executable).parent / "wheels").glob("tunegraph-*.whl"))
        if shipped and bundle is None:
            return shipped[-1]
    if bundle is not None:
        wheel = bundle.wheel("tunegraph")
        if wheel is None:
            raise EngineSetupError("The bundle holds no tunegraph wheel.")
        return wheel
    root = SOURCE_ROOT
    if (root / "pyproject.toml").is_file() and (root / "engine" / "rundir.py").is_file():
        return root
    raise EngineSetupError(
        "Cannot find the tunegraph package to install into the engine.",
        "Pass the app's wheel with --app-wheel, or use an offline bundle.",
    )


def requires(source: Path) -> tuple[str, list[str]]:
    """(version, requirements) of the tunegraph package to install: a checkout or a wheel."""
    if source.is_dir():
        return engine_bundle.project_requires(source)
    return engine_bundle.wheel_requires(source)


def python_version(python: str) -> str:
    """ "3.11"-style version of another Python interpreter."""
    out = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise EngineSetupError(f"{python} does not run: {out.stderr.strip()[-200:]}")
    return out.stdout.strip()
