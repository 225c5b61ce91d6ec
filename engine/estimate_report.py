"""Estimates for runs in the shapes the CLI, the app and the supervisor use.

`python -m engine.estimate_report RUN_DIR` prints one estimate as JSON: the supervisor runs it as a
helper process when a submit arrives without an estimate, so the supervisor never imports torch.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from engine import hardware
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
    """The DESIGN.md estimate dict for one spec."""
    from engine.estimate import estimate

    dev, total, name = device_for(spec, device)
    est = estimate(
        spec, device=dev, gpu_total_gib=total, gpu_name=name, cores=os.cpu_count() or 1
    ).to_dict()
    gpus = hardware.gpus()
    if dev == "cuda" and gpus:
        est["device"] = f"cuda:{max(gpus, key=lambda g: g.total_gib).index}"
    return est


def estimate_graph(specs: list[JobSpec], device: str = "auto") -> list[dict]:
    """`estimate --json`: a list of {name, node_uuid, estimate}."""
    return [
        {"name": s.name, "node_uuid": s.node_uuid, "estimate": estimate_spec(s, device)}
        for s in specs
    ]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = JobSpec.load(Path(argv[0]) / "spec.json")
    print(json.dumps(estimate_spec(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
