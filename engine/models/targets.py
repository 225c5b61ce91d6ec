"""LoRA target modules: what `auto` and `all-linear` mean for a model, and the one sentence for a
target the model does not have.

A LoRA config names the linear layers to adapt (`q_proj`, `o_proj`, …), or says `all-linear`
(every linear layer but the output head, as peft reads it) or `auto`, the default: the attention's
query and value projections under the names this architecture gives them. Query and value is
what LoRA adapted in its paper and what Tunegraph's default named before (`q_proj, v_proj`), so a
Llama-like run trains the same adapter as before, while an architecture that fuses its
projections gets the fused layer instead of a run that fails once its worker has started:

- `q_proj`, `v_proj`: Llama, Mistral, Qwen 2/2.5/3, Gemma 1/2/3, SmolLM2 and most others;
- `qkv_proj`: Phi-3, Phi-3.5, Phi-4 (query, key and value are one linear: it is adapted whole);
- `query_key_value`: GPT-NeoX, Falcon, Bloom; `Wqkv`: MPT.

`auto` is every linear layer of the model that has one of these names (AUTO_NAMES), so it needs no
table of architectures and means the same in peft (which adapts the listed names a model has).
Targets are resolved against the names of the model's linear layers: read from its config on the
meta device when the run is estimated (engine.plan.shape; no weights), and from the loaded model
in the worker. Both see the same layers, so the estimate counts the parameters the run trains,
and a name the model lacks is refused at submission, before any worker starts.
"""

from __future__ import annotations

from typing import Any

from engine.errors import ModelError

AUTO = "auto"
ALL_LINEAR = "all-linear"
# the attention's query and value projections, by the names the known families give them
AUTO_NAMES = ("q_proj", "v_proj", "qkv_proj", "query_key_value", "Wqkv")
_QUANTIZED_LINEARS = ("Linear4bit", "Linear8bitLt")


def linear_layer_names(model: Any) -> list[str]:
    """Short names of the model's linear layers LoRA can adapt (e.g. q_proj, down_proj), in the
    order the model holds them, without the output head."""
    import torch

    head = model.get_output_embeddings()
    names: dict[str, None] = {}
    for full, module in model.named_modules():
        linear = isinstance(module, torch.nn.Linear) or type(module).__name__ in _QUANTIZED_LINEARS
        if linear and module is not head:
            names.setdefault(full.rsplit(".", 1)[-1], None)
    return list(names)


def architecture_name(config: Any) -> str:
    """The model class a transformers config builds as a causal LM (e.g. Phi3ForCausalLM)."""
    named = getattr(config, "architectures", None)
    if named:
        return str(named[0])
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = getattr(config, "model_type", "") or ""
    return MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type) or model_type or "this model"


def expand_targets(targets: list[str], linear: list[str]) -> list[str]:
    """The names `targets` stands for in a model whose linear layers are `linear`: all of them for
    all-linear, the query/value projections it has for auto, other names as given (whether the
    model has them or not; `resolve_targets` checks)."""
    if ALL_LINEAR in targets:
        return list(linear)
    out: dict[str, None] = {}
    for target in targets:
        if target == AUTO:
            out.update((name, None) for name in linear if name in AUTO_NAMES)
        else:
            out.setdefault(target, None)
    return list(out)


def resolve_targets(targets: list[str], linear: list[str], architecture: str) -> list[str]:
    """The linear layers the LoRA config adapts in a model (`linear`: its layer names, from
    `linear_layer_names` or the estimate's shape); raises ModelError naming the node, the field,
    the missing module and the layers that exist."""
    resolved = expand_targets(targets, linear)
    missing = [name for name in resolved if name not in linear]
    existing = ", ".join(linear) or "none"
    hint = "Set the LoRA config node's target modules to auto, all-linear or names from that list."
    if missing:
        noun = "module" if len(missing) == 1 else "modules"
        verb = "does" if len(missing) == 1 else "do"
        raise ModelError(
            f"LoRA config: target {noun} {', '.join(missing)} {verb} not exist in "
            f"{architecture}; its linear layers are {existing} (or use all-linear)",
            hint,
        )
    if not resolved and ALL_LINEAR in targets:
        raise ModelError(f"LoRA config: {architecture} has no linear layer to adapt", None)
    if not resolved:
        raise ModelError(
            f"LoRA config: target modules auto finds no attention query or value projection "
            f"({', '.join(AUTO_NAMES)}) in {architecture}; its linear layers are {existing} "
            "(name the ones to adapt, or use all-linear)",
            hint,
        )
    return resolved


def peft_target_modules(targets: list[str], linear: list[str] | None = None) -> str | list[str]:
    """peft's `LoraConfig(target_modules=…)` for a LoRA config's targets: "all-linear" as such,
    else the resolved names when the model's linear layer names are given; without them, auto is
    spelled out as AUTO_NAMES, of which peft adapts the ones the model has (the same layers)."""
    if ALL_LINEAR in targets:
        return ALL_LINEAR
    if linear is not None:
        return expand_targets(targets, linear)
    names = [name for t in targets for name in (AUTO_NAMES if t == AUTO else (t,))]
    return list(dict.fromkeys(names))
