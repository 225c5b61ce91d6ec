"""Sweeps (issue 22): a Sweep node on a Fine-Tune node runs an Optuna study whose trials are runs.

Compile: the Sweep node's bad input (an empty space, a range with low ≥ high, an unknown knob, an
objective the module cannot produce, pruning on a metric scored only at the end) is an error on
the Sweep node and field, before anything starts. With the real supervisor on 2 CPU slots: a grid
of 4 learning rates, one far too high, under successive halving prunes at least one trial at an
eval point (its hold released, the next trial started) and ends with the best completed trial as
the study's best; a TPE study of 6 trials runs two at a time, and a supervisor killed mid-study
goes on where it was, with no trial lost or run twice.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from engine.spec import PARTS, JobSpec
from engine.store.diff import compare
from engine.supervisor import client
from engine.supervisor.process import ensure_supervisor, supervisor_pid
from engine.sweep import report as sweep_report
from engine.sweep_spec import SweepSpec
from nodes import GraphBuilder, compile
from tests.helpers import (
    FAST_EXPORT,
    FAST_LORA,
    FAST_TRAINING,
    cli,
    cpu_estimate,
    wait_until,
    write_chats,
)

SWEEP_TRAINING = {**FAST_TRAINING, "max_steps": 10, "eval_steps": 2, "eval_split": 0.2}


def sweep_graph(folder: Path, sweep: dict, training: dict | None = None) -> tuple[dict, dict]:
    """One Fine-Tune module on the tiny model with a Sweep node; returns (graph, node ids)."""
    chats = write_chats(folder / "chats.jsonl", rows=60)
    g = GraphBuilder(seed=22)
    base = g.add_node("BaseModel", "base", source="builtin:tiny-llama")
    data = g.add_node("Dataset", "chats", path=str(chats))
    train = g.add_node("TrainingConfig", "train", **(training or SWEEP_TRAINING))
    lora = g.add_node("LoraConfig", "lora", **FAST_LORA)
    export = g.add_node("Export", "export", **{**FAST_EXPORT, "adapter_zip": False})
    search = g.add_node("Sweep", "search", **sweep)
    ft = g.add_node("FineTune", "support", (400, 0), device="cpu")
    for node, port in (
        (base, "base_model"),
        (data, "dataset"),
        (train, "training_config"),
        (lora, "lora_config"),
        (export, "export"),
        (search, "sweep"),
    ):
        g.connect(node, ft, port)
    return g.to_dict(), {"sweep": search, "ft": ft, "train": train}


def sweep_errors(tmp_path: Path, **sweep) -> list[tuple[str, str, str]]:
    graph, ids = sweep_graph(tmp_path, sweep)
    result = compile(graph)
    return [
        (e.node_id == ids["sweep"] and "sweep" or e.node_id, e.field, e.message)
        for e in result.errors
    ]


# -- compile ----------------------------------------------------------------------------------------
def test_a_sweep_compiles_into_one_swept_spec(tmp_path):
    graph, _ = sweep_graph(
        tmp_path, {"space": ["lr: 1e-4, 1e-3", "lora.r: 4 .. 8 step 4"], "strategy": "grid"}
    )
    result = compile(graph)
    assert result.ok, [str(e) for e in result.errors]
    (spec,) = result.specs
    assert spec.sweep is not None and spec.sweep.strategy == "grid"
    dims = spec.sweep.dimensions(PARTS)
    assert [d.key for d in dims] == ["training.learning_rate", "lora.r"]
    assert dims[1].grid() == [4, 8]
    again = JobSpec.from_json(spec.to_json())  # the swept spec survives its JSON
    assert again.sweep == spec.sweep


@pytest.mark.parametrize(
    ("sweep", "field", "words"),
    [
        ({"space": []}, "space", "the search space is empty"),
        ({"space": [" "]}, "space", "the search space is empty"),
        ({"space": ["lr: 1e-3 .. 1e-4 log"]}, "space", "needs low < high"),
        ({"space": ["lr: 1e-3 .. 1e-3"]}, "space", "needs low < high"),
        ({"space": ["learning rate 1e-3"]}, "space", "`knob: values`"),
        ({"space": ["rank_of_doom: 1, 2"]}, "space", "is not a knob a sweep can vary"),
        ({"space": ["lr: 5, 6"]}, "space", "must be at most"),
        ({"space": ["lr: 1e-5 .. 1e-3 log"], "strategy": "grid"}, "space", "a grid needs values"),
        (
            {"space": ["lr: 1e-4, 1e-3"], "objective": "rouge_l", "pruner": "none"},
            "objective",
            "no connected Eval node scores this metric",
        ),
        ({"space": ["lr: 1e-4, 1e-3"], "trials": 0}, "trials", "needs at least 1 trial"),
    ],
)
def test_bad_sweep_input_is_an_error_on_the_sweep_node(tmp_path, sweep, field, words):
    errors = sweep_errors(tmp_path, **sweep)
    assert any(who == "sweep" and f == field and words in m for who, f, m in errors), errors


def test_pruning_on_a_metric_scored_after_training_is_refused(tmp_path):
    graph, ids = sweep_graph(
        tmp_path, {"space": ["lr: 1e-4, 1e-3"], "objective": "rouge_l", "pruner": "median"}
    )
    ev = GraphBuilder(seed=3)
    graph_nodes = graph["nodes"]
    node = ev.add_node("Eval", "held out", metrics=["rouge_l"])
    graph_nodes.update(ev.to_dict()["nodes"])
    graph["connections"].append({"out": [node, "eval"], "in": [ids["ft"], "eval"]})
    errors = [(e.node_id, e.field, e.message) for e in compile(graph).errors]
    assert any(
        n == ids["sweep"] and f == "pruner" and "scored only when training ends" in m
        for n, f, m in errors
    ), errors


def test_the_objective_eval_loss_needs_rows_held_out(tmp_path):
    graph, ids = sweep_graph(
        tmp_path, {"space": ["lr: 1e-4, 1e-3"]}, {**SWEEP_TRAINING, "eval_split": 0.0}
    )
    errors = [(e.node_id, e.field, e.message) for e in compile(graph).errors]
    assert any(
        n == ids["sweep"] and f == "objective" and "eval_split is 0" in m for n, f, m in errors
    ), errors


# -- the study, with the real supervisor ----------------------------------------------------------
def submit_graph(store, graph: dict) -> str:
    result = compile(graph)
    assert result.ok, [str(e) for e in result.errors]
    (spec,) = result.specs
    (entry,) = client.submit(store, [spec], [cpu_estimate(spec)])
    assert entry["sweep"] and entry["state"] == "queued", entry
    return entry["id"]


def finished(store, study: str, timeout: float = 300.0) -> dict:
    return wait_until(
        lambda: (rep := sweep_report.report(study, store))["state"] == "done" and rep,
        timeout,
        f"sweep {study} to finish",
    )


def test_a_grid_of_four_learning_rates_prunes_the_loser(sup, tmp_path):
    store = sup
    graph, ids = sweep_graph(
        tmp_path,
        {
            "space": ["training.learning_rate: 1e-4, 1e-3, 3e-3, 0.5"],
            "strategy": "grid",
            "pruner": "successive_halving",
            "reduction_factor": 2,
            "min_fraction": 0.2,
        },
    )
    study = submit_graph(store, graph)
    rep = finished(store, study)
    states = [t["state"] for t in rep["trials"]]
    assert len(rep["trials"]) == 4 and sorted(
        t["params"]["training.learning_rate"] for t in rep["trials"]
    ) == [1e-4, 1e-3, 3e-3, 0.5]
    assert "pruned" in states, rep["trials"]
    pruned = [t for t in rep["trials"] if t["state"] == "pruned"]
    for t in pruned:  # at an eval point past 20% of its 10 steps, before the end
        assert t["pruned_at"] is not None and 2 <= t["pruned_at"] < 10, rep["trials"]
        run = store.run_json(t["run_id"])
        assert "pruned at step" in run["reason"] and not run["artifacts"]
    completed = [t for t in rep["trials"] if t["state"] == "completed"]
    assert completed and rep["best"]["value"] == min(t["value"] for t in completed)
    # a pruned trial's hold is released and the next queued trial started after it ended
    assert not any(h["run_id"] in {t["run_id"] for t in pruned} for h in store.holds())
    assert {r["id"] for r in client_runs(store, study)} == {t["run_id"] for t in rep["trials"]}
    # trials are ordinary runs of the swept node: their diff shows what each trial chose
    runs = [store.run_json(t["run_id"]) for t in rep["trials"][:2]]
    assert {r["spec"]["node_uuid"] for r in runs} == {graph_uuid(graph, ids["ft"])}
    changed = {row.key for row in compare(runs).rows(differences_only=True)}
    assert "training.learning_rate" in changed and "lora.r" not in changed

    # the command line: the study, its trials, and runs --sweep
    shown = cli("sweep", study[:10], "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["best"]["run_id"] == rep["best"]["run_id"]
    table = cli("sweep", study)
    assert "pruned" in table.stdout and f"best: #{rep['best']['number']}" in table.stdout
    listed = cli("runs", "--sweep", study, "--json")
    assert {r["id"] for r in json.loads(listed.stdout)} == {t["run_id"] for t in rep["trials"]}
    every = json.loads(cli("sweep", "--json").stdout)
    assert [(s["study"], s["state"], s["trials"]) for s in every] == [(study, "done", 4)]
    assert cli("sweep", "nope").returncode == 1


def graph_uuid(graph: dict, node_id: str) -> str:
    return graph["nodes"][node_id]["custom"]["uuid"]


@pytest.mark.slow  # ~30-60 s: six real trials, a supervisor killed and started again
def test_a_tpe_study_runs_two_at_a_time_and_survives_a_supervisor_kill(sup, tmp_path):
    store = sup
    graph, _ = sweep_graph(
        tmp_path,
        {
            "space": ["lr: 1e-4 .. 1e-2 log", "warmup_ratio: 0 .. 0.2"],
            "strategy": "tpe",
            "trials": 6,
            "pruner": "none",
            "seed": 7,
        },
        {**SWEEP_TRAINING, "max_steps": 6},
    )
    study = submit_graph(store, graph)
    # kill the supervisor once the third trial was asked (so one of the first two has ended)
    wait_until(lambda: len(client_runs(store, study)) >= 3, 180, "a third trial")
    old = supervisor_pid()
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: supervisor_pid() is None, 10, "the supervisor to die")
    assert ensure_supervisor() != old
    rep = finished(store, study, 300)

    trials = rep["trials"]
    assert [t["number"] for t in trials] == list(range(6))  # none lost, none asked twice
    assert all(t["state"] == "completed" and t["value"] is not None for t in trials), trials
    runs = client_runs(store, study)
    assert sorted(r["id"] for r in runs) == sorted(t["run_id"] for t in trials)  # one run each
    assert len({json.dumps(t["params"], sort_keys=True) for t in trials}) == 6
    assert rep["best"]["value"] == min(t["value"] for t in trials)
    # never more than the 2 CPU slots training at once, and each trial after the first two was
    # asked once a slot had freed
    spans = [(r["started_at"], r["finished_at"]) for r in runs]
    for start, _ in spans:
        assert sum(1 for s, f in spans if s <= start < f) <= 2
    for r in runs:
        live = [o for o in runs if o["id"] != r["id"] and o["created_at"] < r["created_at"]]
        assert sum(1 for o in live if o["finished_at"] > r["created_at"]) < 2


def client_runs(store, study: str) -> list[dict]:
    return list(sweep_report.runs_of(store, study).values())


def test_sweep_spec_defaults_are_the_node_defaults():
    assert SweepSpec().pruner == "median" and SweepSpec().min_fraction == 0.2
    dims = SweepSpec(space=["lr: 1e-4, 1e-3", "r: 4 .. 16 step 4"], strategy="grid").dimensions(
        PARTS
    )
    assert SweepSpec(strategy="grid", trials=0).budget(dims) == 8  # the whole grid
    assert SweepSpec(strategy="grid", trials=3).budget(dims) == 3
    assert SweepSpec(strategy="tpe", trials=20).budget(dims) == 20


def test_the_confirmation_says_what_the_sweep_searches(tmp_path):
    from app.confirm_cards import sweep_text

    graph, _ = sweep_graph(
        tmp_path,
        {
            "space": ["lr: 1e-4, 1e-3, 1e-2", "lora.r: 4 .. 8 step 4"],
            "strategy": "grid",
            "trials": 0,
            "pruner": "successive_halving",
        },
    )
    (spec,) = compile(graph).specs
    text = sweep_text(spec)
    assert text.startswith("grid over lr 1e-4, 1e-3, 0.01; r 4 .. 8 step 4 · 6 trials"), text
    assert "pruned by successive halving from 20% of the steps" in text
    assert "minimise eval_loss" in text


@pytest.mark.parametrize(
    ("worker_said", "ends_as"),
    [("completed", "completed"), ("training", "pruned"), ("pruned", "pruned")],
)
def test_a_prune_read_too_late_leaves_the_run_as_it_ended(tg_home, data, worker_said, ends_as):
    """The prune comes near a trial's last step and its worker may finish first: then the run
    stays completed (Optuna was told its value); one that died before writing a state ends
    pruned, with the supervisor's reason."""
    from engine.events import run_state
    from engine.store.index import Store
    from engine.supervisor.service import Supervisor
    from tests.helpers import a_run_whose_worker_said

    store = Store()
    supervisor = Supervisor(store, idle_exit_s=0)
    try:
        run_id, run_dir = a_run_whose_worker_said(store, data, worker_said)
        supervisor.pruning[run_id] = "pruned at step 8 of 10 by successive halving"
        supervisor.finish(run_id, 0)
        state, data_ = run_state(run_dir)
        assert state == ends_as and run_id not in supervisor.pruning
        if worker_said == "training":
            assert data_["reason"] == "pruned at step 8 of 10 by successive halving"
    finally:
        store.close()
