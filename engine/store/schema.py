"""The store's SQLite schema: one statement per table, a version in `meta`, and the index tables.

Everything except `commands` and `holds` is an index of the run directories and the library, so a
schema change needs no migration: the index tables are dropped, recreated and rebuilt from disk.
`commands` (the clients' queue to the supervisor) and `holds` (VRAM held by live workers) are live
operational state that no file records, so they survive a rebuild.

Versions: 1 the first; 2 adds `runs.method_metrics` (the latest value of each of the training
method's own metrics, JSON `{name: value}`). A version-1 file opens as any older one does: its index
is rebuilt from the run folders, its commands and holds kept.
"""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 2

# tables rebuilt from run directories and library manifests
INDEX_TABLES = ("runs", "events", "metrics", "evals", "samples", "artifacts", "ingest")

TABLES: dict[str, str] = {
    "meta": "key TEXT PRIMARY KEY, value TEXT",
    "runs": """
        id TEXT PRIMARY KEY, name TEXT, node_uuid TEXT, origin_uuid TEXT, parent TEXT,
        graph_path TEXT, run_dir TEXT, spec TEXT, estimate TEXT, state TEXT, reason TEXT,
        warnings TEXT, device TEXT, created_at REAL, started_at REAL, finished_at REAL,
        step INTEGER, max_steps INTEGER, epoch REAL, eta_s REAL, error TEXT, loss REAL,
        grad_norm REAL, lr REAL, eval_loss REAL, tokens_per_s REAL, method_metrics TEXT,
        updated_at REAL""",
    "events": """
        run_id TEXT NOT NULL, source TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL,
        kind TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (run_id, source, seq)""",
    "metrics": """
        run_id TEXT NOT NULL, step INTEGER NOT NULL, ts REAL, epoch REAL, loss REAL,
        grad_norm REAL, lr REAL, tokens_per_s REAL, data TEXT, PRIMARY KEY (run_id, step)""",
    "evals": """
        run_id TEXT NOT NULL, step INTEGER NOT NULL, ts REAL, eval_loss REAL, data TEXT,
        PRIMARY KEY (run_id, step)""",
    "samples": """
        run_id TEXT NOT NULL, idx INTEGER NOT NULL, prompt TEXT, response TEXT, reference TEXT,
        PRIMARY KEY (run_id, idx)""",
    "artifacts": """
        id TEXT PRIMARY KEY, run_id TEXT, kind TEXT, path TEXT, bytes INTEGER, sha256 TEXT,
        created_at REAL, manifest TEXT""",
    # gpu has no declared type so an int stays an int and "0,1" stays text
    "holds": "run_id TEXT PRIMARY KEY, gpu, gib REAL, ts REAL",
    "commands": """
        id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, action TEXT NOT NULL,
        run_id TEXT, args TEXT, taken_at REAL, done_at REAL, result TEXT""",
    "ingest": """
        run_id TEXT NOT NULL, source TEXT NOT NULL, seq INTEGER NOT NULL DEFAULT 0,
        "offset" INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (run_id, source)""",
}

INDEXES = (
    "CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at, id)",
    "CREATE INDEX IF NOT EXISTS runs_name ON runs (name)",
    "CREATE INDEX IF NOT EXISTS runs_state ON runs (state)",
    "CREATE INDEX IF NOT EXISTS events_kind ON events (run_id, kind, ts)",
    "CREATE INDEX IF NOT EXISTS events_ts ON events (run_id, ts, seq)",
    "CREATE INDEX IF NOT EXISTS metrics_ts ON metrics (run_id, ts)",
    "CREATE INDEX IF NOT EXISTS evals_ts ON evals (run_id, ts)",
    "CREATE INDEX IF NOT EXISTS artifacts_run ON artifacts (run_id, created_at)",
    "CREATE INDEX IF NOT EXISTS commands_open ON commands (taken_at, id)",
)


def create_tables(conn: sqlite3.Connection) -> None:
    """Create every table and index that does not exist yet (idempotent)."""
    for name, columns in TABLES.items():
        conn.execute(f"CREATE TABLE IF NOT EXISTS {name} ({columns})")
    for statement in INDEXES:
        conn.execute(statement)


def drop_index_tables(conn: sqlite3.Connection) -> None:
    """Drop the tables that a rebuild recreates from disk (not commands, holds or meta)."""
    for name in INDEX_TABLES:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


def stored_version(conn: sqlite3.Connection) -> int | None:
    """The schema version recorded in `meta`, or None for a new (or pre-versioning) database."""
    conn.execute(f"CREATE TABLE IF NOT EXISTS meta ({TABLES['meta']})")
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else None


def set_version(conn: sqlite3.Connection, version: int = SCHEMA_VERSION) -> None:
    """Record the schema version in `meta`."""
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(version),),
    )


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    """True when the database holds a table of that name."""
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return row is not None
