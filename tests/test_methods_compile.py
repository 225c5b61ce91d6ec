"""Training methods without training (issue 21): the Fine-Tune node's `method` and its knobs, the
Reward node, the data formats of each method and the compile errors that name a Dataset node's
missing columns, method in `show --json` and diff. No torch, except the tiny tokenizer that
packs pretraining text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.data.method_formats import dataset_problem, first_row, method_row
from engine.errors import DataError
from engine.spec import JobSpec, MethodSpec, RewardSpec
from nodes import GraphBuilder, compile, save_graph
from nodes.catalogue import CATALOGUE, FINE_TUNE
from tests.helpers import write_chats


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def pairs(path: Path, n: int = 12) -> Path:
    return write_rows(
        path,
        [{"prompt": f"q{i}", "chosen": f"ACK: a{i}", "rejected": f"a{i}"} for i in range(n)],
    )


def graph(
    data: Path,
    method: str = "sft",
    rewards: tuple[str, ...] = (),
    columns: dict | None = None,
    **knobs,
) -> dict:
    """One module of `method` on `data`, with a Reward node per scorer in `rewards`."""
    g = GraphBuilder(seed=3)
    ft = g.add_node("FineTune", "ft", (400, 0), method=method, **knobs)
    feeds = {
        "base_model": g.add_node("BaseModel", "base"),
        "dataset": g.add_node("Dataset", "data", path=str(data), columns=columns or {}),
        "training_config": g.add_node("TrainingConfig", "train", micro_batch_size=4),
        "lora_config": g.add_node("LoraConfig", "lora"),
    }
    for port, node in feeds.items():
        g.connect(node, ft, port)
    for i, scorer in enumerate(rewards):
        g.connect(g.add_node("Reward", f"reward {i}", scorer=scorer), ft, "reward")
    return g.to_dict()


def errors_by_node(result) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for e in result.errors:
        out.setdefault(e.node_name, []).append((e.field, e.message))
    return out


# -- the node and the spec -----------------------------------------------------------------------
def test_method_and_its_knobs_are_fine_tune_parameters_shown_only_for_their_method():
    names = [p.name for p in FINE_TUNE.parameters]
    assert names[:5] == ["device", "gpu_count", "target", "share_base", "method"]
    assert FINE_TUNE.parameter("method").choices == (
        "sft",
        "dpo",
        "orpo",
        "kto",
        "simpo",
        "grpo",
        "pretrain",
    )
    shown = {
        method: {p.name for p in FINE_TUNE.parameters if p.visible({"method": method})}
        for method in ("sft", "dpo", "kto", "simpo", "grpo", "pretrain")
    }
    base = {"device", "gpu_count", "target", "share_base", "method"}
    assert shown["sft"] == shown["pretrain"] == base
    assert shown["dpo"] == base | {"beta", "loss_type"}
    assert shown["simpo"] == base | {"beta", "simpo_gamma"}
    assert shown["kto"] == base | {"beta", "desirable_weight", "undesirable_weight"}
    assert shown["grpo"] == base | {
        "num_generations",
        "max_completion_length",
        "temperature",
        "kl_coef",
    }
    reward = CATALOGUE["Reward"]
    assert [p.name for p in reward.parameters] == ["scorer", "weight", "judge"]
    assert FINE_TUNE.input("reward").multiple and not FINE_TUNE.input("reward").required


def test_method_compiles_into_the_spec_and_round_trips(tmp_path):
    data = pairs(tmp_path / "pairs.jsonl")
    result = compile(graph(data, "dpo", beta=0.3, loss_type="ipo"))
    assert result.ok, [str(e) for e in result.errors]
    spec = result.specs[0]
    assert (spec.method.method, spec.method.beta, spec.method.loss_type) == ("dpo", 0.3, "ipo")
    assert spec.resources.device == "auto" and spec.rewards == []
    again = JobSpec.from_json(spec.to_json())
    assert again == spec
    old = json.loads(spec.to_json())
    del old["method"], old["rewards"]  # a spec.json written before methods existed
    assert JobSpec.from_dict(old).method == MethodSpec()


def test_a_knob_out_of_range_is_an_error_on_the_fine_tune_field(tmp_path):
    data = pairs(tmp_path / "pairs.jsonl")
    result = compile(graph(data, "dpo", beta=-1))
    assert errors_by_node(result) == {"ft": [("beta", "must be at least 0 (got -1.0)")]}


# -- rewards -------------------------------------------------------------------------------------
def test_grpo_needs_a_reward_and_only_grpo_takes_rewards(tmp_path):
    prompts = write_rows(tmp_path / "p.jsonl", [{"prompt": f"q{i}"} for i in range(12)])
    result = compile(graph(prompts, "grpo"))
    [(field, message)] = errors_by_node(result)["ft"]
    assert field == "reward" and "connect at least one Reward node" in message
    result = compile(graph(pairs(tmp_path / "pairs.jsonl"), "dpo", rewards=("regex:^ACK",)))
    [(field, message)] = errors_by_node(result)["ft"]
    assert field == "reward" and "used only by method grpo" in message
    result = compile(graph(prompts, "grpo", rewards=("regex:^ACK", "length:40")))
    assert result.ok, [str(e) for e in result.errors]
    assert [(r.scorer, r.weight) for r in result.specs[0].rewards] == [
        ("regex:^ACK", 1.0),
        ("length:40", 1.0),
    ]


@pytest.mark.parametrize(
    ("scorer", "message"),
    [
        ("regex:(", "the pattern does not compile"),
        ("length:0", "length: needs a number of characters above 0"),
        ("loss", "is not a reward scorer"),
        ("python:score.txt", "python: needs a .py file"),
    ],
)
def test_a_bad_scorer_is_an_error_on_the_reward_node(tmp_path, scorer, message):
    prompts = write_rows(tmp_path / "p.jsonl", [{"prompt": "q"}])
    [(field, text)] = errors_by_node(compile(graph(prompts, "grpo", rewards=(scorer,))))["reward 0"]
    assert field == "scorer" and message in text


def test_a_python_reward_resolves_against_the_graph_folder_and_must_exist(tmp_path):
    prompts = write_rows(tmp_path / "p.jsonl", [{"prompt": "q"}])
    path = save_graph(graph(prompts, "grpo", rewards=("python:score.py",)), tmp_path / "g.json")
    [(field, text)] = errors_by_node(compile(json.loads(path.read_text()), path))["reward 0"]
    assert field == "scorer" and str(tmp_path / "score.py") in text
    (tmp_path / "score.py").write_text("def score(output, reference, row):\n    return 1.0\n")
    result = compile(json.loads(path.read_text()), path)
    assert result.ok, [str(e) for e in result.errors]
    assert result.specs[0].rewards[0].scorer == f"python:{tmp_path / 'score.py'}"


def test_num_generations_must_divide_the_batch(tmp_path):
    prompts = write_rows(tmp_path / "p.jsonl", [{"prompt": "q"}])
    result = compile(graph(prompts, "grpo", rewards=("json",), num_generations=3))
    [(field, message)] = errors_by_node(result)["ft"]
    assert field == "num_generations" and "micro batch size 4" in message


# -- data formats by method ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "missing"),
    [
        ("dpo", "no prompt, chosen, rejected"),
        ("orpo", "no prompt, chosen, rejected"),
        ("kto", "no prompt, completion, label"),
        ("grpo", "no prompt"),
        ("pretrain", "no text"),
    ],
)
def test_a_chat_file_does_not_fit_other_methods_and_the_dataset_node_says_why(
    tmp_path, method, missing
):
    chats = write_rows(tmp_path / "c.jsonl", [{"conversations": [{"from": "human", "value": "x"}]}])
    rewards = ("regex:.",) if method == "grpo" else ()
    result = compile(graph(chats, method, rewards=rewards))
    [(field, message)] = errors_by_node(result)["data"]
    assert field == "path"
    assert f"method {method} trains on" in message and missing in message
    assert "its columns: conversations" in message
    assert not result.specs


def test_column_mapping_makes_a_file_fit(tmp_path):
    data = write_rows(
        tmp_path / "d.jsonl", [{"question": "q", "good": "ACK: a", "bad": "a"} for _ in range(3)]
    )
    columns = {"prompt": "question", "chosen": "good", "rejected": "bad"}
    assert compile(graph(data, "dpo", columns=columns)).ok
    result = compile(graph(data, "dpo", columns={**columns, "prompt": "nope"}))
    [(field, message)] = errors_by_node(result)["data"]
    assert "names nope, which the file does not have" in message


def test_each_method_accepts_its_formats(tmp_path):
    chats = write_chats(tmp_path / "chats.jsonl", rows=12)
    conversations = write_rows(
        tmp_path / "conv.jsonl",
        [
            {
                "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "y"}],
                "rejected": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "n"},
                ],
            }
        ],
    )
    csv = tmp_path / "kto.csv"
    csv.write_text("prompt,completion,label\nq,ACK: a,true\nq,a,false\n", encoding="utf-8")
    text = write_rows(tmp_path / "t.jsonl", [{"text": "some words"}])
    assert compile(graph(chats, "sft")).ok
    assert compile(graph(conversations, "simpo")).ok  # implicit prompt: shared turns
    assert compile(graph(csv, "kto")).ok
    assert compile(graph(text, "pretrain")).ok
    assert compile(graph(chats, "grpo", rewards=("contains",))).ok  # last answer = reference


def test_a_reward_that_compares_needs_an_answer_column(tmp_path):
    prompts = write_rows(tmp_path / "p.jsonl", [{"prompt": "q"}])
    [(field, message)] = errors_by_node(compile(graph(prompts, "grpo", rewards=("exact",))))["data"]
    assert "no answer or reference column" in message
    assert compile(graph(prompts, "grpo", rewards=("regex:x",))).ok
    with_answer = write_rows(tmp_path / "a.jsonl", [{"prompt": "q", "reference": "r"}])
    assert compile(graph(with_answer, "grpo", rewards=("exact",))).ok


def test_first_row_of_each_file_type(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": "q", "chosen": "c", "rejected": "r"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    (tmp_path / "p.json").write_text(json.dumps(rows))
    assert first_row(tmp_path / "p.parquet") == rows[0]
    assert first_row(tmp_path / "p.json") == rows[0]
    assert first_row(pairs(tmp_path / "p.jsonl")) == {
        "prompt": "q0",
        "chosen": "ACK: a0",
        "rejected": "a0",
    }
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    assert first_row(tmp_path / "bad.jsonl") is None  # left to the worker, which names the line
    assert dataset_problem(str(tmp_path / "bad.jsonl"), {}, "dpo") == ""


def test_rows_convert_to_trl_conversational_form():
    assert method_row({"prompt": "q", "chosen": "c", "rejected": "r", "system": "s"}, "dpo") == {
        "prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
        "chosen": [{"role": "assistant", "content": "c"}],
        "rejected": [{"role": "assistant", "content": "r"}],
    }
    whole = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "c"}]
    other = [whole[0], {"role": "assistant", "content": "r"}]
    assert method_row({"chosen": whole, "rejected": other}, "orpo")["prompt"] == whole[:1]
    kto = method_row({"prompt": "q", "completion": "a", "label": "False"}, "kto")
    assert kto["label"] is False and kto["completion"][0]["role"] == "assistant"
    grpo = method_row({"messages": whole}, "grpo")
    assert grpo["prompt"] == whole[:1] and grpo["answer"] == "c"
    assert json.loads(grpo["row"]) == {"messages": whole}
    assert method_row({"prompt": "q", "answer": 4}, "grpo")["answer"] == "4"
    for row, method, message in [
        ({"prompt": "q", "chosen": "c", "rejected": ""}, "dpo", "'rejected' must be non-empty"),
        (
            {"chosen": whole, "rejected": [{"role": "user", "content": "z"}, other[1]]},
            "dpo",
            "share",
        ),
        ({"prompt": "q", "completion": "a", "label": "maybe"}, "kto", "'label' must be true"),
        ({"prompt": [{"role": "robot", "content": "x"}]}, "grpo", "role one of"),
    ]:
        with pytest.raises(DataError, match=message):
            method_row(row, method)


def test_a_bad_row_is_named_by_file_and_line(tmp_path):
    from engine.data.method_data import prepare_run_data
    from engine.models.sources import load_tokenizer, resolve_source
    from engine.spec import BaseModelSpec, DatasetSpec

    data = pairs(tmp_path / "pairs.jsonl", 5)
    with open(data, "a", encoding="utf-8") as f:
        f.write(json.dumps({"prompt": "q", "chosen": "c"}) + "\n")
    base = BaseModelSpec()
    tokenizer = load_tokenizer(base, resolve_source(base))
    spec = JobSpec(name="x", datasets=[DatasetSpec(path=str(data))])
    spec.method.method = "dpo"
    with pytest.raises(DataError) as err:
        prepare_run_data(spec, tokenizer, 64)
    assert err.value.line == 6 and "'rejected'" in err.value.message


def test_pretraining_text_is_packed_into_full_blocks_with_every_token_trained(tmp_path):
    from engine.data.method_data import prepare_run_data
    from engine.models.sources import load_tokenizer, resolve_source
    from engine.spec import BaseModelSpec, DatasetSpec, TrainingSpec

    texts = [f"the river runs by the old town {i} and the people walk" for i in range(30)]
    data = write_rows(tmp_path / "t.jsonl", [{"text": t} for t in texts])
    base = BaseModelSpec()
    tokenizer = load_tokenizer(base, resolve_source(base))
    eos = tokenizer.eos_token_id
    spec = JobSpec(
        name="x", datasets=[DatasetSpec(path=str(data))], training=TrainingSpec(eval_split=0.1)
    )
    spec.method.method = "pretrain"
    prepared = prepare_run_data(spec, tokenizer, 32)
    blocks = prepared.train["input_ids"]
    assert all(len(b) == 32 for b in blocks[:-1]) and len(blocks[-1]) >= 16
    assert prepared.train["labels"] == blocks  # loss on every token
    assert prepared.stats.datasets[0]["format"] == "text" and prepared.stats.eval_rows >= 1
    stream = [t for b in blocks for t in b]
    assert stream.count(eos) >= 20  # each text closed by the base's own EOS
    assert prepared.sample_prompts[0]["text"] and prepared.sample_prompts[0]["reference"]


# -- show --json and diff ------------------------------------------------------------------------
def test_method_is_in_the_run_shape_and_in_diff():
    from engine.store.diff import compare
    from engine.store.queries import method_of

    spec = JobSpec(name="x")
    spec.method.method = "kto"
    assert method_of(spec.to_dict()) == "kto"
    legacy = spec.to_dict()
    del legacy["method"]
    assert method_of(legacy) == "sft" and method_of(None) is None
    other = JobSpec(name="y").to_dict()
    runs = [{"id": "a", "spec": spec.to_dict()}, {"id": "b", "spec": other}]
    changed = compare(runs).changed_keys
    assert "method.method" in changed


def test_reward_spec_defaults_compile_as_a_known_scorer():
    RewardSpec().validate()
    assert RewardSpec().scorer == "contains"


# -- estimates ----------------------------------------------------------------------------------
def test_the_estimate_reads_each_methods_rows_and_sizes_its_step(tmp_path):
    """Preference and KTO steps put two answers per row through the model, GRPO adds its sampled
    answers to the sequence; the estimate reads a preference file (which the SFT reader refuses)
    and names a bad row by file and line."""
    from engine.models.sources import load_config
    from engine.plan.estimate import estimate, memory_parts
    from engine.plan.shape import model_shape
    from engine.spec import DatasetSpec

    data = pairs(tmp_path / "pairs.jsonl", 12)
    spec = JobSpec(name="x", datasets=[DatasetSpec(path=str(data))])
    shape = model_shape(load_config(spec.base_model))
    sft = memory_parts(shape, spec, False, False, 128)
    spec.method.method = "dpo"
    dpo = memory_parts(shape, spec, False, False, 128)
    assert dpo["logits"] == 2 * sft["logits"] and dpo["activations"] > sft["activations"]
    spec.method = MethodSpec(method="grpo", max_completion_length=64)
    grpo = memory_parts(shape, spec, False, False, 128)
    assert grpo["logits"] == sft["logits"] * (128 + 64) / 128

    spec.method = MethodSpec(method="dpo")
    result = estimate(spec)
    assert result.dataset_rows == 12 and result.work["computed_tokens"] > 0
    with open(data, "a", encoding="utf-8") as f:
        f.write(json.dumps({"prompt": "q", "chosen": "c"}) + "\n")
    with pytest.raises(DataError) as err:
        estimate(spec)
    assert err.value.line == 13 and "'rejected'" in err.value.message


def test_absolute_paths_resolve_a_reward_file_like_a_dataset(tmp_path):
    from nodes.graphedit import absolute_paths

    prompts = write_rows(tmp_path / "p.jsonl", [{"prompt": "q"}])
    data = absolute_paths(graph(prompts, "grpo", rewards=("python:score.py",)), tmp_path / "g.json")
    scorers = [
        n["custom"]["scorer"] for n in data["nodes"].values() if n["type_"].endswith("Reward")
    ]
    assert scorers == [f"python:{tmp_path / 'score.py'}"]
