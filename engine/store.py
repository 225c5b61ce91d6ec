"""The queryable index of runs: an SQLite file (sqlite-utils, WAL) shared by several processes.

Run directories and library manifests are the source of truth; this database indexes them so the
CLI and the app can list, filter and chart runs quickly. Ingestion is idempotent by (run, source,
seq) and reads only the bytes appended since the last call, so anyone may ingest at any time, and
`rebuild` recreates the index from disk. The supervisor, the CLI and the app's reader thread each
open their own `Store`; write transactions are short and never span file reading.

Besides the index, two small tables carry live state no file records: `commands` (clients ask the
supervisor to submit, cancel, pause…) and `holds` (VRAM held on each GPU by live runs).
"""

from __future__ import annotations

import json
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from engine import paths
from engine import store_ingest as ingest_rows
from engine import store_schema as schema
from engine.errors import NotFoundError, TunegraphError
from engine.events import LIVE_STATES, STATES, read_offset
from engine.spec import JobSpec

BUSY_TIMEOUT_S = 10.0
CHUNK = 2000  # events per write transaction, so a long log never holds the write lock for long
SPEC_FILE = "spec.json"
RUN_KEYS = (
    "id",
    "name",
    "state",
    "reason",
    "warnings",
    "parent",
    "created_at",
    "started_at",
    "finished_at",
    "step",
    "max_steps",
    "epoch",
    "device",
    "metrics",
    "estimate",
    "error",
    "run_dir",
    "artifacts",
    "samples",
)
METRIC_KEYS = ("loss", "grad_norm", "lr", "eval_loss", "tokens_per_s")
ARTIFACT_KEYS = ("id", "kind", "path", "bytes", "sha256")


def _rows(conn: sqlite3.Connection, sql: str, params: Iterable[Any] = ()) -> list[dict]:
    cursor = conn.execute(sql, tuple(params))
    keys = [d[0] for d in cursor.description]
    return [dict(zip(keys, row, strict=True)) for row in cursor.fetchall()]


def _loads(text: str | None, default: Any = None) -> Any:
    return default if text is None else json.loads(text)


def _with_data(row: dict) -> dict:
    """A row whose JSON `data` column is merged into it (columns win over data keys)."""
    data = _loads(row.pop("data", None), {})
    return {**{k: v for k, v in data.items() if k not in row}, **row} if data else row


class Store:
    """The run index at `path` (default: the data directory's tunegraph.db), opened in WAL mode."""

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path else paths.db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self.db = sqlite_utils.Database(self._conn)
        self.db.enable_wal()
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._open_schema()

    def _open_schema(self) -> None:
        with self._write() as conn:
            version = schema.stored_version(conn)
            if version is not None and version > schema.SCHEMA_VERSION:
                raise TunegraphError(
                    f"{self.path} was written by a newer Tunegraph (schema {version})",
                    "Update Tunegraph, or delete the file: it is rebuilt from the run folders.",
                )
            stale = (version or 0) < schema.SCHEMA_VERSION and schema.has_table(conn, "runs")
            if stale:
                schema.drop_index_tables(conn)
            schema.create_tables(conn)
            schema.set_version(conn)
        if stale:
            self.rebuild()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A short write transaction, taking the write lock up front (no upgrade deadlocks)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: several queries see one consistent snapshot."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    # -- registering and ingesting ---------------------------------------------------------
    def register_run(
        self,
        run_id: str,
        spec: JobSpec | dict,
        run_dir: Path | str,
        created_at: float | None = None,
        parent: str | None = None,
        estimate: dict | None = None,
    ) -> None:
        """Index a new run (its state stays null until the first status event is ingested)."""
        spec_dict = spec.to_dict() if isinstance(spec, JobSpec) else dict(spec)
        created = time.time() if created_at is None else created_at
        with self._write() as conn:
            ingest_rows.upsert_run(
                conn,
                run_id,
                spec_dict,
                run_dir,
                created_at=created,
                parent=parent,
                estimate=estimate,
            )
            ingest_rows.refresh_run(conn, run_id)

    def ingest(self, run_dir: Path | str) -> int:
        """Index the events appended to a run's two logs since the last call; returns how many.

        A run not indexed yet is created from its `spec.json` (the rebuild path).
        """
        run_dir = Path(run_dir)
        run_id = run_dir.name
        known = self._has_run(run_id)
        spec = None if known else _load_spec(run_dir)
        reads = {}
        for source, name in ingest_rows.SOURCES.items():
            start = self._offset(run_id, source)
            events, end = read_offset(run_dir / name, start)
            reads[source] = (start, events, end)
        if known and all(not ev and end == start for start, ev, end in reads.values()):
            return 0
        new = 0
        if spec is not None:
            with self._write() as conn:
                ingest_rows.upsert_run(conn, run_id, spec, run_dir, replace=False)
                ingest_rows.refresh_run(conn, run_id)
        for source, (start, events, end) in reads.items():
            new += self._apply(run_id, source, start, events, end)
        return new

    def _apply(self, run_id: str, source: str, start: int, events: list, end: int) -> int:
        """Apply one log's events in chunks, each its own transaction; the offset moves last."""
        new = 0
        chunks = [events[i : i + CHUNK] for i in range(0, len(events), CHUNK)] or [[]]
        for i, chunk in enumerate(chunks):
            offset = end if i == len(chunks) - 1 else start  # seq guards the chunks before
            with self._write() as conn:
                count, kinds = ingest_rows.apply_events(conn, run_id, source, chunk, offset)
                if count:
                    ingest_rows.refresh_run(conn, run_id, samples="sample" in kinds)
            new += count
        return new

    def _has_run(self, run_id: str) -> bool:
        with self._lock:
            return (
                self._conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone()
                is not None
            )

    def _offset(self, run_id: str, source: str) -> int:
        with self._lock:
            return ingest_rows.position(self._conn, run_id, source)[1]

    def ingest_library(self, library_dir: Path | str | None = None) -> int:
        """Index every `<library>/<artifact_id>/manifest.json`; returns how many were read."""
        library = Path(library_dir) if library_dir else paths.library_dir()
        rows = []
        for manifest_path in sorted(library.glob("*/manifest.json")):
            try:
                manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # a half-written manifest is picked up by the next rebuild
            if isinstance(manifest, dict):
                rows.append(ingest_rows.manifest_row(manifest, manifest_path.parent))
        with self._write() as conn:
            for row in rows:
                ingest_rows.upsert_artifact(conn, row)
        return len(rows)

    def rebuild(
        self, runs_dir: Path | str | None = None, library_dir: Path | str | None = None
    ) -> int:
        """Drop the index and recreate it from every run directory and library manifest.

        `commands` and `holds` are live state, not index, and are kept. Returns the runs indexed.
        """
        runs = Path(runs_dir) if runs_dir else paths.runs_dir()
        with self._write() as conn:
            schema.drop_index_tables(conn)
            schema.create_tables(conn)
            schema.set_version(conn)
        count = 0
        for run_dir in sorted(runs.iterdir()) if runs.is_dir() else []:
            if run_dir.name.startswith(".") or not (run_dir / SPEC_FILE).is_file():
                continue
            try:
                self.ingest(run_dir)
            except TunegraphError:
                continue  # an unreadable spec.json: that folder is not a run we can show
            count += 1
        self.ingest_library(library_dir)
        return count

    # -- runs --------------------------------------------------------------------------------
    def run_json(self, run_id: str) -> dict:
        """One run in the DESIGN.md "JSON shapes" run shape, plus `eta_s` and `spec`."""
        with self._read() as conn:
            runs = self._shaped(conn, "id = ?", [run_id])
        if not runs:
            raise NotFoundError(f"no run has the id {run_id!r}")
        return runs[0]

    def list_runs(self, state: str | None = None) -> list[dict]:
        """All runs (run_json shape), newest first; `state` is one state or a comma-separated list."""
        params = [s.strip() for s in (state or "").split(",") if s.strip()]
        where = "1 = 1"
        if params:
            unknown = [s for s in params if s not in STATES]
            if unknown:
                raise TunegraphError(
                    f"{unknown[0]!r} is not a run state", "States: " + ", ".join(STATES) + "."
                )
            where = f"state IN ({', '.join('?' * len(params))})"
        with self._read() as conn:
            return self._shaped(conn, where, params)

    def _shaped(self, conn: sqlite3.Connection, where: str, params: list) -> list[dict]:
        runs = _rows(
            conn, f"SELECT * FROM runs WHERE {where} ORDER BY created_at DESC, id DESC", params
        )
        if not runs:
            return []
        among = f"run_id IN (SELECT id FROM runs WHERE {where})"
        artifacts: dict[str, list] = {}
        for row in _rows(
            conn,
            f"SELECT run_id, {', '.join(ARTIFACT_KEYS)} FROM artifacts"
            f" WHERE {among} ORDER BY created_at, id",
            params,
        ):
            artifacts.setdefault(row.pop("run_id"), []).append(row)
        samples: dict[str, list] = {}
        for row in _rows(
            conn, f"SELECT run_id, prompt, response FROM samples WHERE {among} ORDER BY idx", params
        ):
            samples.setdefault(row.pop("run_id"), []).append(row)
        return [_run_shape(r, artifacts.get(r["id"], []), samples.get(r["id"], [])) for r in runs]

    def resolve(self, ref: str) -> str:
        """A run id, a unique id prefix or a unique run name → the run id (else NotFoundError)."""
        ref = ref.strip()
        with self._read() as conn:
            if ref and conn.execute("SELECT 1 FROM runs WHERE id = ?", (ref,)).fetchone():
                return ref
            matches = _rows(
                conn,
                "SELECT id, name FROM runs WHERE ? != '' AND"
                " (substr(id, 1, length(?)) = ? OR name = ?)"
                " ORDER BY created_at DESC, id DESC",
                (ref, ref, ref, ref),
            )
        if len(matches) == 1:
            return matches[0]["id"]
        if not matches:
            raise NotFoundError(f"no run matches {ref!r}; `tunegraph runs` lists them")
        shown = ", ".join(f"{m['name']} ({m['id']})" for m in matches[:5])
        more = "…" if len(matches) > 5 else ""
        raise NotFoundError(f"{ref!r} matches {len(matches)} runs: {shown}{more} — use the id")

    def forget_artifact(self, artifact_id: str) -> None:
        """Drop one artifact's row (after its library folder was deleted)."""
        with self._write() as conn:
            conn.execute("DELETE FROM artifacts WHERE id = ?", (artifact_id,))

    def delete_run(self, run_id: str, force: bool = False) -> None:
        """Delete a run's rows and its run directory; artifacts in the library stay indexed.

        A live run (queued … exporting) is refused unless `force`: cancel it first.
        """
        row = self.run_json(run_id)
        if row["state"] in LIVE_STATES and not force:
            raise TunegraphError(
                f"run {row['name']} ({run_id}) is {row['state']}", "Cancel it before deleting it."
            )
        run_dir = Path(row["run_dir"] or paths.runs_dir() / run_id)
        trash = None
        if run_dir.is_dir():  # renamed first, so no ingest can recreate the row from spec.json
            trash = run_dir.with_name(f".deleted-{run_id}-{secrets.token_hex(3)}")
            run_dir.rename(trash)
        library = paths.library_dir().resolve()
        with self._write() as conn:
            conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))
            for table in ("events", "metrics", "evals", "samples", "holds", "ingest"):
                conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            for art_id, path in conn.execute(
                "SELECT id, path FROM artifacts WHERE run_id = ?", (run_id,)
            ).fetchall():
                if not path or not Path(path).resolve().is_relative_to(library):
                    conn.execute("DELETE FROM artifacts WHERE id = ?", (art_id,))
        if trash:
            shutil.rmtree(trash, ignore_errors=True)

    # -- per-run series ----------------------------------------------------------------------
    def metrics(self, run_id: str) -> list[dict]:
        """The run's training metrics, one per step (latest attempt), ordered by step."""
        with self._read() as conn:
            rows = _rows(
                conn,
                "SELECT step, ts, epoch, loss, grad_norm, lr, tokens_per_s, data"
                " FROM metrics WHERE run_id = ? ORDER BY step",
                (run_id,),
            )
        return [_with_data(r) for r in rows]

    def evals(self, run_id: str) -> list[dict]:
        """The run's evaluation results, one per step, ordered by step."""
        with self._read() as conn:
            rows = _rows(
                conn,
                "SELECT step, ts, eval_loss, data FROM evals WHERE run_id = ? ORDER BY step",
                (run_id,),
            )
        return [_with_data(r) for r in rows]

    def events(
        self,
        run_id: str,
        kinds: str | Iterable[str] | None = None,
        source: str | None = None,
        after: float | None = None,
    ) -> list[dict]:
        """The run's events of both logs ordered by ts then seq, each `{source, seq, ts, kind,
        …fields}`; filter by kind(s), source ("worker"|"supervisor") and ts > `after`."""
        where, params = ["run_id = ?"], [run_id]
        if kinds is not None:
            kinds = [kinds] if isinstance(kinds, str) else list(kinds)
            where.append(f"kind IN ({', '.join('?' * len(kinds))})")
            params += kinds
        if source is not None:
            where.append("source = ?")
            params.append(source)
        if after is not None:
            where.append("ts > ?")
            params.append(after)
        with self._read() as conn:
            rows = _rows(
                conn,
                "SELECT source, seq, ts, kind, data FROM events WHERE "
                + " AND ".join(where)
                + " ORDER BY ts, seq, rowid",
                params,
            )
        return [_with_data(r) for r in rows]

    def samples(self, run_id: str) -> list[dict]:
        """The run's latest batch of inference samples: `{idx, prompt, response, reference}`."""
        with self._read() as conn:
            return _rows(
                conn,
                "SELECT idx, prompt, response, reference FROM samples"
                " WHERE run_id = ? ORDER BY idx",
                (run_id,),
            )

    def artifacts(self, run_id: str | None = None) -> list[dict]:
        """Registered artifacts (of one run, or all), oldest first, with their manifest if any."""
        where, params = ("WHERE run_id = ?", (run_id,)) if run_id else ("", ())
        with self._read() as conn:
            rows = _rows(
                conn,
                "SELECT id, run_id, kind, path, bytes, sha256, created_at, manifest"
                f" FROM artifacts {where} ORDER BY created_at, id",
                params,
            )
        for row in rows:
            row["manifest"] = _loads(row["manifest"])
        return rows

    def logs(self, run_id: str, after: float | None = None) -> list[str]:
        """Every event of both logs as one readable line each, merged by ts."""
        return [format_event(e) for e in self.events(run_id, after=after)]

    # -- commands (clients -> supervisor) ----------------------------------------------------
    def add_command(self, action: str, run_id: str | None = None, **args: Any) -> int:
        """Queue a command for the supervisor; returns its id."""
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO commands (ts, action, run_id, args) VALUES (?, ?, ?, ?)",
                (time.time(), action, run_id, json.dumps(args, default=str)),
            )
            return int(cursor.lastrowid)

    def take_commands(self) -> list[dict]:
        """Claim every untaken command, oldest first; one statement, so no two takers share one."""
        with self._write() as conn:
            rows = _rows(
                conn,
                "UPDATE commands SET taken_at = ? WHERE taken_at IS NULL RETURNING *",
                (time.time(),),
            )
        return sorted((_command(r) for r in rows), key=lambda r: r["id"])

    def finish_command(self, command_id: int, result: Any = None) -> None:
        """Record a taken command's result (any JSON value)."""
        with self._write() as conn:
            conn.execute(
                "UPDATE commands SET done_at = ?, result = ? WHERE id = ?",
                (time.time(), json.dumps(result, default=str), command_id),
            )

    def command(self, command_id: int) -> dict:
        """One command with its args and result decoded (NotFoundError if there is none)."""
        with self._read() as conn:
            rows = _rows(conn, "SELECT * FROM commands WHERE id = ?", (command_id,))
        if not rows:
            raise NotFoundError(f"no command has the id {command_id}")
        return _command(rows[0])

    # -- VRAM holds --------------------------------------------------------------------------
    def set_hold(self, run_id: str, gpu: int | str, gib: float) -> None:
        """Record (or replace) the VRAM a run holds on a GPU."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO holds (run_id, gpu, gib, ts) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (run_id) DO UPDATE SET gpu = excluded.gpu,"
                " gib = excluded.gib, ts = excluded.ts",
                (run_id, gpu, float(gib), time.time()),
            )

    def release_hold(self, run_id: str) -> None:
        """Forget a run's hold (no error if it has none)."""
        with self._write() as conn:
            conn.execute("DELETE FROM holds WHERE run_id = ?", (run_id,))

    def holds(self) -> list[dict]:
        """Every hold: `{run_id, gpu, gib, ts}`, oldest first."""
        with self._read() as conn:
            return _rows(conn, "SELECT run_id, gpu, gib, ts FROM holds ORDER BY ts, run_id")


def _load_spec(run_dir: Path) -> dict:
    try:
        spec = json.loads((run_dir / SPEC_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError(f"{run_dir} is not a run folder: it has no {SPEC_FILE}") from None
    except (OSError, ValueError) as err:
        raise TunegraphError(f"{run_dir / SPEC_FILE} cannot be read: {err}") from None
    if not isinstance(spec, dict):
        raise TunegraphError(f"{run_dir / SPEC_FILE} does not hold a job spec")
    return spec


def _run_shape(row: dict, artifacts: list[dict], samples: list[dict]) -> dict:
    """A runs row → the JSON run shape (keys always present, unknown values null)."""
    out = {key: row.get(key) for key in RUN_KEYS}
    out["warnings"] = _loads(row["warnings"], [])
    out["metrics"] = {key: row[key] for key in METRIC_KEYS}
    out["estimate"] = _loads(row["estimate"])
    out["error"] = _loads(row["error"])
    out["artifacts"] = artifacts
    out["samples"] = samples
    out["eta_s"] = row["eta_s"]
    out["spec"] = _loads(row["spec"])
    return out


def _command(row: dict) -> dict:
    row["args"] = _loads(row["args"], {})
    row["result"] = _loads(row["result"])
    return row


def format_event(event: dict) -> str:
    """One event (as `Store.events` returns it) as a log line: time, source, kind, details."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event["ts"]))
    fields = {k: v for k, v in event.items() if k not in ("source", "seq", "ts", "kind")}
    kind = event["kind"]
    if kind == "status":
        for bulky in ("estimate", "created_at"):  # shown by `show`, noise in a log line
            fields.pop(bulky, None)
        detail = str(fields.pop("state", ""))
        reason = fields.pop("reason", None)
        detail += f" ({reason})" if reason else ""
    elif kind in ("log", "schedule"):
        level = fields.pop("level", None)
        detail = f"{level}: {fields.pop('message', '')}" if level else str(fields.pop("message"))
        fields = {}
    elif kind == "error":
        detail = f"{fields.pop('class', 'Error')}: {fields.pop('message', '')}"
        hint = fields.pop("hint", None)
        detail += f" {hint}" if hint else ""
        fields = {}
    else:
        detail = ""
    rest = " ".join(f"{k}={_short(v)}" for k, v in fields.items() if v not in (None, [], {}))
    return f"{stamp} {event['source']:<10} {kind:<8} {' '.join(p for p in (detail, rest) if p)}"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)
