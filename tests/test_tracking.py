"""Experiment tracking (`report_to`): a tiny run leaves TensorBoard event files that TensorBoard's
own reader parses with the loss curve, and an MLflow run in the local SQLite store with its params
and loss history; a missing tracker package or an unconfigured W&B is one sentence before the run
is queued (the estimate path), naming the pip install."""

from __future__ import annotations

import importlib.util
import os

import pytest

from engine.errors import SpecError
from engine.events import read_events
from engine.plan import requirements
from engine.rundir import TENSORBOARD
from engine.training import tracking
from tests.test_train import fast_spec, run_in_process, write_chats

TRACKER_ENV = (
    "TENSORBOARD_LOGGING_DIR",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_TAGS",
    "MLFLOW_FLATTEN_PARAMS",
    "WANDB_MODE",
    "WANDB_API_KEY",
    "WANDB_PROJECT",
    "WANDB_DIR",
    "WANDB_RUN_GROUP",
)


@pytest.fixture(autouse=True)
def _clean_tracker_env(monkeypatch):
    """The worker sets its tracker's variables in its own process; here that is the test process,
    so they are put back afterwards."""
    for name in TRACKER_ENV:
        monkeypatch.delenv(name, raising=False)


def _tiny_run(tmp_path, tiny_model_dir, report_to: str, run_id: str = "run"):
    """A 4-step run on the tiny model reporting to `report_to` (no GGUF: not what is tested)."""
    spec = fast_spec(write_chats(tmp_path / "chats.jsonl"), base=str(tiny_model_dir))
    spec.training.report_to = report_to
    spec.export.gguf = False
    run_dir = tmp_path / run_id
    events = run_in_process(spec, run_dir)
    assert "exporting" in [e["state"] for e in events if e.kind == "status"]  # training ended
    return spec, run_dir, events


def _losses(events) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in events if e.kind == "metric" and e.get("loss")}


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tracking extra")
def test_tensorboard_event_files_hold_the_loss_curve(tmp_path, tiny_model_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _spec, run_dir, events = _tiny_run(tmp_path, tiny_model_dir, "tensorboard")
    logdir = run_dir / TENSORBOARD
    assert list(logdir.glob("events.out.tfevents.*")), "no event file in the run directory"
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    scalars = {s.step: s.value for s in acc.Scalars("train/loss")}
    ours = _losses(events)
    assert sorted(scalars) == sorted(ours) == [1, 2, 3, 4]
    for step, loss in ours.items():
        assert scalars[step] == pytest.approx(loss, rel=1e-5)
    assert "train/learning_rate" in acc.Tags()["scalars"]


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="tracking extra")
def test_mlflow_run_with_params_and_loss_history(tmp_path, tiny_model_dir, tg_home):
    import mlflow

    spec, run_dir, events = _tiny_run(tmp_path, tiny_model_dir, "mlflow", "20261205-101010-abc")
    uri = f"sqlite:///{(tg_home / 'mlflow.db').as_posix()}"
    assert (tg_home / "mlflow.db").is_file() and os.environ["MLFLOW_TRACKING_URI"] == uri
    mlflow.set_tracking_uri(uri)
    found = mlflow.search_runs(
        experiment_names=["tunegraph"],
        filter_string=f"tags.`tunegraph.run_id` = '{run_dir.name}'",
        output_format="list",
    )
    assert len(found) == 1
    run = found[0]
    assert run.info.run_name == "fast" and run.info.status == "FINISHED"
    assert float(run.data.params["learning_rate"]) == spec.training.learning_rate
    assert run.data.params["max_steps"] == "4"
    history = mlflow.MlflowClient(uri).get_metric_history(run.info.run_id, "loss")
    ours = _losses(events)
    assert {m.step: m.value for m in history} == pytest.approx(ours, rel=1e-5)
    assert [e for e in read_events(run_dir / "events.jsonl") if e.kind == "metric"]


def test_a_missing_tracker_package_is_one_sentence_before_queueing(tmp_path, monkeypatch):
    from engine.plan.report import estimate_spec

    real = importlib.util.find_spec
    monkeypatch.setattr(
        requirements.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "mlflow" else real(name, *a),
    )
    spec = fast_spec(write_chats(tmp_path / "chats.jsonl"))
    spec.training.report_to = "mlflow"
    with pytest.raises(SpecError) as err:
        estimate_spec(spec, "cpu")
    assert err.value.field == "training.report_to"
    assert "mlflow package is not installed" in str(err.value)
    assert "pip install 'tunegraph[tracking]'" in str(err.value)
    spec.training.report_to = "none"
    assert estimate_spec(spec, "cpu")["params"] > 0  # the same spec without a tracker estimates


def test_wandb_needs_a_configured_account_unless_offline(tmp_path, monkeypatch):
    from engine import settings

    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    spec = fast_spec(write_chats(tmp_path / "chats.jsonl"))
    spec.training.report_to = "wandb"
    assert not requirements.wandb_configured()
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(SpecError, match="pip install wandb"):
            requirements.check_tracking(spec)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert requirements.wandb_configured()
    monkeypatch.delenv("WANDB_API_KEY")
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password " + "p" * 40 + "\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert requirements.wandb_configured()
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    settings.save(settings.Settings(offline=True))
    assert requirements.wandb_configured()
    env = tracking.tracking_env(spec, tmp_path / "run")
    assert env["WANDB_MODE"] == "offline" and env["WANDB_DIR"] == str(tmp_path / "run")


def test_tracker_environment_respects_the_users_own_settings(tmp_path):
    spec = fast_spec(write_chats(tmp_path / "chats.jsonl"))
    spec.training.report_to = "mlflow"
    mine = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000", "MLFLOW_EXPERIMENT_NAME": "team"}
    env = tracking.tracking_env(spec, tmp_path / "r1", mine)
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    assert env["MLFLOW_EXPERIMENT_NAME"] == "team"
    assert tracking.tracking_env(spec, tmp_path / "r1", {})["MLFLOW_TRACKING_URI"].endswith(
        "/mlflow.db"
    )
    spec.training.report_to = "none"
    assert tracking.report_to(spec, tmp_path / "r1") == "none"
    assert tracking.tracking_env(spec, tmp_path / "r1", {}) == {}
