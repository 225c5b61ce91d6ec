"""The read side of the run index: runs in their JSON shape, per-run series and log lines.

`RunQueries` is mixed into engine.store.index.Store, which owns the connection and its transactions;
every query here runs in one read transaction (`Store._read`), so it sees one consistent snapshot.
`format_event` turns an event as `events` returns it into one readable log line.

A run's `metrics` holds DESIGN's latest `loss`, `grad_norm`, `lr`, `eval_loss` and `tokens_per_s`,
and beside them `method`: the training method's own metrics at the latest logged step, under TRL's
names (engine.events.is_method_metric), e.g. for DPO
`{"rewards/chosen": 1.8, "rewards/rejected": -0.95, "rewards/margins": 2.76,
"rewards/accuracies": 1.0, "logps/chosen": …, "entropy": …}`, for GRPO `reward`, `reward_std`,
`rewards/<function>/mean|std`, `completions/mean_length` (and `kl` when beta > 0); `{}` for SFT
and pretrain runs, and before the first step. Their series per step are the metrics rows'
(`metrics`; in each row's JSON `data` column, which engine.store.watch reads with json_extract).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

from engine.errors import NotFoundError, TunegraphError
from engine.events import STATES

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
    "method",
    "upstream",
    "attempts",
    "eval",
    "artifacts",
    "samples",
)
METRIC_KEYS = ("loss", "grad_norm", "lr", "eval_loss", "tokens_per_s")
ARTIFACT_KEYS = ("id", "kind", "path", "bytes", "sha256")


def dict_rows(conn: sqlite3.Connection, sql: str, params: Iterable[Any] = ()) -> list[dict]:
    """The rows `sql` returns, each as a dict keyed by column name."""
    cursor = conn.execute(sql, tuple(params))
    keys = [d[0] for d in cursor.description]
    return [dict(zip(keys, row, strict=True)) for row in cursor.fetchall()]


def from_json(text: str | None, default: Any = None) -> Any:
    """A JSON column's value decoded; `default` when the column is null."""
    return default if text is None else json.loads(text)


def _with_data(row: dict) -> dict:
    """A row whose JSON `data` column is merged into it (columns win over data keys)."""
    data = from_json(row.pop("data", None), {})
    return {**{k: v for k, v in data.items() if k not in row}, **row} if data else row


class RunQueries:
    """Queries over the run index; mixed into `Store`, which supplies `_read`."""

    _read: Callable[[], AbstractContextManager[sqlite3.Connection]]

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
        runs = dict_rows(
            conn, f"SELECT * FROM runs WHERE {where} ORDER BY created_at DESC, id DESC", params
        )
        if not runs:
            return []
        among = f"run_id IN (SELECT id FROM runs WHERE {where})"
        artifacts: dict[str, list] = {}
        for row in dict_rows(
            conn,
            f"SELECT run_id, {', '.join(ARTIFACT_KEYS)} FROM artifacts"
            f" WHERE {among} ORDER BY created_at, id",
            params,
        ):
            artifacts.setdefault(row.pop("run_id"), []).append(row)
        samples: dict[str, list] = {}
        for row in dict_rows(
            conn, f"SELECT run_id, prompt, response FROM samples WHERE {among} ORDER BY idx", params
        ):
            samples.setdefault(row.pop("run_id"), []).append(row)
        statuses: dict[str, list] = {}
        for row in dict_rows(
            conn,
            f"SELECT run_id, ts, data FROM events WHERE {among} AND kind = 'status'"
            " ORDER BY ts, seq, rowid",
            params,
        ):
            statuses.setdefault(row["run_id"], []).append(_with_data(row))
        scores: dict[str, dict] = {}
        for row in dict_rows(
            conn,
            f"SELECT run_id, data FROM events WHERE {among} AND kind = 'eval'"
            " ORDER BY ts, seq, rowid",
            params,
        ):
            add_score(scores.setdefault(row["run_id"], {}), from_json(row["data"], {}))
        return [
            _run_shape(
                r,
                artifacts.get(r["id"], []),
                samples.get(r["id"], []),
                attempts_of(statuses.get(r["id"], [])),
                scores.get(r["id"], {}),
            )
            for r in runs
        ]

    def resolve(self, ref: str) -> str:
        """A run id, a unique id prefix or a unique run name → the run id (else NotFoundError)."""
        ref = ref.strip()
        with self._read() as conn:
            if ref and conn.execute("SELECT 1 FROM runs WHERE id = ?", (ref,)).fetchone():
                return ref
            matches = dict_rows(
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

    # -- per-run series ----------------------------------------------------------------------
    def metrics(self, run_id: str) -> list[dict]:
        """The run's training metrics, one per step (latest attempt), ordered by step."""
        with self._read() as conn:
            rows = dict_rows(
                conn,
                "SELECT step, ts, epoch, loss, grad_norm, lr, tokens_per_s, data"
                " FROM metrics WHERE run_id = ? ORDER BY step",
                (run_id,),
            )
        return [_with_data(r) for r in rows]

    def evals(self, run_id: str) -> list[dict]:
        """The run's evaluation results, one per step, ordered by step."""
        with self._read() as conn:
            rows = dict_rows(
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
            rows = dict_rows(
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
            return dict_rows(
                conn,
                "SELECT idx, prompt, response, reference FROM samples"
                " WHERE run_id = ? ORDER BY idx",
                (run_id,),
            )

    def artifacts(self, run_id: str | None = None) -> list[dict]:
        """Registered artifacts (of one run, or all), oldest first, with their manifest if any."""
        where, params = ("WHERE run_id = ?", (run_id,)) if run_id else ("", ())
        with self._read() as conn:
            rows = dict_rows(
                conn,
                "SELECT id, run_id, kind, path, bytes, sha256, created_at, manifest"
                f" FROM artifacts {where} ORDER BY created_at, id",
                params,
            )
        for row in rows:
            row["manifest"] = from_json(row["manifest"])
        return rows

    def logs(self, run_id: str, after: float | None = None) -> list[str]:
        """Every event of both logs as one readable line each, merged by ts."""
        return [format_event(e) for e in self.events(run_id, after=after)]


# a worker's start ends with the first of these (its own status, or the supervisor's)
ATTEMPT_ENDS = ("completed", "failed", "cancelled", "paused", "pruned", "retrying")


def attempts_of(statuses: list[dict]) -> list[dict]:
    """One `{started_at, ended_at, reason}` per worker start, from the run's status events in
    time order; a resume or retry never erases why an earlier attempt ended."""
    attempts: list[dict] = []
    for event in statuses:
        state = event.get("state")
        if state == "starting":
            attempts.append({"started_at": event["ts"], "ended_at": None, "reason": None})
        elif state in ATTEMPT_ENDS and attempts and attempts[-1]["ended_at"] is None:
            attempts[-1]["ended_at"] = event["ts"]
            attempts[-1]["reason"] = event.get("reason") or state
    return attempts


def add_score(scores: dict[str, dict], event: dict) -> None:
    """Fold one `eval` event into a run's `{set: {metric: value}}` (later events win). Only scores
    after training count (events with `set` and `metric`; those with a `step` are eval losses
    during training); a score of the run's GGUF is kept under "SET (gguf)"."""
    if "set" not in event or "metric" not in event:
        return
    target = event.get("target")
    key = str(event["set"]) if target in (None, "adapter") else f"{event['set']} ({target})"
    scores.setdefault(key, {})[str(event["metric"])] = event.get("value")


def _run_shape(
    row: dict, artifacts: list[dict], samples: list[dict], attempts: list[dict], scores: dict
) -> dict:
    """A runs row → the JSON run shape (keys always present, unknown values null)."""
    out = {key: row.get(key) for key in RUN_KEYS}
    out["attempts"] = attempts
    out["eval"] = scores
    out["warnings"] = from_json(row["warnings"], [])
    out["metrics"] = {key: row[key] for key in METRIC_KEYS}
    out["metrics"]["method"] = from_json(row.get("method_metrics"), {})
    out["estimate"] = from_json(row["estimate"])
    out["error"] = from_json(row["error"])
    out["artifacts"] = artifacts
    out["samples"] = samples
    out["eta_s"] = row["eta_s"]
    out["spec"] = from_json(row["spec"])
    out["method"] = method_of(out["spec"])
    out["upstream"] = (out["spec"] or {}).get("upstream") or None  # a chained run's first run
    return out


def method_of(spec: dict | None) -> str | None:
    """A run's training method from its spec (sft for specs written before methods existed)."""
    if not isinstance(spec, dict):
        return None
    method = spec.get("method")
    return str(method.get("method") or "sft") if isinstance(method, dict) else "sft"


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
