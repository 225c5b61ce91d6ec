"""Which runs can share one copy of a base model, and what a group of them needs (no torch: the
supervisor, the confirm dialog and the command line use this).

A group is trained by one process (engine.training.group): the base model's weights and the
CUDA context are there once, each run adds its own LoRA adapter (its fp32 weights and AdamW
moments), and only one run computes at a time, so the group's activations and logits are the
largest member's, not their sum; so are its gradients: a run's step ends by clearing its own
(`zero_grad`), so only the run whose turn it is holds any:

    need = max(weights) + max(CUDA context + slack) + Σ lora (less gradients)
           + max(gradients) + max(activations + logits)

(bench/bench_group_memory.py checks it against a traced group of an 8B base.)

`share_key(spec)` says which runs may be grouped: the same key means the same base model
(source, revision, remote code), the same weights' form (quantization, precision) on the same
device, and the same model-wide switches (attention kernel, Liger, gradient checkpointing);
None means the run trains alone (full fine-tuning, a TRL method, several GPUs, a cluster, an
experiment tracker, whose set-up is process-wide, or a run whose Share base is off).
"""

from __future__ import annotations

from engine.spec import JobSpec

SHARING_METHODS = ("sft", "pretrain")  # transformers' own Trainer; TRL's trainers run alone
GRADIENT_SHARE = 4 / 16  # of the estimate's "lora" part: fp32 weight, gradient, two AdamW moments
BASE_PARTS = ("weights", "context_and_slack")  # held once by the group
STEP_PARTS = ("activations", "logits")  # one member computes at a time: the largest counts


def share_key(spec: JobSpec) -> tuple | None:
    """What runs sharing one base process must agree on; None when `spec` trains alone."""
    if (
        not spec.resources.share_base
        or spec.lora.full
        or spec.method.method not in SHARING_METHODS
        or spec.resources.gpu_count != 1
        or spec.resources.target != "local"
        or spec.training.report_to != "none"
    ):
        return None
    base, t = spec.base_model, spec.training
    return (
        base.source,
        base.revision,
        base.trust_remote_code,
        spec.lora.quantization,
        t.precision,
        spec.resources.device,
        t.attention,
        t.liger_kernels,
        t.gradient_checkpointing,
    )


def _need(estimate: dict) -> float:
    vram = estimate.get("vram_gib") or {}
    return float(vram.get("4bit" if estimate.get("mode") == "qlora" else "bf16") or 0.0)


def _parts(estimate: dict) -> dict[str, float]:
    """The estimate's memory parts in GiB; an estimate without them counts whole as its own."""
    parts = {k: float(v) for k, v in (estimate.get("vram_parts_gib") or {}).items()}
    if not parts:
        return {"lora": _need(estimate)}
    return parts


def shareable(estimates: list[dict]) -> bool:
    """Whether these runs' estimates can be grouped: all in the same mode (a 4-bit base and a
    16-bit one are different weights)."""
    return len({e.get("mode") for e in estimates}) == 1


def gradient_gib(estimate: dict) -> float:
    """The fp32 gradients of the run's adapter (alive only in its turn)."""
    parts = estimate.get("vram_parts_gib") or {}
    return float(parts.get("lora") or 0.0) * GRADIENT_SHARE


def member_gib(estimate: dict) -> float:
    """What one run adds to a group: its adapter's weights and optimizer states (and whatever its
    estimate does not split into parts)."""
    parts = _parts(estimate)
    own = sum(v for k, v in parts.items() if k not in BASE_PARTS + STEP_PARTS)
    return own - gradient_gib(estimate)


def base_gib(estimates: list[dict]) -> float:
    """What the group holds once: the largest weights and context, the largest step (its
    activations, logits and adapter gradients)."""
    parts = [_parts(e) for e in estimates]
    once = sum(max(p.get(k, 0.0) for p in parts) for k in BASE_PARTS)
    step = max(sum(p.get(k, 0.0) for k in STEP_PARTS) for p in parts)
    return once + step + max(gradient_gib(e) for e in estimates)


def group_need_gib(estimates: list[dict]) -> float:
    """The peak memory of one process training all these runs (module docstring)."""
    if not estimates:
        return 0.0
    return round(base_gib(estimates) + sum(member_gib(e) for e in estimates), 2)


def separate_gib(estimates: list[dict]) -> float:
    """The memory the same runs need as separate processes."""
    return round(sum(_need(e) for e in estimates), 2)


def saving_gib(estimates: list[dict]) -> float:
    """GiB a group saves over separate processes."""
    return round(max(0.0, separate_gib(estimates) - group_need_gib(estimates)), 2)


def group_estimate(estimates: list[dict]) -> dict:
    """An estimate dict the scheduler can place: the group's need in the members' mode."""
    need = group_need_gib(estimates)
    return {"mode": estimates[0].get("mode"), "vram_gib": {"bf16": need, "4bit": need}}


def hold_shares(estimates: dict[str, dict]) -> dict[str, float]:
    """How the group's need is held, per run id: the first run holds what the group holds
    once and its own part, the others their own parts; the shares add up to the need."""
    ids = list(estimates)
    base = base_gib(list(estimates.values()))
    shares = {run_id: member_gib(estimates[run_id]) for run_id in ids}
    if ids:
        shares[ids[0]] += base
    return {run_id: round(gib, 2) for run_id, gib in shares.items()}


def groups(entries: list[tuple[str, JobSpec, dict | None]]) -> list[list[str]]:
    """The groups of two or more that runs submitted together would form (by id, in order),
    given each one's spec and estimate; runs without an estimate or a key train alone, and a
    chained run starts later, when its upstream run is done."""
    by_key: dict[tuple, list[tuple[str, dict]]] = {}
    for run_id, spec, estimate in entries:
        key = share_key(spec)
        if key is None or not estimate or spec.upstream_node:
            continue
        by_key.setdefault((key, estimate.get("mode")), []).append((run_id, estimate))
    return [[run_id for run_id, _ in members] for members in by_key.values() if len(members) > 1]


def sharing_sentence(count: int, base: str, saves_gib: float) -> str:
    """'3 runs share one copy of <base> (saves 31.2 GiB)'."""
    return f"{count} runs share one copy of {base} (saves {saves_gib:.1f} GiB)"
