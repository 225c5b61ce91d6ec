"""The merged Hugging Face folder an export converts to GGUF (and registers as `merged_dir`).

A LoRA run's adapter is merged into its base in 16-bit (`merge_adapter`; a `gguf:` base is
dequantized and merged in fp32 by engine.export.gguf_base); a full fine-tuning run's model folder
already is the whole model and is copied (`copy_model`). Either way the folder's tokenizer files are
then made to say what the HF tokenizer does, for llama.cpp's converter (`finish_tokenizer_files`),
with the chat template the run trained with (`run_template`).
"""

from __future__ import annotations

import gc
import json
import os
import shutil
from pathlib import Path

from engine.data.templates import strip_generation_markers
from engine.errors import ExportError
from engine.export import gguf_base as gguf_base_export
from engine.export.job import ExportJob, base_file, safe_name


def gguf_source(job: ExportJob) -> Path | None:
    """The base GGUF file when the run's base is a `gguf:` source, else None."""
    from engine.models.sources import resolve_source

    if not job.spec.base_model.source.strip().startswith("gguf:"):
        return None
    resolved = resolve_source(job.spec.base_model)
    return Path(resolved.location) / str(resolved.gguf_file)


# -- the merged folder ---------------------------------------------------------------------
def merge_adapter(job: ExportJob) -> Path:
    """Merge the run's adapter into its base in 16-bit and save a HF folder; returns it."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    from engine.models.sources import load_config, load_model, resolve_source

    spec = job.spec
    out = job.work_dir / f"{safe_name(spec.name)}-merged"
    source = gguf_source(job)
    if source is not None:  # a GGUF base: dequantized, merged in float32, saved in float16
        gguf_base_export.merge_and_save(spec.base_model, source, job.adapter_dir, out)
        finish_tokenizer_files(job, out)
        return out
    resolved = resolve_source(spec.base_model)
    config = load_config(spec.base_model, resolved)
    dtype = torch.float16 if _config_dtype(config) == "float16" else torch.bfloat16
    tokenizer = AutoTokenizer.from_pretrained(job.adapter_dir)
    base = load_model(spec.base_model, resolved, dtype, config=config)
    if len(tokenizer) > base.get_input_embeddings().weight.shape[0]:
        base.resize_token_embeddings(len(tokenizer))  # the run added a token (e.g. <pad>)
    model = PeftModel.from_pretrained(base, job.adapter_dir)
    job.check_cancel()
    merged = model.merge_and_unload()
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
    del base, model, merged
    gc.collect()
    finish_tokenizer_files(job, out)
    return out


def copy_model(job: ExportJob) -> Path:
    """A full fine-tuning run's model folder as the export's merged folder: the weights linked
    (copied across file systems), the small files copied, so preparing the tokenizer files for
    llama.cpp and moving the folder into the library leave the run's own folder as it was."""
    out = job.work_dir / f"{safe_name(job.spec.name)}-merged"
    out.mkdir()
    for src in sorted(job.adapter_dir.iterdir()):
        if not src.is_file() or src.name == "README.md":  # the run's model card stays with it
            continue
        if src.suffix == ".safetensors":
            try:
                os.link(src, out / src.name)
                continue
            except OSError:
                pass
        shutil.copyfile(src, out / src.name)
    job.check_cancel()
    finish_tokenizer_files(job, out)
    return out


def _config_dtype(config) -> str:
    value = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return str(value).replace("torch.", "") if value is not None else ""


def run_template(job: ExportJob) -> str:
    """The chat template the run trained with (saved beside the adapter)."""
    path = job.adapter_dir / "chat_template.jinja"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    config = json.loads((job.adapter_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    template = config.get("chat_template")
    if not isinstance(template, str):
        raise ExportError(f"{job.adapter_dir} holds no chat template (chat_template.jinja).")
    return template


def finish_tokenizer_files(job: ExportJob, out: Path) -> None:
    """Make the merged folder's tokenizer files say what the HF tokenizer does, for llama.cpp.

    - `tokenizer.model` (sentencepiece) copied from the adapter or the base;
    - `chat_template.jinja` = the run's template without `{% generation %}` markers (renders the
      same; older runtimes cannot parse the tag), and no second copy in tokenizer_config.json;
    - `added_tokens_decoder` in tokenizer_config.json: transformers 5 no longer writes it, and
      without it the converter marks added special tokens (e.g. `<|im_start|>`) as normal text;
    - `add_bos_token` / `add_eos_token` from the base's tokenizer_config.json when missing.
    """
    if not (out / "tokenizer.model").is_file():
        src = job.adapter_dir / "tokenizer.model"
        src = src if src.is_file() else base_file(job.spec, "tokenizer.model")
        if src is not None:
            shutil.copyfile(src, out / "tokenizer.model")
    (out / "chat_template.jinja").write_text(
        strip_generation_markers(run_template(job)), encoding="utf-8"
    )
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.pop("chat_template", None)
    tok_json = out / "tokenizer.json"
    if "added_tokens_decoder" not in config and tok_json.is_file():
        added = json.loads(tok_json.read_text(encoding="utf-8")).get("added_tokens", [])
        config["added_tokens_decoder"] = {
            str(t["id"]): {
                k: t[k]
                for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")
                if k in t
            }
            for t in added
        }
    base_config = base_file(job.spec, "tokenizer_config.json")
    if base_config is not None:
        base = json.loads(base_config.read_text(encoding="utf-8"))
        for key in ("add_bos_token", "add_eos_token"):
            if key in base and key not in config:
                config[key] = base[key]
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
