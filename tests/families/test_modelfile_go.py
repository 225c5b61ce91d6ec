"""The Modelfile's TEMPLATE rendered by Go's own text/template, as Ollama renders it (the
tests/gotemplate helper, built by tests/families/golang.py), against each family's real template:
for a system message, a user turn, an answer and a user turn awaiting the answer, Go writes what
the real template writes with the generation prompt (BOS aside: the runtime adds it), and the
Modelfile's `PARAMETER stop` lines are the family's stops, its end-of-turn token among them."""

from __future__ import annotations

import json
import re

import pytest

from engine.data.templates import end_of_turn_token
from engine.export import ollama
from tests.families.build import FAMILIES, template_text, tokenizer_folder
from tests.families.golang import render
from tests.families.test_family_matrix import CHAT, TEMPLATE_CASES, files  # noqa: F401


def _family(tok, real: str) -> ollama.Family:
    """The Modelfile's family for the real template, as the export picks it."""
    family = ollama.detect_family(real)
    if family is ollama.LLAMA3 and (preamble := ollama.llama3_system_preamble(tok, real)):
        family = ollama.llama3_with_preamble(preamble)
    assert family is not None
    return family


@pytest.mark.parametrize("name", list(TEMPLATE_CASES))
def test_the_modelfile_renders_in_go_like_the_real_template(name, files, gotemplate):  # noqa: F811
    from transformers import AutoTokenizer

    ref, expected, renderer = TEMPLATE_CASES[name]
    folder = tokenizer_folder(files, FAMILIES[renderer])
    tok = AutoTokenizer.from_pretrained(folder)
    real = template_text(files, ref, folder)
    family = _family(tok, real)
    assert family.name == expected
    messages = CHAT[:4] if name != "gemma2" else CHAT[1:4]  # Gemma 2 refuses a system turn
    rendered = tok.apply_chat_template(
        messages, chat_template=real, tokenize=False, add_generation_prompt=True
    )
    bos = tok.bos_token or ""
    if "bos_token" in real and bos and rendered.startswith(bos):
        rendered = rendered[len(bos) :]

    text, warnings = ollama.modelfile("m-F16.gguf", family, [family.end_of_turn])
    assert warnings == []
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, re.DOTALL | re.MULTILINE)
    assert template is not None, text
    assert render(gotemplate, template.group(1), messages) == rendered

    stops = [
        json.loads(line[len("PARAMETER stop ") :])
        for line in text.splitlines()
        if line.startswith("PARAMETER stop ")
    ]
    assert stops == list(family.stops)
    assert end_of_turn_token(tok, real) == family.end_of_turn
