"""Benchmark: Tunegraph's GGUF export against the bare converter + quantizer, and its parity.

    python bench/bench_export.py [--base MODEL_DIR] [--quant Q4_K_M [Q5_K_M Q8_0]]

For each quantization, builds a run with a LoRA adapter on the base (default: the tiny test Llama,
random weights, built on the fly; the adapter is seeded, so every quantization exports the same
model), then measures, each in a fresh process so peak memory is its own:
- ours:     export_run (adapter ZIP, merge, F16 convert, quantize, checks, parity, bundle ZIP);
- baseline: llama.cpp's converter then llama_model_quantize, run directly on the merged folder
            our export produced (the least anyone can do to get the same GGUF).
Prints wall time and peak RSS (process and its children) as a table, our phases from the event
log, a ratio line, and the parity check's figures exactly as the export logged them
(engine/export/parity.py: prompt token ids, EOS/EOT ids, teacher-forced next-token top-1
agreement of the F16 and of the quantized GGUF with the merged HF model).
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


def peak_rss_mib() -> float:
    """Peak resident memory of this process and of its largest finished child, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, child) / 1024


def make_run(run_dir: Path, base: Path) -> None:
    """A run folder with a perturbed LoRA adapter (as training leaves it) and sample events."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.events import EventLog
    from engine.spec import BaseModelSpec, DatasetSpec, JobSpec

    run_dir.mkdir(parents=True)
    JobSpec(
        name="bench",
        base_model=BaseModelSpec(source=str(base)),
        datasets=[DatasetSpec(path="bench.jsonl")],
    ).save(run_dir / "spec.json")
    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05)
    model.save_pretrained(run_dir / "adapter")
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.save_pretrained(run_dir / "adapter")
    template = base / "chat_template.jinja"
    if template.is_file():
        (run_dir / "adapter" / "chat_template.jinja").write_text(template.read_text())
    (run_dir / "adapter" / "README.md").write_text("# bench\n")
    with EventLog(run_dir / "events.jsonl") as log:
        for prompt in ("Hello, how can you help?", "My router restarts.", "What does it cost?"):
            log.emit("sample", prompt=prompt, response="Thank you, I can help with that.")


def run_ours(run_dir: Path, quant: str) -> dict:
    from engine.events import EventLog, read_events
    from engine.export.pipeline import export_run
    from engine.spec import ExportSpec

    started, start_ts = time.perf_counter(), time.time()
    with EventLog(run_dir / "events.jsonl") as log:
        warnings = export_run(run_dir, ExportSpec(gguf=True, quant=quant, merged=True), log)
    wall = time.perf_counter() - started
    phases, merged, gguf, parity = [], None, None, None
    for event in read_events(run_dir / "events.jsonl"):
        if event.kind == "log" and str(event.get("message", "")).startswith("Export: "):
            phases.append((event["message"][8:], event.ts))
        if event.kind == "log" and event.get("parity") is not None:
            parity = event["parity"]  # ParityResult.as_dict(), as export_run logged it
        if event.kind == "artifact" and event.get("artifact_kind") == "merged_dir":
            merged = event["path"]
        if event.kind == "artifact" and event.get("artifact_kind") == "gguf":
            gguf = event["path"]
    phases.insert(0, ("imports, spec, disk-space check", start_ts))
    return {
        "wall_s": wall,
        "peak_mib": peak_rss_mib(),
        "warnings": warnings,
        "phases": phases,
        "merged": merged,
        "gguf": gguf,
        "parity": parity,
        "end_ts": time.time(),
    }


def run_baseline(merged: Path, out_dir: Path, quant: str) -> dict:
    import llama_cpp

    from engine.setup.converter import converter_dir

    folder = converter_dir()
    f16, final = out_dir / "direct-F16.gguf", out_dir / f"direct-{quant}.gguf"
    env = {**os.environ, "PYTHONPATH": str(folder)}
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            str(folder / "convert_hf_to_gguf.py"),
            str(merged),
            "--outtype",
            "f16",
            "--outfile",
            str(f16),
        ],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    converted = time.perf_counter()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant}")
    params.nthread = os.cpu_count() or 1
    if llama_cpp.llama_model_quantize(str(f16).encode(), str(final).encode(), params) != 0:
        raise SystemExit("quantize failed")
    done = time.perf_counter()
    return {
        "wall_s": done - started,
        "convert_s": converted - started,
        "quantize_s": done - converted,
        "peak_mib": peak_rss_mib(),
        "gguf": str(final),
    }


def child(mode: str, args: list[str]) -> dict:
    """Run one measurement in a fresh interpreter and return its JSON result."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="a HF model folder (default: the tiny Llama)")
    parser.add_argument(
        "--quant",
        nargs="+",
        default=["Q4_K_M"],
        choices=("Q4_K_M", "Q5_K_M", "Q8_0"),
        help="one or more quantizations, each exported and measured on its own run",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, rest = args.child[0], args.child[1:]
        if mode == "ours":
            result = run_ours(Path(rest[0]), rest[1])
        else:
            result = run_baseline(Path(rest[0]), Path(rest[1]), rest[2])
        print(json.dumps(result))
        return 0

    work = Path(tempfile.mkdtemp(prefix="tg-bench-export-"))
    try:
        return compare(work, args.base, args.quant)
    finally:
        if args.keep:
            print(f"work folder: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def compare(work: Path, base: Path | None, quants: list[str]) -> int:
    """Measure both routes for each quantization and print the tables, ratios and parity."""
    os.environ["TUNEGRAPH_HOME"] = str(work / "home")
    if base is None:
        from engine.models.tiny import build_tiny_model

        base = build_tiny_model(work / "tiny")
    started = time.perf_counter()
    parities = []
    for i, quant in enumerate(quants):
        run_dir = work / "home" / "runs" / f"20260101-000000-bench{i}"
        make_run(run_dir, base)
        ours = child("ours", [str(run_dir), quant])
        baseline = child("baseline", [ours["merged"], str(work), quant])
        report(base, quant, ours, baseline)
        parities.append((quant, ours["parity"]))
    print_parity(parities)
    print(f"\nbenchmark wall time {time.perf_counter() - started:.0f} s")
    return 0 if all(p is not None for _, p in parities) else 1


def report(base: Path, quant: str, ours: dict, baseline: dict) -> None:
    """The wall-time / memory table, our phases and the ratio line of one quantization."""
    print(f"\nGGUF export of {base} to {quant} ({os.cpu_count()} CPU cores)\n")
    print(f"{'':34} {'wall s':>8} {'peak MiB':>9}")
    print(f"{'Tunegraph export_run':34} {ours['wall_s']:8.2f} {ours['peak_mib']:9.0f}")
    print(f"{'direct convert + quantize':34} {baseline['wall_s']:8.2f} {baseline['peak_mib']:9.0f}")
    print(f"{'  of which convert':34} {baseline['convert_s']:8.2f}")
    print(f"{'  of which quantize':34} {baseline['quantize_s']:8.2f}")
    print("\nTunegraph phases (from the event log):")
    marks = ours["phases"] + [("(end)", ours["end_ts"])]
    for (name, ts), (_, nxt) in zip(marks, marks[1:], strict=False):
        print(f"  {name[:60]:60} {nxt - ts:6.2f} s")
    from engine.export.gguf_tools import read_gguf

    same = read_gguf(ours["gguf"]).tensor_types == read_gguf(baseline["gguf"]).tensor_types
    print(
        f"\nratio: Tunegraph / direct = {ours['wall_s'] / baseline['wall_s']:.2f}x wall time, "
        f"{ours['peak_mib'] / baseline['peak_mib']:.2f}x peak memory "
        f"(same tensor types: {'yes' if same else 'no'}; ours adds the adapter ZIP, merge, "
        "checks, parity and bundle)"
    )
    if ours["warnings"]:
        print("warnings:", *ours["warnings"], sep="\n  ")


def print_parity(parities: list[tuple[str, dict | None]]) -> None:
    """The parity check's figures per export, from the `parity` dict each export logged."""

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    print("\nParity of each exported GGUF with the merged model (engine/export/parity.py):\n")
    head = ("quant", "prompts", "prompt ids", "EOS hf/gguf", "EOT stops", "tokens", "F16 top-1")
    print(
        f"{head[0]:7} {head[1]:>7} {head[2]:>10} {head[3]:>11} {head[4]:>9} {head[5]:>6} "
        f"{head[6]:>9}  quant top-1"
    )
    for quant, p in parities:
        if p is None:
            print(f"{quant:7} no parity figures in the event log (the check did not run)")
            continue
        print(
            f"{quant:7} {p['prompts']:7d} {'equal' if p['prompt_tokens_match'] else 'DIFFER':>10} "
            f"{p['eos_id_hf']!s:>5}/{p['eos_id_gguf']!s:<5} "
            f"{'yes' if p['end_of_turn_stops_gguf'] else 'NO':>9} {p['positions']:6d} "
            f"{pct(p['f16_agreement']):>9}  {pct(p['quant_agreement'])}"
        )
    print(
        f"(top-1 agreement: teacher-forced next tokens over the sample responses; the F16 "
        f"file must reach {pct(parities[0][1]['threshold']) if parities[0][1] else '99%'})"
    )


if __name__ == "__main__":
    sys.exit(main())
