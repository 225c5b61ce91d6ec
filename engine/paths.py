"""Where Tunegraph keeps its data: `TUNEGRAPH_HOME` or the platform's user data directory."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import platformdirs


def data_dir() -> Path:
    """The data directory (created on first use)."""
    home = os.environ.get("TUNEGRAPH_HOME")
    if home:
        path = Path(home).expanduser()
    else:
        from engine.settings import chosen_data_dir  # the folder picked in Settings, if any

        path = chosen_data_dir() or Path(platformdirs.user_data_dir("Tunegraph", False))
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def runs_dir() -> Path:
    path = data_dir() / "runs"
    path.mkdir(exist_ok=True)
    return path


def library_dir() -> Path:
    path = data_dir() / "library"
    path.mkdir(exist_ok=True)
    return path


def models_dir() -> Path:
    path = data_dir() / "models"
    path.mkdir(exist_ok=True)
    return path


def db_path() -> Path:
    return data_dir() / "tunegraph.db"


def new_run_id() -> str:
    """A sortable, unique run id: creation time in UTC plus random hex (e.g. 20261122-190102-3fa9c1)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)
