"""Specs round-trip and validate; the event codec keeps seq contiguous and survives torn lines;
engine/ and nodes/ import no Qt and the UI-side modules no torch."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from engine.errors import SpecError
from engine.events import EventLog, read_events, read_offset, run_state
from engine.spec import FORMAT_VERSION, PARTS, DatasetSpec, JobSpec, TrainingSpec


def full_spec() -> JobSpec:
    spec = JobSpec(
        name="r",
        datasets=[
            DatasetSpec(path="a.jsonl", columns={"messages": "chat"}),
            DatasetSpec(path="b.csv", format="alpaca"),
        ],
    )
    spec.training.learning_rate = 1e-4
    spec.lora.target_modules = ["all-linear"]
    spec.export.gguf = True
    return spec


def test_job_spec_round_trips_through_json(tmp_path):
    spec = full_spec()
    text = spec.to_json()
    assert json.loads(text)["format_version"] == FORMAT_VERSION
    assert list(json.loads(text)) == sorted(json.loads(text))  # sorted keys
    assert JobSpec.from_json(text) == spec
    spec.save(tmp_path / "spec.json")
    assert JobSpec.load(tmp_path / "spec.json") == spec


@pytest.mark.parametrize("part", sorted(PARTS))
def test_every_part_round_trips_and_defaults_validate(part):
    cls = PARTS[part]
    obj = cls()
    assert cls(**dataclasses.asdict(obj)) == obj
    # defaults validate, except that a dataset has no default file
    (cls(path="a.jsonl") if cls is DatasetSpec else obj).validate()
    for f in dataclasses.fields(cls):
        assert f.metadata.get("help"), f"{cls.__name__}.{f.name} needs help text"


@pytest.mark.parametrize(
    "mutate,field",
    [
        (lambda s: setattr(s.training, "micro_batch_size", 0), "training.micro_batch_size"),
        (lambda s: setattr(s.training, "lr_scheduler", "wild"), "training.lr_scheduler"),
        (lambda s: setattr(s.lora, "r", 2.5), "lora.r"),
        (lambda s: setattr(s.lora, "quantization", "8bit"), "lora.quantization"),
        (lambda s: setattr(s.training, "packing", "yes"), "training.packing"),
        (lambda s: setattr(s.datasets[0], "path", ""), "datasets[0].path"),
        (lambda s: setattr(s, "datasets", []), "datasets"),
        (lambda s: setattr(s.base_model, "source", " "), "base_model.source"),
        (lambda s: setattr(s.base_model, "source", "gguf:"), "base_model.source"),
        (lambda s: setattr(s.datasets[1], "path", "b.txt"), "datasets[1].path"),
        (lambda s: setattr(s.datasets[0], "columns", {"messages": 3}), "datasets[0].columns"),
        (lambda s: setattr(s.lora, "target_modules", "q_proj"), "lora.target_modules"),
        (lambda s: setattr(s.lora, "target_modules", []), "lora.target_modules"),
        (lambda s: setattr(s.training, "learning_rate", float("nan")), "training.learning_rate"),
        (lambda s: setattr(s, "name", None), "name"),
    ],
)
def test_validation_names_the_field(mutate, field):
    spec = full_spec()
    mutate(spec)
    with pytest.raises(SpecError) as err:
        spec.validate()
    assert err.value.field == field and str(err.value).startswith(field)


def _no_eval(spec: JobSpec, **training) -> None:
    spec.training.eval_split = 0.0
    for name, value in training.items():
        setattr(spec.training, name, value)


def _on_cpu(spec: JobSpec, part: str, name: str, value) -> None:
    spec.resources.device = "cpu"
    setattr(getattr(spec, part), name, value)


@pytest.mark.parametrize(
    "mutate,field,words",
    [
        (lambda s: _no_eval(s, keep_best=True), "training.keep_best", "eval_split is 0"),
        (
            lambda s: _no_eval(s, early_stopping_patience=2),
            "training.early_stopping_patience",
            "eval_split is 0",
        ),
        (lambda s: _on_cpu(s, "training", "precision", "fp16"), "training.precision", "GPU"),
        (
            lambda s: _on_cpu(s, "training", "attention", "flash_attention_2"),
            "training.attention",
            "GPU",
        ),
        (lambda s: _on_cpu(s, "lora", "quantization", "4bit"), "lora.quantization", "GPU"),
    ],
)
def test_rules_between_fields_name_the_field_and_what_to_change(mutate, field, words):
    spec = full_spec()
    mutate(spec)
    with pytest.raises(SpecError) as err:
        spec.validate()
    assert err.value.field == field and words in str(err.value) and err.value.hint


def test_each_part_validates_itself_under_its_own_name():
    training = TrainingSpec(eval_split=0.0, keep_best=True)
    with pytest.raises(SpecError) as err:
        training.validate()
    assert err.value.field == "training.keep_best"
    with pytest.raises(SpecError) as err:
        training.validate("probe")
    assert err.value.field == "probe.keep_best"
    with pytest.raises(SpecError, match=r"^dataset\.path = ''"):
        DatasetSpec().validate()
    TrainingSpec(eval_split=0.1, keep_best=True, early_stopping_patience=2).validate()
    spec = full_spec()
    spec.resources.device = "auto"  # auto may find a GPU: the worker decides
    spec.training.precision, spec.lora.quantization = "fp16", "4bit"
    spec.validate()


def test_older_spec_files_still_load_even_when_now_refused(tmp_path):
    old = full_spec().to_dict()
    del old["format_version"]  # written before versions were recorded
    for name in ("attention", "liger_kernels", "gradient_checkpointing", "packing"):
        del old["training"][name]  # knobs added since: their defaults apply
    spec = JobSpec.from_dict(old)
    assert spec.format_version == FORMAT_VERSION and spec.training.attention == "auto"
    spec.validate()
    refused = full_spec()
    _no_eval(refused, keep_best=True)  # frozen before the rule existed: its run must still open
    refused.save(tmp_path / "spec.json")
    loaded = JobSpec.load(tmp_path / "spec.json")
    assert loaded == refused
    with pytest.raises(SpecError, match="training.keep_best"):
        loaded.validate()


def test_unknown_field_and_newer_format_are_refused():
    data = full_spec().to_dict()
    data["training"]["lerning_rate"] = 1
    with pytest.raises(SpecError, match="training.lerning_rate"):
        JobSpec.from_dict(data)
    data = full_spec().to_dict()
    data["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(SpecError, match="format_version"):
        JobSpec.from_dict(data)


def test_event_log_seq_continues_and_torn_tail_is_ignored(tmp_path):
    path = tmp_path / "events.jsonl"
    with EventLog(path) as log:
        log.emit("status", state="starting")
        log.emit("metric", step=1, loss=float("nan"))
    with open(path, "a") as f:
        f.write('{"seq": 3, "ts": 1, "kind": "met')  # a writer died mid-line
    assert [e.seq for e in read_events(path)] == [1, 2]
    assert list(read_events(path))[1]["loss"] is None  # NaN stays strict JSON
    with EventLog(path) as log:  # a resumed worker appends after the last complete line
        log.emit("artifact", kind="adapter_dir", path="x", bytes=1, sha256="0")
    events = list(read_events(path))
    assert [e.seq for e in events] == [1, 2, 3]
    assert events[2]["artifact_kind"] == "adapter_dir"
    got, offset = read_offset(path, 0)
    assert len(got) == 3 and offset == path.stat().st_size


def test_event_kinds_and_states_are_checked(tmp_path):
    with EventLog(tmp_path / "e.jsonl") as log:
        with pytest.raises(ValueError):
            log.emit("metrics", step=1)
        with pytest.raises(ValueError):
            log.emit("status", state="done")
        with pytest.raises(ValueError):
            log.emit("progress", step=1)


def test_state_is_latest_status_across_both_logs(tmp_path):
    with EventLog(tmp_path / "events.jsonl") as w, EventLog(tmp_path / "supervisor.jsonl") as s:
        s.emit("status", state="queued")
        w.emit("status", state="training")
        s.emit("status", state="cancelled")
    assert run_state(tmp_path)[0] == "cancelled"


def test_layers_engine_and_nodes_import_no_qt_and_the_ui_side_no_torch():
    code = (
        "import sys, app.cli.main, engine.store.index, engine.supervisor.service, engine.supervisor.client, nodes;"
        "bad = [m for m in ('PySide6', 'NodeGraphQt', 'pyqtgraph', 'torch', 'transformers')"
        " if m in sys.modules]; print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
