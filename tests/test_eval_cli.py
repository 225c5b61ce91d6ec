"""`tunegraph eval` for real: checked inputs (one sentence each, nothing submitted), the eval
placed by the supervisor under a GPU hold (fake GPUs) and released, DESIGN's JSON shape, a run's
scores in `show --json`, a waiting eval cancelled, Ctrl-C during scoring, and a failing Python
scorer reported from the worker with its file and line."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.cli.common import run_guarded
from engine import paths
from engine.events import read_events, run_state
from engine.rundir import SUPERVISOR_LOG
from tests.helpers import cli, interruptible, wait_until
from tests.test_export import make_run

RUN_ID = "20261201-120000-c11e7a"
ROOT = Path(__file__).resolve().parents[1]


def short_set(path: Path, rows: int = 2) -> Path:
    """Short answers: the generation budget stays at its minimum (32 tokens)."""
    lines = [
        json.dumps({"prompt": f"Say OK number {i}.", "completion": f"OK {i}."}) for i in range(rows)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def eval_cli(*argv: str) -> int:
    """`tunegraph eval ARGV` in this process, as app.cli.main runs it."""
    from app.cli import eval as eval_command

    parser = argparse.ArgumentParser(prog="tunegraph")
    eval_command.add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", *argv])
    return run_guarded(lambda: args.func(args))


def only_eval_dir() -> Path:
    (folder,) = list(paths.evals_dir().iterdir())
    return folder


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("regex", "metric regex:(unclosed: the pattern does not compile"),
        (
            "no-reference",
            "no-answer.jsonl:2: the row has no assistant turn to take as the reference",
        ),
        ("judge", "not a GGUF file (it does not start with the GGUF magic bytes)"),
        ("target", "target 'no-such-run' is neither a run, a base model"),
    ],
)
def test_bad_input_is_one_sentence_and_nothing_is_submitted(case, says, tmp_path, capsys):
    good = short_set(tmp_path / "set.jsonl")
    argv = ["builtin:tiny-llama", "--set", str(good)]
    if case == "regex":
        argv += ["--metric", "regex:(unclosed"]
    elif case == "no-reference":
        bad = tmp_path / "no-answer.jsonl"
        turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
        rows = [{"messages": turns}, {"messages": turns[:1]}]
        bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
        argv[2] = str(bad)
    elif case == "judge":
        (tmp_path / "judge.gguf").write_text("not a model")
        argv += ["--metric", "judge", "--judge", str(tmp_path / "judge.gguf")]
    else:
        argv[0] = "no-such-run"
    assert eval_cli(*argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tunegraph: ") and says in err and "\n" not in err
    assert not any(paths.evals_dir().iterdir()), "a bad eval was submitted"


def test_eval_is_placed_under_a_hold_and_reports_design_json(
    sup, monkeypatch, tmp_path, tiny_model_dir
):
    monkeypatch.setenv("TUNEGRAPH_FAKE_GPUS", "24")
    run_dir = make_run(paths.runs_dir() / RUN_ID, tiny_model_dir, name="tuned")
    sup.ingest(run_dir)
    eval_set = short_set(tmp_path / "smoke.jsonl")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "eval", "builtin:tiny-llama", "tuned", "--set", str(eval_set)]
        + ["--metric", "exact", "--metric", "loss", "--json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        hold = wait_until(
            lambda: [h for h in sup.holds() if h["run_id"].startswith("eval:")],
            timeout=60,
            what="the eval's hold",
        )[0]
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert str(hold["gpu"]) == "0" and 0 < hold["gib"] < 2
    placed = [e for e in read_events(only_eval_dir() / SUPERVISOR_LOG) if e.kind == "schedule"]
    assert (
        placed[0]["message"].startswith("needs ")
        and "placed on GPU 0 with hold" in placed[0]["message"]
    )
    assert not sup.holds(), "the eval's hold was not released"
    assert "rows scored" in err

    result = json.loads(out)
    assert set(result) == {"set", "rows", "metrics", "results", "ranking"}
    assert (result["set"], result["rows"]) == ("smoke.jsonl", 2)
    assert result["metrics"] == ["exact", "loss", "perplexity"]
    assert [(r["target"], r["kind"]) for r in result["results"]] == [
        ("builtin:tiny-llama", "base"),
        ("tuned", "run"),
    ]
    assert sorted(result["ranking"]) == ["builtin:tiny-llama", "tuned"]
    for target in result["results"]:
        assert set(target["scores"]) == {"exact", "loss", "perplexity"}
        assert [set(r) for r in target["rows"]] == [{"prompt", "reference", "output", "scores"}] * 2

    shown = cli("show", "tuned", "--json")
    assert shown.returncode == 0, shown.stderr
    tuned = next(r for r in result["results"] if r["target"] == "tuned")
    assert json.loads(shown.stdout)["eval"] == {"smoke.jsonl": tuned["scores"]}


def test_an_eval_waits_for_gpu_memory_and_a_queued_one_cancels(sup, monkeypatch, tmp_path):
    from engine.eval.estimate import estimate_eval
    from engine.eval.job import EvalRequest, create_eval_dir
    from engine.eval.targets import Target
    from engine.supervisor.client import cancel_eval, submit_eval

    monkeypatch.setenv("TUNEGRAPH_FAKE_GPUS", "24/0.1")  # another program holds the GPU
    targets = [Target("builtin:tiny-llama", "base", "builtin:tiny-llama")]
    request = EvalRequest(targets, str(short_set(tmp_path / "set.jsonl")), ["loss"])
    eval_id, folder = create_eval_dir(request)
    assert submit_eval(sup, eval_id, estimate_eval(targets, ["loss"]))["state"] == "queued"
    state, data = run_state(folder)
    assert state == "queued" and data["reason"].startswith("waiting for GPU memory: needs ")
    time.sleep(1.0)  # a few supervisor rounds: it must not be placed
    assert run_state(folder)[0] == "queued" and not sup.holds()
    assert cancel_eval(sup, eval_id) == {"ok": True}
    assert run_state(folder)[0] == "cancelled"


def test_ctrl_c_cancels_the_eval_and_its_worker(sup, tmp_path):
    eval_set = short_set(tmp_path / "long.jsonl", rows=60)
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "eval", "builtin:tiny-llama", "--set", str(eval_set)]
        + ["--metric", "exact"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    lines = []
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            if "rows scored" in line or not line:
                break
        assert any("rows scored" in x for x in lines), "".join(lines)
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    assert "Cancelled: the eval was stopped." in rest
    folder = only_eval_dir()
    assert run_state(folder)[0] == "cancelled"
    from engine.training.launch import worker_alive

    assert not worker_alive(folder)


def test_a_scorer_failing_in_the_worker_is_reported_with_file_and_line(sup, tmp_path, capsys):
    scorer = tmp_path / "strict.py"
    scorer.write_text("def score(output, reference, row):\n    raise ValueError('too long')\n")
    code = eval_cli(
        "builtin:tiny-llama",
        "--set",
        str(short_set(tmp_path / "set.jsonl", rows=1)),
        "--metric",
        f"python:{scorer}",
    )
    err = capsys.readouterr().err
    assert code == 1
    assert f"tunegraph: {scorer}:2: score raised ValueError: too long (eval row 1)" in err
    assert run_state(only_eval_dir())[0] == "failed"
