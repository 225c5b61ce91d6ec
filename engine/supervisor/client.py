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
    `tunegraph run --detach --json` prints. A swept spec (a Sweep node) starts a study instead
    of one run: its entry's id is the study's name, with `"sweep": true` (engine.supervisor.sweeps
    starts its trials).
    """
    from engine.cluster.executor import resolve_address
    from engine.training.launch import create_run

    estimates = estimates or [None] * len(specs)
    submit_data_steps(store, specs)  # the data recipe steps first: the runs wait for them
    entries = []
    runs: list[tuple[dict, dict | None, dict | None]] = []  # entry, estimate, refusal
    submitted: dict[str, str] = {}  # Fine-Tune node uuid -> its run id in this submission
    for spec, est in zip(specs, estimates, strict=True):
        if cluster and not chained(spec):
            spec.resources.target = "cluster"
        link_upstream(store, spec, submitted)
        if spec.sweep is not None:
            entries.append(submit_sweep(store, spec, est))
            continue
        run_id = create_run(spec, store, parent=parent, estimate=est)
        if spec.node_uuid:
            submitted[spec.node_uuid] = run_id
        if spec.resources.target == "cluster":
            record_cluster(paths.runs_dir() / run_id, resolve_address(cluster))
        entries.append({"id": run_id, "name": spec.name, "state": "queued"})
        runs.append((entries[-1], est, data_refusal(spec)))
    results = send_submits(store, [(entry["id"], est, refuse) for entry, est, refuse in runs])
    for (entry, _, _), result in zip(runs, results, strict=True):
        entry["state"] = result.get("state", "queued")
        if entry["state"] == "refused":
            entry["error"] = result.get("error")
    return entries


def submit_sweep(store: Store, spec: JobSpec, estimate: dict | None) -> dict:
    """Hand a swept spec to the supervisor, which starts its study; the entry of `submit`."""
    entry = {"id": None, "name": spec.name, "state": "refused", "sweep": True}
    refusal = data_refusal(spec)
    if refusal:
        return {**entry, "error": {"class": "DataError", **refusal}}
    result = send(store, "sweep", spec=spec.to_dict(), estimate=estimate)
    if not result.get("ok", True):
        message = result.get("error") or "the supervisor refused the sweep"
        return {**entry, "error": {"class": "SpecError", "message": message, "hint": None}}
    return {**entry, "id": result.get("study"), "state": result.get("state", "queued")}


def cancel_sweep(store: Store, study: str) -> dict:
    """Stop a study: no new trials, and its live trials cancelled."""
    result = send(store, "cancel_sweep", study=study)
    if not result.get("ok", True):
        raise TunegraphError(result.get("error") or f"cannot cancel the sweep {study}")
    return result


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


def data_steps_of(specs: list[JobSpec]) -> list[dict]:
    """The data steps of `specs`, once each, in order (nodes.recipes)."""
    steps: dict[str, dict] = {}
    for spec in specs:
        for step in spec.data_steps:
            steps.setdefault(step["key"], step)
    return list(steps.values())


def submit_data_steps(store: Store, specs: list[JobSpec]) -> dict:
    """Queue the data steps of `specs` that are not made yet; {key: state} of each."""
    steps = data_steps_of(specs)
    if not steps:
        return {}
    result = send(store, "submit_data", steps=steps)
    if not result.get("ok", True):
        raise TunegraphError(result.get("error") or "the supervisor refused the data steps")
    return result.get("steps") or {}


def cancel_data(store: Store, key: str) -> dict:
    """Stop a data step (a Generate step keeps its rows for the next time it runs)."""
    result = send(store, "cancel_data", key=key)
    if not result.get("ok", True):
        raise TunegraphError(result.get("error") or f"cannot cancel the data step {key}")
    return result


def data_refusal(spec: JobSpec) -> dict | None:
    """Why the supervisor must refuse `spec` for its data ({"message", "hint"}), or None: each
    dataset is read whole here (engine.data.check, cached per file size and time), so a data
    error never becomes a failed run."""
    from engine.data.check import check_dataset

    made = {p for step in spec.data_steps for p in step["outputs"].values()}
    for ds in spec.datasets:
        if ds.path in made and not Path(ds.path).is_file():
            continue  # a data step makes it: the worker reads it once it is there
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
    """Send one submit command and wait for its result (`send_submits` of one run)."""
    return send_submits(store, [(run_id, estimate, refuse)])[0]


def send_submits(store: Store, runs: list[tuple[str, dict | None, dict | None]]) -> list[dict]:
    """Send the submit commands of (run_id, estimate, refuse) together, so the supervisor takes
    them in one round (runs of one base may then share it), and wait for each result; without
    an estimate, long enough for the supervisor's estimate helper to answer or time out.
    `refuse` ({"message", "hint"}): the supervisor refuses that run with that sentence instead
    of queueing it."""
    from engine.supervisor.commands import ESTIMATE_TIMEOUT_S

    if not runs:
        return []
    commands = [
        ("submit", run_id, {"estimate": est, **({"refuse": refuse} if refuse else {})})
        for run_id, est, refuse in runs
    ]
    cmd_ids = store.add_commands(commands)
    ensure_supervisor()
    results = []
    for cmd_id, (_, est, refuse) in zip(cmd_ids, runs, strict=True):
        wait_s = WAIT_S if est is not None or refuse else ESTIMATE_TIMEOUT_S + WAIT_S
        results.append(await_result(store, cmd_id, "submit", wait_s))
    return results


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
