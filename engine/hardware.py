"""What the machine has to train on: NVIDIA GPUs through NVML (no torch), and CPU slots.

`TUNEGRAPH_FAKE_GPUS` describes a fake inventory for tests and demos on machines without GPUs:
a comma-separated list of memory sizes in GiB, optionally named (`"24,24"` or `"RTX 4090:24,A6000:48"`).
Runs placed on fake GPUs train on the CPU; placement, queueing, refusal and release are real.
`TUNEGRAPH_CPU_SLOTS` sets how many CPU runs go at once (default 1).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass


@dataclass
class Gpu:
    index: int
    name: str
    total_gib: float
    free_gib: float
    fake: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def gpus() -> list[Gpu]:
    """The GPUs of this machine (fake ones when TUNEGRAPH_FAKE_GPUS is set)."""
    fake = os.environ.get("TUNEGRAPH_FAKE_GPUS")
    if fake is not None:
        return parse_fake(fake)
    return nvml_gpus()


def parse_fake(text: str) -> list[Gpu]:
    out = []
    for i, item in enumerate(p.strip() for p in text.split(",") if p.strip()):
        name, _, size = item.rpartition(":")
        gib = float(size)
        out.append(Gpu(i, name or f"Fake GPU {i}", gib, gib, fake=True))
    return out


def nvml_gpus() -> list[Gpu]:
    """NVIDIA GPUs via nvidia-ml-py; an empty list when there is no driver."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver / no GPU: NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return []
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            out.append(
                Gpu(
                    i,
                    name.decode() if isinstance(name, bytes) else name,
                    round(mem.total / 2**30, 2),
                    round(mem.free / 2**30, 2),
                )
            )
        return out
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def cpu_slots() -> int:
    return max(1, int(os.environ.get("TUNEGRAPH_CPU_SLOTS", "1")))


def cpu_threads_per_run() -> int:
    """Threads for one CPU run: the cores divided among the slots."""
    return max(1, (os.cpu_count() or 1) // cpu_slots())
