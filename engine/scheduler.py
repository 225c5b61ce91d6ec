"""Placement of runs on GPUs by VRAM holds; a pure function of the inventory and current holds.

A run holds its estimated peak on each GPU it uses while it lives. It is placed when enough GPUs
have that much unheld memory (within 90% of their size), waits when they might later, and is
refused when no GPU could ever hold it even in 4-bit. With no GPU, runs go to CPU slots.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.estimate import HEADROOM
from engine.hardware import Gpu


@dataclass
class Placement:
    device: str  # "cuda" | "cpu"
    gpus: list[int]
    hold_gib: float
    message: str


@dataclass
class Refusal:
    message: str
    hint: str


def need_gib(estimate: dict | None) -> tuple[float, float]:
    """(hold for the chosen mode, the 4-bit figure) from an estimate dict; 0 when unknown."""
    if not estimate:
        return 0.0, 0.0
    vram = estimate.get("vram_gib") or {}
    four = float(vram.get("4bit") or 0.0)
    need = four if estimate.get("mode") == "qlora" else float(vram.get("bf16") or 0.0)
    return need, four


def refusal(estimate: dict | None, gpus: list[Gpu], gpu_count: int, wants_gpu: bool
            ) -> Refusal | None:
    """Why a run can never fit this machine, or None."""
    usable = [g for g in gpus]
    if not wants_gpu or not usable:
        return None
    if gpu_count > len(usable):
        return Refusal(f"asks for {gpu_count} GPUs, this machine has {len(usable)}",
                       f"Set GPU count to {len(usable)} or fewer.")
    need, four = need_gib(estimate)
    largest = max(g.total_gib for g in usable)
    limit = largest * HEADROOM
    best = min(need, four) if four else need
    if best > limit:
        return Refusal(
            f"needs ~{need:.1f} GiB ({four:.1f} GiB in 4-bit), largest GPU has "
            f"{largest:.0f} GiB",
            "Enable 4-bit, or lower micro batch size / max sequence length, or use a "
            "smaller base model.")
    return None


def place(estimate: dict | None, gpus: list[Gpu], held: dict[int, float], suspended: set[int],
          gpu_count: int, wants_gpu: bool, cpu_free: int) -> Placement | None:
    """Where the run can start now, or None when it must wait."""
    if not wants_gpu or not gpus:
        if cpu_free > 0:
            return Placement("cpu", [], 0.0, "placed on the CPU")
        return None
    need, _ = need_gib(estimate)
    free = []
    for g in gpus:
        if g.index in suspended:
            continue
        room = g.total_gib * HEADROOM - held.get(g.index, 0.0)
        if room >= need:
            free.append((room, g))
    if len(free) < gpu_count:
        return None
    free.sort(key=lambda item: (-item[0], item[1].index))
    chosen = sorted(g.index for _, g in free[:gpu_count])
    where = ", ".join(f"GPU {i}" for i in chosen)
    return Placement("cuda", chosen, need,
                     f"needs {need:.1f} GiB / {free[0][0]:.1f} free; placed on {where} "
                     f"with hold {need:.1f} GiB")
