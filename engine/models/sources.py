"""Base-model sources: a hub id, a local folder, `gguf:PATH`, or `builtin:tiny-llama`.

`resolve_source` is cheap (no torch) and tells what a source is; `load_tokenizer` and `load_model`
do the real loading in the worker. The HF token comes from the keyring, never from the spec.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ModelError
from engine.spec import BaseModelSpec

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class ResolvedSource:
    """What a base-model source is and where it lies (see `resolve_source`)."""

    kind: str  # "builtin" | "folder" | "gguf" | "hub"
    location: str  # folder path, gguf file path or hub id
    gguf_file: str | None = None  # file name inside `location` for gguf sources


def resolve_source(spec: BaseModelSpec, build_builtin: bool = True) -> ResolvedSource:
    """Classify a base-model source and check it exists; raises ModelError naming what is wrong."""
    source = spec.source.strip()
    if source.startswith("builtin:"):
        from engine.models.tiny import resolve_builtin

        if not build_builtin:
            return ResolvedSource("builtin", source)
        return ResolvedSource("builtin", str(resolve_builtin(source)))
    if source.startswith("gguf:"):
        from engine.models.gguf_base import gguf_path

        path = gguf_path(source[len("gguf:") :])  # a file, or pypi:PACKAGE shipping one
        return ResolvedSource("gguf", str(path.parent), gguf_file=path.name)
    path = Path(source).expanduser()
    if path.exists() or source.startswith((".", "/", "~")) or os.sep in source[:1]:
        if not path.is_dir():
            raise ModelError(
                f"Base model: the folder {path} does not exist.",
                "Choose a model folder, a hub id, a gguf: file or builtin:tiny-llama.",
            )
        if not (path / "config.json").is_file():
            raise ModelError(
                f"Base model: the folder {path} has no config.json, so it is not a "
                "Hugging Face model folder.",
                "Pick the folder that holds config.json and the weights.",
            )
        return ResolvedSource("folder", str(path))
    if HUB_ID.match(source):
        from engine.settings import check_hub_id

        check_hub_id(source, spec.revision or None)  # offline mode: only cached models
        return ResolvedSource("hub", source)
    raise ModelError(
        f"Base model: {source!r} is neither an existing folder nor a hub id like org/name.",
        "Use a hub id, a local folder, gguf:PATH or builtin:tiny-llama.",
    )


def hub_kwargs(spec: BaseModelSpec, resolved: ResolvedSource) -> dict:
    """from_pretrained keyword arguments for a source: remote code, revision, token, GGUF file."""
    kwargs: dict = {"trust_remote_code": spec.trust_remote_code}
    if resolved.kind == "hub":
        from engine.secrets import get_hf_token

        if spec.revision:
            kwargs["revision"] = spec.revision
        token = get_hf_token()
        if token:
            kwargs["token"] = token
    if resolved.gguf_file:
        kwargs["gguf_file"] = resolved.gguf_file
    return kwargs


def load_config(spec: BaseModelSpec, resolved: ResolvedSource | None = None) -> Any:
    """The base model's transformers config (no weights)."""
    from transformers import AutoConfig

    resolved = resolved or resolve_source(spec)
    try:
        return AutoConfig.from_pretrained(resolved.location, **hub_kwargs(spec, resolved))
    except Exception as exc:  # the library raises many types; the user needs one sentence
        raise _load_failed("config", spec, exc) from exc


def _load_failed(what: str, spec: BaseModelSpec, exc: Exception) -> ModelError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    hint = None
    if "offline" in text.lower() or "connect" in text.lower() or "couldn't find" in text.lower():
        hint = (
            "The model is not in the local cache and the hub cannot be reached; download it "
            "once while online or choose a local folder."
        )
    elif "401" in text or "gated" in text.lower() or "token" in text.lower():
        hint = "The repository may be gated: add your Hugging Face token in Settings."
    return ModelError(f"Base model {spec.source!r}: could not load the {what}: {text}", hint)


def load_tokenizer(spec: BaseModelSpec, resolved: ResolvedSource) -> Any:
    """The base model's tokenizer, with a pad token distinct from EOS where the vocabulary allows."""
    from transformers import AutoTokenizer

    try:
        if resolved.kind == "gguf":  # rebuilt from the GGUF, with a family template if it has none
            from engine.models.gguf_base import load_tokenizer as load_gguf_tokenizer

            tok = load_gguf_tokenizer(Path(resolved.location) / resolved.gguf_file)
        else:
            tok = AutoTokenizer.from_pretrained(resolved.location, **hub_kwargs(spec, resolved))
    except ModelError:
        raise
    except Exception as exc:  # the library raises many types; the user needs one sentence
        raise _load_failed("tokenizer", spec, exc) from exc
    if tok.pad_token is None or tok.pad_token_id == tok.eos_token_id:
        # Our labels come from the assistant mask, never from "is not pad", so pad = eos would not
        # hide EOS from training; still prefer a distinct pad token where the vocabulary has one.
        for candidate in ("<pad>", "<|finetune_right_pad_id|>", "<|endoftext|>", "<unk>"):
            tid = tok.convert_tokens_to_ids(candidate)
            usable = tid is not None and tid != tok.eos_token_id
            if usable and (candidate == "<unk>" or tid != tok.unk_token_id):
                tok.pad_token = candidate
                break
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def load_model(
    spec: BaseModelSpec,
    resolved: ResolvedSource,
    dtype: Any,
    quantization_config: Any = None,
    device_map: str | dict[str, Any] | None = None,
    attn_implementation: str | None = None,
    config: Any = None,
) -> Any:
    """The base model as AutoModelForCausalLM in `dtype` (or 4-bit when a config is given), with
    the attention kernel `attn_implementation` ("sdpa", "eager", "flash_attention_2"; None for
    transformers' default); `config` is the one already loaded with `load_config`, if any."""
    from transformers import AutoModelForCausalLM

    kwargs = hub_kwargs(spec, resolved)
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    if device_map is not None:
        kwargs["device_map"] = device_map
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if config is not None and resolved.kind != "gguf":
        kwargs["config"] = config
    try:
        if resolved.kind == "gguf" and quantization_config is None:
            from engine.models.gguf_base import load_model as load_gguf_model

            model = load_gguf_model(Path(resolved.location) / resolved.gguf_file, dtype)
            if attn_implementation is not None:
                model.set_attn_implementation(attn_implementation)
            return model
        return AutoModelForCausalLM.from_pretrained(resolved.location, dtype=dtype, **kwargs)
    except ModelError:
        raise
    except Exception as exc:
        raise _load_failed("model", spec, exc) from exc


def linear_module_names(model: Any) -> list[str]:
    """Short names of the Linear-like modules LoRA can adapt (e.g. q_proj, v_proj)."""
    import torch

    names = set()
    for full, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) or type(module).__name__ in (
            "Linear4bit",
            "Linear8bitLt",
        ):
            names.add(full.rsplit(".", 1)[-1])
    out_name = getattr(model.get_output_embeddings(), "__class__", None)
    if out_name is not None:
        names.discard("lm_head")
    return sorted(names)


def check_target_modules(model: Any, targets: list[str]) -> None:
    """Raise ModelError when a LoRA target names no module of this model, listing those that exist."""
    if targets == ["all-linear"] or "all-linear" in targets:
        return
    existing = linear_module_names(model)
    missing = [t for t in targets if t not in existing]
    if missing:
        raise ModelError(
            f"LoRA config: target module {', '.join(missing)} is not in this model.",
            "Modules that exist: " + ", ".join(existing) + " (or use all-linear).",
        )
