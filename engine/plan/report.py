"""Estimates for runs in the shapes the CLI, the app and the supervisor use.

`python -m engine.plan.report RUN_DIR` prints one estimate as JSON: the supervisor runs it as a
helper process when a submit arrives without an estimate, so the supervisor never imports torch.
`python -m engine.plan.report --specs DEVICE` reads a JSON list of specs on stdin and prints
`[estimate, …]`: `estimate_specs` uses it when this process has no engine (a frozen app).
`python -m engine.plan.report --stream DEVICE` reads the same list and prints one JSON line per
spec as soon as its estimate is done (`stream_estimates`): the app's confirmation fills each run's
card as its line arrives. `cache_key` says when a kept estimate still holds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from engine import hardware
from engine.rundir import SPEC_FILE, entry_command
from engine.spec import JobSpec


def device_for(spec: JobSpec, device: str = "auto") -> tuple[str, float | None, str | None]:
    """(device, GPU memory in GiB, GPU name) a run would get on this machine."""
    wanted = spec.resources.device if device == "auto" else device
    gpus = hardware.gpus()
    if wanted == "cpu" or not gpus:
        return "cpu", None, None
    largest = max(gpus, key=lambda g: g.total_gib)
    return "cuda", largest.total_gib, largest.name


def estimate_spec(spec: JobSpec, device: str = "auto") -> dict:
    """The DESIGN.md estimate dict for one spec; a SpecError first when a package the run needs
    is missing here (engine.plan.requirements: this is where the worker will run)."""
    from engine.plan.estimate import estimate
    from engine.plan.requirements import check_requirements

    check_requirements(spec)

    dev, total, name = device_for(spec, device)
    est = estimate(
        spec, device=dev, gpu_total_gib=total, gpu_name=name, cores=os.cpu_count() or 1
    ).to_dict()
    gpus = hardware.gpus()
    if dev == "cuda" and gpus:
        est["device"] = f"cuda:{max(gpus, key=lambda g: g.total_gib).index}"
    return est


def estimate_graph(specs: list[JobSpec], device: str = "auto") -> list[dict]:
    """`estimate --json`: a list of {name, node_uuid, estimate} (via `estimate_specs`)."""
    return [
        {"name": s.name, "node_uuid": s.node_uuid, "estimate": est}
        for s, est in zip(specs, estimate_specs(specs, device), strict=True)
    ]


def engine_in_process() -> bool:
    """True when torch and transformers can be imported here (never true in a frozen app)."""
    from engine.setup.interpreters import frozen

    return not frozen() and all(
        importlib.util.find_spec(m) is not None for m in ("torch", "transformers")
    )


def estimate_specs(specs: list[JobSpec], device: str = "auto") -> list[dict]:
    """One estimate per spec: in this process when it has the engine, else in the engine's
    Python (`engine_python() -m engine.plan.report --specs DEVICE`)."""
    if not specs:
        return []
    if engine_in_process():
        return [estimate_spec(s, device) for s in specs]
    from engine.errors import TunegraphError
    from engine.setup.interpreters import engine_python

    result = subprocess.run(
        entry_command(engine_python(), "estimate", "--specs", device),
        input=json.dumps([s.to_dict() for s in specs]),
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=False,
    )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        if lines and lines[-1].startswith("tunegraph: "):  # the engine's own one sentence
            raise TunegraphError(lines[-1].removeprefix("tunegraph: "))
        raise TunegraphError(
            "Estimating the runs in the training engine failed: "
            + (lines[-1] if lines else f"exit {result.returncode}")
        )
    return json.loads(result.stdout)


def stream_estimates(
    specs: list[JobSpec], device: str = "auto", write: Callable[[dict], None] | None = None
) -> None:
    """Estimate `specs` in order, handing each answer to `write` as soon as it is done (default:
    one JSON line on stdout, flushed): `{"index", "name", "node_uuid", "estimate"}`, or
    `"error"` (one sentence) instead of `"estimate"` for a spec that cannot be estimated; the
    other specs are still estimated."""
    from engine.errors import TunegraphError

    write = write or _print_line
    for index, spec in enumerate(specs):
        entry: dict = {"index": index, "name": spec.name, "node_uuid": spec.node_uuid}
        try:
            entry["estimate"] = estimate_spec(spec, device)
        except (TunegraphError, OSError, ValueError) as err:  # one run's problem, not the batch's
            entry["error"] = str(err)
        write(entry)


def _print_line(entry: dict) -> None:
    print(json.dumps(entry), flush=True)


def cache_key(spec: JobSpec, device: str = "auto") -> str:
    """A hash of what an estimate depends on: the spec's JSON, the device asked for, this
    machine's GPUs, and the size and modification time of each dataset file (an edited file
    counts its rows again). The app keeps estimates under it for its life; what runs finished
    since then teach the estimator (its calibration) shows in the next app session."""
    files = []
    for ds in spec.datasets:
        try:
            stat = Path(ds.path).expanduser().stat()
            files.append([ds.path, stat.st_size, stat.st_mtime_ns])
        except OSError:
            files.append([ds.path, None, None])
    gpus = [[g.index, g.name, g.total_gib] for g in hardware.gpus()]
    text = json.dumps([spec.to_dict(), device, gpus, files], sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def main(argv: list[str] | None = None) -> int:
    """`python -m engine.plan.report RUN_DIR | --specs [DEVICE] | --stream [DEVICE]`: print
    estimates as JSON (one line per spec with --stream)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--stream":
        specs = [JobSpec.from_dict(d) for d in json.loads(sys.stdin.read())]
        stream_estimates(specs, argv[1] if len(argv) > 1 else "auto")
        return 0
    if argv and argv[0] == "--specs":
        from engine.errors import TunegraphError

        device = argv[1] if len(argv) > 1 else "auto"
        specs = [JobSpec.from_dict(d) for d in json.loads(sys.stdin.read())]
        try:
            print(json.dumps([estimate_spec(s, device) for s in specs]))
        except TunegraphError as err:
            print(f"tunegraph: {err}", file=sys.stderr)
            return 1
        return 0
    spec = JobSpec.load(Path(argv[0]) / SPEC_FILE)
    print(json.dumps(estimate_spec(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
