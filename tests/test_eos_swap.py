"""The EOS swap (engine.data.templates.prepare_tokenizer) on real tokenizers with their families'
original templates: EOS becomes the end-of-turn token so runtimes stop where a turn ends, but the
text a run trains on is exactly what the base's own template renders with the base's own tokenizer.
Phi-3 is the family where the two used to differ: its template writes `eos_token` after the last
`<|end|>`, which the swap turned into `<|end|>\\n<|end|>`. Generation stops on the end-of-turn token
and on the original EOS."""

from __future__ import annotations

import pytest

from engine.data.encode import IGNORE, Encoder
from engine.data.templates import (
    pin_eos,
    pinned_eos,
    prepare_tokenizer,
    stop_token_ids,
    stop_tokens,
    strip_eos_pin,
)
from tests import real_tokenizers as real

CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Is the shop open?"},
    {"role": "assistant", "content": "Yes, until 20."},
    {"role": "user", "content": "Thanks!"},
    {"role": "assistant", "content": "You are welcome."},
]
ONE_TURN = [CHAT[1], CHAT[2]]
PHI3_PIN = "{%- set eos_token = '<|endoftext|>' -%}\n"


@pytest.fixture(scope="module")
def files():
    return real.fetched()


@pytest.mark.parametrize("family", list(real.FAMILIES))
def test_the_swap_changes_where_generation_stops_never_the_trained_text(files, family):
    tok = real.tokenizer(files, family)
    original = real.template(files, family)
    eos = tok.eos_token
    eot = real.FAMILIES[family].end_of_turn
    # what the base's own template renders with the base's own tokenizer, EOS untouched
    expected = {
        chat_name: tok.apply_chat_template(chat, tokenize=False)
        for chat_name, chat in (("chat", CHAT), ("one turn", ONE_TURN))
    }
    prompt = tok.apply_chat_template(ONE_TURN[:1], tokenize=False, add_generation_prompt=True)

    setup = prepare_tokenizer(tok)

    assert setup.end_of_turn == eot == tok.eos_token  # runtimes that stop on EOS stop at turn end
    assert tok.pad_token_id != tok.eos_token_id
    encoder = Encoder(tok, setup.template, 4096)
    assert encoder.render(CHAT) == expected["chat"]
    assert encoder.render(ONE_TURN) == expected["one turn"]
    assert encoder.render(ONE_TURN[:1], add_generation_prompt=True) == prompt
    assert stop_tokens(tok, setup.template) == list(dict.fromkeys([eot, eos]))
    stops = {tok.convert_tokens_to_ids(eot), tok.convert_tokens_to_ids(eos)}
    assert stop_token_ids(tok, setup.template) == sorted(stops)
    if family.startswith("phi3"):  # the one template of these that writes eos_token itself
        assert eos == "<|endoftext|>"
        assert setup.template == PHI3_PIN + original
        assert strip_eos_pin(setup.template) == original
        assert expected["one turn"].endswith("<|end|>\n<|endoftext|>")
    else:  # the others are left exactly as their models ship them
        assert setup.template == original


def test_phi3_trains_its_own_ending_end_of_turn_then_endoftext(files):
    tok = real.tokenizer(files, "phi3")
    setup = prepare_tokenizer(tok)
    enc = Encoder(tok, setup.template, 4096).encode({"messages": ONE_TURN})
    trained = [t for t, label in zip(enc.input_ids, enc.labels, strict=True) if label != IGNORE]
    end, endoftext = tok.convert_tokens_to_ids(["<|end|>", "<|endoftext|>"])
    assert tok.decode(trained, skip_special_tokens=True).strip() == "Yes, until 20."
    assert trained[-1] == endoftext  # the base's own end of text closes the conversation
    assert trained.count(end) == 1 and trained.count(endoftext) == 1  # never <|end|> twice
    between = trained[trained.index(end) + 1 : -1]
    assert tok.decode(between).strip() == ""  # only the newline lies between them


def test_the_pinned_template_travels_with_the_saved_tokenizer(files, tmp_path):
    """The adapter's tokenizer (EOS = <|end|>) renders Phi-3's format and stops on both tokens,
    loaded afresh in another process's place: the original EOS is read from the template."""
    from transformers import AutoTokenizer

    tok = real.tokenizer(files, "phi3")
    setup = prepare_tokenizer(tok)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.eos_token == "<|end|>" and loaded.chat_template == setup.template
    assert pinned_eos(loaded.chat_template) == "<|endoftext|>"
    rendered = loaded.apply_chat_template(ONE_TURN, tokenize=False)
    assert rendered.endswith("Yes, until 20.<|end|>\n<|endoftext|>")
    assert stop_tokens(loaded, loaded.chat_template) == ["<|end|>", "<|endoftext|>"]

    again = prepare_tokenizer(loaded)  # idempotent: no second pin, no second swap
    assert again.template == setup.template and loaded.eos_token == "<|end|>"
    assert not any("EOS set" in note for note in again.notes)


@pytest.mark.parametrize("name", ["phi3", "phi3_5", "phi3_training", "phi3_5_training"])
def test_the_pin_line_renders_nothing_of_its_own(files, name):
    """For every original and training template that writes eos_token: pinned and rendered with
    a swapped EOS, it is the original rendered with the original EOS, for every way it is used."""
    tok = real.tokenizer(files, "phi3")
    original = (files.trl_templates / f"{name}.jinja").read_text(encoding="utf-8")
    pinned = pin_eos(original, "<|endoftext|>")
    assert pinned != original and pin_eos(pinned, "<x>") == pinned
    for chat in (CHAT, ONE_TURN, CHAT[:2]):
        for prompt in (False, True):
            tok.eos_token = "<|endoftext|>"
            want = tok.apply_chat_template(
                chat, chat_template=original, tokenize=False, add_generation_prompt=prompt
            )
            tok.eos_token = "<|end|>"
            got = tok.apply_chat_template(
                chat, chat_template=pinned, tokenize=False, add_generation_prompt=prompt
            )
            assert got == want


def test_pinning_keeps_whitespace_rules_and_literal_quotes():
    """The pin line strips what follows it, as the template's own start of line would be under
    lstrip_blocks, and an EOS with quotes or backslashes round-trips."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    template = "  {% if true %}A{{ eos_token }}{% endif %}\n{{ bos_token }}|{{ eos_token }}"
    eos = "<it's \\ end>"
    pinned = pin_eos(template, eos)
    assert pinned_eos(pinned) == eos
    want = env.from_string(template).render(eos_token=eos, bos_token="<s>")
    assert env.from_string(pinned).render(eos_token="<other>", bos_token="<s>") == want
    assert pin_eos("{{ my_eos_token }}{{ tokenizer.eos_token }}", eos).startswith("{{")
    assert pinned_eos("{{ eos_token }}") is None
