"""Where Tunegraph keeps its data: `TUNEGRAPH_HOME`, the folder chosen in Settings (remembered in a
small pointer file in the user's config folder, since it cannot live inside itself, and used from
the next start), or the platform's user data directory."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from pathlib import Path

import platformdirs

from engine.errors import SettingsError

SOURCE_ROOT = Path(__file__).resolve().parents[1]  # the folder holding engine/, nodes/, app/


def data_dir() -> Path:
    """The data directory (created on first use)."""
    home = os.environ.get("TUNEGRAPH_HOME")
    if home:
        path = Path(home).expanduser()
    else:
        path = chosen_data_dir() or Path(platformdirs.user_data_dir("Tunegraph", False))
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def runs_dir() -> Path:
    """The folder of run directories (created on first use)."""
    path = data_dir() / "runs"
    path.mkdir(exist_ok=True)
    return path


def library_dir() -> Path:
    """The folder of exported artifacts (created on first use)."""
    path = data_dir() / "library"
    path.mkdir(exist_ok=True)
    return path


def evals_dir() -> Path:
    """The folder of eval jobs, one `<eval_id>/` each (created on first use)."""
    path = data_dir() / "evals"
    path.mkdir(exist_ok=True)
    return path


def groups_dir() -> Path:
    """The folder of group processes (runs sharing one base), one `<group_id>/` each (created
    on first use)."""
    path = data_dir() / "groups"
    path.mkdir(exist_ok=True)
    return path


def models_dir() -> Path:
    """The folder of downloaded and built-in base models (created on first use)."""
    path = data_dir() / "models"
    path.mkdir(exist_ok=True)
    return path


def db_path() -> Path:
    """The SQLite store's file."""
    return data_dir() / "tunegraph.db"


def sweeps_db() -> Path:
    """Optuna's SQLite storage of the sweeps' studies, beside the index (engine.sweep)."""
    return data_dir() / "sweeps.db"


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes, as hex (artifacts, bundles, datasets)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def new_run_id() -> str:
    """A sortable, unique run id: creation time in UTC plus random hex (e.g. 20261122-190102-3fa9c1)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


# -- the data directory's location --------------------------------------------------------------
def location_file() -> Path:
    """Where a chosen data directory is remembered (`TUNEGRAPH_CONFIG_DIR` overrides, for tests)."""
    override = os.environ.get("TUNEGRAPH_CONFIG_DIR")
    if override:
        return Path(override).expanduser() / "location.json"
    return Path(platformdirs.user_config_dir("Tunegraph", False)) / "location.json"


def chosen_data_dir() -> Path | None:
    """The data directory the user chose in Settings, if any."""
    try:
        text = json.loads(location_file().read_text(encoding="utf-8")).get("data_dir")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(text).expanduser() if text else None


def choose_data_dir(path: Path | str | None) -> None:
    """Remember `path` as the data directory from the next start (None forgets the choice)."""
    file = location_file()
    if path is None:
        file.unlink(missing_ok=True)
        return
    target = Path(path).expanduser()
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"cannot use {target} as the data directory: {exc.strerror}") from exc
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps({"data_dir": str(target.resolve())}) + "\n", encoding="utf-8")
