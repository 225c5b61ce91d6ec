"""How long a run has really worked, and where a queued run stands: what a run row shows besides
the run's own record.

`training_clock(statuses)` reads a run's `status` events: the time spent starting, training and
evaluating is its training time, distinct from the wall time since it started (which also counts
the queue, pauses, retries and exports). `queue_positions(runs)` ranks the queued runs the way
the supervisor starts them (oldest first, engine.supervisor.service.schedule), leaving out the
chained runs that wait for their upstream run rather than for a place.
"""

from __future__ import annotations

TRAINING_STATES = ("starting", "training", "evaluating")  # a worker at work on the run itself
UPSTREAM_DONE = "completed"


def training_clock(statuses: list[dict]) -> dict:
    """A run's training time from its status events in time order: `training_s`, the seconds of
    the closed stretches in starting/training/evaluating (None before the run ever started), and
    `training_since`, when the current stretch began (None unless the run is in one now), so a
    view adds the live part itself."""
    total, since, started = 0.0, None, False
    for event in statuses:
        state = event.get("state")
        if since is not None and state not in TRAINING_STATES:
            total += max(event["ts"] - since, 0.0)
            since = None
        if state in TRAINING_STATES:
            started = True
            if since is None:
                since = event["ts"]
    return {"training_s": total if started else None, "training_since": since}


def training_seconds(run: dict, now: float) -> float | None:
    """The training time of a run carrying `training_clock`'s keys, live part included."""
    closed, since = run.get("training_s"), run.get("training_since")
    if since is not None:
        return (closed or 0.0) + max(now - since, 0.0)
    return closed


def waits_for_upstream(run: dict, runs: dict[str, dict]) -> dict | None:
    """The upstream run a queued chained run waits for (not completed yet), else None."""
    upstream = run.get("upstream")
    if not upstream:
        return None
    up = runs.get(upstream)
    if up is not None and up.get("state") == UPSTREAM_DONE:
        return None
    return up or {"id": upstream, "name": upstream}


def queue_positions(runs: dict[str, dict]) -> dict[str, int]:
    """Queued run id -> its place in the queue (1 = next to start), oldest first as the
    supervisor schedules them; runs waiting for an upstream run are not in the line."""
    queued = [
        r for r in runs.values() if r.get("state") == "queued" and not waits_for_upstream(r, runs)
    ]
    queued.sort(key=lambda r: (r.get("created_at") or 0, r["id"]))
    return {r["id"]: i for i, r in enumerate(queued, 1)}


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 21st, …"""
    if 10 <= n % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
