"""Real runs for the screenshots: the example sweep, trained for real in a throw-away data folder.

`resources/examples/sweep.json` is two LoRA runs of `builtin:tiny-llama` (the ~2M-parameter tiny
Llama, built on first use) on the 300-row sample `resources/datasets/support_chats.jsonl`, one
epoch each (36 steps), learning rates 1e-3 and 5e-3, each exported as adapter ZIP and Q4_K_M GGUF
bundle. `run_example(home)` trains it on the CPU exactly as `make demo` does (`python -m
app.cli.demo` with TUNEGRAPH_HOME=home): about a minute on 2 cores. Nothing here writes events
itself: every metric, sample and artifact in the pictures comes from those worker processes.

The tiny model starts from random weights, so one epoch moves its loss only from ~7.4 to ~7.0 and
its answers are not sentences; the pictures show what this run really produced.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "resources" / "examples" / "sweep.json"
RUN_NAMES = ("support lr 1e-3", "support lr 5e-3")


def data_folder(given: str | None) -> tuple[Path, bool]:
    """The data folder to use and whether it is a throw-away one (a new temporary folder unless
    `given`; a given folder is reused, so several screenshot scripts can share one training)."""
    if given:
        return Path(given).resolve(), False
    return Path(tempfile.mkdtemp(prefix="tg-shot-")), True


def cli(home: Path, *args: str, check: bool = True, quiet: bool = False) -> str:
    """`python -m app ARGS` (the `tunegraph` command) on `home`; returns its stdout."""
    env = {**os.environ, "TUNEGRAPH_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=env,
        check=check,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if quiet else None,
    )
    return out.stdout


def completed_runs(home: Path) -> list[dict]:
    """The completed runs of the example in `home` (`tunegraph runs --json`), one per name, in
    the sweep's order."""
    if not (home / "tunegraph.db").is_file():
        return []
    runs = json.loads(cli(home, "runs", "--json", quiet=True) or "[]")
    # `runs` is newest first: going through it oldest first, the newest run of a name wins
    by_name = {r["name"]: r for r in reversed(runs) if r["state"] == "completed"}
    return [by_name[name] for name in RUN_NAMES if name in by_name]


def run_example(home: Path) -> list[dict]:
    """Train and export the example sweep in `home` (unless it already holds both completed
    runs); returns the two runs as `tunegraph show --json` gives them."""
    runs = completed_runs(home)
    if len(runs) < len(RUN_NAMES):
        print(f"training the example sweep in {home} (make demo; about a minute on 2 cores)")
        started = time.perf_counter()
        env = {**os.environ, "TUNEGRAPH_HOME": str(home), "HF_HUB_OFFLINE": "1"}
        subprocess.run(
            [sys.executable, "-m", "app.cli.demo", str(SWEEP)], cwd=ROOT, env=env, check=True
        )
        print(f"example sweep trained in {time.perf_counter() - started:.0f} s")
        runs = completed_runs(home)
    if len(runs) < len(RUN_NAMES):
        raise SystemExit(f"the example sweep did not complete both runs in {home}")
    return [json.loads(cli(home, "show", run["id"], "--json")) for run in runs]


def finish(home: Path, throw_away: bool) -> None:
    """Stop the data folder's supervisor; remove the folder when it was a throw-away one."""
    cli(home, "supervisor", "--stop", check=False, quiet=True)
    if throw_away:
        shutil.rmtree(home, ignore_errors=True)
    else:
        print(f"data folder kept: {home}")


def shoot_main(shoot: Callable[[Path, list[dict]], None], description: str, argv=None) -> int:
    """A screenshot script's main: train the example in a data folder (`--home DIR` to keep or
    reuse one), shoot the window on it, clean up."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--home", help="data folder to train in or reuse (kept afterwards)")
    args = parser.parse_args(argv)
    home, throw_away = data_folder(args.home)
    try:
        shoot(home, run_example(home))
    finally:
        finish(home, throw_away)
    return 0
