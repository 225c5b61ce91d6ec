"""Chained runs: a run whose base is another run's result (DESIGN "Lifecycle").

A chained run (spec `upstream`: the run id it starts from, base model `run:<id>`) is accepted
like any run but waits in `queued` ("waiting for <upstream> to complete") until its upstream
completes; it keeps waiting while the upstream is paused or failed (the user can resume that
one), and is cancelled, saying why, when the upstream is cancelled. A submission whose upstream
does not exist, or was refused or cancelled already, is refused. A run waiting on an upstream
that nothing will move (paused or failed) does not keep the supervisor awake: a resume command
starts it again.
"""

from __future__ import annotations

from engine.errors import NotFoundError
from engine.spec import JobSpec
from engine.store.index import Store
from engine.supervisor.scheduler import Refusal

GONE = ("cancelled", "refused")  # an upstream that will never deliver
STALLED = ("paused", "failed")  # an upstream that waits for the user


class ChainedRuns:
    """Mixed into engine.supervisor.service.Supervisor (it provides emit and store)."""

    store: Store
    parked: set[str]  # queued chained runs whose upstream waits for the user

    def upstream(self, run_id: str) -> tuple[str | None, str]:
        """The upstream run's state and its `"name" (id)` from the index (which the supervisor
        keeps current: reading the run's event logs every tick would parse a training run's
        whole log each time); (None, id) for a run the index does not know."""
        try:
            run = self.store.run_json(run_id)
        except NotFoundError:
            return None, run_id
        return run["state"], f'"{run["name"]}" ({run_id})'

    def upstream_refusal(self, spec: JobSpec) -> Refusal | None:
        """Why a chained run cannot be accepted, or None (also for a run that is not chained)."""
        if spec.upstream_node and not spec.upstream:
            return Refusal(
                "it starts from another Fine-Tune node, which has no run to start from",
                "Run that Fine-Tune node too (Run all), or first.",
            )
        if not spec.upstream:
            return None
        state, label = self.upstream(spec.upstream)
        if state is None:
            return Refusal(
                f"it starts from the run {spec.upstream}, which does not exist",
                "Pick a run id that `tunegraph list` shows.",
            )
        if state in GONE:
            return Refusal(
                f"it starts from {label}, which was {state}",
                "Run the upstream Fine-Tune node again, then this one.",
            )
        return None

    def upstream_reason(self, spec: JobSpec) -> str | None:
        """Why a chained run waits for its upstream now (None when the upstream completed, or the
        run is not chained)."""
        if not spec.upstream:
            return None
        return waiting_reason(*self.upstream(spec.upstream))

    def hold_for_upstream(self, run: dict, spec: JobSpec) -> bool:
        """True while queued `run` must wait for its upstream (saying why, once per change of
        reason); cancels it when the upstream was cancelled or refused."""
        self.parked.discard(run["id"])
        if not spec.upstream:
            return False
        state, label = self.upstream(spec.upstream)
        if state in GONE:
            self.emit(
                run["id"],
                "status",
                state="cancelled",
                reason=f"cancelled: the run it starts from, {label}, was {state}",
            )
            return True
        reason = waiting_reason(state, label)
        if reason is None:
            return False
        if state in STALLED:
            self.parked.add(run["id"])
        if run.get("reason") != reason:
            self.emit(run["id"], "status", state="queued", reason=reason)
        return True


def waiting_reason(state: str | None, label: str) -> str | None:
    """Why a chained run waits for an upstream run in `state` (None once it completed)."""
    if state == "completed":
        return None
    reason = f"waiting for {label} to complete"
    if state == "failed":
        return reason + "; it failed: resume it to go on"
    if state == "paused":
        return reason + "; it is paused: resume it to go on"
    return reason
