"""Export a finished run: adapter ZIP, merged 16-bit folder, GGUF bundle for Ollama.

`export_run(run_dir, options, log)` reads the run's `spec.json` and `adapter/` and builds what
`options` (an ExportSpec) asks for, each artifact moved into `library/<artifact_id>/` with a
`manifest.json` and announced with an `artifact` event. The GGUF route (shared/NOTES.md "GGUF
side"): merge in 16-bit → llama.cpp's converter to F16 → quantize → template, EOS and EOT checked in
the file (patched if needed) → parity check → Modelfile, install scripts, README → ZIP.
A GGUF failure never loses the adapter ZIP: it becomes the warning "GGUF export failed: <reason>".

A full fine-tuning run has no adapter: it is exported from its `model/` folder, which is already
the whole model, so there is no adapter ZIP and no merge; the merged folder is a copy of it and the
GGUF is converted from it (engine.export.gguf).
"""

from __future__ import annotations

import secrets
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

from engine import paths
from engine.errors import ExportError, TunegraphError
from engine.events import EventLog
from engine.export import artifacts
from engine.export.gguf import merged_and_gguf
from engine.export.job import ExportJob, Progress, base_file, no_progress, register, safe_name
from engine.hardware import GIB
from engine.rundir import (
    ADAPTER,
    ADAPTER_WEIGHTS,
    MODEL,
    MODEL_WEIGHTS,
    MODEL_WEIGHTS_INDEX,
    SPEC_FILE,
)
from engine.setup.streaming import CancelCheck
from engine.spec import ExportSpec, JobSpec

ADAPTER_FILES = (
    ADAPTER_WEIGHTS,
    "adapter_config.json",
    "chat_template.jinja",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "README.md",
)
REQUIRED_ADAPTER_FILES = (ADAPTER_WEIGHTS, "adapter_config.json")
MARGIN_BYTES = 256 * 2**20  # headroom for manifests, READMEs and file-system slack


class DiskSpaceError(ExportError):
    """The disk cannot hold the export; the message gives the numbers."""


def export_run(
    run_dir: Path | str,
    options: ExportSpec,
    log: EventLog,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
) -> list[str]:
    """Build the artifacts `options` asks for from a finished run; returns warnings.

    Raises ExportError when the run has no adapter (or, for full fine-tuning, no model) or the
    disk is too small for the export. Failures after the adapter ZIP (merge, GGUF) become
    warnings; a cancel raises RunCancelled.
    """
    run_dir = Path(run_dir)
    spec = _load_spec(run_dir)
    adapter_dir = require_adapter(run_dir, spec)
    if spec.lora.full and options.adapter_zip:  # its model folder is what it delivers
        log.emit(
            "log",
            level="info",
            message="Export: no adapter ZIP: a full fine-tuning run has no adapter (the merged "
            "folder and the GGUF are made from its model folder)",
        )
        options = replace(options, adapter_zip=False)
    check_disk_space(spec, options, paths.library_dir(), artifacts.tree_bytes(adapter_dir))
    work = paths.library_dir() / f".export-{run_dir.name}-{secrets.token_hex(3)}"
    work.mkdir(parents=True)
    job = ExportJob(
        run_dir, run_dir.name, spec, adapter_dir, log, progress or no_progress, cancel, work
    )
    warnings: list[str] = []
    try:
        if options.adapter_zip:
            job.say("Export: writing the adapter ZIP", 0.02)
            register(job, build_adapter_zip(job), "adapter_zip")
        if options.gguf or options.merged:
            warnings += merged_and_gguf(job, options)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    job.progress("Export finished", 1.0)
    return warnings


def require_adapter(run_dir: Path, spec: JobSpec | None = None) -> Path:
    """The run's adapter folder, or a full fine-tuning run's model folder (what its export and
    its scoring start from); ExportError when training never saved it (cancelled run)."""
    run_dir = Path(run_dir)
    spec = spec or _load_spec(run_dir)
    if spec.lora.full:
        folder, what = run_dir / MODEL, "fully fine-tuned model"
        sharded = (folder / MODEL_WEIGHTS_INDEX).is_file()
        required = ("config.json", MODEL_WEIGHTS_INDEX if sharded else MODEL_WEIGHTS)
    else:
        folder, what, required = run_dir / ADAPTER, "adapter", REQUIRED_ADAPTER_FILES
    missing = [f for f in required if not (folder / f).is_file()]
    if missing:
        raise ExportError(
            f"Run {spec.name} ({run_dir.name}) has no trained {what} to export "
            f"({folder / missing[0]} is missing): it was cancelled or failed "
            "before training finished.",
            "Resume or re-run it, then export.",
        )
    return folder


# -- disk space -------------------------------------------------------------------------------------
def model_bytes_16bit(spec: JobSpec) -> int:
    """The base model's size in 16-bit (2 bytes per parameter, counted from config.json, or from
    the tensor table of a GGUF base: parsing a GGUF's config takes half a minute)."""
    from engine.models.sources import load_config
    from engine.plan.shape import model_shape

    source = spec.base_model.source.strip()
    if source.startswith("gguf:"):
        from engine.models.gguf_base import gguf_path, parameter_count

        return 2 * parameter_count(gguf_path(source[len("gguf:") :]))
    return 2 * model_shape(load_config(spec.base_model)).params


def required_bytes(
    spec: JobSpec, options: ExportSpec, adapter_bytes: int = 0, size_16bit: int | None = None
) -> int:
    """Free space an export needs at its peak.

    merged folder + F16 GGUF (2 × the 16-bit size) + the quantized file and the bundle ZIP that
    holds a copy of it (2 × the quant size), plus the adapter ZIP (at most the adapter's size) and
    a small margin.
    """
    need = MARGIN_BYTES + (adapter_bytes if options.adapter_zip else 0)
    if not (options.gguf or options.merged):
        return need
    if size_16bit is None:
        try:
            size_16bit = model_bytes_16bit(spec)
        except Exception:  # config unreadable here: the merge will report it properly
            return need
    need += size_16bit  # merged folder
    if options.gguf:
        from engine.export.gguf_tools import BITS_PER_WEIGHT

        quant = int(size_16bit * BITS_PER_WEIGHT.get(options.quant, 16.0) / 16.0)
        need += size_16bit + 2 * quant if options.quant != "F16" else size_16bit + quant
    return need


def check_disk_space(
    spec: JobSpec, options: ExportSpec, where: Path, adapter_bytes: int = 0
) -> None:
    """Raise DiskSpaceError with the numbers when `where` has less free space than the export
    needs."""
    need = required_bytes(spec, options, adapter_bytes)
    free = shutil.disk_usage(where).free
    if free < need:
        what = "GGUF export" if options.gguf else ("merged model" if options.merged else "export")
        raise DiskSpaceError(
            f"Not enough free disk space for the {what}: it needs about {need / GIB:.1f} GiB "
            f"and {where} has {free / GIB:.1f} GiB free.",
            "Free some space or export only the adapter ZIP.",
        )


# -- the adapter ZIP --------------------------------------------------------------------------------
def build_adapter_zip(job: ExportJob) -> Path:
    """Zip the adapter with its tokenizer, chat template and model card; returns the ZIP path."""
    adapter = job.adapter_dir
    base_model_file = base_file(job.spec, "tokenizer.model")
    out = job.work_dir / f"{safe_name(job.spec.name)}-adapter.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ADAPTER_FILES:
            src = adapter / name
            if not src.is_file() and name == "tokenizer.model" and base_model_file:
                src = base_model_file
            if src.is_file():
                zf.write(src, name)
            elif name in REQUIRED_ADAPTER_FILES:
                raise ExportError(f"{src} is missing.")
    return out


# -- helpers ----------------------------------------------------------------------------------------
def _load_spec(run_dir: Path) -> JobSpec:
    spec_path = run_dir / SPEC_FILE
    if not spec_path.is_file():
        raise ExportError(f"{run_dir} is not a run folder (it has no spec.json).")
    return JobSpec.load(spec_path)


def export_after_training(
    spec: JobSpec,
    run_dir: Path | str,
    log: EventLog,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
) -> list[str]:
    """The `exporting` phase of a run: export per `spec.export` and return warnings.

    Nothing here fails the run: the adapter folder is already saved, so an export that cannot be
    made (no disk space for the GGUF, a broken ZIP) becomes a warning. A cancel still raises.
    """
    options = spec.export
    if not (options.adapter_zip or options.gguf or options.merged):
        return []
    try:
        return export_run(run_dir, options, log, progress, cancel)
    except DiskSpaceError as err:
        if not (options.gguf or options.merged) or not options.adapter_zip:
            return [f"Export failed: {err.message}"]
        label = "GGUF export" if options.gguf else "Merged model export"
        warnings = [f"{label} failed: {err.message}"]
        try:
            return warnings + export_run(
                run_dir, replace(options, gguf=False, merged=False), log, progress, cancel
            )
        except TunegraphError as again:
            return warnings + [f"Export failed: {again.message}"]
    except TunegraphError as err:
        return [f"Export failed: {err.message}"]
