"""Full fine-tuning (LoraSpec.full): every weight trains, and the run delivers a model folder.

The worker loads the weights in fp32 (master weights: AdamW's small updates would vanish in
bf16's 8-bit mantissa) and trains them under the run's 16-bit autocast, as the estimate counts
(engine.plan.memory.full_parts). What differs from a LoRA run lives here:

- the reference model of DPO, KTO and GRPO with a KL coefficient: a LoRA run gets it for free
  (the base with its adapter disabled), a full run needs a frozen copy of the base taken before
  training (`reference_copy`). TRL 1.16 would load that copy from the policy's config path, which
  misses a gguf: base, a hub revision, a resized vocabulary and a chained base, so
  `trl_reference` hands it ours instead while the trainer is built;
- the delivered folder, `<run_dir>/model/` (`save_model`): the weights in 16-bit safetensors,
  the tokenizer files (with the base's `tokenizer.model`, `add_base_files`) and the exact chat
  template the run trained with, as `save_adapter` writes for an adapter; a chained run
  (`run:<id>` base) and the export read it;
- a `stop`'s best checkpoint holds the whole model, not an adapter (`load_checkpoint_weights`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from engine.rundir import MODEL_WEIGHTS, MODEL_WEIGHTS_INDEX
from engine.spec import JobSpec

# the TRL trainer modules that build a reference model from the policy's config path
TRL_REFERENCE_LOADERS = (
    "trl.trainer.dpo_trainer",
    "trl.trainer.kto_trainer",
    "trl.trainer.grpo_trainer",
)


def parameter_count(model: Any) -> int:
    """Parameters of `model`, a shared (tied) tensor once."""
    return sum(p.numel() for p in model.parameters())  # parameters() skips the duplicates


def saved_dtype(config: Any, gguf_base: bool = False) -> torch.dtype:
    """The 16-bit type the model folder is written in: float16 for a `gguf:` base (whose GGUF
    export reads the folder with numpy, as the LoRA merge of such a base writes it) or a base
    that is float16 itself, else bfloat16 (fp32 master weights would double the folder for no
    gain at inference)."""
    value = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if gguf_base or str(value).replace("torch.", "") == "float16":
        return torch.float16
    return torch.bfloat16


def reference_copy(model: Any, dtype: torch.dtype) -> Any:
    """A frozen copy of `model` as it is before training, in the compute `dtype` (16-bit on a
    GPU: a reference is only run forward)."""
    reference = copy.deepcopy(model).to(dtype)
    reference.requires_grad_(False)
    reference.eval()
    reference.config.use_cache = False  # it scores whole (padding-free) batches, never generates
    return reference


@contextlib.contextmanager
def trl_reference(reference: Any | None) -> Iterator[None]:
    """While a TRL trainer is built, give it `reference` as its reference model instead of the
    copy it would load from the policy's config path (None: leave TRL as it is). TRL still
    prepares it as its own (dropout off, fused LM head, accelerate)."""
    if reference is None:
        yield
        return
    import importlib

    def given(*args: Any, **kwargs: Any) -> Any:
        return reference

    with contextlib.ExitStack() as stack:
        for name in TRL_REFERENCE_LOADERS:
            module = importlib.import_module(name)
            original = module.create_model_from_path  # fails loudly if TRL moves it
            module.create_model_from_path = given
            stack.callback(setattr, module, "create_model_from_path", original)
        yield


def save_model(
    model: Any, tokenizer: Any, out: Path, chat_template: str, dtype: torch.dtype
) -> Path:
    """The fully fine-tuned model as a Hugging Face folder: safetensors in `dtype` (copied to the
    CPU, so the trained model itself is left as it is), tokenizer files, and the exact chat
    template the run trained with, as its own file and in the tokenizer's config."""
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", dtype) for k, v in model.state_dict().items()}
    trained_dtype = model.config.dtype
    try:
        model.save_pretrained(out, state_dict=state)
    finally:
        model.config.dtype = trained_dtype  # save_pretrained writes the fp32 model's own there
    config_file = out / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["dtype"] = str(dtype).removeprefix("torch.")  # what the safetensors hold
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(out)
    (out / "chat_template.jinja").write_text(chat_template, encoding="utf-8")
    return out


def add_base_files(spec: JobSpec, out: Path) -> None:
    """Copy the base's sentencepiece `tokenizer.model` into the model folder when the base has
    one and the tokenizer did not write it: llama.cpp's converter reads it, so the folder
    converts to GGUF on its own (as a chained run's base, too)."""
    from engine.export.job import base_file

    if not (out / "tokenizer.model").is_file():
        source = base_file(spec, "tokenizer.model")
        if source is not None:
            shutil.copyfile(source, out / "tokenizer.model")


def has_model_weights(folder: Path) -> bool:
    """Whether a checkpoint (or model folder) holds the whole model's weights."""
    return (folder / MODEL_WEIGHTS).is_file() or (folder / MODEL_WEIGHTS_INDEX).is_file()


def load_checkpoint_weights(model: Any, folder: Path) -> None:
    """Load the whole model's weights of a checkpoint the Trainer wrote into `model` (one file
    or shards; a tied output layer is not written and stays tied)."""
    from safetensors.torch import load_file

    index = folder / MODEL_WEIGHTS_INDEX
    if index.is_file():
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    else:
        files = [MODEL_WEIGHTS]
    device = next(model.parameters()).device
    for name in files:
        state = load_file(str(folder / name), device=str(device))
        unexpected = model.load_state_dict(state, strict=False).unexpected_keys
        if unexpected:  # not this model's checkpoint: never deliver half-loaded weights
            raise ValueError(f"{folder / name} holds weights this model lacks: {unexpected[0]}")
        del state
