"""Useful-token ratio: real tokens / computed tokens per batch on varied-length chat data, for
our padding-free batches (packing=True, the default) against padded batches.

    .venv/bin/python bench/bench_useful_tokens.py [--rows 1000] [--seq 1024] [--model tiny|PATH]

The rows go through the worker's own data pipeline (engine.data.prepare.prepare_datasets: chat template,
truncation, masking) and are cut into micro-batches in a seeded shuffled order; every batch is
collated by the real collators and its `input_ids` tensor counted. Compared, per micro-batch size:
our padding-free batches (engine.data.prepare.make_collator(packing=True)), our padded fallback
(packing=False: pad to the longest row of the batch, multiple of 8), pad-to-longest without the
multiple, and fixed padding to max_seq_length. No training; takes seconds on a CPU.
Prints a table and the ratio line (goal: >= 0.97 for ours).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

GOAL = 0.97


def collators(tokenizer, seq: int) -> dict:
    from transformers import DataCollatorForSeq2Seq

    from engine.data.encode import IGNORE
    from engine.data.prepare import make_collator

    return {
        "ours: padding-free (packing on)": make_collator(tokenizer, True),
        "ours: padded (packing off)": make_collator(tokenizer, False),
        "pad to longest": DataCollatorForSeq2Seq(
            tokenizer, padding="longest", label_pad_token_id=IGNORE, return_tensors="pt"
        ),
        f"fixed padding to {seq}": DataCollatorForSeq2Seq(
            tokenizer,
            padding="max_length",
            max_length=seq,
            label_pad_token_id=IGNORE,
            return_tensors="pt",
        ),
    }


def count(dataset, collator, batch: int, seed: int) -> tuple[int, int]:
    """(real tokens, computed tokens) over one epoch of micro-batches in a shuffled order."""
    order = list(range(len(dataset)))
    random.Random(seed).shuffle(order)
    real = computed = 0
    for i in range(0, len(order) - batch + 1, batch):
        features = [dataset[j] for j in order[i : i + batch]]
        real += sum(len(f["input_ids"]) for f in features)
        computed += collator(features)["input_ids"].numel()
    return real, computed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--seq", type=int, default=1024, help="max_seq_length")
    parser.add_argument("--batches", default="1,4,8,16", help="micro-batch sizes")
    parser.add_argument("--model", default="tiny", help="tiny, config:<shape> or a model folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    common.quiet()

    from engine.data.prepare import prepare_datasets
    from engine.models.sources import load_tokenizer, resolve_source

    source = common.model_source(args.model) if args.model != "tiny" else str(common.tiny_model())
    work = Path(tempfile.mkdtemp(prefix="tg-useful-"))
    data = common.write_jsonl(work / "chats.jsonl", common.varied_chats(args.rows, args.seed))
    spec = common.bench_spec(source, data, "cpu", 1, 1, args.seq)
    tokenizer = load_tokenizer(spec.base_model, resolve_source(spec.base_model))
    prepared = prepare_datasets(spec, tokenizer, args.seq)
    lengths = [len(x) for x in prepared.train["input_ids"]]
    dataset = [dict(r) for r in prepared.train]
    shutil.rmtree(work, ignore_errors=True)

    batches = [int(b) for b in args.batches.split(",")]
    rows, figures = [], {}
    for name, collator in collators(tokenizer, args.seq).items():
        ratios = []
        for batch in batches:
            real, computed = count(dataset, collator, batch, args.seed)
            ratios.append(real / computed)
            figures.setdefault(name, {})[batch] = {
                "real": real,
                "computed": computed,
                "ratio": round(real / computed, 4),
            }
        rows.append([name, *ratios])
    print(
        f"useful-token ratio (real / computed tokens), {len(lengths)} rows of "
        f"{min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f}), "
        f"max_seq_length {args.seq}"
    )
    print(common.table(["batching", *[f"batch {b}" for b in batches]], rows))
    ours = min(figures["ours: padding-free (packing on)"][b]["ratio"] for b in batches)
    longest = min(figures["pad to longest"][b]["ratio"] for b in batches)
    fixed = min(figures[f"fixed padding to {args.seq}"][b]["ratio"] for b in batches)
    verdict = "meets" if ours >= GOAL else "misses"
    print(
        f"useful-token ratio ours = {ours:.3f} ({verdict} the goal >= {GOAL}); "
        f"pad-to-longest {longest:.3f}, fixed padding {fixed:.3f} (worst batch size)"
    )
    common.write_result(
        args.out,
        {
            "benchmark": "useful_tokens",
            "env": common.environment("cpu"),
            "rows": len(lengths),
            "lengths": {
                "min": min(lengths),
                "max": max(lengths),
                "mean": sum(lengths) / len(lengths),
            },
            "max_seq_length": args.seq,
            "figures": figures,
            "ours_ratio": ours,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
