"""Exporting a run trained on a GGUF base back to GGUF (engine.export.gguf calls in here).

The merged model is saved with the base's tokenizer, and the F16 GGUF is written with the gguf
library's writer from the *source* GGUF — its metadata and tokenizer kept, tensors the adapter
changed taken from the merged model, all others dequantized from the source — because llama.cpp's
converter needs tokenizer files a GGUF-rebuilt tokenizer does not have. The parity check then
compares it with the merged model.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from engine.errors import ExportError
from engine.models.gguf_base import architecture, header, load_model
from engine.rundir import ADAPTER_WEIGHTS
from engine.setup.streaming import LineSink
from engine.spec import BaseModelSpec

# archs whose LoRA-targeted (linear) weights transformers reads from GGUF unchanged; "llama"
# additionally un-permutes attn_q / attn_k, which `_to_gguf_layout` redoes
_EXPORT_LAYOUT_CHANGED = {
    "qwen2moe",
    "qwen3moe",
    "gpt-oss",
    "bloom",
    "t5",
    "t5encoder",
    "gpt2",
    "mamba",
    "lfm2",
    "minimax-m2",
}


def check_exportable(path: Path | str) -> str:
    """The file's architecture; ExportError when we cannot write its merged tensors back."""
    arch = architecture(path) or "unknown"
    if arch in _EXPORT_LAYOUT_CHANGED:
        raise ExportError(
            f"GGUF export from a GGUF base of the architecture {arch} is not "
            "supported: transformers reshapes its weights on loading.",
            "The adapter ZIP is still usable with the original model.",
        )
    return arch


def merge_and_save(base_spec: BaseModelSpec, source: Path, adapter_dir: Path, out: Path) -> Path:
    """Merge the adapter into the dequantized GGUF base (float32) and save a Hugging Face folder
    (float16 safetensors, the adapter's tokenizer); returns `out`."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    base = load_model(source, torch.float32)
    if len(tokenizer) > base.get_input_embeddings().weight.shape[0]:
        base.resize_token_embeddings(len(tokenizer))
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged = merged.to(torch.float16)
    merged.config.dtype = torch.float16
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
    del base, merged
    gc.collect()
    return out


def adapted_weights(adapter_dir: Path | str) -> set[str] | None:
    """HF names of the base weights the adapter changes (e.g. `model.layers.0.self_attn.q_proj.
    weight`), from the LoRA A matrices in adapter_model.safetensors; None for a folder without
    an adapter (a full fine-tuning run's model: every weight changed)."""
    from safetensors import safe_open

    if not (Path(adapter_dir) / ADAPTER_WEIGHTS).is_file():
        return None
    names = set()
    with safe_open(str(Path(adapter_dir) / ADAPTER_WEIGHTS), "pt") as f:
        for key in f.keys():
            if ".lora_A." in key:
                module = key.split(".lora_A.")[0].removeprefix("base_model.model.")
                names.add(module + ".weight")
    return names


def gguf_to_hf_names(merged_dir: Path | str, arch: str) -> dict[str, str]:
    """GGUF tensor name -> HF parameter name for the merged model's architecture."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(merged_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return gguf_to_hf_names_for(model, arch)


def gguf_to_hf_names_for(model: Any, arch: str | None = None) -> dict[str, str]:
    """GGUF tensor name -> HF parameter name for a transformers model (weights not needed)."""
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
    )

    processor = TENSOR_PROCESSORS.get(arch or "", TensorProcessor)(config=model.config.to_dict())
    return get_gguf_hf_weights_map(model, processor)


def _to_gguf_layout(array, gguf_name: str, arch: str, meta: dict[str, Any]):
    """Undo what transformers did to a tensor on loading (llama: the q/k row permutation)."""
    if arch != "llama" or not (".attn_q." in gguf_name or ".attn_k." in gguf_name):
        return array
    n_head = int(meta[f"{arch}.attention.head_count"])
    if ".attn_k." in gguf_name:
        n_head = int(meta.get(f"{arch}.attention.head_count_kv") or n_head)
    rows = array.shape[0]
    return (
        array.reshape(n_head, 2, rows // n_head // 2, *array.shape[1:])
        .swapaxes(1, 2)
        .reshape(array.shape)
    )


def write_merged_gguf(
    source: Path | str,
    merged_dir: Path | str,
    adapter_dir: Path | str,
    out: Path | str,
    on_line: LineSink | None = None,
) -> Path:
    """An F16 GGUF of the merged model, written from the source GGUF: every metadata key kept
    (file type set to F16), the tensors the adapter changed taken from the merged folder, the others
    dequantized from the source; 1-D tensors stay F32. Streams tensor by tensor; returns `out`."""
    import gguf
    import numpy as np
    from safetensors import safe_open

    source, merged_dir, out = Path(source), Path(merged_dir), Path(out)
    arch = check_exportable(source)
    meta = header(source)
    changed = adapted_weights(adapter_dir)
    to_hf = gguf_to_hf_names(merged_dir, arch)
    reader = gguf.GGUFReader(source)
    if changed is None:  # full fine-tuning: every weight of the model folder is taken from it
        changed = set(to_hf.values())
    missing = sorted(n for n in changed if n not in to_hf.values())
    if missing:
        raise ExportError(
            f"GGUF export: the adapted weight {missing[0]} has no tensor in {source.name}."
        )
    files = sorted(merged_dir.glob("*.safetensors"))
    handles = [safe_open(str(f), "np") for f in files]
    where = {key: h for h in handles for key in h.keys()}

    def tensor_data(tensor) -> np.ndarray:
        hf_name = to_hf.get(tensor.name)
        if hf_name in changed and hf_name in where:
            array = where[hf_name].get_tensor(hf_name).astype(np.float32)
            array = _to_gguf_layout(array, tensor.name, arch, meta)
        else:
            array = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        return array.astype(np.float32 if array.ndim <= 1 else np.float16)

    tmp = out.with_name(out.name + ".writing")
    writer = gguf.GGUFWriter(str(tmp), arch=arch, endianess=reader.endianess)
    try:
        for fld in reader.fields.values():
            if fld.name == "general.architecture" or fld.name.startswith("GGUF."):
                continue
            if fld.name == "general.file_type":
                writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_F16))
                continue
            val_type = fld.types[0]
            sub_type = fld.types[-1] if val_type == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(fld.name, fld.contents(), val_type, sub_type=sub_type)
        if "general.file_type" not in reader.fields:
            writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_F16))
        for tensor in reader.tensors:
            shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
            dtype = np.float32 if len(shape) <= 1 else np.float16
            writer.add_tensor_info(
                tensor.name, shape, np.dtype(dtype), int(np.prod(shape)) * np.dtype(dtype).itemsize
            )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for i, tensor in enumerate(reader.tensors):
            writer.write_tensor_data(tensor_data(tensor))
            if on_line is not None and (i % 50 == 0 or i == len(reader.tensors) - 1):
                on_line(f"writing tensor {i + 1}/{len(reader.tensors)}: {tensor.name}")
        writer.close()
        del reader, handles
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
