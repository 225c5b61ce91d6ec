"""Runs that share a base model: the supervisor starts queued runs of one base together in one
group process (engine.training.group) on one copy of it.

When the queue is scheduled, a run that can share (engine.plan.sharing.share_key: LoRA SFT or
pretraining on one local GPU or the CPU, Share base on, and the setting `share_base` on) is
started together with the later queued runs of the same key and mode that are ready too, as
many as fit now: on a GPU the group's need (one base, each run's adapter, the largest step)
must fit where one run would go; on the CPU each member takes a CPU slot, and the group process
gets their threads. A group of one is an ordinary run.

Each member is watched through the engine.training.executors.GroupExecutor as if it had a
worker of its own: its hold is its share of the group's need (the first member also holds what
the group holds once, handed on to another member when it ends), its events, states and
control are its own. A member that leaves the group without a final state (an out-of-memory in
the group splits it, or it turned out it could not share) is started again alone, its spec's
`resources.share_base` switched off, charged one automatic retry; a crash of the whole process
sends every unfinished member down the ordinary retry path.
"""

from __future__ import annotations

import logging

from engine import hardware, paths, settings
from engine.errors import EngineMissingError
from engine.plan import sharing
from engine.rundir import SPEC_FILE
from engine.spec import JobSpec
from engine.store.index import Store
from engine.supervisor import scheduler
from engine.training.executors import Executor, GroupExecutor

log = logging.getLogger("tunegraph.supervisor")

Ready = tuple[dict, JobSpec]  # a queued run's index row and its spec


class SharedBases:
    """Mixed into engine.supervisor.service.Supervisor (it provides emit, held, placements,
    prepare, worker_env, retry_or_fail, …)."""

    store: Store
    procs: dict[str, Executor]
    placements: dict[str, scheduler.Placement]
    suspended: set[int]
    grouped: GroupExecutor

    def group_for(self, first: Ready, ready: list[Ready], gpus: list) -> tuple | None:
        """The queued runs to start with `first` in one group process, and where: (members,
        placement), or None when it starts alone (the caller checks the setting share_base)."""
        run, spec = first
        key = sharing.share_key(spec)
        if key is None or not run["estimate"]:
            return None
        mode = run["estimate"].get("mode")
        members = [first] + [
            (r, s)
            for r, s in ready
            if r["id"] != run["id"]
            and r["estimate"]
            and r["estimate"].get("mode") == mode
            and sharing.share_key(s) == key
        ]
        while len(members) > 1 and sharing.saving_gib([r["estimate"] for r, _ in members]) > 0:
            place = self.place_members(members, gpus)
            if place is not None:
                return members, place
            members.pop()  # the newest goes: fewer may fit now
        return None

    def place_members(self, members: list[Ready], gpus: list) -> scheduler.Placement | None:
        """Where a group of `members` fits now (`place_estimates`)."""
        return self.place_estimates([r["estimate"] for r, _ in members], members[0][1], gpus)

    def place_estimates(
        self, estimates: list[dict], spec: JobSpec, gpus: list
    ) -> scheduler.Placement | None:
        """Where a group of runs like `spec` with these estimates fits now: one GPU with room
        for the group's need, or a CPU slot for each run."""
        return self.place_now(sharing.group_estimate(estimates), spec, gpus, len(estimates))

    def runs_at_once(self, spec: JobSpec, estimate: dict | None, most: int) -> int:
        """How many runs like `spec` (each estimated `estimate`) to start together now, up to
        `most`: as many as one group fits when they can share their base, else one (a sweep
        asks its trials this many at a time)."""
        if estimate is None or sharing.share_key(spec) is None:
            return 1
        if not settings.load_or_defaults().share_base:
            return 1
        gpus = hardware.gpus()
        count = 1
        while count < most and self.place_estimates([estimate] * (count + 1), spec, gpus):
            count += 1
        return count

    def start_group(self, members: list[Ready], place: scheduler.Placement, gpus: list) -> None:
        """Hold each member's share of the group's memory and start the group process."""
        ids = [r["id"] for r, _ in members]
        estimates = {r["id"]: r["estimate"] for r, _ in members}
        shares = sharing.hold_shares(estimates)
        base = members[0][1].base_model.source
        saves = sharing.saving_gib(list(estimates.values()))
        group_id = f"group-{paths.new_run_id()}"
        for run_id in ids:
            others = len(ids) - 1
            sharing_text = (
                f"with {others} other run{'s' if others > 1 else ''} sharing one copy of {base} "
                "in one process"
            )
            if place.device == "cuda":
                hold = shares[run_id]
                where = ", ".join(f"GPU {i}" for i in place.gpus)
                message = (
                    f"placed on {where} {sharing_text}: the group needs {place.hold_gib:.1f} GiB "
                    f"(saves ~{saves:.1f} GiB), this run holds {hold:.1f} GiB of it"
                )
            else:
                hold = 0.0
                message = f"placed on the CPU {sharing_text} (saves ~{saves:.1f} GiB of RAM)"
            self.prepare(run_id)
            member = scheduler.Placement(place.device, place.gpus, hold, message)
            self.hold(run_id, member, group=group_id, shares_with=[r for r in ids if r != run_id])
        env = self.worker_env(place, gpus, slots=len(ids) if place.device == "cpu" else 1)
        run_dirs = {run_id: paths.runs_dir() / run_id for run_id in ids}
        try:
            self.grouped.start_group(paths.groups_dir() / group_id, run_dirs, env)
        except EngineMissingError as err:  # a frozen app without an engine: fail, never loop
            for run_id in ids:
                self.no_engine(run_id, err)
            return
        for run_id in ids:
            self.procs[run_id] = self.grouped
        log.info("group %s: %d runs share %s", group_id, len(ids), base)

    def regroup_holds(self, run_id: str) -> None:
        """A member ended: what the group holds once moves to the members still in it."""
        group_dir = self.grouped.group_of(run_id)
        if group_dir is None:
            return
        left = [r for r in self.grouped.members(group_dir) if r != run_id and r in self.placements]
        cuda = [r for r in left if self.placements[r].device == "cuda"]
        if not cuda:
            return
        estimates = {r: self.store.run_json(r).get("estimate") or {} for r in cuda}
        for other, gib in sharing.hold_shares(estimates).items():
            place = self.placements[other]
            place.hold_gib = gib
            self.store.set_hold(other, ",".join(str(i) for i in place.gpus), gib)

    def left_group(self, run_id: str) -> str | None:
        """Why a group member left its group without a final state (to be run alone), or None."""
        events = self.store.events(run_id, kinds="log", source="worker")
        placed = [e["ts"] for e in self.store.events(run_id, kinds="schedule") if "group" in e]
        if not placed:
            return None
        for event in reversed(events):
            if event["ts"] < placed[-1]:
                break
            if event.get("left_group"):
                return str(event["left_group"])
        return None

    def train_alone(self, run_id: str, why: str) -> None:
        """Start a run that left its group again alone: Share base off in its spec, one retry."""
        run_dir = paths.runs_dir() / run_id
        spec = JobSpec.load(run_dir / SPEC_FILE)
        spec.resources.share_base = False
        spec.save(run_dir / SPEC_FILE)
        self.store.update_spec(run_id, spec)
        self.retry_or_fail(run_id, f"left its group: {why}", change="training alone")
