"""Dataset preview: time until the first rows can be shown and until the full stats are in, the
old path against the new one, side by side in one process.

    .venv/bin/python bench/bench_preview.py [--rounds 5] [--file F.jsonl] [--base SOURCE]

old: the preview showed nothing until its helper process (`python -m engine.plan.preview
REQUEST`) printed its one answer, and that helper read the file through HF `datasets`
(engine.data.formats.read_rows, the preview's reader before): first rows = full stats = the
helper's wall time. (The old helper read the first rows a second time through `datasets` for the
rendered examples; that second read is left out here, so the old figures are if anything low.)
new: the first rows come from engine.plan.preview.head in the calling process (plain json/csv,
no tokenizer, what the app shows at once); the helper then reads the file with the plain reader
(engine.plan.preview.read_all) and prints the stats.

Rounds alternate old and new after one warm-up of each (so both find the files in the OS cache).
Prints median [min-max] seconds, the ratios old / new, and whether both give the same report.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_FILE = ROOT / "resources" / "datasets" / "support_chats.jsonl"

# the old helper: the same report, its rows read through HF datasets as before
OLD_HELPER = (
    "import json, sys\n"
    "import engine.plan.preview as preview\n"
    "from engine.data.formats import read_rows\n"
    "preview.read_all = read_rows\n"
    "print(json.dumps(preview.run(json.loads(sys.argv[1]))))\n"
)


def helper(request: dict, old: bool) -> dict:
    """Run the preview helper to its answer, as the app's QProcess does."""
    from engine.rundir import entry_command

    command = (
        [sys.executable, "-c", OLD_HELPER, json.dumps(request)]
        if old
        else entry_command(sys.executable, "preview", json.dumps(request))
    )
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout)


def old_path(request: dict) -> tuple[float, float, dict]:
    t0 = time.perf_counter()
    report = helper(request, old=True)
    full = time.perf_counter() - t0
    return full, full, report


def new_path(request: dict) -> tuple[float, float, dict]:
    from engine.plan.preview import dataset_spec, head

    t0 = time.perf_counter()
    first = head(dataset_spec(request["dataset"]))
    if not first["rows"]:
        raise RuntimeError(f"no first rows: {first['error']}")
    rows_at = time.perf_counter() - t0
    report = helper(request, old=False)
    return rows_at, time.perf_counter() - t0, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    parser.add_argument("--base", default="builtin:tiny-llama")
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="tg-bench-"))
    os.environ.update(
        {"TUNEGRAPH_HOME": str(home), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    )
    from engine.models.tiny import ensure_builtin_tiny_model

    request = {
        "dataset": {"path": str(args.file.resolve())},
        "base_model": {"source": args.base},
        "rows": 3,
        "max_seq_length": 0,
    }
    paths_ = {"old: one helper answer": old_path, "new: head here, then helper": new_path}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in paths_}
    reports = {}
    try:
        ensure_builtin_tiny_model()
        for name, path in paths_.items():  # warm-up: OS file cache, the tiny model's files
            first_call, _, reports[name] = path(request)
        for i in range(args.rounds):
            for name, path in paths_.items():
                first, full, _ = path(request)
                times[name].append((first, full))
            print(
                f"round {i + 1}: "
                + ", ".join(f"{k}: {v[-1][0]:.2f} s / {v[-1][1]:.2f} s" for k, v in times.items()),
                file=sys.stderr,
            )
    finally:
        shutil.rmtree(home, ignore_errors=True)

    old_report, new_report = reports.values()
    for report in (old_report, new_report):
        if report.get("error"):
            print(f"the preview failed: {report['error']}", file=sys.stderr)
            return 1
    print(
        f"\nseconds ({args.rounds} rounds, {os.cpu_count()} CPU cores, {args.file.name} "
        f"({old_report['rows']} rows) through {args.base}; median [min-max])"
    )
    print(f"{'path':30} {'to first rows':>22} {'to full stats':>22}")
    medians = {}
    for name, values in times.items():
        cells = []
        for column in (0, 1):
            col = [v[column] for v in values]
            cells.append(f"{statistics.median(col):7.4f} [{min(col):6.4f}-{max(col):6.4f}]")
        medians[name] = [statistics.median(v[c] for v in values) for c in (0, 1)]
        print(f"{name:30} {cells[0]:>22} {cells[1]:>22}")
    (old_first, old_full), (new_first, new_full) = medians.values()
    print(f"new path's first call, its imports included: first rows in {first_call * 1000:.1f} ms")
    print(
        f"ratio old / new: first rows {old_first / new_first:,.0f}x sooner "
        f"({old_first:.2f} s -> {new_first * 1000:.1f} ms; "
        f"{old_first / first_call:,.0f}x for the first call), "
        f"full stats {old_full / new_full:.2f}x ({old_full:.2f} s -> {new_full:.2f} s)"
    )
    print(f"same report from both paths: {'yes' if old_report == new_report else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
