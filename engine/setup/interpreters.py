"""Which Python runs what: the app's own light interpreter, and the engine's (the one with torch).

The desktop app may be a frozen executable without torch (shared/NOTES.md "Packaging facts"), so
every process that needs torch, transformers or llama-cpp runs under `engine_python()`, and every
process that needs neither (the supervisor) under `app_entry_command()`. In a development checkout both are the venv's `sys.executable`.

`engine_python()` looks, in order, at `TUNEGRAPH_ENGINE_PYTHON`, the environment recorded by
`tunegraph engine setup` (`<engine dir>/engine.json`), and the running interpreter when it is not
frozen and torch is installed in it. It never imports torch.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

from engine.errors import EngineMissingError
from engine.rundir import entry_command

ENV_PYTHON = "TUNEGRAPH_ENGINE_PYTHON"
ENV_DIR = "TUNEGRAPH_ENGINE_DIR"
RECORD_FILE = "engine.json"


def frozen() -> bool:
    """True inside a PyInstaller/Nuitka executable (sys.executable is the app, not Python)."""
    return bool(getattr(sys, "frozen", False))


def app_entry_command(name: str, *args: str) -> list[str]:
    """The command line that runs the engine entry point `name` (engine.rundir) with the app's own
    interpreter (in a frozen app, its executable runs `-m MODULE`)."""
    python = console_executable() if frozen() else sys.executable
    return entry_command(python, name, *args)


def console_executable() -> str:
    """The frozen app's console executable: on Windows the windowed `tunegraph-gui.exe` has no
    stdout for its children to inherit, so CLI helpers run the console `tunegraph.exe` beside it."""
    here = Path(sys.executable)
    if os.name == "nt" and here.stem.lower() != "tunegraph":
        console = here.with_name("tunegraph.exe")
        if console.is_file():
            return str(console)
    return str(here)


def engine_dir() -> Path:
    """Where the engine environment lives (not created here).

    `TUNEGRAPH_ENGINE_DIR` wins; with `TUNEGRAPH_HOME` set (tests, portable installs) it is
    `$TUNEGRAPH_HOME/engine`; else `<user data dir>/Tunegraph/engine` (on Windows
    `%LOCALAPPDATA%\\Tunegraph\\engine`), outside the install folder so upgrades and uninstalls
    keep it.
    """
    override = os.environ.get(ENV_DIR)
    if override:
        return Path(override).expanduser()
    home = os.environ.get("TUNEGRAPH_HOME")
    if home:
        return Path(home).expanduser() / "engine"
    import platformdirs

    return Path(platformdirs.user_data_dir("Tunegraph", False)) / "engine"


def record_path(folder: Path | None = None) -> Path:
    """Where the engine set-up record lives (in `folder`, default the engine folder)."""
    return Path(folder or engine_dir()) / RECORD_FILE


def read_record(folder: Path | None = None) -> dict | None:
    """What `tunegraph engine setup` recorded (flavour, python, torch version, …), or None."""
    try:
        data = json.loads(record_path(folder).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_record(record: dict, folder: Path | None = None) -> Path:
    """Save the engine set-up record (atomic write); returns its path."""
    path = record_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _resolve() -> tuple[str | None, str, str]:
    """(python or None, source, reason when None)."""
    override = os.environ.get(ENV_PYTHON)
    if override:
        if Path(override).is_file():
            return override, "env", ""
        return None, "env", f"{ENV_PYTHON}={override} is not a file"
    record = read_record()
    if record and record.get("python"):
        if Path(record["python"]).is_file():
            return record["python"], "setup", ""
        reason = f"the engine recorded in {record_path()} is gone ({record['python']})"
    else:
        reason = f"no engine has been set up in {engine_dir()}"
    if not frozen() and importlib.util.find_spec("torch") is not None:
        return sys.executable, "self", ""
    return None, "none", reason


def engine_python() -> str:
    """The interpreter that has torch; raises EngineMissingError when there is none."""
    python, _, reason = _resolve()
    if python is None:
        raise EngineMissingError(f"The training engine is not set up: {reason}.")
    return python


PROBE = (
    "import importlib.util, importlib.metadata as m, json\n"
    "ok = importlib.util.find_spec('torch') is not None\n"
    "print(json.dumps({'torch': m.version('torch') if ok else None}))"
)


def probe(python: str, timeout: float = 30.0) -> dict:
    """Ask `python` (without importing torch) whether it has torch: {"torch": version or None}."""
    import subprocess

    try:
        out = subprocess.run(
            [python, "-c", PROBE], capture_output=True, text=True, timeout=timeout, check=False
        )
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return {"torch": None}


def engine_status(check: bool = True) -> dict:
    """{ready, python, source, flavour, torch, llama_cpp, engine_dir, set_up_at, reason}; never
    imports torch here.

    `source` is `env` (TUNEGRAPH_ENGINE_PYTHON), `setup` (tunegraph engine setup), `self` (this
    interpreter has torch) or `none`. With `check`, a Python named by TUNEGRAPH_ENGINE_PYTHON is
    asked (in a subprocess) whether it has torch; one without it is not ready.
    """
    python, source, reason = _resolve()
    record = read_record() if source == "setup" else None
    torch_version = (record or {}).get("torch")
    if source == "self":
        from importlib.metadata import PackageNotFoundError, version

        try:
            torch_version = version("torch")
        except PackageNotFoundError:
            torch_version = None
    elif source == "env" and python and check:
        torch_version = probe(python).get("torch")
        if torch_version is None:
            reason = f"{ENV_PYTHON}={python} has no torch installed"
            python = None
    flavour = (record or {}).get("flavour")
    if flavour is None and torch_version and "+" in torch_version:
        flavour = torch_version.split("+", 1)[1]  # e.g. 2.13.0+cpu, 2.11.0+cu130
    return {
        "ready": python is not None,
        "python": python,
        "source": source,
        "flavour": flavour,
        "torch": torch_version,
        "llama_cpp": (record or {}).get("llama_cpp"),
        "engine_dir": str(engine_dir()),
        "set_up_at": (record or {}).get("set_up_at"),
        "reason": None if python else reason,
    }


def same_install(python: str) -> bool:
    """True when `python` is this very interpreter (so this checkout's modules are its modules)."""
    try:
        return Path(python).resolve() == Path(sys.executable).resolve()
    except OSError:
        return False
