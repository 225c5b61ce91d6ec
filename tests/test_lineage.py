"""nodes.lineage: what a duplicated Fine-Tune module changed, from the serialized graph alone."""

from __future__ import annotations

import pytest

from engine.formatting import format_number, format_setting
from nodes.graphfile import GraphBuilder
from nodes.lineage import Change, lineage_diff, lineage_label


def _pair(**copy_training):
    """Two modules, the second a deep copy of the first with its own feeders."""
    g = GraphBuilder(seed=1)
    ids = {}
    for suffix in ("", " (copy)"):
        model = g.add_node("BaseModel", "model" + suffix)
        data = g.add_node("Dataset", "data" + suffix, path="a.jsonl")
        train = g.add_node("TrainingConfig", "train" + suffix, learning_rate=2e-4)
        lora = g.add_node("LoraConfig", "lora" + suffix)
        kwargs = {"origin_uuid": g.uuid_of(ids["orig"])} if suffix else {}
        module = g.add_node("FineTune", "ft" + suffix, **kwargs)
        for src, port in (
            (model, "base_model"),
            (data, "dataset"),
            (train, "training_config"),
            (lora, "lora_config"),
        ):
            g.connect(src, module, port)
        ids["copy" if suffix else "orig"] = module
        ids["train" + suffix] = train
        ids["lora" + suffix] = lora
    if copy_training:
        g.set_params(ids["train (copy)"], **copy_training)
    return g, ids


def test_not_a_copy_has_no_lineage():
    g, ids = _pair()
    assert lineage_diff(g.to_dict(), ids["orig"]) is None


def test_identical_copy_says_so():
    g, ids = _pair()
    lineage = lineage_diff(g.to_dict(), ids["copy"])
    assert lineage.changes == ()
    assert lineage.text() == "same settings as ft"


def test_changed_learning_rate_text():
    g, ids = _pair(learning_rate=1e-4)
    lineage = lineage_diff(g.to_dict(), ids["copy"])
    assert lineage.changes == (Change("training_config.learning_rate", "lr", 2e-4, 1e-4),)
    assert lineage.text() == "lr 2e-4 → 1e-4"


def test_values_stored_as_text_compare_by_value():
    """The canvas may store "0.0002" for 2e-4: that is not a change."""
    g, ids = _pair(learning_rate="0.0002", epochs="3")
    assert lineage_diff(g.to_dict(), ids["copy"]).changes == ()


def test_several_changes_most_important_first_one_a_line():
    g, ids = _pair(learning_rate=1e-3, micro_batch_size=8)
    g.set_params(ids["lora (copy)"], r=32, target_modules=["q_proj", "k_proj", "v_proj"])
    text = lineage_diff(g.to_dict(), ids["copy"]).text()
    assert text.splitlines() == [
        "lr 2e-4 → 1e-3",
        "r 16 → 32",
        "targets auto → q_proj,k_proj,v_proj",
        "batch 4 → 8",
    ]
    assert lineage_label(text) == (
        "lr 2e-4 → 1e-3, r 16 → 32, targets auto → q_proj,k_proj,v_proj +1 more",
        text,
    )


def test_origin_deleted():
    g, ids = _pair()
    data = g.to_dict()
    del data["nodes"][ids["orig"]]
    lineage = lineage_diff(data, ids["copy"])
    assert lineage.origin_id is None
    assert lineage.text() == "copy of a deleted Fine-Tune node"


def test_datasets_compare_as_a_set_of_files():
    """Adding a file says so once, not as a change of every dataset's settings."""
    g, ids = _pair()
    b = g.add_node("Dataset", "b", (0, 900), path="b.jsonl")
    c = g.add_node("Dataset", "c", (0, 1000), path="c.csv", format="sharegpt")
    g.connect(b, ids["copy"], "dataset")
    assert lineage_diff(g.to_dict(), ids["copy"]).text() == "data +1 file"
    g.connect(c, ids["copy"], "dataset")
    assert lineage_diff(g.to_dict(), ids["copy"]).text() == "data +2 files"


def test_a_changed_file_and_its_settings():
    g, ids = _pair()
    data = g.to_dict()
    copy_data = next(i for i, n in data["nodes"].items() if n["name"] == "data (copy)")
    data["nodes"][copy_data]["custom"].update(path="../sets/b.jsonl", format="sharegpt")
    text = lineage_diff(data, ids["copy"]).text()
    assert text.splitlines() == ["data a.jsonl → b.jsonl", "format auto → sharegpt"]


@pytest.mark.parametrize(
    "value, text",
    [
        (2e-4, "2e-4"),
        (1e-3, "1e-3"),
        (5e-3, "5e-3"),
        (0.05, "0.05"),
        (3.0, "3"),
        (1.5e-4, "1.5e-4"),
    ],
)
def test_format_number(value, text):
    assert format_number(value) == text


def test_format_value():
    assert format_setting(True) == "on"
    assert format_setting(["q_proj", "v_proj"]) == "q_proj,v_proj"
    assert format_setting("../data/support.jsonl") == "support.jsonl"
    assert format_setting("") == "—"
    assert format_setting("builtin:tiny-llama") == "builtin:tiny-llama"
