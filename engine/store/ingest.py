"""Turning event-log lines into index rows, inside the caller's write transaction.

A run's logs are its worker's and its supervisor's, and one per eval job that scored it after
training (`log_files`); their `eval` events with a `set` are its scores (`show --json`'s `eval`).

`apply_events` inserts one log's new events (idempotent by run, source and seq) and updates the
per-step tables; `refresh_run` then re-derives the run's summary row (state, progress, latest
metrics, error) from the indexed events, so the summary never depends on the order or the number of
ingest calls, and a rebuild gives the same row. The training method's own metrics (TRL's rewards,
margins, KL…) stay in each metrics row's `data`; the summary keeps those of the latest step in
`method_metrics` (JSON `{name: value}`), `show --json`'s `metrics.method`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from engine.events import LIVE_STATES, TERMINAL_STATES, Event, is_method_metric
from engine.rundir import RUN_EVALS, SUPERVISOR_LOG, WORKER_LOG

SOURCES = {"worker": WORKER_LOG, "supervisor": SUPERVISOR_LOG}
EVAL_SOURCE = "eval:"  # + eval id: the log an eval job wrote into the run it scored
METRIC_COLUMNS = ("epoch", "loss", "grad_norm", "lr", "tokens_per_s")
LATEST_COLUMNS = ("loss", "grad_norm", "lr", "tokens_per_s")
STARTED_STATES = ("starting", "training")
ERROR_STATES = ("failed", "refused")


def dumps(value: Any) -> str | None:
    """JSON text for a column (None stays NULL)."""
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def log_files(run_dir: Path) -> dict[str, Path]:
    """Every event log of a run directory by source: `worker`, `supervisor`, and `eval:<id>`
    for each eval job that scored the run after training (`<run_dir>/evals/<id>.jsonl`)."""
    run_dir = Path(run_dir)
    logs = {source: run_dir / name for source, name in SOURCES.items()}
    for path in sorted((run_dir / RUN_EVALS).glob("*.jsonl")):
        logs[EVAL_SOURCE + path.stem] = path
    return logs


# -- runs rows ---------------------------------------------------------------------------------
def upsert_run(
    conn: sqlite3.Connection,
    run_id: str,
    spec: dict,
    run_dir: Path | str,
    *,
    created_at: float | None = None,
    parent: str | None = None,
    estimate: dict | None = None,
    replace: bool = True,
) -> None:
    """Insert a run's registration fields; `replace` updates an existing row, else it is kept."""
    conflict = (
        """DO UPDATE SET name = excluded.name, node_uuid = excluded.node_uuid,
        origin_uuid = excluded.origin_uuid, graph_path = excluded.graph_path,
        run_dir = excluded.run_dir, spec = excluded.spec,
        created_at = COALESCE(excluded.created_at, runs.created_at),
        parent = COALESCE(excluded.parent, runs.parent),
        estimate = COALESCE(excluded.estimate, runs.estimate),
        updated_at = excluded.updated_at"""
        if replace
        else "DO NOTHING"
    )
    conn.execute(
        "INSERT INTO runs (id, name, node_uuid, origin_uuid, graph_path, run_dir, spec, created_at,"
        " parent, estimate, warnings, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '[]', ?)"
        f" ON CONFLICT (id) {conflict}",
        (
            run_id,
            spec.get("name"),
            spec.get("node_uuid") or None,
            spec.get("origin_uuid") or None,
            spec.get("graph_path") or None,
            str(run_dir),
            dumps(spec),
            created_at,
            parent,
            dumps(estimate),
            time.time(),
        ),
    )


# -- events ------------------------------------------------------------------------------------
def position(conn: sqlite3.Connection, run_id: str, source: str) -> tuple[int, int]:
    """How far a run's log has been ingested: (last seq, byte offset after it)."""
    row = conn.execute(
        'SELECT seq, "offset" FROM ingest WHERE run_id = ? AND source = ?', (run_id, source)
    ).fetchone()
    return (row[0], row[1]) if row else (0, 0)


def apply_events(
    conn: sqlite3.Connection, run_id: str, source: str, events: list[Event], end_offset: int
) -> tuple[int, set[str]]:
    """Index the events newer than the stored position; returns (how many were new, their kinds).

    Another process may have ingested the same lines since they were read, so events at or below
    the stored seq are skipped: per-step upserts then never replay an older attempt over a newer one.
    """
    done_seq, _ = position(conn, run_id, source)
    last, new, kinds = done_seq, 0, set()
    for event in events:
        if event.seq <= done_seq:
            continue
        last = max(last, event.seq)
        cursor = conn.execute(
            "INSERT OR IGNORE INTO events (run_id, source, seq, ts, kind, data)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, source, event.seq, event.ts, event.kind, dumps(event.data)),
        )
        if cursor.rowcount != 1:
            continue
        new += 1
        kinds.add(event.kind)
        handler = _HANDLERS.get(event.kind)
        if handler:
            handler(conn, run_id, event)
    conn.execute(
        'INSERT INTO ingest (run_id, source, seq, "offset") VALUES (?, ?, ?, ?)'
        " ON CONFLICT (run_id, source) DO UPDATE SET seq = max(seq, excluded.seq),"
        ' "offset" = max("offset", excluded."offset")',
        (run_id, source, last, end_offset),
    )
    return new, kinds


def _step(event: Event) -> int | None:
    try:
        return int(event.get("step"))
    except (TypeError, ValueError):
        return None


def _metric(conn: sqlite3.Connection, run_id: str, event: Event) -> None:
    step = _step(event)
    if step is None:
        return
    extra = {k: v for k, v in event.data.items() if k != "step" and k not in METRIC_COLUMNS}
    conn.execute(
        "INSERT INTO metrics (run_id, step, ts, epoch, loss, grad_norm, lr, tokens_per_s, data)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, step) DO UPDATE SET"
        " ts = excluded.ts, epoch = excluded.epoch, loss = excluded.loss,"
        " grad_norm = excluded.grad_norm, lr = excluded.lr, tokens_per_s = excluded.tokens_per_s,"
        " data = excluded.data",
        (run_id, step, event.ts, *(event.get(c) for c in METRIC_COLUMNS), dumps(extra)),
    )


def _eval(conn: sqlite3.Connection, run_id: str, event: Event) -> None:
    step = _step(event)
    if step is None:
        return
    extra = {k: v for k, v in event.data.items() if k not in ("step", "eval_loss")}
    conn.execute(
        "INSERT INTO evals (run_id, step, ts, eval_loss, data) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (run_id, step) DO UPDATE SET ts = excluded.ts,"
        " eval_loss = excluded.eval_loss, data = excluded.data",
        (run_id, step, event.ts, event.get("eval_loss"), dumps(extra)),
    )


def artifact_kind(data: dict) -> str | None:
    """An artifact event's artifact kind.

    The codec's own `kind` key names the event, so an artifact event cannot carry `kind`; it is
    read from `artifact_kind` (or `type`), with `kind` kept for manifests and raw dicts.
    """
    return data.get("artifact_kind") or data.get("type") or data.get("kind")


def artifact_id(run_id: str | None, kind: str | None, path: str | None) -> str:
    """A stable id for an artifact event that carries none, so re-ingesting never duplicates it."""
    digest = hashlib.sha1(f"{run_id}\0{kind}\0{path}".encode()).hexdigest()
    return digest[:16]


def _artifact(conn: sqlite3.Connection, run_id: str, event: Event) -> None:
    kind = artifact_kind(event.data)
    path = event.get("path")
    upsert_artifact(
        conn,
        {
            "id": event.get("id") or artifact_id(run_id, kind, path),
            "run_id": run_id,
            "kind": kind,
            "path": path,
            "bytes": event.get("bytes"),
            "sha256": event.get("sha256"),
            "created_at": event.ts,
            "manifest": None,
        },
    )


_HANDLERS = {"metric": _metric, "eval": _eval, "artifact": _artifact}


def upsert_artifact(conn: sqlite3.Connection, row: dict) -> None:
    """Insert or update one artifacts row (a manifest already recorded is kept)."""
    conn.execute(
        "INSERT INTO artifacts (id, run_id, kind, path, bytes, sha256, created_at, manifest)"
        " VALUES (:id, :run_id, :kind, :path, :bytes, :sha256, :created_at, :manifest)"
        " ON CONFLICT (id) DO UPDATE SET run_id = COALESCE(excluded.run_id, artifacts.run_id),"
        " kind = excluded.kind, path = excluded.path, bytes = excluded.bytes,"
        " sha256 = excluded.sha256,"
        " created_at = COALESCE(excluded.created_at, artifacts.created_at),"
        " manifest = COALESCE(excluded.manifest, artifacts.manifest)",
        row,
    )


def manifest_row(manifest: dict, folder: Path) -> dict:
    """The artifacts row for a library manifest; a relative `path` is relative to its folder."""
    path = manifest.get("path")
    path = folder / path if path else folder
    return {
        "id": str(manifest.get("id") or folder.name),
        "run_id": manifest.get("run_id"),
        "kind": artifact_kind(manifest),
        "path": str(path),
        "bytes": manifest.get("bytes"),
        "sha256": manifest.get("sha256"),
        "created_at": manifest.get("created_at"),
        "manifest": dumps(manifest),
    }


# -- the run's summary row -----------------------------------------------------------------------
def refresh_run(conn: sqlite3.Connection, run_id: str, samples: bool = False) -> None:
    """Re-derive the run row's state, progress, latest metrics and error from its events."""
    summary = _status_summary(conn, run_id)
    summary.update(_progress(conn, run_id, summary["state"]))
    summary.update(_latest_values(conn, run_id))
    summary["error"] = (
        dumps(_latest_error(conn, run_id)) if summary["state"] in ERROR_STATES else None
    )
    summary["updated_at"] = time.time()
    columns = ", ".join(f"{key} = ?" for key in summary)
    conn.execute(f"UPDATE runs SET {columns} WHERE id = ?", (*summary.values(), run_id))
    conn.execute(
        "UPDATE runs SET created_at = (SELECT min(ts) FROM events WHERE run_id = ?)"
        " WHERE id = ? AND created_at IS NULL",
        (run_id, run_id),
    )
    if samples:
        refresh_samples(conn, run_id)


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _status_summary(conn: sqlite3.Connection, run_id: str) -> dict:
    """State and reason of the latest status event by ts (ties: the later-ingested), and more."""
    rows = conn.execute(
        "SELECT source, ts, data FROM events WHERE run_id = ? AND kind = 'status'"
        " ORDER BY ts, rowid",
        (run_id,),
    ).fetchall()
    out: dict[str, Any] = {"state": None, "reason": None, "device": None, "started_at": None}
    warnings: list[str] = []
    queued: dict | None = None
    last_ts = None
    for source, ts, text in rows:
        data = json.loads(text)
        state = data.get("state")
        out["state"], out["reason"], last_ts = state, data.get("reason"), ts
        for warning in _as_list(data.get("warnings")):
            if str(warning) not in warnings:
                warnings.append(str(warning))
        if data.get("device"):
            out["device"] = data["device"]
        if state in STARTED_STATES and out["started_at"] is None:
            out["started_at"] = ts
        if state == "queued" and source == "supervisor" and queued is None:
            queued = data
    out["finished_at"] = last_ts if out["state"] in TERMINAL_STATES else None
    out["warnings"] = dumps(warnings)
    # the supervisor's first `queued` event records what a rebuild cannot find in spec.json
    for key in ("parent", "created_at", "estimate"):
        if queued and queued.get(key) is not None:
            out[key] = dumps(queued[key]) if key == "estimate" else queued[key]
    return out


def _latest_event(conn: sqlite3.Connection, run_id: str, kind: str) -> dict | None:
    row = conn.execute(
        "SELECT data FROM events WHERE run_id = ? AND kind = ?"
        " ORDER BY ts DESC, rowid DESC LIMIT 1",
        (run_id, kind),
    ).fetchone()
    return json.loads(row[0]) if row else None


def _progress(conn: sqlite3.Connection, run_id: str, state: str | None) -> dict:
    """step, max_steps, epoch and eta_s from the latest progress event (else the latest metric)."""
    progress = _latest_event(conn, run_id, "progress") or {}
    metric = conn.execute(
        "SELECT step, epoch FROM metrics WHERE run_id = ? ORDER BY ts DESC LIMIT 1", (run_id,)
    ).fetchone()
    step = progress.get("step", metric[0] if metric else None)
    epoch = progress.get("epoch")
    if epoch is None and metric:
        epoch = metric[1]
    eta = progress.get("eta_s") if state in LIVE_STATES else None
    return {"step": step, "max_steps": progress.get("max_steps"), "epoch": epoch, "eta_s": eta}


def _latest_values(conn: sqlite3.Connection, run_id: str) -> dict:
    """The latest non-null value of each metric column, the latest eval loss, and the training
    method's own metrics at the latest logged step."""
    out = {}
    for column in LATEST_COLUMNS:
        row = conn.execute(
            f"SELECT {column} FROM metrics WHERE run_id = ? AND {column} IS NOT NULL"
            " ORDER BY ts DESC LIMIT 1",
            (run_id,),
        ).fetchone()
        out[column] = row[0] if row else None
    row = conn.execute(
        "SELECT eval_loss FROM evals WHERE run_id = ? AND eval_loss IS NOT NULL"
        " ORDER BY ts DESC LIMIT 1",
        (run_id,),
    ).fetchone()
    out["eval_loss"] = row[0] if row else None
    row = conn.execute(
        "SELECT data FROM metrics WHERE run_id = ? ORDER BY ts DESC LIMIT 1", (run_id,)
    ).fetchone()
    method = method_values(json.loads(row[0] or "{}")) if row else {}
    out["method_metrics"] = dumps(method) if method else None
    return out


def method_values(data: dict) -> dict[str, float]:
    """The training method's own metrics among a metrics row's fields (numbers only)."""
    return {
        k: v
        for k, v in data.items()
        if is_method_metric(k) and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def _latest_error(conn: sqlite3.Connection, run_id: str) -> dict | None:
    data = _latest_event(conn, run_id, "error")
    if data is None:
        return None
    return {"class": data.get("class"), "message": data.get("message"), "hint": data.get("hint")}


def refresh_samples(conn: sqlite3.Connection, run_id: str) -> None:
    """Replace the run's samples with its latest batch: the worker's sample events after the
    worker status event that precedes the last sample (a retried worker's batch replaces)."""
    worker = "run_id = ? AND source = 'worker'"
    last = conn.execute(
        f"SELECT max(seq) FROM events WHERE {worker} AND kind = 'sample'", (run_id,)
    ).fetchone()[0]
    if last is None:
        return
    start = (
        conn.execute(
            f"SELECT max(seq) FROM events WHERE {worker} AND kind = 'status' AND seq < ?",
            (run_id, last),
        ).fetchone()[0]
        or 0
    )
    rows = conn.execute(
        f"SELECT data FROM events WHERE {worker} AND kind = 'sample' AND seq > ? ORDER BY seq",
        (run_id, start),
    ).fetchall()
    conn.execute("DELETE FROM samples WHERE run_id = ?", (run_id,))
    batch = [json.loads(text) for (text,) in rows]
    conn.executemany(
        "INSERT INTO samples (run_id, idx, prompt, response, reference) VALUES (?, ?, ?, ?, ?)",
        [
            (run_id, i, s.get("prompt"), s.get("response"), s.get("reference"))
            for i, s in enumerate(batch)
        ],
    )
