"""A base model's shape from its transformers config: exact parameter counts (built on the meta
device, no weights), widths, depth, vocabulary, and the LoRA-adaptable linears. Imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelShape:
    """What the estimates need of a base model: parameter counts, widths, depth and LoRA targets."""

    params: int
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    context: int
    embedding_params: int
    lora_params: dict[str, int] = field(default_factory=dict)  # module name -> params at r=1
    heads: int = 0  # attention heads (the eager kernel's s² score matrices)
    kv_dim: int = 0  # width of the key (and of the value) projection
    in_features: dict[str, int] = field(default_factory=dict)  # module name -> inputs, per layer


def model_shape(config: Any) -> ModelShape:
    """Exact parameter counts from a transformers config, by building the model on `meta`."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    embedding = sum(
        m.weight.numel()
        for m in (model.get_input_embeddings(), model.get_output_embeddings())
        if m is not None
    )
    if getattr(config, "tie_word_embeddings", False):
        embedding //= 2
    lora: dict[str, int] = {}
    inputs: dict[str, int] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not model.get_output_embeddings():
            short = name.rsplit(".", 1)[-1]
            lora[short] = lora.get(short, 0) + module.in_features + module.out_features
            inputs[short] = inputs.get(short, 0) + module.in_features
    text = getattr(config, "text_config", None) or config
    layers = text.num_hidden_layers
    heads = getattr(text, "num_attention_heads", 0) or 0
    head_dim = getattr(text, "head_dim", None) or (text.hidden_size // max(heads, 1))
    return ModelShape(
        params=params,
        hidden=text.hidden_size,
        layers=layers,
        intermediate=getattr(text, "intermediate_size", 4 * text.hidden_size),
        vocab=text.vocab_size,
        context=getattr(text, "max_position_embeddings", 2048) or 2048,
        embedding_params=embedding,
        lora_params=lora,
        heads=heads,
        kv_dim=(getattr(text, "num_key_value_heads", None) or heads) * head_dim,
        in_features={k: v // max(layers, 1) for k, v in inputs.items()},
    )
