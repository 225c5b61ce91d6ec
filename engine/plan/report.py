"""Estimates for runs in the shapes the CLI, the app and the supervisor use.

`python -m engine.plan.report RUN_DIR` prints one estimate as JSON: the supervisor runs it as a
helper process when a submit arrives without an estimate, so the supervisor never imports torch.
`python -m engine.plan.report --specs DEVICE` reads a JSON list of specs on stdin and prints
`[estimate, …]`: `estimate_specs` uses it when this process has no engine (a frozen app).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
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


def main(argv: list[str] | None = None) -> int:
    """`python -m engine.plan.report RUN_DIR | --specs [DEVICE]`: print estimates as JSON."""
    argv = sys.argv[1:] if argv is None else argv
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
