"""What the machine has to train on: NVIDIA GPUs through NVML (no torch), and CPU slots.

`TUNEGRAPH_FAKE_GPUS` describes a fake inventory for tests and demos on machines without GPUs:
a comma-separated list of memory sizes in GiB, optionally named (`"24,24"` or
`"RTX 4090:24,A6000:48"`), each optionally with the free memory a fake NVML reports (`"24/3.5"`:
24 GiB with 3.5 GiB free, the rest used by other programs; without it all of it is free).
Runs placed on fake GPUs train on the CPU; placement, queueing, refusal and release are real.
`nvml_gpus` takes its readings from a reader function, so tests can feed it NVML figures too.
`TUNEGRAPH_CPU_SLOTS` sets how many CPU runs go at once (default 1).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

GIB = 2**30  # bytes in a GiB: every memory figure of the engine is in GiB


@dataclass
class Gpu:
    """One GPU of the inventory, its memory in GiB (`fake` for TUNEGRAPH_FAKE_GPUS entries)."""

    index: int
    name: str
    total_gib: float
    free_gib: float
    fake: bool = False

    def to_dict(self) -> dict:
        """The GPU as a plain dict."""
        return asdict(self)


def gpus() -> list[Gpu]:
    """The GPUs of this machine (fake ones when TUNEGRAPH_FAKE_GPUS is set)."""
    fake = os.environ.get("TUNEGRAPH_FAKE_GPUS")
    if fake is not None:
        return parse_fake(fake)
    return nvml_gpus()


def parse_fake(text: str) -> list[Gpu]:
    """The fake GPUs a TUNEGRAPH_FAKE_GPUS value describes (`[NAME:]TOTAL[/FREE]`, in GiB),
    indexed from 0."""
    out = []
    for i, item in enumerate(p.strip() for p in text.split(",") if p.strip()):
        name, _, size = item.rpartition(":")
        total, _, free = size.partition("/")
        gib = float(total)
        free_gib = min(gib, float(free)) if free.strip() else gib
        out.append(Gpu(i, name or f"Fake GPU {i}", gib, free_gib, fake=True))
    return out


NvmlReading = tuple[str | bytes, int, int]  # (name, total bytes, free bytes) of one GPU


def nvml_gpus(reader: Callable[[], list[NvmlReading]] | None = None) -> list[Gpu]:
    """NVIDIA GPUs from NVML readings (`reader`, default `read_nvml`); empty without a driver."""
    return [
        Gpu(
            i,
            name.decode() if isinstance(name, bytes) else name,
            round(total / GIB, 2),
            round(free / GIB, 2),
        )
        for i, (name, total, free) in enumerate((reader or read_nvml)())
    ]


def read_nvml() -> list[NvmlReading]:
    """(name, total bytes, free bytes) of each GPU via nvidia-ml-py; empty without a driver."""
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
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            out.append((pynvml.nvmlDeviceGetName(handle), int(mem.total), int(mem.free)))
        return out
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def cpu_slots() -> int:
    """How many CPU runs may go at once (TUNEGRAPH_CPU_SLOTS, at least 1)."""
    return max(1, int(os.environ.get("TUNEGRAPH_CPU_SLOTS", "1")))


def cpu_threads_per_run() -> int:
    """Threads for one CPU run: the cores divided among the slots."""
    return max(1, (os.cpu_count() or 1) // cpu_slots())


def holds_snapshot(
    holds: Iterable[Mapping[str, Any]],
    suspended: Iterable[int] = (),
    cpu_threads: int | None = None,
    name_of: Callable[[str], str] = str,
    found: list[Gpu] | None = None,
) -> dict:
    """GPUs with the VRAM holds on each, suspension and the CPU figures, as plain data.

    `holds` are `{run_id, gpu, gib}` rows (gpu "cpu" for CPU runs); `name_of` names a run;
    `found` defaults to `gpus()`.
    """
    holds = list(holds)
    suspended = set(suspended)
    out = []
    for gpu in gpus() if found is None else found:
        mine = [h for h in holds if str(h["gpu"]) == str(gpu.index)]
        out.append(
            {
                **gpu.to_dict(),
                "held_gib": round(sum(float(h["gib"]) for h in mine), 2),
                "holders": [
                    {"run_id": h["run_id"], "name": name_of(h["run_id"]), "gib": float(h["gib"])}
                    for h in mine
                ],
                "suspended": gpu.index in suspended,
            }
        )
    return {
        "gpus": out,
        "cpu": {
            "cores": os.cpu_count() or 1,
            "slots": cpu_slots(),
            "threads": cpu_threads or cpu_threads_per_run(),
            "runs": [name_of(h["run_id"]) for h in holds if str(h["gpu"]).lower() == "cpu"],
        },
    }
