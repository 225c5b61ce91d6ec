"""A tiny random-weight Llama with a sentencepiece tokenizer, built on the fly.

It stands in for a real base model in tests, demos and the example graphs (`builtin:tiny-llama`),
so the whole pipeline (train, export to GGUF, chat) runs offline on a CPU. Shapes are chosen for
that pipeline: hidden size 256 so GGUF K-quants apply, a `tokenizer.model` so llama.cpp's converter
accepts the tokenizer, and ChatML with EOS = `<|im_end|>` so the trained model stops where the
template says a turn ends. The same seed gives the same bytes.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from engine import paths
from engine.data.templates import CHATML_END, CHATML_START, chatml_template
from engine.errors import ModelError

BUILTIN_PREFIX = "builtin:"
BUILTIN_MODELS = ("tiny-llama",)
VOCAB_SIZE = 1536
BOS, EOS, UNK, PAD = "<s>", CHATML_END, "<unk>", "<pad>"

# Words for the tokenizer's training text: everyday English plus the chat and support vocabulary
# of the sample dataset, so common words are single tokens.
_WORDS = """
the a an of to and in is it you that he she was for on are with as his her they be at one have
this from or had by not but what some we can out other were all there when up use your how said
each which do their time if will way about many then them would like so these long make thing see
him two has look more day could go come did number no most people my over know water than call
first who may down side been now find any new work part take get place made live where after back
little only round man year came show every good me give our under name very through just form
great think say help low line turn much mean before move right boy old too same tell does set three
want air well also play small end put home read hand large add even land here must big high such
follow act why ask men change went light kind off need house try us again point world near build
self earth father mother head stand own page should country found answer school grow study still
learn plant food sun four thought let keep eye never last door between city tree cross since hard
start might story saw far sea draw left late run while press close night real life few stop open
seem together next white children begin got walk example ease paper often always music those both
mark book letter until mile river car feet care second group carry took rain eat room friend began
idea fish mountain north once base hear horse cut sure watch color face wood main enough plain girl
usual young ready above ever red list though feel talk bird soon body dog family direct pose leave
song measure state product black short numeral class wind question happen complete ship area half
rock order fire south problem piece told knew pass farm top whole king size heard best hour better
true during hundred am remember step early hold west ground interest reach fast five sing listen
six table travel less morning ten simple several vowel toward war lay against pattern slow center
love person money serve appear road map science rule govern pull cold notice voice fall power town
fine certain fly unit lead cry dark machine note wait plan figure star box noun field rest correct
able pound done beauty drive stood contain front teach week final gave green oh quick develop sleep
warm free minute strong special mind behind clear tail produce fact street inch lot nothing course
stay wheel full force blue object decide surface deep moon island foot yet busy test record boat
common gold possible plane age dry wonder laugh thousand ago ran check game shape yes hot miss
brought heat snow bed bring sit perhaps fill east weight language among hello hi thanks thank
please sorry welcome support assistant user system customer account password internet router modem
bill billing invoice payment price plan contract order delivery email phone app settings network
speed connection cable restart reset login update upgrade cancel refund address move moving month
monday tuesday wednesday thursday friday saturday sunday today tomorrow yesterday euros dollars
help anything else great glad happy issue january february march april may june july august
september october november december extra usually visit fee contact contacting friendly reach
reaching technician weekly daily monthly minutes hours seconds working warehouse tracking label
return device lights normal slow slowly quickly problem problems works worked working choose
confirm confirmed confirmation enter entered follow link within send sent receive received days
new old wrong right correct check checked unplug plug plugged cable test result results line
lines open opened close closed keep kept tell told pick date ahead bring brought need needs
needed sorry see seen go gone bill bills charge charged charges cost costs paid pay yes no ok
okay thanks hello goodbye morning evening afternoon name names family friends team company
service services store shop buy sold sell product products screen computer laptop mobile
message messages reply replied answer answers question questions again usual because about
really very quite rather almost already always never sometimes often instead however although
""".split()
_PUNCT = [".", ".", ".", "?", "!", ",", ":", ";", " -", "'s"]


def _corpus(rng: random.Random, lines: int = 4000) -> list[str]:
    """English-like lines (sentences, numbers, short chats) to train the tokenizer on."""
    out = []
    for i in range(lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 18))]
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 2025)))
        words = [w.capitalize() if rng.random() < 0.15 else w for w in words]
        words[0] = words[0].capitalize()
        text = " ".join(words) + rng.choice(_PUNCT)
        if rng.random() < 0.2:
            text += " " + rng.choice(_WORDS).capitalize() + "-" + rng.choice(_WORDS) + "."
        if i % 10 == 0:
            role = rng.choice(["system", "user", "assistant"])
            text = f"{CHATML_START}{role}\n{text}{CHATML_END}"
        out.append(text)
    return out


def _train_sentencepiece(seed: int) -> bytes:
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus(random.Random(seed))),
        model_writer=buf,
        vocab_size=VOCAB_SIZE,
        model_type="bpe",
        byte_fallback=True,  # any text encodes (as bytes), like Llama's own tokenizer
        split_digits=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        unk_piece=UNK,
        bos_piece=BOS,
        eos_piece="</s>",
        user_defined_symbols=[CHATML_START, CHATML_END, PAD],
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        hard_vocab_limit=False,
        num_threads=1,  # one thread: training is then deterministic
        seed_sentencepiece_size=100_000,
        minloglevel=2,
    )
    return buf.getvalue()


def _write_tokenizer(out_dir: Path, seed: int) -> None:
    from transformers import AutoTokenizer

    (out_dir / "tokenizer.model").write_bytes(_train_sentencepiece(seed))
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "pad_token": PAD,
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": False,
        "model_max_length": 2048,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    # Loading the folder converts tokenizer.model to a fast tokenizer (transformers 5 ignores
    # LlamaTokenizer(vocab_file=...)); saving writes tokenizer.json so later loads skip that.
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": [CHATML_START, CHATML_END]})
    tokenizer.chat_template = chatml_template(CHATML_END, BOS)
    tokenizer.save_pretrained(out_dir)
    # llama.cpp's converter reads add_bos_token and the special tokens' types from here, and
    # transformers 5 no longer writes them: without added_tokens_decoder, <|im_end|> would become
    # a NORMAL token in the GGUF and prompts would tokenize differently there.
    saved = json.loads((out_dir / "tokenizer_config.json").read_text())
    saved.update(
        add_bos_token=True,
        add_eos_token=False,
        added_tokens_decoder={
            str(i): {
                "content": t.content,
                "lstrip": t.lstrip,
                "rstrip": t.rstrip,
                "normalized": t.normalized,
                "single_word": t.single_word,
                "special": t.special,
            }
            for i, t in sorted(tokenizer.added_tokens_decoder.items())
        },
    )
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(saved, indent=2, sort_keys=True) + "\n"
    )
    if not (out_dir / "tokenizer.model").exists():  # the GGUF converter needs it
        raise ModelError(f"tokenizer.model missing from {out_dir} after saving the tokenizer")


def build_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Build the tiny Llama and its tokenizer into `out_dir` (created); returns `out_dir`.

    LlamaForCausalLM, hidden 256, 2 layers, 4 heads (2 KV heads), intermediate 512, context 2048,
    untied embeddings; safetensors weights; sentencepiece BPE tokenizer with `<s>`, `</s>`, `<unk>`,
    `<pad>`, `<|im_start|>`, `<|im_end|>` (= EOS); `chat_template.jinja` (ChatML with generation
    markers); generation_config with the EOS id. Deterministic for a seed.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_tokenizer(out_dir, seed)
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(out_dir / "tokenizer.model"))
    ids = {tok: sp.piece_to_id(tok) for tok in (BOS, EOS, PAD)}
    config = LlamaConfig(
        vocab_size=sp.get_piece_size(),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=ids[BOS],
        eos_token_id=ids[EOS],
        pad_token_id=ids[PAD],
        dtype="float32",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=ids[BOS],
        eos_token_id=ids[EOS],
        pad_token_id=ids[PAD],
        do_sample=False,
        max_new_tokens=64,
    )
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a "Writing model shards" bar for one small file is noise
    try:
        model.save_pretrained(out_dir)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return out_dir


def ensure_builtin_tiny_model() -> Path:
    """The builtin tiny model's folder under models_dir(), built on first use.

    The build goes to a temporary folder beside the target and is renamed into place when complete,
    so no reader ever sees a half-written model. Racing processes are serialized by a file lock
    where the platform has `fcntl`; elsewhere the loser's rename fails and its copy is discarded.
    """
    target = paths.models_dir() / "tiny-llama"
    if _complete(target):
        return target
    with _exclusive(target.parent / ".tiny-llama.lock"):
        if _complete(target):  # another process finished while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=".tiny-llama-", dir=target.parent))
        try:
            build_tiny_model(tmp)
            if target.exists():  # debris of an interrupted build, never a complete model
                shutil.rmtree(target, ignore_errors=True)
            try:
                tmp.rename(target)
            except OSError:
                if not _complete(target):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _complete(folder: Path) -> bool:
    return (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: rely on the atomic rename alone
        yield
        return
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def resolve_builtin(source: str) -> Path | None:
    """The folder of a `builtin:NAME` model source (built on first use); None for other sources."""
    if not source.startswith(BUILTIN_PREFIX):
        return None
    name = source[len(BUILTIN_PREFIX) :]
    if name == "tiny-llama":
        return ensure_builtin_tiny_model()
    raise ModelError(
        f"unknown builtin model {source!r}",
        "Known builtin models: " + ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_MODELS),
    )
