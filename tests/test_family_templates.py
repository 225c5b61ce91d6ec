"""The chat templates Tunegraph knows (issue 18): the shipped family texts are trl's, byte for
byte; a base without a template is refused with what to pick, never given one silently; a picked
family or chatml is what the tokenizer gets (and refused when its end-of-turn is not a token of the
vocabulary); `template_plan` tells the same before anything loads; the properties panel shows it."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest

from engine.data import family_templates as ft
from engine.data.encode import Encoder
from engine.data.templates import prepare_tokenizer
from engine.errors import ModelError
from engine.models.sources import load_tokenizer, resolve_source
from engine.models.template_choice import template_plan
from engine.spec import CHAT_TEMPLATES, BaseModelSpec
from tests.test_gguf_base import tiny_gguf  # noqa: F401 (a fixture)

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "And now?"},
    {"role": "assistant", "content": "Still here."},
]


@pytest.fixture(scope="module")
def bare_gguf(tmp_path_factory, tiny_gguf) -> Path:  # noqa: F811
    """The tiny GGUF without its chat template (gguf-py's own metadata copier)."""
    import gguf
    from gguf.scripts.gguf_new_metadata import copy_with_new_metadata

    out = tmp_path_factory.mktemp("bare-gguf") / "bare-F16.gguf"
    reader = gguf.GGUFReader(tiny_gguf)
    writer = gguf.GGUFWriter(str(out), arch="llama", endianess=reader.endianess)
    copy_with_new_metadata(reader, writer, {}, ["tokenizer.chat_template"])
    return out


@pytest.fixture
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


# -- the catalogue ---------------------------------------------------------------------------------
def test_catalogue_names_match_the_node_choices():
    assert CHAT_TEMPLATES[0] == ft.TOKENIZER
    assert tuple(ft.FAMILIES) == CHAT_TEMPLATES[1:]
    for family in ft.FAMILIES.values():
        assert family.source and family.label


@pytest.mark.parametrize("name", [n for n in ft.FAMILIES if n != ft.CHATML])
def test_shipped_texts_are_trls_unchanged(name):
    """The sha256 recorded for each family is that of trl 1.16.0's file (checked when copied):
    an edit to the shipped text fails here."""
    family = ft.FAMILIES[name]
    assert ft.text_sha256(family.text()) == family.sha256
    assert ft.known_as(family.text()) == name
    assert family.source == f"trl 1.16.0, chat_templates/{name}.jinja, Apache-2.0"


# the special tokens of each family's vocabulary (the tiny one has ChatML's already)
TURN_TOKENS = {
    "llama3": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    "phi3": ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>"],
    "gemma": ["<start_of_turn>", "<end_of_turn>"],
}
TURN_TOKENS |= {
    "llama3_1": TURN_TOKENS["llama3"],
    "llama3_2": TURN_TOKENS["llama3"],
    "phi3_5": TURN_TOKENS["phi3"],
    "gemma3": TURN_TOKENS["gemma"],
}


@pytest.mark.parametrize("name", [n for n in ft.FAMILIES if n != ft.CHATML])
def test_each_family_is_set_renders_its_turns_and_trains_only_the_answers(name, tokenizer):
    """On a vocabulary holding the family's turn tokens, the pick is accepted, the answer is closed
    by the family's end-of-turn token, and the encoder trains every assistant turn and nothing
    else (assistant-only loss works with the original texts, which have no generation markers)."""
    tokenizer.add_special_tokens({"additional_special_tokens": TURN_TOKENS.get(name, [])})
    family = ft.FAMILIES[name]
    assert ft.apply_choice(tokenizer, name, "'tiny'").startswith(f"chat template: {name} from trl")
    chat = CHAT[1:] if name == "gemma" else CHAT  # Gemma 1/2 has no system role
    text = tokenizer.apply_chat_template(chat, tokenize=False)
    assert "Hello!" + family.end_of_turn in text.replace("\n", "")
    enc = Encoder(tokenizer, tokenizer.chat_template, 512).encode(
        {"messages": chat}, with_offsets=True
    )
    assert enc.skipped_turns == 0
    trained = "".join(
        enc.text[s:e]
        for (s, e), label in zip(enc.offsets, enc.labels, strict=True)
        if label != -100
    )
    assert "Hello!" in trained and "Still here." in trained
    assert family.end_of_turn in trained  # the model learns to stop
    assert "Hi there" not in trained and "And now?" not in trained
    prepare_tokenizer(tokenizer)  # what a run does next: EOS = end of turn, maybe EOS pinned
    assert ft.origin_of(tokenizer) == f"family:{name}"
    assert tokenizer.eos_token == family.end_of_turn


def test_architecture_names_its_family_only_when_it_tells():
    assert ft.family_for_architecture("gemma3") == "gemma3"
    assert ft.family_for_architecture("qwen2") == "qwen2_5"
    assert ft.family_for_architecture("llama") is None  # Llama 2/3, SmolLM, Mistral share it
    assert ft.family_for_architecture("llama", {"<|start_header_id|>": 1}) == "llama3"
    hint = ft.choices_hint("gemma3", "<eos>")
    assert "chatml" in hint and "gemma3" in hint and "<eos>" in hint


# -- setting the pick on a tokenizer ----------------------------------------------------------------
def test_own_template_is_kept_and_a_missing_one_is_refused(tokenizer):
    own = tokenizer.chat_template
    assert ft.apply_choice(tokenizer, "tokenizer", "'x'") is None
    assert tokenizer.chat_template == own
    tokenizer.chat_template = None
    with pytest.raises(ModelError, match="no chat template") as err:
        ft.apply_choice(tokenizer, "tokenizer", "'x'", "gemma3")
    assert "chatml" in err.value.hint and "gemma3" in err.value.hint
    assert tokenizer.chat_template is None  # nothing set silently


def test_a_picked_family_replaces_the_template_and_is_named(tokenizer):
    size = len(tokenizer)
    note = ft.apply_choice(tokenizer, "qwen2_5", "'x'")
    assert tokenizer.chat_template == ft.FAMILIES["qwen2_5"].text()
    assert "qwen2_5" in note and "replacing the base's own" in note
    assert ft.origin_of(tokenizer) == "family:qwen2_5" and ft.note_of(tokenizer) == note
    assert len(tokenizer) == size  # no token added
    tokenizer.chat_template = "{{ 'other' }}"
    assert ft.origin_of(tokenizer) is None and ft.note_of(tokenizer) is None  # changed since


def test_chatml_pick_uses_the_vocabularys_end_of_turn(tokenizer):
    from engine.data.templates import fallback_template

    tokenizer.chat_template = None
    ft.apply_choice(tokenizer, "chatml", "'x'")
    assert tokenizer.chat_template == fallback_template(tokenizer)
    assert "<|im_end|>" in tokenizer.chat_template
    assert ft.origin_of(tokenizer) == "family:chatml"


def test_a_family_whose_end_of_turn_is_not_a_token_is_refused(tokenizer):
    own = tokenizer.chat_template
    for name in ("llama3", "gemma3", "phi3_5"):  # the tiny vocabulary has none of their tokens
        with pytest.raises(ModelError, match="could never learn to stop"):
            ft.apply_choice(tokenizer, name, "'tiny'")
        assert tokenizer.chat_template == own


# -- the worker's tokenizer, from a GGUF with and without a template -----------------------------------
def test_gguf_without_template_gets_none_and_the_run_is_refused(bare_gguf, tiny_gguf):  # noqa: F811
    from engine.models.gguf_base import header
    from engine.models.gguf_base import load_tokenizer as gguf_tokenizer

    assert "tokenizer.chat_template" not in header(bare_gguf)
    assert gguf_tokenizer(bare_gguf).chat_template is None  # no template made up
    spec = BaseModelSpec(source=f"gguf:{bare_gguf}")
    with pytest.raises(ModelError, match="no chat template") as err:
        load_tokenizer(spec, resolve_source(spec))
    assert "Chat template" in err.value.hint
    picked = BaseModelSpec(source=f"gguf:{bare_gguf}", chat_template="chatml")
    tok = load_tokenizer(picked, resolve_source(picked))
    assert "<|im_start|>" in tok.chat_template and ft.origin_of(tok) == "family:chatml"


# -- told before loading: template_plan ---------------------------------------------------------------
def test_plan_for_ggufs_with_and_without_a_template(bare_gguf, tiny_gguf):  # noqa: F811
    own = template_plan(BaseModelSpec(source=f"gguf:{tiny_gguf}"))
    assert own.template == "tokenizer" and not own.problem
    assert "the model's own, from the GGUF file" in own.summary
    bare = template_plan(BaseModelSpec(source=f"gguf:{bare_gguf}"))
    assert bare.template is None and "no chat template in the GGUF file" in bare.problem
    assert "chatml" in bare.hint
    picked = template_plan(BaseModelSpec(source=f"gguf:{bare_gguf}", chat_template="gemma3"))
    assert picked.template == "gemma3" and not picked.problem
    assert "chat_templates/gemma3.jinja" in picked.summary
    replacing = template_plan(BaseModelSpec(source=f"gguf:{tiny_gguf}", chat_template="chatml"))
    assert "replaces the model's own" in replacing.summary


def test_plan_for_folders(tmp_path, tiny_model_dir):
    own = template_plan(BaseModelSpec(source=str(tiny_model_dir)))
    assert own.template == "tokenizer" and "its tokenizer files" in own.summary
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    (bare / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    plan = template_plan(BaseModelSpec(source=str(bare)))
    assert plan.template is None and "qwen2_5" in plan.hint  # the architecture's family
    (bare / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": ft.FAMILIES["qwen2_5"].text()})
    )
    plan = template_plan(BaseModelSpec(source=str(bare)))
    assert "identical to the Qwen2.5 family's" in plan.summary


def test_plan_for_a_hub_model_not_downloaded_waits_for_the_load(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    plan = template_plan(BaseModelSpec(source="someone/never-downloaded-model"))
    assert plan.template == "tokenizer" and not plan.problem
    assert "checked when it loads" in plan.summary


# -- the properties panel ----------------------------------------------------------------------------
def shown(panel) -> str:
    """The panel's state line as plain text."""
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", panel.state.text()))


def test_properties_panel_shows_the_template_and_the_missing_pick(qtbot, bare_gguf, tiny_gguf):  # noqa: F811
    pytest.importorskip("pytestqt")
    from PySide6 import QtWidgets

    from app.canvas import Canvas
    from app.properties import PropertiesPanel

    holder = QtWidgets.QWidget()
    qtbot.addWidget(holder)
    canvas = Canvas(holder)
    panel = PropertiesPanel(canvas)
    qtbot.addWidget(panel)
    node = canvas.add_node("BaseModel", "base", source=f"gguf:{bare_gguf}")
    canvas.select([node])
    assert panel.node is node and "chat_template" in panel.editors
    assert "Chat template needed" in shown(panel) and "chatml" in shown(panel)
    panel.editors["chat_template"].committed.emit("gemma3")
    canvas.recompile()
    assert node.get_property("chat_template") == "gemma3"
    assert "Gemma 3 family" in shown(panel) and "needed" not in shown(panel)
    canvas.set_param(node, "source", f"gguf:{tiny_gguf}")
    canvas.set_param(node, "chat_template", "tokenizer")
    canvas.recompile()
    assert "the model's own, from the GGUF file" in shown(panel)
    canvas.graph.undo_stack().setClean()


def test_a_base_without_template_is_refused_on_its_node_and_the_dialog_names_the_one_used(
    qtbot,
    bare_gguf,
    tiny_gguf,  # noqa: F811
):
    pytest.importorskip("pytestqt")
    from app.confirm_dialog import ConfirmRunsDialog
    from nodes import compile as compile_graph
    from nodes.graphfile import GraphBuilder

    data = Path(__file__).resolve().parents[1] / "resources" / "datasets" / "owl_style.jsonl"
    g = GraphBuilder(seed=18)
    for i, (name, source) in enumerate((("bare", bare_gguf), ("own", tiny_gguf))):
        model = g.add_node("BaseModel", f"base {name}", (0, 300 * i), source=f"gguf:{source}")
        module = g.add_node("FineTune", name, (400, 300 * i))
        g.connect(model, module, "base_model")
        g.connect(g.add_node("Dataset", f"data {name}", path=str(data)), module, "dataset")
        g.connect(g.add_node("TrainingConfig", f"train {name}"), module, "training_config")
        g.connect(g.add_node("LoraConfig", f"lora {name}"), module, "lora_config")
    result = compile_graph(g.to_dict())
    # the base without a template is an error on its own node: that run is refused at compile
    [error] = result.errors
    assert (error.node_name, error.field, error.kind) == (
        "base bare",
        "chat_template",
        "invalid_value",
    )
    assert error.message.startswith("no chat template in the GGUF file")
    assert "Pick one in the Base model node's Chat template: chatml" in error.message
    dialog = ConfirmRunsDialog(result.modules, [], g.to_dict(), estimates=[])
    qtbot.addWidget(dialog)
    assert [m.name for m in dialog.startable()] == ["own"]
    text = html.unescape(dialog.body.toPlainText())
    assert "Chat template\nthe model's own, from the GGUF file." in text
    assert dialog.start_button.text() == "Start 1 run"
