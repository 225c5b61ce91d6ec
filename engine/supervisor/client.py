"""The client side of the supervisor: submit runs and send commands, then read the store.

Every CLI command and the app's bridge go through here. A command is a row in the `commands`
table; the supervisor (started on demand) takes it and records a result, which `send` waits for.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from engine import paths
from engine.errors import TunegraphError
from engine.rundir import SPEC_FILE
from engine.spec import JobSpec
from engine.store.index import Store
from engine.supervisor.process import ensure_supervisor

WAIT_S = 60.0


def send(
    store: Store, action: str, run_id: str | None = None, wait: bool = True, **args: Any
) -> dict:
    """Queue a command for the supervisor and (by default) wait for its result."""
    cmd_id = store.add_command(action, run_id, **args)
    ensure_supervisor()
    if not wait:
        return {"ok": True, "id": cmd_id}
    return await_result(store, cmd_id, action)


def await_result(store: Store, cmd_id: int, action: str, wait_s: float = WAIT_S) -> dict:
    """The supervisor's result for command `cmd_id`, waiting up to `wait_s` seconds for it."""
    deadline = time.time() + wait_s
    checked = time.time()
    while time.time() < deadline:
        cmd = store.command(cmd_id)
        if cmd and cmd.get("done_at"):
            return cmd.get("result") or {"ok": True}
        if time.time() - checked > 1.0:  # the supervisor may have exited idle just before
            ensure_supervisor()  # taking the command: a new one takes it
            checked = time.time()
        time.sleep(0.05)
    raise TunegraphError(
        f"the supervisor did not answer the {action} command in {wait_s:.0f} s",
        "See supervisor.log in the data directory.",
    )


def submit(
    store: Store,
    specs: list[JobSpec],
    estimates: list[dict | None] | None = None,
    parent: str | None = None,
    cluster: str | None = None,
) -> list[dict]:
    """Freeze each spec into a run and hand it to the supervisor.

    `cluster` (a Ray address, as `tunegraph run --cluster ADDR`) sends every run to that cluster;
    otherwise runs whose target is "cluster" go to the address of TUNEGRAPH_RAY_ADDRESS or
    Settings, recorded with the submission. A spec without an estimate (None) is estimated by
    the supervisor, which refuses the run when that fails: no run is placed blind. Returns one
    entry per spec: {"id", "name", "state"} with state queued or refused (then also "error"), as
    `tunegraph run --detach --json` prints.
    """
    from engine.cluster.executor import resolve_address
    from engine.training.launch import create_run

    estimates = estimates or [None] * len(specs)
    entries = []
    submitted: dict[str, str] = {}  # Fine-Tune node uuid -> its run id in this submission
    for spec, est in zip(specs, estimates, strict=True):
        if cluster and not chained(spec):
            spec.resources.target = "cluster"
        link_upstream(store, spec, submitted)
        run_id = create_run(spec, store, parent=parent, estimate=est)
        if spec.node_uuid:
            submitted[spec.node_uuid] = run_id
        if spec.resources.target == "cluster":
            record_cluster(paths.runs_dir() / run_id, resolve_address(cluster))
        result = send_submit(store, run_id, est, refuse=data_refusal(spec))
        entry = {"id": run_id, "name": spec.name, "state": result.get("state", "queued")}
        if entry["state"] == "refused":
            entry["error"] = result.get("error")
        entries.append(entry)
    return entries


def chained(spec: JobSpec) -> bool:
    """The run starts from another run's result (a Fine-Tune node, or a `run:` source)."""
    return bool(spec.upstream_node or spec.base_model.source.strip().startswith("run:"))


def link_upstream(store: Store, spec: JobSpec, submitted: dict[str, str]) -> None:
    """Point a chained spec at its upstream run: `upstream` = that run's id, and the base model
    `run:<id>`. The upstream Fine-Tune node's run is the one of this submission (submitted
    first: nodes.compiler.upstream_first), else the newest run of that node that was not
    cancelled or refused; with none, `upstream` stays empty and the supervisor refuses the run."""
    source = spec.base_model.source.strip()
    if source.startswith("run:"):  # a Base model node naming a run
        spec.upstream = source[len("run:") :].strip()
        return
    if not spec.upstream_node:
        return
    run_id = submitted.get(spec.upstream_node)
    if run_id is None:
        for run in store.list_runs():  # newest first
            if (run.get("spec") or {}).get("node_uuid") == spec.upstream_node and run[
                "state"
            ] not in ("cancelled", "refused"):
                run_id = run["id"]
                break
    if run_id is not None:
        spec.upstream = run_id
        spec.base_model.source = f"run:{run_id}"


def data_refusal(spec: JobSpec) -> dict | None:
    """Why the supervisor must refuse `spec` for its data ({"message", "hint"}), or None: each
    dataset is read whole here (engine.data.check, cached per file size and time), so a data
    error never becomes a failed run."""
    from engine.data.check import check_dataset

    for ds in spec.datasets:
        problem = check_dataset(ds, spec.method.method)
        if problem:
            return {
                "message": problem,
                "hint": "Fix the file, or the Dataset node, and run it again.",
            }
    return None


def send_submit(
    store: Store, run_id: str, estimate: dict | None, refuse: dict | None = None
) -> dict:
    """Send one submit command and wait for its result; without an estimate, long enough for
    the supervisor's estimate helper to answer or time out. `refuse` ({"message", "hint"}):
    the supervisor refuses the run with that sentence instead of queueing it."""
    from engine.supervisor.commands import ESTIMATE_TIMEOUT_S

    if refuse:
        cmd_id = send(store, "submit", run_id, wait=False, estimate=estimate, refuse=refuse)["id"]
        return await_result(store, cmd_id, "submit")
    cmd_id = send(store, "submit", run_id, wait=False, estimate=estimate)["id"]
    wait_s = WAIT_S if estimate is not None else ESTIMATE_TIMEOUT_S + WAIT_S
    return await_result(store, cmd_id, "submit", wait_s)


def record_cluster(run_dir: Path, address: str) -> None:
    """Add the run's Ray cluster address to its submission.json (before the submit command)."""
    path = Path(run_dir) / "submission.json"
    meta = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    meta["ray_address"] = address
    path.write_text(json.dumps(meta), encoding="utf-8")


def control(store: Store, action: str, ref: str) -> dict:
    """cancel / pause / resume a run by id, prefix or name; raises with the supervisor's reason."""
    run_id = store.resolve(ref)
    result = send(store, action, run_id)
    if not result.get("ok", True):
        raise TunegraphError(f"cannot {action} {ref}: {result.get('error')}")
    return {"id": run_id, **result}


def continue_run(store: Store, ref: str, epochs: float) -> dict:
    """A child run that starts from RUN's final checkpoint and trains `epochs` more epochs."""
    from engine.training.checkpoints import has_checkpoint

    if not epochs > 0:
        raise TunegraphError(f"cannot continue {ref}: --epochs must be above 0, not {epochs:g}")
    run_id = store.resolve(ref)
    run = store.run_json(run_id)
    if run["state"] != "completed":
        raise TunegraphError(f"cannot continue {ref}: it is {run['state']}, not completed")
    parent_dir = paths.runs_dir() / run_id
    if not has_checkpoint(parent_dir):
        raise TunegraphError(
            f"cannot continue {ref}: it kept no checkpoint",
            "Set save_steps above 0 so runs keep a checkpoint.",
        )
    spec = JobSpec.load(parent_dir / SPEC_FILE)
    spec.name = f"{spec.name} (+{epochs:g} ep)"
    spec.training.epochs = spec.training.epochs + epochs
    if spec.training.max_steps:
        raise TunegraphError(
            f"cannot continue {ref}: it was limited by max_steps, not epochs",
            "Set max_steps to 0 on the training config to train by epochs.",
        )
    return submit_child(store, spec, parent_dir, run_id, run["estimate"])


def submit_child(
    store: Store, spec: JobSpec, parent_dir: Path, parent_id: str, estimate: dict | None = None
) -> dict:
    """Submit `spec` as a child of `parent_id`, starting from the parent's last checkpoint.

    The parent's estimate is reused: the child trains the same model with the same batch shape,
    so it holds the same memory.
    """
    from engine.training.checkpoints import checkpoints
    from engine.training.launch import create_run

    last = checkpoints(parent_dir)[-1]
    run_id = create_run(spec, store, parent=parent_id, estimate=estimate)
    shutil.copytree(last, paths.runs_dir() / run_id / "checkpoints" / last.name)
    if spec.resources.target == "cluster":  # the child goes where its parent went
        from engine.cluster.executor import resolve_address
        from engine.training.launch import read_submission

        address = read_submission(Path(parent_dir)).get("ray_address")
        record_cluster(paths.runs_dir() / run_id, resolve_address(address))
    result = send_submit(store, run_id, estimate)
    entry = {
        "id": run_id,
        "name": spec.name,
        "state": result.get("state", "queued"),
        "parent": parent_id,
    }
    if entry["state"] == "refused":
        entry["error"] = result.get("error")
    return entry


def submit_eval(store: Store, eval_id: str, estimate: dict) -> dict:
    """Hand the eval job in `<data_dir>/evals/<eval_id>/` to the supervisor, which places its
    worker under a hold like a run (engine.supervisor.evals); returns its answer: {"state":
    "queued"} or {"state": "refused", "error"}."""
    return send(store, "submit_eval", None, eval_id=eval_id, estimate=estimate)


def cancel_eval(store: Store, eval_id: str) -> dict:
    """Cancel an eval job (queued or running) and wait for the supervisor's answer."""
    return send(store, "cancel_eval", None, eval_id=eval_id)
