"""The words of the confirmation's run cards: one run's estimate as (label, HTML) rows, where it
runs, its recipe on one line and what it exports. A run on the CPU gets its memory in RAM words,
with no GPU figures."""

from __future__ import annotations

import html
from pathlib import Path

from engine.formatting import format_count, format_rough_duration, format_setting
from engine.plan.memory import PROCESS_GIB, ram_parts, vram_parts_text
from engine.spec import JobSpec

FEW_ROWS = 1000
# what a training process takes beyond the model and its training (shared/NOTES.md: peak RSS
# ~480 MiB for a tiny model)


def estimate_rows(est: dict, gpus: list | None = None) -> list[tuple[str, str]]:
    """(label, HTML) rows for one estimate in DESIGN.md's shape; a run on the CPU gets its
    memory in RAM words, with no GPU figures."""
    t = est.get("time_s") or {}
    full = est.get("mode") == "full"
    trainable = "all trainable: full fine-tuning" if full else "trainable with LoRA"
    low, high = format_rough_duration(t.get("low")), format_rough_duration(t.get("high"))
    rows = [
        (
            "Parameters",
            f"{format_count(est.get('params'))} "
            f"({format_count(est.get('trainable_params'))} {trainable})",
        ),
        *memory_rows(est, gpus),
        (
            "Time",
            f"{low} – {high}"
            + (
                f"<br><span class='dim'>{html.escape(str(est['time_basis']))}</span>"
                if est.get("time_basis")
                else ""
            ),
        ),
    ]
    rows_count = est.get("dataset_rows")
    if isinstance(rows_count, int):
        data = f"{rows_count:,} rows"
    elif est.get("data_pending"):
        data = "not made yet: its data nodes make the rows first"
    else:
        data = "unknown"
    if isinstance(rows_count, int) and rows_count < FEW_ROWS:
        data += (
            " <span class='warn'>⚠ under 1,000 examples: expect the model to pick up "
            "style more than knowledge</span>"
        )
    rows.append(("Dataset", data))
    others = [w for w in est.get("warnings") or [] if "1,000" not in w]
    if others:
        rows.append(
            (
                "Warnings",
                "<br>".join(f"<span class='warn'>⚠ {html.escape(w)}</span>" for w in others),
            )
        )
    return rows


def memory_rows(est: dict, gpus: list | None = None) -> list[tuple[str, str]]:
    """The memory row and the 4-bit row: GPU memory on its GPU, or RAM on the CPU (whose
    estimate leaves out the GPU's share, the CUDA context)."""
    device = str(est.get("device") or "?")
    parts = dict(est.get("vram_parts_gib") or {})
    if device == "cpu":
        parts = ram_parts(parts)
        if not parts:
            return []
        where = (
            "on the CPU (chosen on the Fine-Tune node)"
            if gpus
            else "on the CPU (no NVIDIA GPU found: slow, but it works)"
        )
        return [
            (
                "Memory",
                f"~{sum(parts.values()):.2f} GiB of RAM {where}<br><span class='dim'>"
                f"{html.escape(vram_parts_text(parts))}; the training process itself takes "
                f"about {PROCESS_GIB} GiB more</span>",
            )
        ]
    if device.startswith("cuda") and gpus:
        index = int(device.split(":")[1]) if ":" in device else 0
        gpu = next((g for g in gpus if g.index == index), None)
        if gpu:
            device += f" ({gpu.name}, {gpu.total_gib:.0f} GiB)"
    vram = est.get("vram_gib") or {}
    qlora, full = est.get("mode") == "qlora", est.get("mode") == "full"
    need = vram.get("4bit") if qlora else vram.get("bf16")
    # a full run has one figure: nothing is quantized
    modes = "" if full else f"(16-bit ~{vram.get('bf16')} GiB, 4-bit ~{vram.get('4bit')} GiB)"
    return [
        (
            "VRAM",
            f"~{need} GiB on {html.escape(device)} <span class='dim'>{modes}</span>"
            + (
                f"<br><span class='dim'>{html.escape(vram_parts_text(parts))}</span>"
                if parts
                else ""
            ),
        ),
        (
            "4-bit (QLoRA)",
            ("<b>yes</b>" if qlora else "no")
            + f" — {html.escape(str(est.get('mode_reason') or ''))}",
        ),
    ]


def target_text(spec: JobSpec, cluster: str) -> str:
    """Where the run executes: "this workstation" or "cluster (ADDRESS)"."""
    if spec.resources.target != "cluster":
        return "this workstation"
    return f"cluster ({cluster})" if cluster else "cluster (none named)"


def recipe_text(spec: JobSpec) -> str:
    """The settings an analyst compares between runs, on one line."""
    t, lora = spec.training, spec.lora
    length = f"{t.max_steps} steps" if t.max_steps else f"{t.epochs:g} epoch(s)"
    data = ", ".join(Path(d.path).name for d in spec.datasets)
    return (
        f"{spec.base_model.source} on {data}; {length}, lr {format_setting(t.learning_rate)}, "
        f"batch {t.micro_batch_size}×{t.grad_accum}; "
        + (
            "full fine-tuning (every weight)"
            if lora.full
            else f"LoRA r{lora.r}/α{lora.alpha} on {', '.join(lora.target_modules)}"
        )
    )


def sweep_text(spec: JobSpec) -> str:
    """A Sweep node's search on one line: what it varies, how many trials, how it prunes."""
    from engine.errors import SpecError
    from engine.spec import PARTS

    sweep = spec.sweep
    assert sweep is not None
    try:
        dims = sweep.dimensions(PARTS)
    except SpecError as err:  # the compiler refused it already; say so rather than fail
        return f"cannot read its search space: {err}"
    trials = sweep.budget(dims)
    prune = (
        "no pruning"
        if sweep.pruner == "none"
        else f"losers pruned by {sweep.pruner.replace('_', ' ')} from "
        f"{sweep.min_fraction:.0%} of the steps"
    )
    goal = "minimise" if sweep.minimise() else "maximise"
    return (
        f"{sweep.strategy} over " + "; ".join(d.describe() for d in dims) + f" · {trials} "
        f"trials, started as slots free · {prune} · {goal} {sweep.objective} "
        "(the estimate below is one trial's)"
    )


def exports_text(spec: JobSpec) -> str:
    e = spec.export
    parts = ["fully fine-tuned model folder" if spec.lora.full else "LoRA adapter folder"]
    if e.adapter_zip and not spec.lora.full:  # a full run has no adapter
        parts.append("adapter ZIP (with tokenizer, chat template, model card)")
    if e.gguf:
        parts.append(f"GGUF bundle {html.escape(e.quant)} for Ollama / llama.cpp")
    if e.merged:
        parts.append("merged 16-bit model folder")
    if e.ollama_name:
        parts.append(f"Ollama model “{html.escape(e.ollama_name)}” (when ollama is installed)")
    return ", ".join(parts)


STYLE = """<style>
.card { margin-bottom: 14px; }
h3 { margin: 6px 0 4px 0; }
th { text-align: left; padding: 2px 14px 2px 0; color: #a8adb5; font-weight: normal; }
td { padding: 2px 0; }
.bad { color: #ff7b7b; }
.warn { color: #f0c46e; }
.dim { color: #8a8f98; }
</style>"""
