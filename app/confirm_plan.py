"""What the confirmation says above its cards: how many runs, their time in all, and how they will
be scheduled. Qt-free, so it is tested without a window.

The runs are placed in order with `engine.supervisor.scheduler.place`, as the supervisor places
them: on the room the GPUs have (less what live runs hold, and after the runs already queued) or
on the free CPU slots (`engine.hardware.cpu_slots`). A chained run (its spec names an upstream
Fine-Tune node) waits for that node's run; a run for the cluster goes to the cluster.

Runs of one base that start together may train on one copy of it (engine.plan.sharing, when
Settings.share_base is on): `sharing_groups` says which, `sharing_lines` says so in words, and on
a GPU a group is placed once with the group's need, as the supervisor places it. On the CPU each
member still takes a CPU slot.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from engine import hardware
from engine.formatting import format_rough_duration
from engine.hardware import Gpu
from engine.plan import sharing
from engine.spec import JobSpec
from engine.supervisor import scheduler

log = logging.getLogger(__name__)

NOW, CPU_SLOT, GPU_MEMORY, UPSTREAM, UNESTIMATED, CLUSTER, REFUSED = (
    "now",
    "cpu slot",
    "gpu memory",
    "upstream",
    "unestimated",
    "cluster",
    "refused",
)


@dataclass
class PlannedRun:
    """One run of the confirmation: its spec, its estimate once known, whether it is refused."""

    name: str
    spec: JobSpec
    estimate: dict | None = None
    refused: bool = False


@dataclass
class Machine:
    """What this machine has free: its GPUs, the GiB live runs hold on each, suspended GPUs, its
    CPU slots and how many live runs use one, how many runs are live, and the runs already
    queued (estimate, spec)."""

    gpus: list[Gpu] = field(default_factory=list)
    held: dict[int, float] = field(default_factory=dict)
    suspended: set[int] = field(default_factory=set)
    cpu_slots: int = 1
    cpu_busy: int = 0
    live: int = 0
    queued: list[tuple[dict | None, dict]] = field(default_factory=list)

    @property
    def ahead(self) -> int:
        """Runs already going or queued here, which the new ones come after."""
        return self.live + len(self.queued)


def machine_now(gpus: list[Gpu]) -> Machine:
    """This machine as the supervisor sees it: holds and queued runs from the store, suspended
    GPUs from the settings; free of both when the store cannot be read."""
    from engine import settings
    from engine.store.index import Store  # sqlite_utils loads when the dialog opens

    machine = Machine(gpus=gpus, cpu_slots=hardware.cpu_slots())
    try:
        machine.suspended = set(settings.load_or_defaults().suspended_gpus)
        with Store() as store:
            holds = store.holds()
            queued = store.list_runs(state="queued")
    except Exception as err:  # noqa: BLE001 - a plan without the live runs is still a plan
        log.warning("could not read the live runs for the confirmation: %s", err)
        return machine
    held_ids = {h["run_id"] for h in holds}
    machine.live = len(held_ids)
    for h in holds:
        if str(h["gpu"]).lower() == "cpu":
            machine.cpu_busy += 1
            continue
        for gpu in str(h["gpu"]).split(","):
            if gpu.strip().isdigit():
                machine.held[int(gpu)] = machine.held.get(int(gpu), 0.0) + float(h["gib"])
    oldest_first = sorted(queued, key=lambda r: (r.get("created_at") or 0, r["id"]))
    machine.queued = [
        (run.get("estimate"), run.get("spec") or {})
        for run in oldest_first
        if run["id"] not in held_ids
    ]
    return machine


def sharing_groups(runs: list[PlannedRun]) -> list[list[int]]:
    """The groups (indices into `runs`, two or more each) that would train on one copy of their
    base: estimated runs that start with the others (not refused, not waiting for an upstream
    run) and whose specs share a key (engine.plan.sharing.share_key)."""
    entries = [(str(i), run.spec, run.estimate) for i, run in enumerate(runs) if not run.refused]
    return [[int(i) for i in group] for group in sharing.groups(entries)]


def sharing_lines(runs: list[PlannedRun], groups: list[list[int]]) -> list[str]:
    """One sentence per group: '2 runs share one copy of builtin:tiny-llama (saves 0.5 GiB), in
    one training process: “a”, “b”.' (what it saves is the base's weights held once, and a CUDA
    context on a GPU or a process's own memory on the CPU)."""
    lines = []
    for group in groups:
        sentence = sharing.sharing_sentence(
            len(group),
            runs[group[0]].spec.base_model.source,
            sharing.saving_gib([runs[i].estimate for i in group]),
        )
        names = ", ".join(f"“{runs[i].name}”" for i in group)
        lines.append(f"{sentence}, in one training process: {names}.")
    return lines


def outcomes(
    runs: list[PlannedRun],
    machine: Machine,
    names: dict[str, str],
    groups: list[list[int]] | None = None,
) -> list[str]:
    """What becomes of each run when submitted now, in order: NOW, CPU_SLOT (waits for a free CPU
    slot), GPU_MEMORY (waits for room on a GPU), `UPSTREAM:name` (waits for that Fine-Tune node's
    run), UNESTIMATED (a GPU run placed once estimated), CLUSTER or REFUSED. `names` maps a node
    uuid to its Fine-Tune node's name. A group of `groups` (from `sharing_groups`) bound for a
    GPU is placed once, at its first run, with the group's need; all its runs share the outcome."""
    held = dict(machine.held)
    group_of = {i: tuple(group) for group in groups or [] for i in group}
    group_outcome: dict[tuple[int, ...], str] = {}
    cpu_free = machine.cpu_slots - machine.cpu_busy

    def take(estimate: dict | None, gpu_count: int, wants_gpu: bool) -> bool:
        nonlocal cpu_free
        place = scheduler.place(
            estimate, machine.gpus, held, machine.suspended, gpu_count, wants_gpu, cpu_free
        )
        if place is None:
            return False
        if place.device == "cpu":
            cpu_free -= 1
        for gpu in place.gpus:
            held[gpu] = held.get(gpu, 0.0) + place.hold_gib
        return True

    for estimate, spec in machine.queued:  # the supervisor takes older runs first
        resources = spec.get("resources") or {}
        if resources.get("target") == "cluster" or spec.get("upstream"):
            continue
        take(estimate, resources.get("gpu_count", 1), resources.get("device") != "cpu")
    out = []
    for index, run in enumerate(runs):
        spec = run.spec
        wants_gpu = spec.resources.device != "cpu" and bool(machine.gpus)
        group = group_of.get(index)
        if group and wants_gpu:  # one process on one GPU for the whole group
            if group not in group_outcome:
                together = sharing.group_estimate([runs[i].estimate for i in group])
                group_outcome[group] = NOW if take(together, 1, True) else GPU_MEMORY
            out.append(group_outcome[group])
        elif run.refused:
            out.append(REFUSED)
        elif spec.resources.target == "cluster":
            out.append(CLUSTER)
        elif spec.upstream_node:
            upstream = names.get(spec.upstream_node, "the Fine-Tune node it starts from")
            out.append(f"{UPSTREAM}:{upstream}")
        elif wants_gpu and run.estimate is None:
            out.append(UNESTIMATED)
        elif take(run.estimate, spec.resources.gpu_count, wants_gpu):
            out.append(NOW)
        else:
            out.append(GPU_MEMORY if wants_gpu else CPU_SLOT)
    return out


def schedule_sentence(found: list[str], machine: Machine) -> str:
    """The outcomes in words: "2 start now, 1 waits for a free CPU slot (…)"."""
    counts: dict[str, int] = {}
    for outcome in found:
        counts[outcome] = counts.get(outcome, 0) + 1
    parts = []
    for outcome, n in counts.items():
        one = n == 1
        if outcome == NOW:
            parts.append(f"{n} {'starts' if one else 'start'} now")
        elif outcome == CPU_SLOT:
            parts.append(f"{n} {'waits' if one else 'wait'} for a free CPU slot")
        elif outcome == GPU_MEMORY:
            parts.append(f"{n} {'waits' if one else 'wait'} for GPU memory")
        elif outcome.startswith(UPSTREAM + ":"):
            name = outcome.split(":", 1)[1]
            parts.append(f"{n} {'waits' if one else 'wait'} for “{name}” to finish")
        elif outcome == UNESTIMATED:
            parts.append(f"{n} {'is' if one else 'are'} placed once estimated")
        elif outcome == CLUSTER:
            parts.append(f"{n} {'goes' if one else 'go'} to the Ray cluster")
        elif outcome == REFUSED:
            parts.append(f"{n} {'is' if one else 'are'} refused")
    text = ", ".join(parts)
    on_cpu = counts.get(NOW, 0) + counts.get(CPU_SLOT, 0)
    if on_cpu and not machine.gpus:
        slots = machine.cpu_slots
        text += (
            " (this machine trains one run at a time on the CPU"
            + (": they go one after another)" if on_cpu > 1 else ")")
            if slots == 1
            else f" (this machine trains {slots} runs at a time on the CPU)"
        )
    if machine.ahead:
        text += f"; {machine.ahead} run{'s' if machine.ahead != 1 else ''} already going or "
        text += "queued come first"
    return text + "." if text else ""


def totals_text(runs: list[PlannedRun]) -> str:
    """ "3 runs · CPU time 1 min – 18 min in all", with GPU-hours for GPU runs and how many
    estimates are still to come; refused runs are left out of the time."""
    going = [r for r in runs if not r.refused]
    words = [f"<b>{len(going)} run{'s' if len(going) != 1 else ''}</b>"]
    refused = len(runs) - len(going)
    if refused:
        words[0] += f" ({refused} refused)"
    cpu, gpu = [0.0, 0.0], [0.0, 0.0]
    for run in going:
        est = run.estimate or {}
        low, high = (est.get("time_s") or {}).get("low"), (est.get("time_s") or {}).get("high")
        if not isinstance(low, (int, float)) or not isinstance(high, (int, float)):
            continue
        if str(est.get("device") or "cpu").startswith("cuda"):
            count = max(1, run.spec.resources.gpu_count)
            gpu[0], gpu[1] = gpu[0] + low * count / 3600, gpu[1] + high * count / 3600
        else:
            cpu[0], cpu[1] = cpu[0] + low, cpu[1] + high
    if cpu[1]:
        words.append(
            f"CPU time <b>{format_rough_duration(cpu[0])} – {format_rough_duration(cpu[1])}</b>"
            " in all"
        )
    if gpu[1]:
        words.append(f"<b>{_hours(gpu[0])}–{_hours(gpu[1])} GPU-hours</b>")
    known = sum(1 for r in going if r.estimate is not None)
    if known < len(going):
        words.append(f"{known} of {len(going)} estimated so far")
    return " · ".join(words)


def _hours(value: float) -> str:
    return f"{value:.2f}" if value < 0.1 else f"{value:.1f}"
