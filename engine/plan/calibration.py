"""This machine's own measured speed, so a time range before start is worth reading.

The model in engine.plan.timing has to cover every machine, so its range is wide. Once a run of a
model shape has completed on a device here, the supervisor records what it measured
(`record`): the time from the worker's start to its first training step, the training phase,
and the end (evaluation, samples, saving, export), with the work the estimate predicted. The next
estimate of the same device and shape (`calibrated_range`) predicts each phase from those
samples — the training phase fitted as seconds per micro-batch plus seconds per computed token —
and gives a range of ±RANGE around it. Samples live in `<data_dir>/timing.json`, the last
KEEP per device and shape.
"""

from __future__ import annotations

import json
import os
import statistics
from typing import Any

from engine import paths
from engine.plan.shape import ModelShape

TIMING_FILE = "timing.json"
KEEP = 20
RANGE = 1.3  # low = predicted / RANGE, high = predicted × RANGE: at most 1.69× wide
WORK_KEYS = ("rows", "micro_batches", "computed_tokens", "eval_tokens", "gguf")


def device_key(device: str, gpu_name: str | None, cores: int, shape: ModelShape) -> str:
    """Which samples apply: the device (GPU model, or the CPU with its thread count) and the
    model's shape (parameters, layers, width)."""
    where = f"cuda:{gpu_name}" if device == "cuda" else f"cpu:{cores}"
    return f"{where}|{shape.params}|{shape.layers}|{shape.hidden}"


def samples(key: str) -> list[dict]:
    """The measured runs recorded under `key`, oldest first."""
    try:
        table = json.loads((paths.data_dir() / TIMING_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    found = table.get(key) if isinstance(table, dict) else None
    return [s for s in found or [] if isinstance(s, dict)]


def record(key: str, sample: dict[str, Any]) -> None:
    """Add one measured run under `key` (atomic write; the last KEEP are kept)."""
    path = paths.data_dir() / TIMING_FILE
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
        table = table if isinstance(table, dict) else {}
    except (OSError, ValueError):
        table = {}
    table[key] = (table.get(key) or [])[-(KEEP - 1) :] + [sample]
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def sample_from_phases(
    work: dict, start: float, training: float, evaluating: float, end: float
) -> dict:
    """A sample from the estimate's work and the timestamps of the worker's start, its first
    training step, the end of training and its completion."""
    return {
        **{k: work.get(k) for k in WORK_KEYS},
        "start_s": round(training - start, 3),
        "train_s": round(evaluating - training, 3),
        "end_s": round(end - evaluating, 3),
    }


def calibrated_range(
    work: dict, measured: list[dict], export_s: tuple[float, float] = (0.0, 0.0)
) -> dict | None:
    """{"low", "high"} predicted from this machine's samples for the same device and shape, or
    None when none fit (no sample; only runs with a GGUF export for a run without one).

    A run with a GGUF export whose shape has no measured export yet (a speed check never
    exports) gets the end phase of its samples plus `export_s`, the (fast, slow) seconds the
    size-based model gives the export."""
    same_end = [s for s in measured if bool(s.get("gguf")) == bool(work.get("gguf"))]
    extra = (0.0, 0.0)
    if not same_end:
        if not work.get("gguf"):
            return None
        same_end, extra = measured, export_s
    if not measured:
        return None
    start = statistics.median(s["start_s"] for s in measured)
    end = statistics.median(s["end_s"] for s in same_end)
    train = _training_s(work, measured)
    predicted = start + train + end
    return {
        "low": round(predicted / RANGE + extra[0], 1),
        "high": round(predicted * RANGE + extra[1], 1),
    }


def _training_s(work: dict, measured: list[dict]) -> float:
    """The training phase: seconds per micro-batch and per computed token, least squares (both
    kept non-negative) over the samples; with one sample, or samples that cannot tell the two
    apart, its time scaled by the mean of the two ratios."""
    xs = [(s["micro_batches"] or 0, s["computed_tokens"] or 0.0, s["train_s"]) for s in measured]
    a = b = None
    if len(xs) >= 2:
        s11 = sum(m * m for m, _, _ in xs)
        s12 = sum(m * t for m, t, _ in xs)
        s22 = sum(t * t for _, t, _ in xs)
        y1 = sum(m * y for m, _, y in xs)
        y2 = sum(t * y for _, t, y in xs)
        det = s11 * s22 - s12 * s12
        if det > 1e-9 * s11 * s22:
            a = (y1 * s22 - y2 * s12) / det
            b = (s11 * y2 - s12 * y1) / det
            if a < 0 or b < 0:  # a negative cost: the better of the two one-term fits instead
                a, b = min(
                    ((y1 / s11, 0.0), (0.0, y2 / s22)),
                    key=lambda ab: sum((y - ab[0] * m - ab[1] * t) ** 2 for m, t, y in xs),
                )
    micro, tokens = work.get("micro_batches") or 0, work.get("computed_tokens") or 0.0
    if a is not None and b is not None:
        return a * micro + b * tokens
    ratios = []
    for m, t, y in xs:
        if m:
            ratios.append(y * micro / m)
        if t:
            ratios.append(y * tokens / t)
    return statistics.mean(ratios) if ratios else statistics.median(y for _, _, y in xs)
