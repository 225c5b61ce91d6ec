"""The Qt-free models behind the run views: the run diff (compare, `tunegraph diff`) and the
store watcher (changed runs, new metric points, step-keyed series)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.store.diff import compare, config_of, data_stats, flatten, format_diff
from engine.store.index import Store
from engine.store.watch import RunWatcher, Series, batch_label
from tests.synthetic_runs import SyntheticRun, make_spec, training_run


def _run(store, name, sha="a" * 64, rows=40, **training):
    r = SyntheticRun(store, make_spec(name, **training))
    r.status("queued").status("training").data_log(rows=rows, sha=sha)
    r.metrics(10, 10)
    r.samples(("hi", f"answer of {name}"))
    r.close()
    return store.run_json(r.id), data_stats(store.events(r.id, kinds="log"))


# -- run_diff ------------------------------------------------------------------------------------
def test_flatten_keeps_scalar_lists_and_numbers_nested_dicts():
    flat = flatten({"a": {"b": 1, "c": ["x", "y"]}, "d": [{"e": 2}]})
    assert flat == {"a.b": 1, "a.c": ("x", "y"), "d.0.e": 2}


def test_compare_shows_exactly_the_differing_fields(store):
    a = _run(store, "base")
    b = _run(store, "lr", learning_rate=1e-4)
    c = _run(store, "lr+data", learning_rate=1e-4, sha="c" * 64, rows=50)
    diff = compare([a[0], b[0], c[0]], [a[1], b[1], c[1]])
    assert diff.changed_keys == [
        "datasets.0.rows",
        "datasets.0.sha256",
        "datasets.train_rows",
        "training.learning_rate",
    ]
    rows = {f.key: f.values for f in diff.rows(differences_only=True)}
    assert rows["training.learning_rate"] == (2e-4, 1e-4, 1e-4)
    assert len(diff.rows()) > len(rows)  # the full table also holds the equal fields
    assert "name" not in config_of(a[0]) and "node_uuid" not in config_of(a[0])
    loss = next(m for m in diff.metrics if m.name == "loss")
    assert loss.deltas[0] == 0 and loss.deltas[1] == pytest.approx(0.0)
    assert [s[0]["response"] for s in diff.samples] == [
        "answer of base",
        "answer of lr",
        "answer of lr+data",
    ]


def test_identical_runs_have_no_differences_and_format_diff_says_so(store):
    a, b = _run(store, "one"), _run(store, "two")
    diff = compare([a[0], b[0]], [a[1], b[1]])
    assert diff.changed_keys == []
    text = format_diff([a[0], b[0]], [a[1], b[1]])
    assert "(no config differences)" in text and "final loss" in text


def test_format_diff_lists_the_changed_knobs(store):
    a, b = _run(store, "base"), _run(store, "lr", learning_rate=5e-5)
    text = format_diff([a[0], b[0]], [a[1], b[1]])
    lines = text.splitlines()
    assert lines[0].startswith("field") and "base" in lines[0] and "lr" in lines[0]
    assert any(line.startswith("training.learning_rate") and "5e-05" in line for line in lines)
    assert not any(line.startswith("training.epochs") for line in lines)


# -- run_watch -----------------------------------------------------------------------------------
def test_watcher_reports_only_changes_and_new_points(store):
    run = training_run(store, "w", 5, 100)
    watcher = RunWatcher(Store(store.path))
    first = watcher.poll()
    assert [r["id"] for r in first.changed] == [run.id] and not first.batches
    assert not watcher.poll()  # nothing changed
    watcher.subscribe(run.id)
    sub = watcher.poll()
    assert len(sub.batches) == 1 and sub.batches[0].reset and len(sub.batches[0].metrics) == 5
    run.metrics(3, 100, ingest=False)  # the watcher ingests live runs itself
    more = watcher.poll()
    assert [m["step"] for m in more.batches[0].metrics] == [6, 7, 8]
    assert not more.batches[0].reset and more.changed[0]["step"] == 8
    run.status("paused")
    assert watcher.poll().changed[0]["state"] == "paused"
    run.close()
    store.delete_run(run.id)
    assert watcher.poll().removed == [run.id]
    watcher.store.close()


def test_series_replaces_re_emitted_steps_and_finds_epoch_boundaries():
    s = Series(capacity=4)
    s.extend([{"step": i, "epoch": i / 4, "loss": 1.0 / i} for i in range(1, 11)])
    assert len(s) == 10 and s["step"][-1] == 10
    s.extend([{"step": 7, "epoch": 7 / 4, "loss": 9.0}])  # resumed from a checkpoint at 6
    assert list(s["step"]) == [1, 2, 3, 4, 5, 6, 7] and s["loss"][-1] == 9.0
    assert s.epoch_boundaries() == [4]
    s.extend([], [{"step": 4, "eval_loss": 1.5}, {"step": 8, "eval_loss": None}])
    assert s.eval_steps == [4, 8] and np.isnan(s.eval_loss[1])


def test_batch_label_counts_micro_batches_within_the_epoch():
    run = {"step": 1450, "max_steps": 2000, "epoch": 1.45, "spec": {"training": {"grad_accum": 1}}}
    assert batch_label(run) == "E1 450/1000"
    run["spec"]["training"]["grad_accum"] = 2
    assert batch_label(run) == "E1 900/2000"
    assert batch_label({"step": None, "max_steps": None, "epoch": None}) == ""
    assert batch_label({"step": 2000, "max_steps": 2000, "epoch": 2.0}) == "E1 1000/1000"


def test_decimate_keeps_peaks_and_the_visible_range():
    from engine.store.watch import decimate

    x = np.arange(100_000, dtype=float)
    y = np.zeros_like(x)
    y[12_345] = 50.0
    y[70_001] = -7.0
    dx, dy = decimate(x, y, max_bins=1000)
    assert len(dx) <= 2000 + 100 and dy.max() == 50.0 and dy.min() == -7.0
    assert dx[0] == 0 and dx[-1] == 99_999 and np.all(np.diff(dx) >= 0)
    sx, sy = decimate(x, y, 12_000, 12_500, max_bins=1000)  # zoomed in: every point
    assert len(sx) == 503 and sy.max() == 50.0
    short = np.arange(10, dtype=float)
    assert len(decimate(short, short)[0]) == 10


def test_diff_runs_resolves_names_and_diff_json_lists_the_changes(store):
    import json

    from engine.store.diff import diff_json, diff_runs

    _run(store, "base")
    _run(store, "lower", learning_rate=1e-4)
    runs, stats = diff_runs(store, ["base", "lower"])
    out = diff_json(runs, stats)
    assert out["names"] == ["base", "lower"]
    assert out["fields"] == {"training.learning_rate": [2e-4, 1e-4]}
    assert set(out["metrics"]) == {"loss", "eval_loss", "grad_norm", "tokens_per_s"}
    json.dumps(out)


def test_a_spec_written_before_a_field_existed_differs_only_where_settings_do():
    """An old spec.json without `lora.full`, `upstream` or `rewards` compares equal to a new one
    with those at their defaults: the defaults fill in, node uuids of chains are not settings."""
    from engine.spec import JobSpec
    from engine.store.diff import compare
    from tests.synthetic_runs import make_spec

    new = make_spec("new").to_dict()
    new["upstream_node"] = "some-node-uuid"
    old = JobSpec.from_dict(new).to_dict()
    del old["lora"]["full"], old["upstream"], old["upstream_node"], old["rewards"]
    diff = compare(
        [{"id": "a", "name": "old", "spec": old}, {"id": "b", "name": "new", "spec": new}]
    )
    assert diff.changed_keys == []
