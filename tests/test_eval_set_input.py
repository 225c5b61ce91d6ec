"""An Eval node's Eval set input: the rows of a Split's eval part (or any data node's output, or a
Dataset node's file) become the set the run scores, made before the run like its training data.

Compile: the EvalSpec's path is the data step's output, its name the node's and port's, and the
steps that make it join the run's data steps once, after those of its training data. Bad input is
one sentence on the node that has it: a file and an eval set on one Eval node, two eval sets, a
Dataset node whose column mapping or format an eval set cannot honour, an error on a data node
that feeds only the eval side. For real: the supervisor makes the split, the run trains on its 7
train rows and scores exactly its 3 eval rows, keyed by the Split node's name in `show --json`
and the leaderboard.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.eval.run_results import run_results
from engine.spec import EvalSpec, JobSpec
from engine.store.diff import data_stats
from engine.store.leaderboard import eval_sets
from engine.supervisor import client
from nodes import GraphBuilder, compile, save_graph
from nodes.catalogue import CATALOGUE
from nodes.data_nodes import DATA_SOURCES
from tests.helpers import cli, cpu_estimate, tiny_module, wait_for
from tests.test_recipes_graph import SEEDS

QUESTIONS = [
    *SEEDS,  # the recipe tests' six support questions, and four more
    "Where is my router's serial number?",
    "How do I move to a faster plan?",
    "Can I keep my number when I move?",
    "Why is my bill higher this month?",
]


def write_rows(path: Path, rows: int = 10) -> Path:
    """`rows` chats, one per question, each answer naming its question's number."""
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": QUESTIONS[i]},
                    {"role": "assistant", "content": f"Answer {i}: open Settings, then Account."},
                ]
            }
        )
        for i in range(rows)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def split_graph(folder: Path, **eval_values) -> tuple[GraphBuilder, dict]:
    """Dataset (10 rows) → Filter → Split (3 held out): train → Fine-Tune, eval → Eval node →
    the same Fine-Tune node, on the tiny model."""
    g = GraphBuilder(seed=31)
    data = g.add_node("Dataset", "chats", path=str(write_rows(folder / "chats.jsonl")))
    keep = g.add_node("Filter", "keep all")
    split = g.add_node("Split", "hold out 3", eval_rows=3, seed=1)
    ev = g.add_node("Eval", "scores", **{"metrics": ["loss", "rouge_l"], **eval_values})
    ft = tiny_module(g, max_steps=2, eval_split=0.0, packing=False)
    g.connect(data, keep, "dataset")
    g.connect(keep, split, "dataset")
    g.connect(split, ft, "dataset", "train")
    g.connect(split, ev, "eval_set", "eval")
    g.connect(ev, ft, "eval")
    return g, {"data": data, "filter": keep, "split": split, "eval": ev, "ft": ft}


def errors_on(graph: dict, node_id: str) -> list[tuple[str, str]]:
    return [(e.field, e.message) for e in compile(graph).errors if e.node_id == node_id]


def one_error(graph: dict, node_id: str) -> tuple[str, str]:
    """The one error on `node_id`; the module holding it has no spec and names the error."""
    result = compile(graph)
    (error,) = [(e.field, e.message) for e in result.errors if e.node_id == node_id]
    assert not result.specs
    (module,) = result.modules
    assert error in [(e.field, e.message) for e in module.errors]
    assert error[1].count(". ") == 0 and "\n" not in error[1]  # one sentence
    return error


# -- the declaration -------------------------------------------------------------------------------
def test_the_eval_set_input_takes_one_dataset_or_data_node_output():
    port = CATALOGUE["Eval"].input("eval_set")
    assert port is not None and port.accepts == DATA_SOURCES
    assert not port.required and not port.multiple
    assert "name" not in {p.name for p in CATALOGUE["Eval"].parameters}  # set by the compiler
    # a spec written before the field existed still loads, its sets named by their files
    old = {"name": "old", "evals": [{"path": "set.jsonl", "metrics": ["loss"]}]}
    assert JobSpec.from_dict(old).evals == [EvalSpec(path="set.jsonl", metrics=["loss"])]


# -- compile ---------------------------------------------------------------------------------------
def test_a_split_s_eval_part_is_the_eval_set_and_its_steps_run_once(tg_home, tmp_path):
    g, ids = split_graph(tmp_path)
    result = compile(g.to_dict())
    assert result.ok, [str(e) for e in result.errors]
    (spec,) = result.specs
    steps = spec.data_steps
    assert [s["step"] for s in steps] == ["filter", "split"]  # shared with the training data
    assert [s["node_uuid"] for s in steps] == [g.uuid_of(ids["filter"]), g.uuid_of(ids["split"])]
    assert spec.datasets[0].path == steps[1]["outputs"]["train"]
    (ev,) = spec.evals
    assert ev.path == steps[1]["outputs"]["eval"] and str(tg_home) in ev.path
    assert ev.name == "hold out 3 (eval)" and ev.metrics == ["loss", "rouge_l"]

    # a chain that feeds only the eval side: its steps come after the training data's, in order
    other = g.add_node("Dataset", "more", path=str(write_rows(tmp_path / "more.jsonl", 6)))
    dedup = g.add_node("Deduplicate", "dedup")
    held = g.add_node("Split", "hold out 2", eval_rows=2)
    g.connect(other, dedup, "dataset")
    g.connect(dedup, held, "dataset")
    second = g.add_node("Eval", "second", metrics=["loss"])
    g.connect(held, second, "eval_set", "eval")
    g.connect(second, ids["ft"], "eval")
    (spec,) = compile(g.to_dict()).specs
    assert [s["step"] for s in spec.data_steps] == ["filter", "split", "dedup", "split"]
    assert spec.data_steps[3]["inputs"] == [spec.data_steps[2]["outputs"]["dataset"]]
    assert [e.name for e in spec.evals] == ["hold out 3 (eval)", "hold out 2 (eval)"]
    assert spec.evals[1].path == spec.data_steps[3]["outputs"]["eval"]
    assert client.data_steps_of([spec]) == spec.data_steps  # what --only-data builds


def test_a_dataset_node_s_file_is_scored_under_the_node_s_name(tg_home, tmp_path):
    g, ids = split_graph(tmp_path)
    graph = g.to_dict()
    rows = write_rows(tmp_path / "questions.jsonl", 6)
    direct = g.add_node("Dataset", "support questions", path=str(rows), max_rows=4)
    ev = g.add_node("Eval", "direct", metrics=["loss"], max_rows=10)
    g.connect(direct, ev, "eval_set")
    g.connect(ev, ids["ft"], "eval")
    graph = g.to_dict()
    (spec,) = compile(graph).specs
    assert (spec.evals[1].path, spec.evals[1].name) == (str(rows), "support questions")
    assert spec.evals[1].max_rows == 4  # both cut from the front: the smaller count holds
    assert [s["step"] for s in spec.data_steps] == ["filter", "split"]  # a file: no step


# -- bad input -----------------------------------------------------------------------------------
def test_a_file_and_an_eval_set_on_one_eval_node_is_an_error_on_it(tg_home, tmp_path):
    g, ids = split_graph(tmp_path, path=str(write_rows(tmp_path / "set.jsonl", 4)))
    field, message = one_error(g.to_dict(), ids["eval"])
    assert field == "path"
    assert message == (
        'names a file while its Eval set input takes the rows of "hold out 3" (eval); clear '
        "the file or disconnect the eval set"
    )


def test_two_eval_sets_on_one_eval_node_are_an_error_on_it(tg_home, tmp_path):
    g, ids = split_graph(tmp_path)
    g.connect(ids["filter"], ids["eval"], "eval_set")  # a hand-edited file: the canvas won't
    field, message = one_error(g.to_dict(), ids["eval"])
    assert field == "eval_set"
    assert message.startswith('takes one eval set but 2 are connected ("hold out 3" (eval), ')


def test_a_lora_config_is_no_eval_set(tg_home, tmp_path):
    g, ids = split_graph(tmp_path)
    lora = g.add_node("LoraConfig", "not rows")
    g.connect(lora, ids["eval"], "eval_set", "lora_config")
    assert (
        "eval_set",
        "takes a Dataset or Generate or Filter or Deduplicate or Mix or Split "
        'node, not the LoRA config node "not rows"',
    ) in errors_on(g.to_dict(), ids["eval"])


def test_a_dataset_node_an_eval_set_cannot_read_as_it_says_is_an_error_on_it(tg_home, tmp_path):
    g, ids = split_graph(tmp_path)
    rows = write_rows(tmp_path / "renamed.jsonl", 4)
    source = g.add_node("Dataset", "renamed", path=str(rows), columns={"messages": "chat"})
    ev = g.add_node("Eval", "on renamed", metrics=["loss"])
    g.connect(source, ev, "eval_set")
    g.connect(ev, ids["ft"], "eval")
    graph = g.to_dict()
    field, message = one_error(graph, source)
    assert field == "columns"
    assert message == (
        'maps columns, but the Eval node "on renamed" reads its eval set with the format\'s own '
        "column names; clear the mapping, or rename the columns in the file"
    )

    graph["nodes"][source]["custom"].update(columns={}, format="alpaca")
    assert one_error(graph, source) == (
        "format",
        'is alpaca, but the Eval node "on renamed" detects the format of its eval set and finds '
        "messages rows in this file; set the format to auto",
    )
    graph["nodes"][source]["custom"]["format"] = "messages"  # what it is: fine
    assert compile(graph).ok, [str(e) for e in compile(graph).errors]

    text = tmp_path / "notes.jsonl"
    text.write_text('{"text": "Routers blink red when the line is down."}\n', encoding="utf-8")
    graph["nodes"][source]["custom"].update(path=str(text), format="auto")
    assert one_error(graph, source) == (
        "format",
        'reads plain text rows, which hold no answers for the Eval node "on renamed" to score '
        "against; connect a file of chats (or another format with answers)",
    )


def test_an_error_on_a_data_node_that_only_feeds_the_eval_side_stops_the_run(tg_home, tmp_path):
    g, ids = split_graph(tmp_path)
    lonely = g.add_node("Split", "nothing in")  # its dataset input left empty
    ev = g.add_node("Eval", "on nothing", metrics=["loss"])
    g.connect(lonely, ev, "eval_set", "eval")
    g.connect(ev, ids["ft"], "eval")
    assert one_error(g.to_dict(), lonely) == (
        "dataset",
        "connect a Dataset node or another data node",
    )

    # an error in a data node's own values, further up the eval-only chain
    g2, ids2 = split_graph(tmp_path)
    bad = g2.add_node("Filter", "bad regex", drop_regex="([")
    held = g2.add_node("Split", "held", eval_rows=2)
    source = g2.add_node("Dataset", "more", path=str(write_rows(tmp_path / "more.jsonl", 6)))
    ev2 = g2.add_node("Eval", "on held", metrics=["loss"])
    g2.connect(source, bad, "dataset")
    g2.connect(bad, held, "dataset")
    g2.connect(held, ev2, "eval_set", "eval")
    g2.connect(ev2, ids2["ft"], "eval")
    field, message = one_error(g2.to_dict(), bad)
    assert field == "drop_regex", message


def test_a_node_of_unknown_type_on_the_eval_set_input_stops_the_run(tg_home, tmp_path):
    """A node from a newer Tunegraph (or a typo) on the Eval set input is not dropped for the
    run's held-out split: the module is refused with that node's error, as on its own ports."""
    g, ids = split_graph(tmp_path)
    ev = g.add_node("Eval", "on alien rows", metrics=["loss"])
    g.connect(ev, ids["ft"], "eval")
    graph = g.to_dict()
    graph["nodes"]["0xalien"] = {"type_": "tunegraph.Synthesize", "name": "alien", "custom": {}}
    graph["connections"].append({"out": ["0xalien", "dataset"], "in": [ev, "eval_set"]})
    result = compile(graph)
    assert not result.specs
    (module,) = result.modules
    assert [(e.node_id, e.kind) for e in module.errors] == [("0xalien", "unknown_type")]


# -- for real ------------------------------------------------------------------------------------
def test_the_run_trains_on_the_train_part_and_scores_exactly_the_eval_part(sup, tmp_path):
    store = sup
    g, _ = split_graph(tmp_path, max_rows=0)
    (spec,) = compile(g.to_dict()).specs
    (entry,) = client.submit(store, [spec], [cpu_estimate(spec)])
    run = wait_for(store, entry["id"], ("completed", "failed"), 120)
    assert run["state"] == "completed" and run["warnings"] == [], run

    split = spec.data_steps[1]["outputs"]
    train = [json.loads(x) for x in Path(split["train"]).read_text().splitlines()]
    held = [json.loads(x) for x in Path(split["eval"]).read_text().splitlines()]
    assert (len(train), len(held)) == (7, 3)
    stats = data_stats(store.events(entry["id"], kinds="log"))
    assert (stats["train_rows"], stats["eval_rows"]) == (7, 0)  # trained on the 7, nothing else

    (result,) = run_results(run["run_dir"])
    assert result["set"] == "hold out 3 (eval)" and result["rows"] == 3
    (adapter,) = result["results"]
    scored = [(r["prompt"], r["reference"]) for r in adapter["rows"]]
    expected = [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in held]
    assert scored == expected
    assert not {q for q, _ in scored} & {r["messages"][0]["content"] for r in train}

    shown = json.loads(cli("show", entry["id"], "--json").stdout)
    assert list(shown["eval"]) == ["hold out 3 (eval)"]
    assert set(shown["eval"]["hold out 3 (eval)"]) >= {"loss", "rouge_l"}
    assert eval_sets([shown]) == ["hold out 3 (eval)"]
    text = cli("show", entry["id"]).stdout
    assert "hold out 3 (eval)" in text


def test_only_data_builds_a_chain_that_feeds_only_the_eval_side(sup, tmp_path):
    g = GraphBuilder(seed=32)
    data = g.add_node("Dataset", "chats", path=str(write_rows(tmp_path / "chats.jsonl")))
    more = g.add_node("Dataset", "more", path=str(write_rows(tmp_path / "more.jsonl", 6)))
    held = g.add_node("Split", "hold out 2", eval_rows=2, seed=1)
    ev = g.add_node("Eval", "scores", metrics=["loss"])
    ft = tiny_module(g, export=False)
    g.connect(more, held, "dataset")
    g.connect(held, ev, "eval_set", "eval")
    g.connect(data, ft, "dataset")
    g.connect(ev, ft, "eval")
    path = save_graph(g.to_dict(), tmp_path / "eval-only.json")
    (spec,) = compile(g.to_dict()).specs
    (step,) = spec.data_steps
    built = cli("run", str(path), "--only-data", "--json", timeout=120)
    assert built.returncode == 0, built.stderr
    assert [s["step"] for s in json.loads(built.stdout)] == ["split"]
    assert len(Path(step["outputs"]["eval"]).read_text().splitlines()) == 2
    assert not sup.list_runs()  # nothing trained
