"""Which torch build fits this machine: `choose_flavour(nvidia_smi_csv)`.

Reads `nvidia-smi --query-gpu=driver_version,compute_cap --format=csv,noheader` and picks `cpu`,
`cu126`, `cu128` or `cu130` with a sentence saying why (shared/NOTES.md "Packaging facts": CUDA 13
wheels need driver >= 580, CUDA 12 >= 525.60.13 on Linux / 528.33 on Windows; cu128/cu130 builds
start at compute capability 7.5, older GPUs get cu126; with several GPUs the lowest capability
decides). `TUNEGRAPH_NVIDIA_SMI_OUTPUT=FILE` replays a recorded output (tests, support cases).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from engine.errors import EngineSetupError
from engine.setup import bundle as engine_bundle
from engine.setup.bundle import FLAVOURS

SMI_ENV = "TUNEGRAPH_NVIDIA_SMI_OUTPUT"  # a recorded nvidia-smi output (tests, support cases)
SMI_QUERY = ["nvidia-smi", "--query-gpu=driver_version,compute_cap", "--format=csv,noheader"]
TORCH_INDEX = "https://download.pytorch.org/whl/{flavour}"
DRIVER_CUDA13 = (580,)
DRIVER_CUDA12 = {"linux": (525, 60, 13), "windows": (528, 33)}
CC_NEW_BUILDS = (7, 5)  # cu128/cu130 wheels
CC_OLDEST = (5, 0)  # cu126 wheels


@dataclass(frozen=True)
class Gpu:
    """One NVIDIA GPU as nvidia-smi reports it: driver version and compute capability."""

    driver: str
    compute_cap: str


@dataclass(frozen=True)
class Flavour:
    """A torch build for this machine: `name` in FLAVOURS, `reason` a sentence for the user."""

    name: str
    reason: str
    gpus: tuple[Gpu, ...] = ()

    @property
    def cuda(self) -> bool:
        """Whether this build uses CUDA."""
        return self.name != "cpu"

    @property
    def index_url(self) -> str:
        """The PyTorch wheel index of this flavour."""
        return TORCH_INDEX.format(flavour=self.name)

    @property
    def packages(self) -> str:
        """What gets installed, in words."""
        extra = ", bitsandbytes (4-bit QLoRA)" if self.cuda else ""
        return (
            f"torch ({self.name}){extra}, transformers, peft, llama-cpp-python (portable CPU build)"
        )


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def parse_smi(text: str | None) -> list[Gpu]:
    """The GPUs in an nvidia-smi CSV (lines of `driver, compute_cap`); unreadable lines skipped."""
    gpus = []
    for line in (text or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2:
            continue
        driver, cap = parts
        if re.fullmatch(r"\d+(\.\d+){1,3}", driver) and re.fullmatch(r"\d+\.\d+", cap):
            gpus.append(Gpu(driver, cap))
    return gpus


def choose_flavour(nvidia_smi_csv: str | None, platform: str | None = None) -> Flavour:
    """The torch flavour for the GPUs in this nvidia-smi output (None or junk: cpu)."""
    plat = engine_bundle.platform_name(platform)
    gpus = parse_smi(nvidia_smi_csv)
    if not gpus:
        return Flavour(
            "cpu", "No NVIDIA GPU was found (nvidia-smi gave no GPU), so training runs on the CPU."
        )
    driver = min((g.driver for g in gpus), key=_version)
    low = min(gpus, key=lambda g: _version(g.compute_cap))
    cc = _version(low.compute_cap)
    if len(gpus) > 1:  # one driver for all; the oldest GPU decides what builds can run
        which = f"{len(gpus)} GPUs (driver {driver}, lowest compute capability {low.compute_cap})"
    else:
        which = f"The GPU (driver {driver}, compute capability {low.compute_cap})"
    need12 = DRIVER_CUDA12.get(plat, DRIVER_CUDA12["linux"])
    need12_text = ".".join(map(str, need12))
    if cc < CC_OLDEST:
        return Flavour(
            "cpu",
            f"{which} is older than any current PyTorch CUDA build supports "
            f"(compute capability {'.'.join(map(str, CC_OLDEST))} or newer), so training runs on "
            "the CPU.",
            tuple(gpus),
        )
    if _version(driver) < need12:
        return Flavour(
            "cpu",
            f"{which}: the driver is older than {need12_text}, which CUDA 12 builds of PyTorch "
            f"need, so training would run on the CPU. Update the NVIDIA driver to use the GPU "
            "(then set up the engine again).",
            tuple(gpus),
        )
    if cc < CC_NEW_BUILDS:
        return Flavour(
            "cu126",
            f"{which}: CUDA 12.8 and 13 builds of PyTorch start at compute capability 7.5, so "
            "the CUDA 12.6 build (cu126) is used.",
            tuple(gpus),
        )
    if _version(driver) >= DRIVER_CUDA13:
        return Flavour(
            "cu130",
            f"{which}: the driver supports CUDA 13 (580 or newer), so the CUDA 13.0 build "
            "(cu130) is used.",
            tuple(gpus),
        )
    return Flavour(
        "cu128",
        f"{which}: the driver supports CUDA 12 ({need12_text} or newer) but not CUDA 13 "
        "(needs 580), so the CUDA 12.8 build (cu128) is used.",
        tuple(gpus),
    )


def nvidia_smi_output() -> str | None:
    """nvidia-smi's CSV on this machine (or the file named by TUNEGRAPH_NVIDIA_SMI_OUTPUT); None
    when there is no nvidia-smi or it fails."""
    recorded = os.environ.get(SMI_ENV)
    if recorded:
        try:
            return Path(recorded).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        result = subprocess.run(
            [exe, *SMI_QUERY[1:]], capture_output=True, text=True, timeout=15, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def detect_flavour() -> Flavour:
    """choose_flavour() for this machine."""
    return choose_flavour(nvidia_smi_output())


def flavour_named(name: str) -> Flavour:
    """A flavour the user chose by name (auto: the detected one)."""
    if name == "auto":
        return detect_flavour()
    if name not in FLAVOURS:
        raise EngineSetupError(f"Unknown engine flavour {name!r}.", "Choose " + ", ".join(FLAVOURS))
    detected = detect_flavour()
    if detected.name == name:
        return detected
    return Flavour(name, f"Chosen by hand (detected: {detected.name}).", detected.gpus)
