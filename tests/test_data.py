"""The data pipeline on real files and the tiny model's tokenizer: formats, errors that name the
file and line, assistant-only masks, truncation, splits, collators and the preview."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from engine.data.prepare import (
    DataStats,
    detect_format,
    format_preview,
    load_dataset_rows,
    make_collator,
    prepare_datasets,
    preview_rows,
    to_messages,
)
from engine.data.templates import (
    FALLBACK_ORIGIN,
    chat_template_for,
    has_generation_markers,
    prepare_tokenizer,
    stop_token_ids,
    strip_generation_markers,
)
from engine.errors import DataError
from engine.paths import sha256_file
from engine.spec import DatasetSpec, JobSpec, TrainingSpec

SUPPORT_CHATS = Path(__file__).parents[1] / "resources" / "datasets" / "support_chats.jsonl"
CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Is the shop open?"},
    {"role": "assistant", "content": "Yes, until 20."},
    {"role": "user", "content": "Thanks!"},
    {"role": "assistant", "content": "You are welcome."},
]


@pytest.fixture
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def chats(n: int, start: int = 0) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"Question number {i}?"},
                {"role": "assistant", "content": f"Answer number {i}."},
            ]
        }
        for i in range(start, start + n)
    ]


def job(*paths: Path, seed: int = 42, eval_split: float = 0.0, **ds) -> JobSpec:
    return JobSpec(
        name="t",
        datasets=[DatasetSpec(path=str(p), **ds) for p in paths],
        training=TrainingSpec(seed=seed, eval_split=eval_split),
    )


# -- formats ------------------------------------------------------------------------------------

FORMAT_ROWS = {
    "messages": {"messages": CHAT[:3]},
    "sharegpt": {
        "conversations": [
            {"from": "system", "value": "You are terse."},
            {"from": "human", "value": "Is the shop open?"},
            {"from": "gpt", "value": "Yes, until 20."},
        ]
    },
    "alpaca": {
        "instruction": "Is the shop open?",
        "input": "",
        "output": "Yes, until 20.",
        "system": "You are terse.",
    },
    "prompt_completion": {
        "prompt": "Is the shop open?",
        "completion": "Yes, until 20.",
        "system": "You are terse.",
    },
}


@pytest.mark.parametrize("fmt", sorted(FORMAT_ROWS))
def test_each_chat_format_is_detected_and_normalized(tmp_path, fmt):
    path = write_jsonl(tmp_path / f"{fmt}.jsonl", [FORMAT_ROWS[fmt]] * 2)
    rows, detected = load_dataset_rows(DatasetSpec(path=str(path)))
    assert detected == fmt and len(rows) == 2
    assert to_messages(rows[0], fmt) == CHAT[:3]


def test_alpaca_input_joins_the_instruction():
    row = {"instruction": "Translate.", "input": "Hallo", "output": "Hello"}
    assert detect_format([row]) == "alpaca"
    assert to_messages(row, "alpaca") == [
        {"role": "user", "content": "Translate.\n\nHallo"},
        {"role": "assistant", "content": "Hello"},
    ]


def test_text_format(tmp_path, tokenizer):
    path = write_jsonl(
        tmp_path / "t.jsonl", [{"text": f"The river runs north {i}."} for i in range(3)]
    )
    assert load_dataset_rows(DatasetSpec(path=str(path)))[1] == "text"
    data = prepare_datasets(job(path), tokenizer, 64)
    row = data.train[0]
    assert row["labels"] == row["input_ids"]  # every token trained
    assert row["input_ids"][0] == tokenizer.bos_token_id
    assert row["input_ids"][-1] == tokenizer.eos_token_id
    assert "text" in data.sample_prompts[0] and data.sample_prompts[0]["reference"]


def test_json_csv_and_parquet_files(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([FORMAT_ROWS["alpaca"]] * 3))
    with open(tmp_path / "b.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["prompt", "completion"])
        writer.writeheader()
        writer.writerows([{"prompt": "Is the shop open?", "completion": "Yes, until 20."}] * 4)
    with open(tmp_path / "c.csv", "w", newline="") as f:  # turns as JSON text in a cell
        writer = csv.DictWriter(f, fieldnames=["messages"])
        writer.writeheader()
        writer.writerow({"messages": json.dumps(CHAT)})
    pq.write_table(pa.Table.from_pylist([FORMAT_ROWS["sharegpt"]] * 5), tmp_path / "d.parquet")
    expected = {
        "a.json": ("alpaca", 3),
        "b.csv": ("prompt_completion", 4),
        "c.csv": ("messages", 1),
        "d.parquet": ("sharegpt", 5),
    }
    for name, (fmt, count) in expected.items():
        rows, detected = load_dataset_rows(DatasetSpec(path=str(tmp_path / name)))
        assert (detected, len(rows)) == (fmt, count), name
        assert to_messages(rows[0], fmt)[-1]["role"] == "assistant"
    rows, _ = load_dataset_rows(DatasetSpec(path=str(tmp_path / "c.csv")))
    assert to_messages(rows[0], "messages") == CHAT


def test_column_mapping_and_max_rows(tmp_path):
    path = write_jsonl(
        tmp_path / "m.jsonl", [{"question": f"q{i}", "answer": f"a{i}"} for i in range(10)]
    )
    spec = DatasetSpec(
        path=str(path), columns={"prompt": "question", "completion": "answer"}, max_rows=4
    )
    rows, fmt = load_dataset_rows(spec)
    assert fmt == "prompt_completion" and len(rows) == 4
    with pytest.raises(DataError, match="'nope'.*columns are answer, question"):
        load_dataset_rows(DatasetSpec(path=str(path), columns={"prompt": "nope"}))


# -- errors that say where ----------------------------------------------------------------------


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps(chats(1)[0])
    path.write_text(f'{good}\n{good}\n{{"messages": [}}\n{good}\n')
    with pytest.raises(DataError) as err:
        load_dataset_rows(DatasetSpec(path=str(path)))
    assert err.value.path == str(path) and err.value.line == 3
    assert str(err.value).startswith(f"{path}:3: invalid JSON")


def test_bad_row_names_its_line(tmp_path):
    rows = chats(3)
    rows[1]["messages"][1] = {"role": "assistant"}  # no content
    path = tmp_path / "rows.jsonl"
    path.write_text(
        "\n".join(json.dumps(r) for r in rows[:1])
        + "\n\n"  # a blank line
        + "\n".join(json.dumps(r) for r in rows[1:])
        + "\n"
    )
    with pytest.raises(DataError, match="turn 2 .assistant. is missing its 'content'") as err:
        load_dataset_rows(DatasetSpec(path=str(path)))
    assert err.value.line == 3

    rows = chats(2)
    rows[1]["messages"][0]["role"] = "robot"
    path = write_jsonl(tmp_path / "role.jsonl", rows)
    with pytest.raises(DataError, match="role 'robot'; expected one of system, user, assistant"):
        load_dataset_rows(DatasetSpec(path=str(path)))


def test_bad_csv_row_is_named_by_row(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("instruction,output\nHello,Hi\nAgain,\n")
    with pytest.raises(DataError, match=r"a\.csv: row 2: 'output' must be non-empty text"):
        load_dataset_rows(DatasetSpec(path=str(path)))


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="file not found") as err:
        load_dataset_rows(DatasetSpec(path=str(tmp_path / "nope.jsonl")))
    assert "nope.jsonl" in str(err.value)
    (tmp_path / "empty.jsonl").write_text("\n \n")
    with pytest.raises(DataError, match="empty"):
        load_dataset_rows(DatasetSpec(path=str(tmp_path / "empty.jsonl")))
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="unsupported file type"):
        load_dataset_rows(DatasetSpec(path=str(tmp_path / "x.txt")))


def test_unknown_format_lists_formats_and_keys(tmp_path):
    path = write_jsonl(tmp_path / "odd.jsonl", [{"question": "q", "reply": "a"}])
    with pytest.raises(DataError) as err:
        load_dataset_rows(DatasetSpec(path=str(path)))
    message = str(err.value)
    assert "keys seen: question, reply" in message
    for fmt in ("messages", "sharegpt", "alpaca", "prompt_completion", "text"):
        assert fmt in message


# -- templates, masks, truncation ---------------------------------------------------------------


def trained_text(tokenizer, row) -> str:
    return tokenizer.decode(
        [t for t, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != -100]
    )


def test_only_assistant_tokens_are_trained(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "c.jsonl", [{"messages": CHAT}])
    data = prepare_datasets(job(path), tokenizer, 512)
    row = data.train[0]
    assert trained_text(tokenizer, row) == "Yes, until 20.<|im_end|>You are welcome.<|im_end|>"
    assert row["input_ids"][0] == tokenizer.bos_token_id != row["input_ids"][1]  # one BOS
    assert data.template_origin == "tokenizer" and has_generation_markers(data.chat_template)


def test_templates_without_markers_are_masked_by_prefix(tmp_path, tokenizer, tiny_model_dir):
    path = write_jsonl(tmp_path / "c.jsonl", [{"messages": CHAT}])
    marked = prepare_datasets(job(path), tokenizer, 512).train[0]
    plain = AutoTokenizer.from_pretrained(tiny_model_dir)
    plain.chat_template = strip_generation_markers(plain.chat_template)
    data = prepare_datasets(job(path), plain, 512)
    assert not has_generation_markers(data.chat_template)
    assert data.train[0] == marked


def test_fallback_template_for_a_base_without_one(tmp_path, tokenizer):
    tokenizer.chat_template = None
    size = len(tokenizer)
    template, origin = chat_template_for(tokenizer)
    assert origin == FALLBACK_ORIGIN and "<|im_end|>" in template
    setup = prepare_tokenizer(tokenizer)
    assert setup.added_tokens == 0 and len(tokenizer) == size
    assert setup.end_of_turn == tokenizer.eos_token == "<|im_end|>"
    path = write_jsonl(tmp_path / "c.jsonl", [{"messages": CHAT}])
    data = prepare_datasets(job(path), tokenizer, 512)
    assert data.template_origin == FALLBACK_ORIGIN
    assert trained_text(tokenizer, data.train[0]).endswith("welcome.<|im_end|>")


def test_fallback_maps_the_end_of_turn_onto_an_existing_eos(tmp_path):
    """A base with no ChatML tokens: its own EOS ends turns and nothing is added."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = "<unk> <s> </s> hi there is the shop open yes until 20 you are terse".split()
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    tok.add_special_tokens({"eos_token": "</s>", "bos_token": "<s>"})
    size = len(tok)
    setup = prepare_tokenizer(tok)
    assert setup.origin == FALLBACK_ORIGIN and setup.end_of_turn == "</s>" == tok.eos_token
    assert setup.added_tokens == 0 and len(tok) == size
    assert tok.pad_token == "<unk>"
    chat = [
        {"role": "user", "content": "is the shop open"},
        {"role": "assistant", "content": "yes until 20"},
    ]
    path = write_jsonl(tmp_path / "c.jsonl", [{"messages": chat}])
    row = prepare_datasets(job(path), tok, 64).train[0]
    trained = [t for t, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != -100]
    assert tok.convert_ids_to_tokens(trained) == ["yes", "until", "20", "</s>"]


def test_pad_equal_to_eos_is_replaced_without_new_tokens(tokenizer):
    tokenizer.pad_token = tokenizer.eos_token
    setup = prepare_tokenizer(tokenizer)
    assert tokenizer.pad_token_id != tokenizer.eos_token_id and setup.added_tokens == 0


def test_truncation_is_counted(tmp_path, tokenizer):
    long = {
        "messages": [
            {"role": "user", "content": "Tell me more. " * 30},
            {"role": "assistant", "content": "Sure."},
        ]
    }
    path = write_jsonl(tmp_path / "c.jsonl", chats(3) + [long])
    data = prepare_datasets(job(path), tokenizer, 32)
    assert data.stats.truncated_rows == 1 and data.stats.dropped_rows == 1
    assert data.stats.train_rows == 3 and data.stats.tokens_max <= 32
    assert any("truncated" in w for w in data.stats.warnings)
    long["messages"][0]["content"] = "Hi."
    long["messages"][1]["content"] = "Sure, here is more. " * 30
    path = write_jsonl(tmp_path / "d.jsonl", [long])
    row = prepare_datasets(job(path), tokenizer, 32).train[0]
    assert len(row["input_ids"]) == 32 and row["labels"][-1] != -100


# -- splits, shuffling, several files, stats ------------------------------------------------------


def test_several_datasets_are_concatenated(tmp_path, tokenizer):
    a = write_jsonl(tmp_path / "a.jsonl", chats(6))
    b = tmp_path / "b.csv"
    b.write_text("instruction,output\n" + "".join(f"Say {i},Said {i}\n" for i in range(4)))
    data = prepare_datasets(job(a, b), tokenizer, 256)
    stats = data.stats
    assert stats.rows == 10 and stats.train_rows == 10 and data.eval is None
    assert [(d["format"], d["rows"]) for d in stats.datasets] == [("messages", 6), ("alpaca", 4)]
    assert stats.datasets[1]["sha256"] == sha256_file(b)
    json.dumps(dataclasses.asdict(stats))  # JSON-able
    assert isinstance(stats, DataStats) and stats.trained_tokens > 0
    assert stats.tokens_min <= stats.tokens_mean <= stats.tokens_max
    assert data.train.column_names == ["input_ids", "labels"]


@pytest.mark.parametrize(
    ("rows", "split", "n_eval"), [(100, 0.1, 10), (20, 0.01, 1), (9, 0.2, 0), (50, 0.0, 0)]
)
def test_eval_split_sizes(tmp_path, tokenizer, rows, split, n_eval):
    path = write_jsonl(tmp_path / "c.jsonl", chats(rows))
    data = prepare_datasets(job(path, eval_split=split), tokenizer, 128)
    assert data.stats.eval_rows == n_eval and data.stats.train_rows == rows - n_eval
    assert (data.eval is None) == (n_eval == 0)
    if split and not n_eval:
        assert any("eval split" in w for w in data.stats.warnings)


def test_sample_prompts_come_from_the_eval_split(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "c.jsonl", chats(40))
    data = prepare_datasets(job(path, eval_split=0.1), tokenizer, 128)
    assert len(data.sample_prompts) == 3
    eval_texts = {tokenizer.decode(r["input_ids"]) for r in data.eval}
    for sample in data.sample_prompts:
        assert sample["messages"][-1]["role"] == "user"
        assert sample["reference"].startswith("Answer number")
        number = sample["reference"].split()[-1].rstrip(".")
        assert any(f"Question number {number}?" in t for t in eval_texts)


def test_shuffling_is_deterministic_by_seed(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "c.jsonl", chats(30))

    def order(seed):
        data = prepare_datasets(job(path, seed=seed, eval_split=0.1), tokenizer, 128)
        return [r["input_ids"] for r in data.train], [r["input_ids"] for r in data.eval]

    assert order(1) == order(1)
    assert order(1) != order(2)


def test_fewer_than_1000_rows_warns(tmp_path, tokenizer):
    small = write_jsonl(tmp_path / "s.jsonl", chats(12))
    warnings = prepare_datasets(job(small), tokenizer, 128).stats.warnings
    assert any(w.startswith("only 12 examples: fewer than 1,000 rows") for w in warnings)
    big = write_jsonl(tmp_path / "b.jsonl", [{"text": f"Line {i}."} for i in range(1000)])
    warnings = prepare_datasets(job(big), tokenizer, 32).stats.warnings
    assert not any("fewer than 1,000" in w for w in warnings)


def test_support_chats_sample_dataset(tokenizer):
    data = prepare_datasets(job(SUPPORT_CHATS, eval_split=0.05), tokenizer, 2048)
    assert data.stats.rows == 300 and data.stats.eval_rows == 15
    assert data.stats.datasets[0]["format"] == "messages" and data.stats.truncated_rows == 0


# -- collators ----------------------------------------------------------------------------------


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_flattened_batch_loss_equals_per_sequence_losses(tiny_model_dir, tokenizer, attn):
    data = prepare_datasets(job(SUPPORT_CHATS), tokenizer, 2048)
    features = [data.train[i] for i in range(4)]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attn).eval()
    with torch.no_grad():
        total, count = 0.0, 0
        for f in features:
            labels = torch.tensor([f["labels"]])
            loss = model(input_ids=torch.tensor([f["input_ids"]]), labels=labels).loss
            n = int((labels[0, 1:] != -100).sum())
            total, count = total + loss.item() * n, count + n
        expected = total / count  # the token-weighted mean the Trainer's loss is

        flat = make_collator(tokenizer, packing=True)(features)
        assert flat["input_ids"].shape[0] == 1 and "attention_mask" not in flat
        assert flat["position_ids"][0].tolist().count(0) == 4
        flat_loss = model(**flat, use_cache=False).loss.item()
        padded = make_collator(tokenizer, packing=False)(features)
        assert padded["input_ids"].shape[1] % 8 == 0
        padded_loss = model(**padded).loss.item()
        crossing = {k: v for k, v in flat.items() if k != "position_ids"}
        crossing_loss = model(**crossing, use_cache=False).loss.item()
    assert flat_loss == pytest.approx(expected, abs=1e-4)
    assert padded_loss == pytest.approx(expected, abs=1e-4)
    assert abs(crossing_loss - expected) > 1e-3  # without position ids attention would leak


# -- preview ------------------------------------------------------------------------------------


def test_preview_marks_trained_segments(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "c.jsonl", [{"messages": CHAT}] + chats(5))
    rows = preview_rows(DatasetSpec(path=str(path)), tokenizer, n=2)
    assert len(rows) == 2 and rows[0].format == "messages" and not rows[0].truncated
    first = rows[0]
    assert [t for t, trained in first.segments if trained] == [
        "Yes, until 20.<|im_end|>",
        "You are welcome.<|im_end|>",
    ]
    assert "".join(t for t, _ in first.segments) == tokenizer.apply_chat_template(
        CHAT, tokenize=False
    )
    assert first.tokens == len(tokenizer.apply_chat_template(CHAT)["input_ids"])
    plain = format_preview(rows)
    assert (
        "[[Yes, until 20.<|im_end|>]]" in plain and "<|im_start|>user\nIs the shop open?" in plain
    )
    assert "\033[32mYes, until 20." in format_preview(rows, color=True)

    short = preview_rows(DatasetSpec(path=str(path)), tokenizer, n=1, max_seq_length=12)[0]
    assert short.truncated and short.tokens == 12


def test_preview_of_text_rows(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "The river runs north."}])
    row = preview_rows(DatasetSpec(path=str(path)), tokenizer)[0]
    assert row.segments == [("<s>The river runs north.<|im_end|>", True)]


def test_generation_stops_on_eos_and_the_templates_end_of_turn(tokenizer):
    template, _ = chat_template_for(tokenizer)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert stop_token_ids(tokenizer, template) == sorted({tokenizer.eos_token_id, im_end})
    ends_with_eos = "{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}"
    assert stop_token_ids(tokenizer, ends_with_eos) == [tokenizer.eos_token_id]
