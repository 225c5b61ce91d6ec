"""Chained runs (issue 21): a Fine-Tune node's `model` output feeding another's `base_model`.

The graph compiles into two specs, upstream first, the second copying the first's base model and
naming its node; the submission points the second at the first's run (`run:<id>`); the real
supervisor holds it in `queued` while the first trains, keeps it waiting when the first fails,
starts it once the first is resumed and completes, and cancels it, saying why, when the first is
cancelled. The second run loads the first's adapter merged into the base (compared here with a
merge done by hand), and `show --json` links it through `upstream`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import paths
from engine.control import Control
from engine.errors import ModelError
from engine.events import EventLog
from engine.rundir import LOG_FILE
from engine.spec import BaseModelSpec, JobSpec, MethodSpec
from engine.supervisor import client
from engine.training.trainer import run_job
from nodes import GraphBuilder, compile
from nodes.catalogue import FINE_TUNE
from nodes.duplicate import deep_duplicate
from tests.helpers import (
    FAST_EXPORT,
    FAST_LORA,
    FAST_TRAINING,
    cpu_estimate,
    make_spec,
    wait_for,
    wait_until,
    write_chats,
)


def write_pairs(path: Path, n: int = 16) -> Path:
    rows = [
        {"prompt": f"q{i}?", "chosen": f"ACK: answer {i}", "rejected": f"answer {i}"}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def chain_graph(folder: Path, chats: Path | None = None, steps: int = 4) -> tuple[dict, dict]:
    """SFT on chats, then DPO on pairs starting from the SFT run; returns (graph, node ids)."""
    chats = chats or write_chats(folder / "chats.jsonl")
    pairs = write_pairs(folder / "pairs.jsonl")
    g = GraphBuilder(seed=11)
    base = g.add_node("BaseModel", "base")
    train = g.add_node("TrainingConfig", "train", **{**FAST_TRAINING, "max_steps": steps})
    lora = g.add_node("LoraConfig", "lora", **FAST_LORA)
    export = g.add_node("Export", "export", **{**FAST_EXPORT, "adapter_zip": False})
    sft = g.add_node("FineTune", "sft", (400, 0), device="cpu")
    dpo = g.add_node("FineTune", "dpo", (800, 0), device="cpu", method="dpo")
    g.connect(base, sft, "base_model")
    g.connect(g.add_node("Dataset", "chats", path=str(chats)), sft, "dataset")
    g.connect(g.add_node("Dataset", "pairs", path=str(pairs)), dpo, "dataset")
    for ft in (sft, dpo):
        g.connect(train, ft, "training_config")
        g.connect(lora, ft, "lora_config")
        g.connect(export, ft, "export")
    g.connect(sft, dpo, "base_model", "model")
    return g.to_dict(), {"sft": sft, "dpo": dpo, "base": base}


# -- compile ----------------------------------------------------------------------------------------
def test_a_chain_compiles_upstream_first_with_the_upstream_base_copied(tmp_path):
    assert [p.name for p in FINE_TUNE.outputs] == ["model"]
    graph, ids = chain_graph(tmp_path)
    graph["nodes"][ids["base"]]["custom"]["chat_template"] = "chatml"
    # listed downstream first: the compiler still gives the upstream's spec first
    graph["nodes"] = dict(reversed(list(graph["nodes"].items())))
    result = compile(graph)
    assert result.ok, [str(e) for e in result.errors]
    sft, dpo = result.specs
    assert (sft.name, dpo.name) == ("sft", "dpo")
    assert dpo.upstream_node == sft.node_uuid and sft.upstream_node == ""
    assert dpo.base_model == sft.base_model and dpo.base_model.chat_template == "chatml"
    assert dpo.method.method == "dpo" and dpo.upstream == ""
    assert JobSpec.from_json(dpo.to_json()) == dpo


def test_a_chain_whose_upstream_cannot_run_is_an_error_on_the_downstream_node(tmp_path):
    graph, ids = chain_graph(tmp_path)
    graph["connections"] = [
        c for c in graph["connections"] if c["in"] != [ids["sft"], "base_model"]
    ]
    result = compile(graph)
    errors = {(e.node_name, e.field): e.message for e in result.errors}
    assert errors[("sft", "base_model")] == "connect a Base model node"
    assert "which cannot run: fix its errors first" in errors[("dpo", "base_model")]
    assert result.specs == []


def test_a_chained_run_cannot_go_to_a_cluster(tmp_path):
    graph, ids = chain_graph(tmp_path)
    graph["nodes"][ids["dpo"]]["custom"]["target"] = "cluster"
    result = compile(graph)
    [error] = result.errors
    assert (error.node_name, error.field) == ("dpo", "target")
    assert "trains on this machine" in error.message
    assert [s.name for s in result.specs] == ["sft"]


def test_duplicating_the_downstream_node_copies_the_chain(tmp_path):
    graph, ids = chain_graph(tmp_path)
    copy = deep_duplicate(graph, ids["dpo"])
    names = sorted(n["name"] for n in copy.nodes.values())
    assert "sft (copy)" in names and "dpo (copy)" in names
    assert {"out": [copy.ids[ids["sft"]], "model"], "in": [copy.module_id, "base_model"]} in (
        copy.connections
    )
    result = compile(copy.merged_into(graph))
    assert result.ok, [str(e) for e in result.errors]
    by_name = {s.name: s for s in result.specs}
    assert by_name["dpo (copy)"].upstream_node == by_name["sft (copy)"].node_uuid


# -- the run:<id> source ----------------------------------------------------------------------------
def test_run_source_loads_the_upstream_adapter_merged_into_its_base(tg_home, tmp_path):
    import torch
    from peft import PeftModel

    from engine.models.sources import load_model, load_tokenizer, resolve_source

    spec = make_spec(write_chats(tmp_path / "chats.jsonl"), "sft", max_steps=3)
    spec.export.adapter_zip = False
    run_dir = paths.runs_dir() / "sft-run"
    run_dir.mkdir(parents=True)
    spec.save(run_dir / "spec.json")
    chained = BaseModelSpec(source="run:sft-run")

    before = resolve_source(chained)  # the upstream has not trained yet: its base's shape
    assert before.adapters == (str(run_dir / "adapter"),) and before.runs == ("sft-run",)
    with pytest.raises(ModelError, match="has delivered no adapter yet"):
        load_model(chained, before, torch.float32)

    with EventLog(run_dir / "events.jsonl") as events:
        run_job(spec, run_dir, events, Control(run_dir))
    resolved = resolve_source(chained)
    merged = load_model(chained, resolved, torch.float32)
    base = load_model(spec.base_model, resolve_source(spec.base_model), torch.float32)
    by_hand = PeftModel.from_pretrained(base, run_dir / "adapter").merge_and_unload()
    ours, theirs = merged.state_dict(), by_hand.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    plain = load_model(spec.base_model, resolve_source(spec.base_model), torch.float32)
    changed = [k for k in ours if not torch.equal(ours[k], plain.state_dict()[k])]
    assert changed and all("q_proj" in k or "v_proj" in k for k in changed)
    tokenizer = load_tokenizer(chained, resolved)
    saved = (run_dir / "adapter" / "chat_template.jinja").read_text(encoding="utf-8")
    assert tokenizer.chat_template == saved

    with pytest.raises(ModelError, match="no run with that id"):
        resolve_source(BaseModelSpec(source="run:nope"))

    # a chain of two: both adapters to merge and both runs, oldest first
    second = paths.runs_dir() / "dpo-run"
    second.mkdir()
    dpo = JobSpec.from_dict({**spec.to_dict(), "name": "dpo"})
    dpo.base_model.source = "run:sft-run"
    dpo.save(second / "spec.json")
    two = resolve_source(BaseModelSpec(source="run:dpo-run"))
    assert two.runs == ("sft-run", "dpo-run")
    assert two.adapters == (str(run_dir / "adapter"), str(second / "adapter"))
    assert two.tokenizer_dir == str(second / "adapter")


# -- the supervisor ---------------------------------------------------------------------------------
def submit_chain(
    store, folder: Path, chats: Path | None = None, spoil: str = ""
) -> tuple[str, str]:
    """Compile, estimate and submit the chain, the upstream first. `spoil` is appended to the
    chats file once the upstream is accepted (its data checked whole), before its worker reads
    it; the chained run is then submitted alone and finds its upstream's run in the store."""
    graph, _ = chain_graph(folder, chats)
    result = compile(graph)
    assert result.ok, [str(e) for e in result.errors]
    estimates = [cpu_estimate(s) for s in result.specs]
    if not spoil:
        entries = client.submit(store, result.specs, estimates)
    else:
        entries = client.submit(store, result.specs[:1], estimates[:1])
        chats.write_text(chats.read_text(encoding="utf-8") + spoil, encoding="utf-8")
        entries += client.submit(store, result.specs[1:], estimates[1:])
    assert [e["state"] for e in entries] == ["queued", "queued"], entries
    return entries[0]["id"], entries[1]["id"]


def test_the_downstream_waits_for_the_upstream_then_starts_from_its_result(sup, tmp_path):
    sft, dpo = submit_chain(sup, tmp_path)
    waiting = sup.run_json(dpo)
    assert waiting["state"] == "queued" and waiting["upstream"] == sft
    assert waiting["reason"] == f'waiting for "sft" ({sft}) to complete'
    spec = JobSpec.load(Path(waiting["run_dir"]) / "spec.json")
    assert (spec.upstream, spec.base_model.source) == (sft, f"run:{sft}")

    first = wait_for(sup, sft, "completed", 120)
    done = wait_for(sup, dpo, "completed", 180)
    assert done["started_at"] >= first["finished_at"]
    assert done["method"] == "dpo" and done["upstream"] == sft and first["upstream"] is None
    log = (Path(done["run_dir"]) / LOG_FILE).read_text(encoding="utf-8")
    assert f"merged the adapter of run {sft} into the base" in log
    assert any(
        f"starts from run {sft}: its result is this run's base" in line for line in sup.logs(dpo)
    )
    assert "rewards/margins" in sup.metrics(dpo)[-1]


def test_the_downstream_waits_through_a_failure_and_a_cancel_cancels_it(sup, tmp_path):
    chats = write_chats(tmp_path / "chats.jsonl")
    good = chats.read_text(encoding="utf-8")
    sft, dpo = submit_chain(sup, tmp_path, chats, spoil="{not json\n")  # the upstream fails
    failed = wait_for(sup, sft, "failed", 120)
    assert "chats.jsonl:41: invalid JSON" in failed["reason"]
    reason = f'waiting for "sft" ({sft}) to complete; it failed: resume it to go on'
    wait_until(lambda: sup.run_json(dpo)["reason"] == reason, 10, "the failure in the reason")
    assert sup.run_json(dpo)["state"] == "queued"

    chats.write_text(good, encoding="utf-8")
    client.control(sup, "resume", sft)
    wait_for(sup, sft, "completed", 120)
    wait_for(sup, dpo, ("starting", "training", "evaluating", "completed"), 60)

    again = tmp_path / "again"
    again.mkdir()
    second, downstream = submit_chain(sup, again)
    client.control(sup, "cancel", second)
    cancelled = wait_for(sup, downstream, "cancelled", 30)
    assert (
        cancelled["reason"] == f'cancelled: the run it starts from, "sft" ({second}), was cancelled'
    )
    client.control(sup, "cancel", dpo)  # it started from the resumed run: enough here
    late = client.submit(sup, [JobSpec.load(Path(cancelled["run_dir"]) / "spec.json")])
    assert late[0]["state"] == "refused"
    assert f'starts from "sft" ({second}), which was cancelled' in late[0]["error"]["message"]


def test_a_chained_spec_without_an_upstream_run_is_refused(sup, tmp_path):
    spec = make_spec(write_pairs(tmp_path / "pairs.jsonl"), "lonely")
    spec.method = MethodSpec(method="dpo")
    spec.upstream_node = "no-such-node"
    [entry] = client.submit(sup, [spec], [cpu_estimate(spec)])
    assert entry["state"] == "refused"
    assert "has no run to start from" in entry["error"]["message"]


# -- the canvas -------------------------------------------------------------------------------------
def test_the_canvas_connects_a_fine_tune_model_to_another_base_model_only(qtbot):
    from PySide6 import QtWidgets

    from app.canvas import Canvas

    holder = QtWidgets.QWidget()
    qtbot.addWidget(holder)
    canvas = Canvas(holder)
    first = canvas.add_node("FineTune", "sft")
    second = canvas.add_node("FineTune", "dpo", pos=(600, 0))
    model_out = first.get_output("model").view
    viewer = canvas.viewer
    assert viewer._validate_accept_connection(model_out, second.get_input("base_model").view)
    assert not viewer._validate_accept_connection(model_out, second.get_input("dataset").view)
    canvas.connect_nodes(first, second, "base_model")
    graph = canvas.to_dict()
    [conn] = graph["connections"]
    assert conn["out"][1] == "model" and conn["in"][1] == "base_model"
    canvas.graph.undo_stack().setClean()


def test_a_full_fine_tuning_run_is_a_chain_base_by_its_model_folder(tg_home, tmp_path):
    """Once a full run has delivered <run_dir>/model, run:<id> is that folder: nothing to merge,
    its tokenizer; before, it is the run's own base (for the estimate of what follows)."""
    import torch

    from engine.models.sources import load_model, resolve_source

    spec = make_spec(write_chats(tmp_path / "chats.jsonl"), "full", max_steps=2)
    spec.lora.full = True
    spec.lora.quantization = "none"
    spec.export.adapter_zip = False
    run_dir = paths.runs_dir() / "full-run"
    run_dir.mkdir(parents=True)
    spec.save(run_dir / "spec.json")
    chained = BaseModelSpec(source="run:full-run")
    before = resolve_source(chained)
    assert before.adapters == () and before.kind == "builtin"
    with EventLog(run_dir / "events.jsonl") as events:
        run_job(spec, run_dir, events, Control(run_dir))
    after = resolve_source(chained)
    assert (after.kind, after.location, after.adapters) == ("folder", str(run_dir / "model"), ())
    model = load_model(chained, after, torch.float32)
    trained = load_model(
        spec.base_model, resolve_source(BaseModelSpec(source=str(run_dir / "model"))), torch.float32
    )
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), trained.state_dict().values(), strict=True)
    )
