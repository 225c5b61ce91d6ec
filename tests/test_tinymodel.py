"""The builtin tiny Llama: loads, tokenizes like its sentencepiece model, chats, generates, and is
built reproducibly and once."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from engine import paths
from engine.errors import ModelError
from engine.models.tiny import build_tiny_model, ensure_builtin_tiny_model, resolve_builtin

FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "My router is slow."},
    {"role": "assistant", "content": "Restart it, please."},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def test_folder_holds_weights_tokenizer_and_template(tiny_model_dir):
    for name in FILES:
        assert (tiny_model_dir / name).is_file(), name
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cfg = model.config
    assert cfg.model_type == "llama"
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (256, 2, 4)
    assert cfg.tie_word_embeddings is False
    assert cfg.max_position_embeddings == 2048


def test_special_tokens(tokenizer, tiny_model_dir):
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == im_end
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.bos_token == "<s>"
    for token in ("<|im_start|>", "<|im_end|>"):
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.generation_config.eos_token_id == im_end
    assert model.config.vocab_size == len(tokenizer)


def test_tokenizer_config_carries_what_the_gguf_converter_reads(tiny_model_dir):
    """llama.cpp's converter types tokens from added_tokens_decoder (special -> CONTROL) and reads
    add_bos_token; without them <|im_end|> would be an ordinary token in the GGUF."""
    config = json.loads((tiny_model_dir / "tokenizer_config.json").read_text())
    assert config["add_bos_token"] is True and config["add_eos_token"] is False
    special = {v["content"] for v in config["added_tokens_decoder"].values() if v["special"]}
    assert {"<s>", "</s>", "<unk>", "<pad>", "<|im_start|>", "<|im_end|>"} <= special


def test_fast_tokenizer_matches_sentencepiece_model(tokenizer, tiny_model_dir):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tiny_model_dir / "tokenizer.model"))
    text = "Hello <|im_start|>user\nMy bill is 42 euros, why?<|im_end|> Grüße ☃  two  spaces"
    assert tokenizer(text)["input_ids"] == [tokenizer.bos_token_id] + sp.encode(text)


def test_chat_template_renders_chatml_and_marks_the_answer(tokenizer):
    text = tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert text == (
        "<s><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
        "My router is slow.<|im_end|>\n<|im_start|>assistant\n"
        "Restart it, please.<|im_end|>\n"
    )
    prompt = tokenizer.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    out = tokenizer.apply_chat_template(CHAT, return_dict=True, return_assistant_tokens_mask=True)
    trained = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(trained) == "Restart it, please.<|im_end|>"


def test_generates(tiny_model_dir, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    inputs = tokenizer.apply_chat_template(
        CHAT[:2], add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_same_seed_same_bytes(tmp_path, tiny_model_dir):
    build_tiny_model(tmp_path / "a", seed=0)
    assert _digests(tmp_path / "a") == _digests(tiny_model_dir)
    build_tiny_model(tmp_path / "b", seed=1)
    other = _digests(tmp_path / "b")
    assert other["model.safetensors"] != _digests(tiny_model_dir)["model.safetensors"]


def test_builtin_is_built_once_into_the_data_dir(tg_home):
    folder = ensure_builtin_tiny_model()
    assert folder == paths.models_dir() / "tiny-llama"
    assert str(folder).startswith(str(tg_home))
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert ensure_builtin_tiny_model() == folder
    assert resolve_builtin("builtin:tiny-llama") == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".tiny-llama-")] == []


def test_racing_builders_build_one_complete_model(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEGRAPH_HOME", str(tmp_path / "home"))
    results, errors = [], []

    def build():
        try:
            results.append(ensure_builtin_tiny_model())
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results[0] == results[1]
    models = tmp_path / "home" / "models"
    assert sorted(p.name for p in models.iterdir() if not p.name.endswith(".lock")) == [
        "tiny-llama"
    ]
    AutoModelForCausalLM.from_pretrained(results[0])


def test_resolve_builtin_other_sources():
    assert resolve_builtin("Qwen/Qwen2.5-0.5B-Instruct") is None
    assert resolve_builtin("/some/folder") is None
    with pytest.raises(ModelError, match="builtin:tiny-llama"):
        resolve_builtin("builtin:huge-llama")
