"""The command line: `tunegraph run` end to end, the JSON shapes of runs/show/estimate, run
references, logs, refusals and the tiny-model builder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from app.cli.main import main
from engine import __version__
from tests.helpers import RUN_KEYS, cli, home_processes, make_graph

METRIC_KEYS = {"loss", "grad_norm", "lr", "eval_loss", "tokens_per_s", "method"}
ESTIMATE_KEYS = {
    "params",
    "trainable_params",
    "vram_gib",
    "vram_parts_gib",
    "mode",
    "mode_reason",
    "device",
    "time_s",
    "dataset_rows",
    "warnings",
    "time_basis",
    "work",
    "calibration_key",
    "data_pending",  # its data nodes make its rows first: dataset_rows is null until then
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One `tunegraph run GRAPH --device cpu --yes` of a two-module graph, shared by the tests
    that read its runs: (data directory, completed process)."""
    home = tmp_path_factory.mktemp("cli-home")
    shared = os.environ.get("TUNEGRAPH_TEST_MODELS")
    if shared:
        (home / "models").symlink_to(shared, target_is_directory=True)
    env = {
        **os.environ,
        "TUNEGRAPH_HOME": str(home),
        "TUNEGRAPH_CPU_SLOTS": "2",
        "TUNEGRAPH_SUPERVISOR_IDLE": "5",
        "HF_HUB_OFFLINE": "1",
    }
    graph = make_graph(
        tmp_path_factory.mktemp("cli-graph"),
        {"alpha": {"max_steps": 3}, "beta": {"max_steps": 3, "learning_rate": 5e-3}},
    )
    try:
        yield home, cli("run", str(graph), "--device", "cpu", "--yes", env=env, timeout=300)
    finally:
        cli("supervisor", "--stop", env=env)
        for proc in home_processes(home):
            proc.kill()


@pytest.fixture
def in_trained(trained, monkeypatch):
    """Point this process at the trained data directory; returns the two runs by name."""
    home, _ = trained
    monkeypatch.setenv("TUNEGRAPH_HOME", str(home))
    from engine.store.index import Store

    with Store() as store:
        return {run["name"]: run for run in store.list_runs()}


def json_out(capsys, argv: list[str]):
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_version():
    out = cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"tunegraph {__version__}"


def test_run_trains_every_module_and_exits_0(trained, in_trained):
    _, out = trained
    assert out.returncode == 0, out.stderr
    assert set(in_trained) == {"alpha", "beta"}
    for name, run in in_trained.items():
        assert run["state"] == "completed", run
        assert {"adapter_dir", "adapter_zip"} <= {a["kind"] for a in run["artifacts"]}
        assert f"completed {name}" in out.stderr  # the closing summary names each run
    assert "Traceback" not in out.stderr


def test_runs_and_show_json_have_exactly_the_design_keys(in_trained, capsys):
    runs = json_out(capsys, ["runs", "--json"])
    assert len(runs) == 2
    for run in runs:
        assert set(run) == RUN_KEYS
        assert set(run["metrics"]) == METRIC_KEYS
        assert set(run["estimate"]) == ESTIMATE_KEYS
        assert run["parent"] is None and run["error"] is None and run["device"] == "cpu"
        assert len(run["samples"]) == 3 and set(run["samples"][0]) == {"prompt", "response"}
        assert set(run["artifacts"][0]) == {"id", "kind", "path", "bytes", "sha256"}
    assert runs[0]["created_at"] >= runs[1]["created_at"]  # newest first
    shown = json_out(capsys, ["show", runs[0]["id"], "--json"])
    assert set(shown) == RUN_KEYS and shown["id"] == runs[0]["id"]
    assert json_out(capsys, ["runs", "--state", "completed", "--json"]) == runs
    assert json_out(capsys, ["runs", "--state", "failed", "--json"]) == []


def test_show_by_unique_prefix_and_by_name(in_trained, capsys):
    alpha, beta = in_trained["alpha"], in_trained["beta"]
    common = os.path.commonprefix([alpha["id"], beta["id"]])
    prefix = alpha["id"][: len(common) + 1]
    assert json_out(capsys, ["show", prefix, "--json"])["id"] == alpha["id"]
    assert json_out(capsys, ["show", "beta", "--json"])["id"] == beta["id"]
    assert main(["show", "alpha"]) == 0
    text = capsys.readouterr().out
    assert alpha["id"] in text and "completed" in text and "sample 1" in text


def test_ambiguous_and_unknown_runs_are_one_sentence_without_traceback(trained, in_trained):
    home, _ = trained
    env = {**os.environ, "TUNEGRAPH_HOME": str(home)}
    common = os.path.commonprefix([run["id"] for run in in_trained.values()])
    assert common
    for ref, says in ((common, "matches 2 runs"), ("no-such-run", "no run matches")):
        for command in ("show", "cancel"):
            out = cli(command, ref, env=env)
            assert out.returncode != 0
            assert out.stdout == ""
            assert says in out.stderr and "Traceback" not in out.stderr
            assert out.stderr.strip().count("\n") == 0, out.stderr


def test_logs_prints_both_sources(in_trained, capsys):
    capsys.readouterr()
    assert main(["logs", "alpha"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(" worker " in line and "completed" in line for line in lines)
    assert any(" supervisor " in line and "queued" in line for line in lines)
    assert any(" supervisor " in line and "schedule" in line for line in lines)
    assert main(["logs", "alpha", "--json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {e["source"] for e in events} == {"worker", "supervisor"}
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)


def test_run_refuses_a_module_without_base_model(tmp_path, capsys):
    graph = make_graph(tmp_path, {"orphan module": {}}, base=None)
    assert main(["run", str(graph), "--device", "cpu", "--yes"]) != 0
    err = capsys.readouterr().err
    assert "refused" in err and '"orphan module"' in err and "base_model" in err
    from engine.store.index import Store

    with Store() as store:
        assert store.list_runs() == []  # nothing half-submitted


def test_estimate_json_shape(tmp_path, capsys):
    graph = make_graph(tmp_path, {"one": {"max_steps": 5}, "two": {"max_steps": 10}})
    entries = json_out(capsys, ["estimate", str(graph), "--json"])
    assert [e["name"] for e in entries] == ["one", "two"]
    for entry in entries:
        assert set(entry) == {"name", "node_uuid", "estimate"} and entry["node_uuid"]
        est = entry["estimate"]
        assert set(est) == ESTIMATE_KEYS
        assert set(est["vram_gib"]) == {"bf16", "4bit"} and set(est["time_s"]) == {"low", "high"}
        assert sum(est["vram_parts_gib"].values()) == pytest.approx(
            est["vram_gib"]["bf16"], abs=0.03
        )
        assert est["params"] > est["trainable_params"] > 0
        assert est["mode"] == "lora" and est["device"] == "cpu" and est["dataset_rows"] == 40
        assert est["time_s"]["low"] < est["time_s"]["high"]
        assert any("1,000" in w for w in est["warnings"])


def test_make_tiny_model(tmp_path, capsys):
    out = tmp_path / "tiny"
    assert main(["make-tiny-model", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["hidden_size"] == 256 and config["num_hidden_layers"] == 2


def test_preview_marks_the_trained_tokens(capsys):
    from app.cli import main as cli

    sample = Path(__file__).parents[1] / "resources" / "datasets" / "support_chats.jsonl"
    assert cli.main(["preview", str(sample), "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert "300 rows, format messages" in out
    trained = out.split("--- example 1", 1)[1].split("[[", 1)[1].split("]]", 1)[0]
    assert trained.endswith("<|im_end|>") and "<|im_start|>user" not in trained
