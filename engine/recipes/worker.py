"""The worker of one data step: `python -m engine.recipes.worker STEP_DIR`.

STEP_DIR (`<data_dir>/recipes/<key>/`, made by the supervisor: engine.supervisor.data_steps)
holds `step.json` (nodes.recipes: step, spec, inputs, outputs). The worker runs the step's
function on its inputs (engine.recipes: generate, filter_rows, deduplicate, mix, split), which
makes the dataset as a library artifact with its manifest (or finds it in the cache), then copies
the artifact's rows to the step's output file(s), the paths the runs that read them were compiled
with. Its `events.jsonl` (this process its only writer) says `starting`, then `progress` (`step`: rows
made, `max_steps`: rows wanted; attempts, dropped and tokens/s for Generate), a `log` line with the counts, and `completed` with the
artifact ids, or `failed` (with an `error`) or `cancelled` (control.json or SIGTERM; a Generate
step keeps the rows it wrote and the next run goes on from them).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from engine.control import Control
from engine.errors import TunegraphError
from engine.events import EventLog
from engine.rundir import EXIT_OK, WORKER_LOG, end_with, log_to_file, write_pid

STEP_FILE = "step.json"


def run_step(step: dict, log: EventLog, control: Control) -> list:
    """Make the step's dataset(s) and copy them to its outputs; the artifacts."""
    from engine.recipes import dedup, filters, generate, mix
    from engine.recipes.specs import DedupSpec, FilterSpec, GenerateSpec, MixSpec, SplitSpec

    kind, inputs = step["step"], step["inputs"]
    cancel = lambda: control.action() == "cancel"  # noqa: E731
    threads = int(os.environ.get("TUNEGRAPH_THREADS") or 0) or None

    def rows_progress(done: int, total: int) -> None:
        log.emit("progress", step=done, max_steps=total)

    if kind == "generate":

        def gen_progress(p) -> None:
            log.emit(
                "progress",
                step=p.rows_kept,
                max_steps=p.rows_wanted,
                attempts=p.rows_done,
                dropped=p.rows_dropped,
                tokens_per_s=p.tokens_per_s,
            )

        spec = GenerateSpec(**step["spec"])
        made = [generate.generate(spec, progress=gen_progress, cancel=cancel, threads=threads)]
    elif kind == "filter":
        spec = FilterSpec(**step["spec"])
        made = [
            filters.filter_rows(
                spec, inputs[0], progress=rows_progress, cancel=cancel, threads=threads
            )
        ]
    elif kind == "dedup":
        spec = DedupSpec(**step["spec"])
        made = [dedup.deduplicate(spec, inputs[0], progress=rows_progress, cancel=cancel)]
    elif kind == "mix":
        made = [mix.mix(MixSpec(**step["spec"]), inputs)]
    elif kind == "split":
        made = list(mix.split(SplitSpec(**step["spec"]), inputs[0]))
    else:
        raise TunegraphError(f"unknown data step {kind!r}")
    ports = list(step["outputs"])
    for port, artifact in zip(ports, made, strict=True):
        out = Path(step["outputs"][port])
        tmp = out.with_suffix(".tmp")
        shutil.copyfile(artifact.data_path, tmp)
        os.replace(tmp, out)  # the output appears whole: a run never reads half a file
        counts = artifact.counts
        dropped = ", ".join(f"{rule} {n}" for rule, n in (counts.get("dropped") or {}).items())
        log.emit(
            "log",
            level="info",
            message=f"{port}: {artifact.rows} rows ({'from the cache, ' if artifact.cached else ''}"
            f"{counts.get('in', artifact.rows)} in"
            + (f"; dropped: {dropped}" if dropped else "")
            + f"), artifact {artifact.id}",
        )
    return made


def main(argv: list[str] | None = None) -> int:
    """Run the data step of STEP_DIR; the exit code says how it ended."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m engine.recipes.worker STEP_DIR", file=sys.stderr)
        return 2
    folder = Path(argv[0]).resolve()
    logger = log_to_file(folder, "tunegraph.recipes")
    control = Control(folder)
    control.install_signal_handlers()
    write_pid(folder)
    with EventLog(folder / WORKER_LOG) as log:
        log.emit("status", state="starting", pid=os.getpid())
        try:
            step = json.loads((folder / STEP_FILE).read_text(encoding="utf-8"))
            made = run_step(step, log, control)
        except BaseException as exc:  # noqa: BLE001 - the step must end in a readable state
            return end_with(exc, log, logger, "data step")
        log.emit(
            "status",
            state="completed",
            artifacts=[a.id for a in made],
            rows=[a.rows for a in made],
        )
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
