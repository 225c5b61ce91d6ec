"""The merged-model and GGUF half of an export (called by `engine.export.pipeline.export_run`).

merge the adapter into the base in 16-bit → save a HF folder whose tokenizer files llama.cpp's
converter reads correctly → convert to F16 → quantize → check the chat template, EOS and EOT in the
file (patching them when they drifted) → parity check → Modelfile, install scripts, README → ZIP.
Any failure here becomes a warning; the adapter ZIP made before is never touched. A full
fine-tuning run needs no merge: its model folder (`job.adapter_dir` is then the run's `model/`)
is copied and goes the same way from there.
"""

from __future__ import annotations

import os
import shutil
import traceback
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.data.templates import stop_tokens, strip_generation_markers
from engine.errors import ExportError, RunCancelled, TunegraphError
from engine.export import gguf_base as gguf_base_export
from engine.export import gguf_tools, ollama
from engine.export.gguf_align import align_tokenizer, check_and_fix
from engine.export.job import ExportJob, register, safe_name
from engine.export.merged import copy_model, gguf_source, merge_adapter, run_template
from engine.spec import ExportSpec

if TYPE_CHECKING:  # parity is imported when the check runs
    from engine.export.parity import ParityResult


def merged_and_gguf(job: ExportJob, options: ExportSpec) -> list[str]:
    """Merge, then (if asked) build the GGUF bundle; register what was asked; return warnings."""
    label = "GGUF export" if options.gguf else "Merged model export"
    warnings: list[str] = []
    try:
        source = gguf_source(job)
        if options.gguf and source is not None:  # written by gguf_base_export, not the converter
            gguf_base_export.check_exportable(source)
        elif options.gguf:  # fail before the costly merge when the converter cannot take the model
            gguf_tools.converter_dir()
            gguf_tools.check_architecture(_base_architecture(job))
        if job.spec.lora.full:
            job.say("Export: the fully fine-tuned model needs no merge", 0.1)
            merged = copy_model(job)
        else:
            job.say("Export: merging the adapter into the base model (16-bit)", 0.1)
            merged = merge_adapter(job)
    except RunCancelled:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure here must keep the adapter ZIP
        return _failed(job, label, exc)
    if options.gguf:
        try:
            warnings += build_gguf(job, merged, options)
        except RunCancelled:
            raise
        except Exception as exc:  # noqa: BLE001
            warnings += _failed(job, "GGUF export", exc)
    if options.merged:
        register(job, merged, "merged_dir")
    return warnings


def _failed(job: ExportJob, label: str, exc: BaseException) -> list[str]:
    reason = exc.message if isinstance(exc, TunegraphError) else f"{type(exc).__name__}: {exc}"
    warning = f"{label} failed: {reason}"
    job.log.emit("log", level="warning", message=warning)
    if not isinstance(exc, TunegraphError):
        job.log.emit("log", level="debug", message="".join(traceback.format_exception(exc)))
    return [warning]


def _base_architecture(job: ExportJob) -> str | None:
    from engine.models.sources import load_config

    config = load_config(job.spec.base_model)
    archs = getattr(config, "architectures", None) or []
    return archs[0] if archs else None


# -- GGUF -------------------------------------------------------------------------------------------
def build_gguf(job: ExportJob, merged: Path, options: ExportSpec) -> list[str]:
    """Convert, quantize, check, parity-test and bundle; registers `gguf` and `gguf_bundle`."""
    from transformers import AutoTokenizer

    from engine.export import parity

    f16, final = convert_and_quantize(job, merged, options.quant)
    job.say("Export: checking the chat template and stop tokens in the GGUF", 0.65)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    template = strip_generation_markers(run_template(job))
    samples = parity.sample_prompts(job.run_dir, parity.FALLBACK_PROMPTS)
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": s["prompt"]}],
            chat_template=template,
            tokenize=False,
            add_generation_prompt=True,
        )
        for s in samples
    ]
    patched = check_and_fix(final, tokenizer, template) + align_tokenizer(final, tokenizer, prompts)
    if patched:
        job.log.emit(
            "log",
            level="info",
            message=f"Export: set {', '.join(patched)} in the GGUF so llama.cpp reads it as the "
            "run's tokenizer does",
        )

    job.say("Export: parity check of the GGUF against the merged model", 0.7)
    quantized = final if final != f16 else None
    result = parity.check_parity(
        merged,
        f16,
        samples,
        chat_template=template,
        quant_gguf=quantized,
        quant=options.quant,
        tokenizer=tokenizer,
    )
    job.log.emit("log", level="info", message=result.summary(), parity=result.as_dict())
    if quantized is not None:
        f16.unlink()

    job.say("Export: writing the Ollama bundle", 0.85)
    warnings = result.warnings() + write_ollama_bundle(
        job, final, tokenizer, template, options, result
    )
    register(job, final, "gguf", options.quant)
    return warnings


def convert_and_quantize(job: ExportJob, merged: Path, quant: str) -> tuple[Path, Path]:
    """The F16 GGUF and the quantized one (the same file for F16), in the work folder."""
    name = safe_name(job.spec.name)

    def show(line: str) -> None:
        job.progress(line, None)

    source = gguf_source(job)
    if source is not None:  # keep the source file's metadata and tokenizer, as the run used them
        job.say(f"Export: writing the merged tensors into a GGUF from {source.name} (F16)", 0.35)
        f16 = gguf_base_export.write_merged_gguf(
            source, merged, job.adapter_dir, job.work_dir / f"{name}-F16.gguf", on_line=show
        )
        job.check_cancel()
    else:
        job.say("Export: converting the merged model to GGUF (F16)", 0.35)
        f16 = _convert(job, merged, name, show)
    if quant == "F16":
        return f16, f16
    job.say(f"Export: quantizing to {quant}", 0.55)
    out = job.work_dir / f"{name}-{quant}.gguf"
    return f16, gguf_tools.quantize(f16, out, quant, cancel=job.cancel, on_line=show)


def _convert(job: ExportJob, merged: Path, name: str, show) -> Path:
    return gguf_tools.convert_to_gguf(
        merged,
        job.work_dir / f"{name}-F16.gguf",
        model_name=job.spec.name,
        cancel=job.cancel,
        on_line=show,
    )


def write_ollama_bundle(
    job: ExportJob,
    gguf: Path,
    tokenizer: Any,
    template: str,
    options: ExportSpec,
    result: ParityResult,
) -> list[str]:
    """Modelfile, install scripts and README beside the GGUF in a ZIP (registered as
    `gguf_bundle`); installs into Ollama when asked. Returns warnings."""
    info = gguf_tools.read_gguf(gguf)
    family = ollama.detect_family(template, info.architecture, set(info.special_tokens.values()))
    if family is ollama.LLAMA3 and (preamble := ollama.llama3_system_preamble(tokenizer, template)):
        family = ollama.llama3_with_preamble(preamble)
    modelfile, warnings = ollama.modelfile(
        gguf.name,
        family,
        list(stop_tokens(tokenizer, template)),
        title=f"{job.spec.name}: {job.spec.base_model.source} "
        f"{'fully fine-tuned' if job.spec.lora.full else '+ LoRA'}, {options.quant}, by Tunegraph",
    )
    name = ollama.model_name(options.ollama_name or job.spec.name)
    texts = {
        "Modelfile": modelfile,
        "install.sh": ollama.install_sh(name),
        "install.ps1": ollama.install_ps1(name),
        "README.md": bundle_readme(job, gguf.name, options.quant, family, name, result),
    }
    bundle = job.work_dir / f"{safe_name(job.spec.name)}-{options.quant}-ollama.zip"
    write_bundle(bundle, gguf, texts)
    if options.ollama_name:
        warnings += install_into_ollama(job, options.ollama_name, gguf, modelfile)
    register(job, bundle, "gguf_bundle", options.quant)
    return warnings


def write_bundle(path: Path, gguf: Path, texts: dict[str, str]) -> None:
    """The Ollama bundle ZIP: the GGUF (stored, it does not compress) and the text files."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(gguf, gguf.name, compress_type=zipfile.ZIP_STORED)
        for name, text in texts.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o755 if name.endswith(".sh") else 0o644) << 16
            zf.writestr(info, text)


def install_into_ollama(job: ExportJob, name: str, gguf: Path, modelfile: str) -> list[str]:
    """`ollama create` from a folder holding the GGUF and Modelfile, when ollama is on PATH."""
    if not ollama.ollama_available():
        return [
            f"Ollama: `ollama` is not on PATH, so {name} was not installed; run install.sh "
            "(or install.ps1) from the bundle."
        ]
    folder = job.work_dir / "ollama"
    folder.mkdir(exist_ok=True)
    try:
        os.link(gguf, folder / gguf.name)
    except OSError:
        shutil.copyfile(gguf, folder / gguf.name)
    (folder / "Modelfile").write_text(modelfile, encoding="utf-8")
    try:
        ollama.install(name, folder)
    except (ExportError, OSError) as err:
        return [f"Ollama install failed: {err}"]
    job.say(f"Export: installed into Ollama as {ollama.model_name(name)}")
    return []


def bundle_readme(
    job: ExportJob,
    gguf_name: str,
    quant: str,
    family: ollama.Family | None,
    ollama_name: str,
    result: ParityResult,
) -> str:
    """The bundle's README: what it is, how to install and run it, and the parity figures."""
    spec = job.spec
    fam = family.label if family else "unknown (no TEMPLATE in the Modelfile)"
    lines = [
        f"# {spec.name} — GGUF ({quant})",
        "",
        f"A {'full' if spec.lora.full else 'LoRA'} fine-tune of **{spec.base_model.source}**, "
        f"{'converted' if spec.lora.full else 'merged and converted'} by Tunegraph "
        f"(run `{job.run_id}`).",
        "",
        f"- `{gguf_name}`: the model for llama.cpp, Ollama, LM Studio and other GGUF runtimes",
        f"- `Modelfile`: Ollama recipe with the chat template ({fam}) and every stop token",
        "- `install.sh` / `install.ps1`: install into Ollama",
        "",
        "## Install into Ollama",
        "",
        "```sh",
        f"./install.sh            # or: ollama create {ollama_name} -f Modelfile",
        f"ollama run {ollama_name}",
        "```",
        "",
        "On Windows: `powershell -File install.ps1`.",
        "",
        "## Chat template",
        "",
        "The GGUF carries the exact template the run trained with (`tokenizer.chat_template`); "
        "use it, not a guessed one, or answers may never stop.",
        "",
        "## Parity with the merged model",
        "",
        result.summary() + ".",
        "",
    ]
    lines += [f"- warning: {w}" for w in result.warnings()]
    return "\n".join(lines) + "\n"
