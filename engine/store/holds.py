"""Who holds which GPU: the machine's GPUs (engine.hardware) with the VRAM holds the index records,
the runs' names (from their spec.json) and the GPUs suspended in settings — what the hardware view
shows, as plain data."""

from __future__ import annotations

from engine import hardware
from engine import settings as settings_mod
from engine.store.library import run_name


def hardware_snapshot() -> dict:
    """GPUs with their holds and suspension, and the CPU figures (see hardware.holds_snapshot)."""
    from engine.store.index import Store  # sqlite_utils loads on first use, not at app start

    with Store() as store:
        holds = store.holds()
    settings = settings_mod.load()
    return hardware.holds_snapshot(
        holds,
        suspended=settings.suspended_gpus,
        cpu_threads=settings.cpu_threads,
        name_of=run_name,
    )
