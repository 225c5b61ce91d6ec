"""The run index: idempotent, incremental ingestion of both event logs, queries, rebuild, commands."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from engine import events as events_mod
from engine import paths
from engine.errors import NotFoundError, TunegraphError
from engine.events import Event, EventLog, read_events
from engine.rundir import SUPERVISOR_LOG, WORKER_LOG
from engine.spec import DatasetSpec, JobSpec
from engine.store import index as store_mod
from engine.store import schema as store_schema
from engine.store.index import Store
from tests.helpers import RUN_KEYS

EXTRA_KEYS = {"eta_s", "spec"}
ESTIMATE = {"params": 1000, "vram_gib": {"bf16": 1.5, "4bit": 0.8}, "mode": "lora"}


class Clock:
    """A stand-in for `time` inside engine.events: every event gets the next whole second."""

    def __init__(self, t: float = 1_700_000_000.0):
        self.t = t

    def time(self) -> float:
        self.t += 1.0
        return self.t


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(events_mod, "time", fake)
    return fake


def make_run(name: str = "alpha", run_id: str | None = None) -> Path:
    run_dir = paths.runs_dir() / (run_id or paths.new_run_id())
    run_dir.mkdir(parents=True)
    JobSpec(name=name, datasets=[DatasetSpec(path="data.jsonl")]).save(run_dir / "spec.json")
    return run_dir


def submit(
    store: Store,
    name: str = "alpha",
    run_id: str | None = None,
    created_at: float = 1000.0,
    parent: str | None = None,
) -> Path:
    """What the supervisor does at submission: spec.json, index row, first `queued` status."""
    run_dir = make_run(name, run_id)
    store.register_run(
        run_dir.name,
        JobSpec.load(run_dir / "spec.json"),
        run_dir,
        created_at=created_at,
        parent=parent,
        estimate=ESTIMATE,
    )
    with EventLog(run_dir / SUPERVISOR_LOG) as log:
        log.emit("status", state="queued", parent=parent, created_at=created_at, estimate=ESTIMATE)
    store.ingest(run_dir)
    return run_dir


def worker(run_dir: Path) -> EventLog:
    return EventLog(run_dir / WORKER_LOG)


def supervisor(run_dir: Path) -> EventLog:
    return EventLog(run_dir / SUPERVISOR_LOG)


def train(log: EventLog, steps, loss0: float = 2.0, max_steps: int = 8) -> None:
    for step in steps:
        log.emit(
            "metric",
            step=step,
            epoch=step / max_steps,
            loss=loss0 - step * 0.1,
            grad_norm=1.0,
            lr=1e-4,
            tokens_per_s=500.0,
            tokens_seen=step * 64,
        )
        log.emit(
            "progress",
            step=step,
            max_steps=max_steps,
            eta_s=float(max_steps - step),
            epoch=step / max_steps,
        )


def append_raw(log_path: Path, event_kind: str, ts: float, /, **data) -> str:
    """Append one complete event line (artifact events cannot go through EventLog.emit: the
    codec's `kind` names the event, so the artifact's kind travels as `artifact_kind`)."""
    seq = max((e.seq for e in read_events(log_path)), default=0) + 1
    line = Event(seq, ts, event_kind, data).to_json() + "\n"
    with open(log_path, "a", encoding="utf-8") as f:
        f.write(line)
    return line


def dump(store: Store) -> dict:
    """Every index row, minus the bookkeeping timestamp."""
    out = {}
    for table in store_schema.INDEX_TABLES:
        rows = list(store.db.query(f"SELECT * FROM {table} ORDER BY 1, 2"))
        out[table] = [{k: v for k, v in r.items() if k != "updated_at"} for r in rows]
    return out


def completed_run(
    store: Store,
    clock: Clock,
    name: str = "alpha",
    created_at: float = 1000.0,
    parent: str | None = None,
) -> Path:
    """A run through the whole happy path, with evals, samples, warnings and an artifact."""
    run_dir = submit(store, name, created_at=created_at, parent=parent)
    with worker(run_dir) as w:
        w.emit("status", state="starting", pid=123)
        w.emit("status", state="training", device="cuda:0")
        train(w, range(1, 9))
        w.emit("eval", step=8, eval_loss=1.25, epoch=1.0, perplexity=3.5)
        w.emit("status", state="evaluating")
        for i in range(3):
            w.emit("sample", prompt=f"p{i}", response=f"r{i}", reference=f"ref{i}")
        w.emit("status", state="exporting")
    append_raw(
        run_dir / WORKER_LOG,
        "artifact",
        clock.time(),
        artifact_kind="adapter_dir",
        path=str(run_dir / "adapter"),
        bytes=10,
        sha256="ab" * 32,
    )
    with worker(run_dir) as w:
        w.emit("status", state="completed", warnings=["GGUF export failed: no converter"])
    store.ingest(run_dir)
    return run_dir


# -- the database file ---------------------------------------------------------------------------
def test_opens_in_wal_mode_with_all_tables_and_a_schema_version(store):
    assert store.path == paths.db_path()
    assert store.db.journal_mode == "wal"
    assert set(store_schema.TABLES) <= set(store.db.table_names())
    version = store.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert int(version[0]) == store_schema.SCHEMA_VERSION
    Store().close()  # opening again is idempotent


def test_an_older_schema_is_rebuilt_from_the_run_folders(store, clock):
    run_dir = completed_run(store, clock)
    before = store.run_json(run_dir.name)
    store.db.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    with Store() as reopened:
        assert reopened.run_json(run_dir.name) == before


# -- ingestion -----------------------------------------------------------------------------------
def test_ingesting_twice_gives_the_same_rows(store, clock):
    run_dir = completed_run(store, clock)
    before = dump(store)
    assert store.ingest(run_dir) == 0
    with Store() as other:
        assert other.ingest(run_dir) == 0
    assert dump(store) == before
    assert len(before["events"]) == len(list(read_events(run_dir / WORKER_LOG))) + 1
    assert [m["step"] for m in store.metrics(run_dir.name)] == list(range(1, 9))


def test_ingest_reads_only_what_was_appended(store, clock):
    run_dir = submit(store)
    with worker(run_dir) as w:
        w.emit("status", state="training")
        train(w, [1, 2])
    assert store.ingest(run_dir) == 5
    with worker(run_dir) as w:
        train(w, [3])
    assert store.ingest(run_dir) == 2
    metrics = store.metrics(run_dir.name)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert metrics[-1]["tokens_seen"] == 192  # extra fields come back from `data`
    offset = store.db.execute(
        'SELECT "offset" FROM ingest WHERE run_id = ? AND source = ?', (run_dir.name, "worker")
    ).fetchone()[0]
    assert offset == (run_dir / WORKER_LOG).stat().st_size


def test_a_torn_last_line_is_ignored_until_it_is_complete(store, clock):
    run_dir = submit(store)
    with worker(run_dir) as w:
        train(w, [1])
    store.ingest(run_dir)
    line = Event(3, clock.time(), "metric", {"step": 2, "loss": 0.5}).to_json() + "\n"
    with open(run_dir / WORKER_LOG, "a", encoding="utf-8") as f:
        f.write(line[:12])
    assert store.ingest(run_dir) == 0
    assert [m["step"] for m in store.metrics(run_dir.name)] == [1]
    with open(run_dir / WORKER_LOG, "a", encoding="utf-8") as f:
        f.write(line[12:])
    assert store.ingest(run_dir) == 1
    assert store.metrics(run_dir.name)[-1] == pytest.approx(
        {
            "step": 2,
            "ts": clock.t,
            "epoch": None,
            "loss": 0.5,
            "grad_norm": None,
            "lr": None,
            "tokens_per_s": None,
        }
    )


def test_long_logs_are_ingested_in_several_short_transactions(store, clock, monkeypatch):
    monkeypatch.setattr(store_mod, "CHUNK", 3)
    run_dir = submit(store)
    with worker(run_dir) as w:
        train(w, range(1, 6))
    assert store.ingest(run_dir) == 10
    assert store.ingest(run_dir) == 0
    assert store.run_json(run_dir.name)["step"] == 5


def test_a_resumed_worker_re_emitting_steps_keeps_one_point_per_step(store, clock):
    run_dir = submit(store)
    with worker(run_dir) as w:
        w.emit("status", state="training")
        train(w, range(1, 9), loss0=1.0)  # checkpoint at 4, then died at 8
    with supervisor(run_dir) as s:
        s.emit("status", state="failed", reason="interrupted")
    store.ingest(run_dir)
    with supervisor(run_dir) as s:
        s.emit("status", state="queued")
    with worker(run_dir) as w:
        w.emit("status", state="training")
        train(w, range(5, 9), loss0=5.0)
    store.ingest(run_dir)
    metrics = store.metrics(run_dir.name)
    assert [m["step"] for m in metrics] == list(range(1, 9))
    assert [m["loss"] for m in metrics] == pytest.approx(
        [1.0 - s * 0.1 for s in range(1, 5)] + [5.0 - s * 0.1 for s in range(5, 9)]
    )
    run = store.run_json(run_dir.name)
    assert run["metrics"]["loss"] == pytest.approx(4.2)
    assert (run["state"], run["step"], run["finished_at"]) == ("training", 8, None)


def test_state_is_the_latest_status_by_ts_across_both_logs(store, clock):
    run_dir = submit(store)
    with worker(run_dir) as w:
        w.emit("status", state="training", device="cuda:0")
    with supervisor(run_dir) as s:
        cancelled = s.emit("status", state="cancelled", reason="cancelled by the user")
    store.ingest(run_dir)
    run = store.run_json(run_dir.name)
    assert (run["state"], run["reason"], run["finished_at"]) == (
        "cancelled",
        "cancelled by the user",
        cancelled.ts,
    )
    clock.t -= 10  # a worker line written earlier but ingested later does not win
    with worker(run_dir) as w:
        w.emit("status", state="evaluating")
    assert store.ingest(run_dir) == 1
    assert store.run_json(run_dir.name)["state"] == "cancelled"


def test_equal_timestamps_go_to_the_later_ingested_status(store, clock):
    run_dir = submit(store)
    with worker(run_dir) as w:
        w.emit("status", state="training")
    clock.t -= 1
    with supervisor(run_dir) as s:
        s.emit("status", state="cancelled")
    store.ingest(run_dir)  # worker first, then supervisor
    assert store.run_json(run_dir.name)["state"] == "cancelled"


def test_pause_resume_and_failure_set_and_clear_finished_at(store, clock):
    run_dir = submit(store)
    with worker(run_dir) as w:
        started = w.emit("status", state="starting")
        w.emit("status", state="training")
        w.emit("status", state="paused", reason="paused by the user")
    store.ingest(run_dir)
    run = store.run_json(run_dir.name)
    assert (run["state"], run["started_at"], run["finished_at"]) == ("paused", started.ts, None)
    with supervisor(run_dir) as s:
        s.emit("status", state="queued")
    with worker(run_dir) as w:
        w.emit("status", state="starting")
        w.emit("status", state="training")
        w.emit("error", **{"class": "ModelError", "message": "boom", "hint": "fix it"})
        failed = w.emit("status", state="failed", reason="boom")
    store.ingest(run_dir)
    run = store.run_json(run_dir.name)
    assert (run["state"], run["started_at"], run["finished_at"]) == (
        "failed",
        started.ts,
        failed.ts,
    )
    assert run["error"] == {"class": "ModelError", "message": "boom", "hint": "fix it"}
    with supervisor(run_dir) as s:
        s.emit("status", state="queued")  # resume
    store.ingest(run_dir)
    run = store.run_json(run_dir.name)
    assert (run["state"], run["reason"], run["finished_at"], run["error"]) == (
        "queued",
        None,
        None,
        None,
    )
    assert run["started_at"] == started.ts


def test_warnings_accumulate_and_device_and_samples_are_kept(store, clock):
    run_dir = completed_run(store, clock)
    with supervisor(run_dir) as s:
        s.emit(
            "status", state="completed", warnings=["GGUF export failed: no converter", "parity 98%"]
        )
    store.ingest(run_dir)
    run = store.run_json(run_dir.name)
    assert run["warnings"] == ["GGUF export failed: no converter", "parity 98%"]
    assert run["device"] == "cuda:0"
    assert run["samples"] == [{"prompt": f"p{i}", "response": f"r{i}"} for i in range(3)]
    assert store.samples(run_dir.name)[0] == {
        "idx": 0,
        "prompt": "p0",
        "response": "r0",
        "reference": "ref0",
    }
    assert run["metrics"]["eval_loss"] == 1.25
    assert store.evals(run_dir.name) == [
        pytest.approx(
            {
                "step": 8,
                "ts": store.evals(run_dir.name)[0]["ts"],
                "eval_loss": 1.25,
                "epoch": 1.0,
                "perplexity": 3.5,
            }
        )
    ]


def test_a_retried_workers_samples_replace_the_earlier_batch(store, clock):
    run_dir = submit(store)
    with worker(run_dir) as w:
        w.emit("status", state="evaluating")
        for i in range(3):
            w.emit("sample", prompt=f"old{i}", response="x")
    store.ingest(run_dir)
    with worker(run_dir) as w:
        w.emit("status", state="starting")
        w.emit("status", state="evaluating")
        w.emit("sample", prompt="new0", response="y")
        w.emit("log", level="info", message="between samples")
        w.emit("sample", prompt="new1", response="y")
    store.ingest(run_dir)
    assert [s["prompt"] for s in store.samples(run_dir.name)] == ["new0", "new1"]


def test_artifacts_without_an_id_get_a_stable_one(store, clock):
    run_dir = completed_run(store, clock)
    (artifact,) = store.artifacts(run_dir.name)
    assert artifact["kind"] == "adapter_dir" and artifact["manifest"] is None
    store.rebuild()
    assert [a["id"] for a in store.artifacts()] == [artifact["id"]]


def test_ingest_without_a_registered_row_uses_spec_json_and_the_queued_event(store, clock):
    run_dir = make_run("child")
    with supervisor(run_dir) as s:
        s.emit("status", state="queued", parent="20260101-000000-aaaaaa", created_at=42.0)
    assert store.ingest(run_dir) == 1
    run = store.run_json(run_dir.name)
    assert (run["name"], run["parent"], run["created_at"], run["state"]) == (
        "child",
        "20260101-000000-aaaaaa",
        42.0,
        "queued",
    )
    assert run["spec"]["name"] == "child" and run["run_dir"] == str(run_dir)


def test_ingesting_a_folder_without_spec_json_names_it(store):
    folder = paths.runs_dir() / "not-a-run"
    folder.mkdir()
    with pytest.raises(NotFoundError, match="no spec.json"):
        store.ingest(folder)


# -- queries -------------------------------------------------------------------------------------
def test_run_json_has_exactly_the_design_keys(store, clock):
    run_dir = make_run()
    store.register_run(run_dir.name, JobSpec.load(run_dir / "spec.json"), run_dir)
    fresh = store.run_json(run_dir.name)
    assert set(fresh) == RUN_KEYS | EXTRA_KEYS
    assert set(fresh["metrics"]) == {
        "loss",
        "grad_norm",
        "lr",
        "eval_loss",
        "tokens_per_s",
        "method",
    }
    assert fresh["state"] is None and fresh["step"] is None and fresh["error"] is None
    assert fresh["warnings"] == [] and fresh["artifacts"] == [] and fresh["samples"] == []
    assert fresh["metrics"].pop("method") == {}  # the training method's own metrics: none yet
    assert all(v is None for v in fresh["metrics"].values())

    done = store.run_json(completed_run(store, clock, name="beta").name)
    assert set(done) == RUN_KEYS | EXTRA_KEYS
    assert (done["state"], done["step"], done["max_steps"], done["eta_s"]) == (
        "completed",
        8,
        8,
        None,
    )
    assert done["estimate"] == ESTIMATE
    assert set(done["artifacts"][0]) == {"id", "kind", "path", "bytes", "sha256"}
    json.dumps(done)  # plain JSON all the way down


def test_list_runs_is_newest_first_and_filters_by_state(store, clock):
    a = submit(store, "a", "20260101-000000-aaaaaa", created_at=100.0)
    b = submit(store, "b", "20260101-000000-bbbbbb", created_at=200.0)
    c = submit(store, "c", "20260101-000000-cccccc", created_at=200.0)
    with supervisor(b) as s:
        s.emit("status", state="refused", reason="needs 90 GiB")
    store.ingest(b)
    assert [r["id"] for r in store.list_runs()] == [c.name, b.name, a.name]
    assert [r["id"] for r in store.list_runs("refused")] == [b.name]
    assert [r["id"] for r in store.list_runs("queued, refused")] == [c.name, b.name, a.name]
    assert store.list_runs("completed") == []
    with pytest.raises(TunegraphError, match="'runing' is not a run state"):
        store.list_runs("runing")


def test_resolve_by_id_prefix_and_name(store, clock):
    submit(store, "alpha", "20260101-000000-aaaaaa", created_at=1.0)
    submit(store, "beta", "20260101-000000-abbbbb", created_at=2.0)
    submit(store, "beta", "20260102-000000-cccccc", created_at=3.0)
    assert store.resolve("20260101-000000-aaaaaa") == "20260101-000000-aaaaaa"
    assert store.resolve("20260102") == "20260102-000000-cccccc"
    assert store.resolve("alpha") == "20260101-000000-aaaaaa"
    with pytest.raises(NotFoundError) as err:
        store.resolve("beta")
    assert str(err.value) == (
        "'beta' matches 2 runs: beta (20260102-000000-cccccc), "
        "beta (20260101-000000-abbbbb) — use the id"
    )
    with pytest.raises(NotFoundError, match="'2026' matches 3 runs"):
        store.resolve("2026")
    with pytest.raises(NotFoundError, match="no run matches 'gamma'"):
        store.resolve("gamma")
    with pytest.raises(NotFoundError):
        store.resolve("")


def test_events_filters_and_logs_merge_both_sources_by_ts(store, clock):
    run_dir = submit(store)
    with worker(run_dir) as w:
        w.emit("status", state="training")
        w.emit("log", level="info", message="loading")
    with supervisor(run_dir) as s:
        s.emit("schedule", message="placed on GPU 0 with hold 3.1 GiB")
    with worker(run_dir) as w:
        train(w, [1])
    store.ingest(run_dir)
    events = store.events(run_dir.name)
    assert [(e["source"], e["kind"]) for e in events] == [
        ("supervisor", "status"),
        ("worker", "status"),
        ("worker", "log"),
        ("supervisor", "schedule"),
        ("worker", "metric"),
        ("worker", "progress"),
    ]
    assert events[2]["message"] == "loading"
    assert len(store.events(run_dir.name, kinds="status")) == 2
    assert len(store.events(run_dir.name, kinds=["log", "schedule"], source="worker")) == 1
    assert len(store.events(run_dir.name, after=events[2]["ts"])) == 3
    lines = store.logs(run_dir.name)
    assert len(lines) == 6
    assert "supervisor" in lines[0] and "queued" in lines[0]
    assert lines[2].endswith("info: loading")
    assert "placed on GPU 0" in lines[3] and "loss=1.9" in lines[4]


# -- rebuild and delete --------------------------------------------------------------------------
def write_library_artifact(run_id: str, artifact_id: str = "lib-0001") -> Path:
    folder = paths.library_dir() / artifact_id
    folder.mkdir(parents=True)
    (folder / "adapter.zip").write_bytes(b"zip")
    manifest = {
        "id": artifact_id,
        "run_id": run_id,
        "kind": "adapter_zip",
        "path": str(folder / "adapter.zip"),
        "bytes": 3,
        "sha256": "cd" * 32,
        "created_at": 5000.0,
        "base_model": "builtin:tiny-llama",
    }
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder / "adapter.zip"


def snapshot(store: Store) -> dict:
    runs = store.list_runs()
    return {
        "runs": runs,
        "artifacts": store.artifacts(),
        "series": [
            (
                store.metrics(r["id"]),
                store.evals(r["id"]),
                store.events(r["id"]),
                store.samples(r["id"]),
            )
            for r in runs
        ],
    }


def test_rebuild_from_run_folders_and_library_gives_the_same_answers(store, clock, tmp_path):
    parent = completed_run(store, clock, "parent", created_at=10.0)
    child = completed_run(store, clock, "child", created_at=20.0, parent=parent.name)
    path = write_library_artifact(parent.name)
    append_raw(
        parent / WORKER_LOG,
        "artifact",
        clock.time(),
        id="lib-0001",
        artifact_kind="adapter_zip",
        path=str(path),
        bytes=3,
        sha256="cd" * 32,
    )
    store.ingest(parent)
    store.ingest_library()
    before = snapshot(store)
    assert before["runs"][0]["parent"] == parent.name

    assert store.rebuild() == 2
    assert snapshot(store) == before
    with Store(tmp_path / "fresh.db") as fresh:
        fresh.rebuild()
        assert snapshot(fresh) == before
    assert store.run_json(child.name)["parent"] == parent.name


def test_delete_run_keeps_library_artifacts(store, clock):
    run_dir = completed_run(store, clock)
    run_id = run_dir.name
    path = write_library_artifact(run_id)
    append_raw(
        run_dir / WORKER_LOG,
        "artifact",
        clock.time(),
        id="lib-0001",
        artifact_kind="adapter_zip",
        path=str(path),
        bytes=3,
        sha256="cd" * 32,
    )
    store.ingest(run_dir)
    store.set_hold(run_id, 0, 2.0)
    assert len(store.artifacts(run_id)) == 2

    store.delete_run(run_id)
    with pytest.raises(NotFoundError):
        store.run_json(run_id)
    assert not run_dir.exists() and list(paths.runs_dir().iterdir()) == []
    assert [(a["id"], a["run_id"]) for a in store.artifacts()] == [("lib-0001", run_id)]
    assert store.events(run_id) == [] and store.metrics(run_id) == []
    assert store.samples(run_id) == [] and store.holds() == []
    assert path.exists()
    store.rebuild()
    assert store.list_runs() == [] and [a["id"] for a in store.artifacts()] == ["lib-0001"]


def test_delete_refuses_a_live_run_unless_forced(store, clock):
    run_dir = submit(store)
    with pytest.raises(TunegraphError, match="is queued"):
        store.delete_run(run_dir.name)
    store.delete_run(run_dir.name, force=True)
    assert store.list_runs() == []


# -- commands and holds --------------------------------------------------------------------------
def test_commands_are_taken_once_even_by_two_stores(store):
    first = store.add_command("submit", None, graph="g.json", only=["a"])
    second = store.add_command("cancel", "20260101-000000-aaaaaa")
    with Store() as other:
        taken = other.take_commands()
        assert [c["id"] for c in taken] == [first, second]
        assert taken[0]["args"] == {"graph": "g.json", "only": ["a"]}
        assert store.take_commands() == [] and other.take_commands() == []
        other.finish_command(first, {"ok": True, "runs": ["x"]})
    done = store.command(first)
    assert done["result"] == {"ok": True, "runs": ["x"]} and done["done_at"] is not None
    assert store.command(second)["done_at"] is None
    with pytest.raises(NotFoundError):
        store.command(999)


def test_concurrent_takers_never_share_a_command(store):
    ids = [store.add_command("pause", f"run-{i}") for i in range(60)]
    got: list[list[int]] = [[], []]

    def take(slot: int) -> None:
        with Store() as mine:
            for _ in range(30):
                got[slot] += [c["id"] for c in mine.take_commands()]

    threads = [threading.Thread(target=take, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for i in range(60):
        ids.append(store.add_command("resume", f"run-{i}"))
    for t in threads:
        t.join()
    got[0] += [c["id"] for c in store.take_commands()]
    assert sorted(got[0] + got[1]) == sorted(ids)


def test_holds_keep_their_gpu_type_and_are_replaced_and_released(store):
    store.set_hold("a", 0, 12.5)
    store.set_hold("b", "0,1", 30)
    store.set_hold("a", 1, 10)
    holds = {h["run_id"]: (h["gpu"], h["gib"]) for h in store.holds()}
    assert holds == {"a": (1, 10.0), "b": ("0,1", 30.0)}
    store.release_hold("a")
    store.release_hold("nobody")
    assert [h["run_id"] for h in store.holds()] == ["b"]
