"""Placement of runs on GPUs by VRAM holds; a pure function of the inventory and current holds.

A run holds its estimated peak on each GPU it uses while it lives. It is placed when enough GPUs
have that much room, waits (`waiting` says why, in GiB) when they might later, and is refused
when no GPU could ever hold it even in 4-bit. A GPU's room is the smaller of its unheld memory
within 90% of its size and what NVML reports free there less NVML_SPARE_GIB, so memory used by
other programs counts too. With no GPU, runs go to CPU slots. Every run arrives with an
estimate: the supervisor refuses one it could not estimate (engine.supervisor.commands).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.hardware import Gpu
from engine.plan.estimate import HEADROOM

NVML_SPARE_GIB = 0.5  # kept free on a GPU beyond what NVML reports in use


@dataclass
class Placement:
    """Where a run can start now: its device, GPU indices and the GiB it holds on each."""

    device: str  # "cuda" | "cpu"
    gpus: list[int]
    hold_gib: float
    message: str


@dataclass
class Refusal:
    """Why a run can never be placed on this machine, and what the user can change."""

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


def refusal(
    estimate: dict | None,
    gpus: list[Gpu],
    gpu_count: int,
    wants_gpu: bool,
    *,
    requires_gpu: bool = False,
) -> Refusal | None:
    """Why a run can never fit this machine, or None.

    The run is judged in the mode it will train in (its estimate's `mode`): a run forced to a
    16-bit base that only 4-bit would fit is refused too, since it would wait forever.
    `requires_gpu` (device cuda) refuses a run on a machine without a GPU.
    """
    if requires_gpu and not gpus:
        return Refusal(
            "asks for a CUDA GPU, this machine has none",
            "Set device to auto or cpu on the Fine-Tune node.",
        )
    if not wants_gpu or not gpus:
        return None
    if gpu_count > len(gpus):
        return Refusal(
            f"asks for {gpu_count} GPUs, this machine has {len(gpus)}",
            f"Set GPU count to {len(gpus)} or fewer.",
        )
    need, four = need_gib(estimate)
    sixteen = float(((estimate or {}).get("vram_gib") or {}).get("bf16") or 0.0)
    largest = max(g.total_gib for g in gpus)
    if need <= largest * HEADROOM:
        return None
    smaller = "lower micro batch size / max sequence length, or use a smaller base model."
    if (estimate or {}).get("mode") == "full":  # weights, gradients and AdamW states
        return Refusal(
            f"needs ~{need:.1f} GiB for full fine-tuning, largest GPU has {largest:.0f} GiB "
            f"(a run may use {HEADROOM:.0%} of it)",
            "Turn Full fine-tuning off on the LoRA config node to train a LoRA adapter, or "
            + smaller,
        )
    if four and four <= largest * HEADROOM:
        hint = "Enable 4-bit (quantization 4bit or auto on the LoRA config node), or " + smaller
    else:
        hint = smaller[0].upper() + smaller[1:]
    return Refusal(
        f"needs ~{sixteen or need:.1f} GiB ({four:.1f} GiB in 4-bit), largest GPU "
        f"has {largest:.0f} GiB (a run may use {HEADROOM:.0%} of it)",
        hint,
    )


def room_gib(gpu: Gpu, held: float) -> float:
    """GiB a new run may take on `gpu` with `held` GiB held by our runs: the smaller of the unheld
    memory within HEADROOM of its size and NVML's free memory less NVML_SPARE_GIB."""
    return min(gpu.total_gib * HEADROOM - held, gpu.free_gib - NVML_SPARE_GIB)


def room_text(gpu: Gpu, held: float) -> str:
    """Why `gpu` has the room it has, in GiB: which of the two limits of `room_gib` decides."""
    by_holds = gpu.total_gib * HEADROOM - held
    by_nvml = gpu.free_gib - NVML_SPARE_GIB
    if by_nvml < by_holds:
        why = (
            f"NVML reports {gpu.free_gib:.1f} GiB free of {gpu.total_gib:.1f} GiB, "
            f"less {NVML_SPARE_GIB:.1f} GiB kept spare"
        )
    else:
        why = f"{HEADROOM:.0%} of {gpu.total_gib:.1f} GiB less {held:.1f} GiB held by runs"
    return f"GPU {gpu.index} has {max(0.0, room_gib(gpu, held)):.1f} GiB ({why})"


def place(
    estimate: dict | None,
    gpus: list[Gpu],
    held: dict[int, float],
    suspended: set[int],
    gpu_count: int,
    wants_gpu: bool,
    cpu_free: int,
) -> Placement | None:
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
        room = room_gib(g, held.get(g.index, 0.0))
        if room >= need:
            free.append((room, g))
    if len(free) < gpu_count:
        return None
    free.sort(key=lambda item: (-item[0], item[1].index))
    chosen = sorted(g.index for _, g in free[:gpu_count])
    where = ", ".join(f"GPU {i}" for i in chosen)
    return Placement(
        "cuda",
        chosen,
        need,
        f"needs {need:.1f} GiB / {free[0][0]:.1f} free; placed on {where} with hold {need:.1f} GiB",
    )


def waiting(
    estimate: dict | None,
    gpus: list[Gpu],
    held: dict[int, float],
    suspended: set[int],
    gpu_count: int,
    wants_gpu: bool,
    cpu_free: int,
) -> str | None:
    """Why `place` (same arguments) finds no place for the run now, in GiB; None when it has one."""
    if place(estimate, gpus, held, suspended, gpu_count, wants_gpu, cpu_free):
        return None
    if not wants_gpu or not gpus:
        return "waiting for a CPU slot: every one is taken"
    need, _ = need_gib(estimate)
    on = "on one GPU" if gpu_count == 1 else f"on each of {gpu_count} GPUs"
    parts = [
        f"GPU {g.index} is suspended"
        if g.index in suspended
        else room_text(g, held.get(g.index, 0.0))
        for g in gpus
    ]
    return f"waiting for GPU memory: needs {need:.1f} GiB {on}; " + "; ".join(parts)
