"""Runs that share a base model, trained in one process on one copy of it:
`python -m engine.training.group GROUP_DIR` (the entry point "group_worker").

GROUP_DIR/group.json names the member run directories (engine.training.group_launch). The
process loads the base once (engine.models.sources, as a single worker does) and gives every
run its own named LoRA adapter in it (peft's named adapters: ranks and target modules may
differ) and its own transformers Trainer, so each keeps its own optimizer, LR schedule, data
order, batch size, step count, seed, checkpoints, samples, adapter, model card and export.

How the group steps: round-robin, one optimizer step per run per turn. Each run's
`Trainer.train()` runs in its own thread, but only the thread holding the turn runs
(engine.training.group_turns.Turns). As each of its optimizer steps begins (the callback's
`on_step_begin`) a run saves the process-wide state it must keep as its own (its random number
streams, and accelerate's gradient state, whose "sync and step" flag the Trainer has just set
for the run's next micro-batch), hands the turn to the next run and waits; when the turn comes
back it restores that state and makes its adapter the active one (`set_adapter`: its adapter's
parameters require gradients, the others' do not). So everything between two of a run's step
starts — the forward and backward passes of all its micro-batches, gradient clipping (only its
adapter has gradients: the others' were cleared by their own steps' `zero_grad`), its
optimizer and scheduler step, logging, evaluation and checkpointing, fetching its next batches
— happens in its turn, on its own adapter, with its own random streams: the same computation,
step for step, as in a process of its own (tests/test_group.py: bit-identical losses, grad
norms, evaluations and adapters in fp32 on the CPU). A run's optimizer is created in its turn
too, over the parameters that then require gradients: its adapter's. Delivering (samples,
adapter, evaluation) and the export happen in the run's last turn, before it leaves the
rotation. Only one run computes at a time: the group saves memory (one base) and the per-process
start-up, not compute; the CPU threads (TUNEGRAPH_THREADS) all serve the run whose turn it is.

Each run keeps what a run of its own has: its events.jsonl (status, progress, metric, eval,
sample, artifact, error: the same events), checkpoints laid out as a single run's (only its own
adapter, loadable by `PeftModel.from_pretrained` and resumable by a single worker), its
worker.log (its records and tracebacks; the group's whole log is GROUP_DIR/worker.log) and its
control.json: pause, stop, cancel or prune acts on that run only, which leaves the rotation
while the others go on. A run whose data or set-up fails, fails alone.

worker.pid: the group process records itself in GROUP_DIR/worker.pid and in every member's
run directory; a member's record is removed as soon as that member has ended (its final state
written), so the supervisor sees each run's worker end when the run does, and the one process
to watch (and kill) for the group is the pid in GROUP_DIR/worker.pid. A SIGTERM to the group
cancels every member still training. A crash of the whole process leaves each unfinished
member with no final state: each is resumable from its own last checkpoint by a single worker
(the supervisor's retry path). An out-of-memory in one member splits the group: every member
still training saves a checkpoint at its next step and leaves with a `log` warning but no
final state, so each is started again alone (one retry each).

Exit codes: 0 every member wrote its own outcome; 6 some members left the group to be run alone
(split by an out-of-memory, or they cannot share this base); 2 the group file is unusable.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from engine.rundir import exit_now, log_file_handler, write_pid

if TYPE_CHECKING:
    from engine.training.group_member import GroupState

EXIT_OK, EXIT_USAGE, EXIT_SPLIT = 0, 2, 6


def main(argv: list[str] | None = None) -> int:
    """`python -m engine.training.group GROUP_DIR`: train the group's runs; the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m engine.training.group GROUP_DIR", file=sys.stderr)
        return EXIT_USAGE
    _one_malloc_arena()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())  # a flag only, no I/O
    threads = os.environ.get("TUNEGRAPH_THREADS")
    if threads:
        import torch

        torch.set_num_threads(max(1, int(threads)))
    return run_group(Path(argv[0]), stop)


def _one_malloc_arena() -> None:
    """One malloc arena for the process (glibc; elsewhere nothing to do). glibc gives threads
    their own arenas and memory freed in one is not reused by another, so each run's thread
    would keep its own peak of activations on the CPU; the runs take turns, so one arena costs
    no contention. Called before the runs' threads start."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, 1)  # M_ARENA_MAX = -8
    except (OSError, AttributeError):  # not glibc (musl): its allocator has no arenas
        pass


def run_group(group_dir: Path, stop: threading.Event | None = None) -> int:
    """Train the runs of `group_dir`'s group.json in this process (`stop`, once set, cancels
    every member still training); returns the exit code."""
    from engine.training.group_launch import read_group
    from engine.training.group_member import GroupState, Member

    group_dir = Path(group_dir).resolve()
    handler = log_file_handler(group_dir)  # removed again at the end: tests run groups inline
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logger = logging.getLogger("tunegraph.group")
    try:
        write_pid(group_dir)
        try:
            run_dirs = read_group(group_dir)
        except ValueError as err:
            logger.error("%s", err)
            print(err, file=sys.stderr)
            return EXIT_USAGE
        group = GroupState(stop)
        members = [Member(d, f"run{i}", group) for i, d in enumerate(run_dirs)]
        for member in members:
            member.start(os.getpid(), group_dir.name)
        train_group(members, group, logger)
        return EXIT_SPLIT if any(m.left for m in members) else EXIT_OK
    finally:
        root.removeHandler(handler)
        handler.close()


def train_group(members: list, group: GroupState, logger: logging.Logger) -> None:
    """Open every member (bad data fails its run alone), load the base once, add each member's
    adapter and Trainer, and train them in turns until every member has ended."""
    from engine.training.group_member import Member
    from engine.training.group_turns import Turns
    from engine.training.setup import SharedBase, load_base

    live: list[Member] = []
    for member in members:
        if member.attempt(member.open):
            live.append(member)
        else:  # its spec or data failed it, alone
            member.close()
    live = _sharing(live)
    if not live:
        return
    first = live[0]
    try:
        logger.info("loading %s once for %d runs", first.spec.base_model.source, len(live))
        model = load_base(first.spec, first.opening)
    except BaseException as exc:  # noqa: BLE001 - every member would have failed the same way
        for member in live:
            with member.as_current():
                member.settle(exc)
            member.close()
        return
    shared = SharedBase(_linear_names(model), type(model).__name__)
    built: list[Member] = []
    for member in live:
        ok = member.attempt(lambda m=member, base=model: m.build(base, shared))
        if member.setup is not None:
            model = member.setup.model  # the peft model holding every adapter so far
        if ok:
            built.append(member)
        else:  # failed once its adapter was in (its Eval sets, say): the adapter goes
            _drop_adapter(model, member.name)
            member.setup = None
            member.close()
    if not built:
        return
    for member in built:
        member.log.emit(
            "log",
            level="info",
            message=f"Shares one copy of {member.spec.base_model.source} with "
            f"{len(built) - 1} other run(s) in this process; they step in turn",
        )
    group.turns = Turns([m.name for m in built])
    threads = [
        threading.Thread(target=m.run, name=f"run-{m.run_dir.name}", daemon=True) for m in built
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():  # a timeout keeps the main thread responsive to signals
            thread.join(timeout=0.5)


def _sharing(members: list) -> list:
    """The members that can share the first shareable member's base; the others leave (to be
    run alone) with the reason."""
    from engine.plan.sharing import share_key

    keyed = [m for m in members if share_key(m.spec) is not None]
    for m in members:
        if share_key(m.spec) is None:
            m.leave(
                "its settings need a process of its own (full fine-tuning, a TRL method, "
                "several GPUs, a cluster, an experiment tracker, or Share base off)"
            )
    if not keyed:
        return []
    first = keyed[0]
    out = [first]
    for m in keyed[1:]:
        if share_key(m.spec) != share_key(first.spec):
            m.leave(f"its base model or its settings differ from run {first.run_dir.name}'s")
        elif m.opening.mode != first.opening.mode:
            m.leave(
                f"it trains in mode {m.opening.mode}, run {first.run_dir.name} in "
                f"{first.opening.mode}"
            )
        else:
            out.append(m)
    return out


def _linear_names(model) -> list[str]:
    from engine.models.targets import linear_layer_names

    return linear_layer_names(model)


def _drop_adapter(model, name: str) -> None:
    """Remove the adapter a member that failed while being built may have left."""
    if name in (getattr(model, "peft_config", None) or {}):
        model.delete_adapter(name)


if __name__ == "__main__":
    exit_now(main())
