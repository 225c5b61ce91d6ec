"""The queryable index of runs: an SQLite file (sqlite-utils, WAL) shared by several processes.

Run directories and library manifests are the source of truth; this database indexes them so the
CLI and the app can list, filter and chart runs quickly. Ingestion is idempotent by (run, source,
seq) and reads only the bytes appended since the last call, so anyone may ingest at any time, and
`rebuild` recreates the index from disk. The supervisor, the CLI and the app's reader thread each
open their own `Store`; write transactions are short and never span file reading.

Besides the index, two small tables carry live state no file records: `commands` (clients ask the
supervisor to submit, cancel, pause…) and `holds` (VRAM held on each GPU by live runs).

This module owns the connection, its transactions and every write; the read side (runs in their
JSON shape, per-run series, log lines) is engine.store.queries' `RunQueries`, mixed into `Store`.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from engine import paths
from engine.errors import NotFoundError, TunegraphError
from engine.events import LIVE_STATES, read_offset
from engine.rundir import SPEC_FILE
from engine.spec import JobSpec
from engine.store import ingest as ingest_rows
from engine.store import schema
from engine.store.queries import RunQueries, dict_rows, from_json

BUSY_TIMEOUT_S = 10.0
CHUNK = 2000  # events per write transaction, so a long log never holds the write lock for long


class Store(RunQueries):
    """The run index at `path` (default: the data directory's tunegraph.db), opened in WAL mode."""

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path else paths.db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self.db = sqlite_utils.Database(self._conn)
        self._enable_wal()
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._open_schema()

    def _enable_wal(self, attempts: int = 20) -> None:
        """WAL mode. Switching a new file to it needs the file alone for a moment, and SQLite
        answers "locked" at once (no busy wait) while a second process is opening it too."""
        for attempt in range(attempts):
            try:
                self.db.enable_wal()
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or attempt == attempts - 1:
                    raise
                time.sleep(0.1 * (attempt + 1))

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

    def update_spec(self, run_id: str, spec: JobSpec) -> None:
        """Record a run's changed spec (the supervisor's out-of-memory retries change it)."""
        with self._write() as conn:
            conn.execute(
                "UPDATE runs SET spec = ?, updated_at = ? WHERE id = ?",
                (ingest_rows.dumps(spec.to_dict()), time.time(), run_id),
            )

    def ingest(self, run_dir: Path | str) -> int:
        """Index the events appended to a run's logs since the last call; returns how many.

        A run not indexed yet is created from its `spec.json` (the rebuild path).
        """
        run_dir = Path(run_dir)
        run_id = run_dir.name
        known = self._has_run(run_id)
        spec = None if known else _load_spec(run_dir)
        reads = {}
        for source, path in ingest_rows.log_files(run_dir).items():
            start = self._offset(run_id, source)
            events, end = read_offset(path, start)
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

    # -- deleting ----------------------------------------------------------------------------
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

    # -- commands (clients -> supervisor) ----------------------------------------------------
    def add_command(self, action: str, run_id: str | None = None, **args: Any) -> int:
        """Queue a command for the supervisor; returns its id."""
        return self.add_commands([(action, run_id, args)])[0]

    def add_commands(self, commands: list[tuple[str, str | None, dict]]) -> list[int]:
        """Queue several (action, run_id, args) commands in one transaction, so the supervisor
        takes them in the same round (runs submitted together are scheduled together)."""
        now = time.time()
        with self._write() as conn:
            return [
                int(
                    conn.execute(
                        "INSERT INTO commands (ts, action, run_id, args) VALUES (?, ?, ?, ?)",
                        (now, action, run_id, json.dumps(args, default=str)),
                    ).lastrowid
                )
                for action, run_id, args in commands
            ]

    def take_commands(self) -> list[dict]:
        """Claim every untaken command, oldest first; one statement, so no two takers share one."""
        with self._write() as conn:
            rows = dict_rows(
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
            rows = dict_rows(conn, "SELECT * FROM commands WHERE id = ?", (command_id,))
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
            return dict_rows(conn, "SELECT run_id, gpu, gib, ts FROM holds ORDER BY ts, run_id")


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


def _command(row: dict) -> dict:
    row["args"] = from_json(row["args"], {})
    row["result"] = from_json(row["result"])
    return row
