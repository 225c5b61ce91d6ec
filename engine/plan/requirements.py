"""Optional packages a run needs, checked where it will train, before it is queued.

The estimate path (engine.plan.report) runs in the training engine's Python, where the worker
will run, so a tracker chosen in the Training config (`report_to`) whose package is missing, or
W&B without an account set up, is one sentence naming the pip install before the run is queued,
not a failure minutes into it. The worker checks again (engine.training.tracking).
"""

from __future__ import annotations

import importlib.util
import netrc
import os
from urllib.parse import urlparse

from engine import settings
from engine.errors import SpecError
from engine.spec import JobSpec

# tracker -> (module to import, what to install)
TRACKER_PACKAGES = {
    "tensorboard": ("tensorboard", "pip install 'tunegraph[tracking]' (or tensorboard)"),
    "mlflow": ("mlflow", "pip install 'tunegraph[tracking]' (or mlflow)"),
    "wandb": ("wandb", "pip install wandb"),
}


def wandb_configured(env: dict[str, str] | None = None) -> bool:
    """True when W&B can log: an API key in WANDB_API_KEY or in ~/.netrc (`wandb login`), or
    W&B's own offline/disabled mode, or Tunegraph's offline mode (which makes W&B log offline)."""
    env = dict(os.environ if env is None else env)
    if env.get("WANDB_API_KEY") or env.get("WANDB_MODE", "").lower() in ("offline", "disabled"):
        return True
    if settings.is_offline():
        return True
    host = urlparse(env.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or ""
    try:
        return netrc.netrc(env.get("NETRC") or None).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def check_tracking(spec: JobSpec) -> None:
    """SpecError on training.report_to when its package is missing here, or W&B is not set up."""
    choice = spec.training.report_to
    if choice == "none":
        return
    module, install = TRACKER_PACKAGES[choice]
    if importlib.util.find_spec(module) is None:
        raise SpecError(
            "training.report_to",
            choice,
            f"the {module} package is not installed in the training engine",
            f"Install it with {install}, or set report_to to none.",
        )
    if choice == "wandb" and not wandb_configured():
        raise SpecError(
            "training.report_to",
            choice,
            "Weights & Biases is not set up on this machine",
            "Run `wandb login` (or set WANDB_API_KEY), turn on offline mode, or pick another "
            "tracker.",
        )


def check_requirements(spec: JobSpec) -> None:
    """Every optional-package check of a spec (today: its experiment tracker)."""
    check_tracking(spec)
