"""The user's settings, Qt-free: `<data dir>/settings.json` (sorted keys, a format version).

Holds offline mode, the default GPU policy, CPU threads per CPU run, the theme, the suspended
GPUs, the Ray address and whether a new model's speed is measured before its first run. Never a
secret: the Hugging Face token lives only in the OS keyring (engine.secrets).

The data directory itself cannot be stored inside the data directory: its chosen location is kept
by `engine.paths` (`choose_data_dir`, `chosen_data_dir`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from engine import paths
from engine.errors import ModelError, SettingsError

FORMAT_VERSION = 1
FILE_NAME = "settings.json"
GPU_POLICIES = ("queue", "refuse")
THEMES = ("dark", "light")


@dataclass
class Settings:
    """What the Settings dialog edits (every field has a safe default)."""

    offline: bool = False  # workers get HF_HUB_OFFLINE=1; hub ids not in the cache are refused
    gpu_policy: str = "queue"  # when the GPUs are busy: "queue" the run, or "refuse" it
    cpu_threads: int = 0  # threads per CPU run; 0 = the cores divided among the CPU slots
    theme: str = "dark"
    suspended_gpus: list[int] = field(default_factory=list)  # no new runs are placed on these
    # a Ray cluster for Fine-Tune nodes whose target is "cluster" (TUNEGRAPH_RAY_ADDRESS overrides)
    ray_address: str = ""
    # before a model's first run on a device, a short real run measures its speed (engine.plan.probe)
    speed_check: bool = True
    share_base: bool = True  # runs of one base that start together train on one copy of it
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.gpu_policy not in GPU_POLICIES:
            raise SettingsError(
                f"gpu_policy must be one of {', '.join(GPU_POLICIES)}, not {self.gpu_policy!r}"
            )
        if self.theme not in THEMES:
            raise SettingsError(f"theme must be one of {', '.join(THEMES)}, not {self.theme!r}")
        if not isinstance(self.cpu_threads, int) or self.cpu_threads < 0:
            raise SettingsError(
                f"cpu_threads must be 0 (automatic) or more, not {self.cpu_threads!r}"
            )
        self.suspended_gpus = sorted({int(g) for g in self.suspended_gpus})
        if not isinstance(self.ray_address, str):
            raise SettingsError(f"ray_address must be text, not {self.ray_address!r}")
        self.ray_address = self.ray_address.strip()

    def to_dict(self) -> dict:
        """The settings as a plain dict, as saved."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Settings:
        """Build from saved JSON, ignoring unknown keys (a newer file read by an older app)."""
        known = {f.name for f in fields(cls)}
        data = migrate(dict(data))
        return cls(**{k: v for k, v in data.items() if k in known})


def migrate(data: dict) -> dict:
    """Bring saved settings up to FORMAT_VERSION (version 1 is the first; nothing to do yet)."""
    data["format_version"] = FORMAT_VERSION
    return data


def settings_path() -> Path:
    """The settings file inside the data directory."""
    return paths.data_dir() / FILE_NAME


def load() -> Settings:
    """The saved settings, or the defaults when there is no file or it cannot be read."""
    path = settings_path()
    try:
        return Settings.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return Settings()
    except (ValueError, TypeError, SettingsError):
        return Settings()  # a damaged file falls back to defaults rather than stopping the app


def load_or_defaults() -> Settings:
    """The user's settings; defaults when the file is unreadable for any reason (the supervisor
    must never stop its queue over them)."""
    try:
        return load()
    except Exception:
        return Settings()


def save(settings: Settings) -> Path:
    """Write the settings atomically; returns the file."""
    path = settings_path()
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(
        json.dumps(settings.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    tmp.replace(path)
    return path


# -- offline mode -------------------------------------------------------------------------------
def worker_env(env: dict[str, str] | None = None, settings: Settings | None = None) -> dict:
    """The environment for a worker process: HF_HUB_OFFLINE=1 (and TRANSFORMERS_OFFLINE) when the
    user chose offline mode, and the CPU thread count when one is set."""
    env = dict(os.environ if env is None else env)
    settings = settings or load()
    if settings.offline:
        env["HF_HUB_OFFLINE"] = "1"
        env["TRANSFORMERS_OFFLINE"] = "1"
    if settings.cpu_threads:
        env["OMP_NUM_THREADS"] = str(settings.cpu_threads)
    return env


def is_offline(settings: Settings | None = None) -> bool:
    """Offline by the setting or by HF_HUB_OFFLINE in this process's environment."""
    settings = settings or load()
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return settings.offline or flag in ("1", "true", "yes", "on")


def check_hub_id(
    repo_id: str, revision: str | None = None, settings: Settings | None = None
) -> bool:
    """In offline mode, refuse a hub model id whose files are not in the local cache.

    Returns True when the model must be loaded from the local cache only (offline mode is on and
    its config.json is cached: the loaders then get `local_files_only=True`, so no request is
    tried even when this process lacks HF_HUB_OFFLINE), False when online. Raises ModelError
    naming the id and what to do when offline mode is on and the model is not cached.
    """
    if not is_offline(settings):
        return False
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    if isinstance(cached, str):
        return True
    raise not_cached_offline(repo_id)


def not_cached_offline(repo_id: str) -> ModelError:
    """The sentence for a hub model that offline mode keeps from being downloaded."""
    return ModelError(
        f"Offline mode is on and {repo_id} is not in the Hugging Face cache.",
        "Turn offline mode off in Settings to download it, or pick a local model folder.",
    )
