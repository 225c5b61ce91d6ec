"""A Dataset node's preview as JSON: stats over the file and its first rows as the model sees them.

`python -m engine.plan.preview '<request json>'` prints one JSON object; the app runs it as a
helper process so the UI never imports transformers. The request holds `dataset` (DatasetSpec
fields), `base_model` (BaseModelSpec fields), and optionally `max_seq_length` (0: 2048), `rows`
(rows rendered, default 3) and `stats_rows` (rows tokenized for the length statistics, default
2000). The answer always has the keys of `empty_report`; `error` is null or
{"message", "hint"} naming the file or model to fix.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

from engine.errors import TunegraphError
from engine.spec import BaseModelSpec, DatasetSpec

DEFAULT_SEQ = 2048
FEW_ROWS = 1000
HISTOGRAM_BINS = 12


def empty_report() -> dict:
    """The answer's shape with every key present."""
    return {
        "rows": None,
        "format": None,
        "template_origin": None,
        "tokens": None,
        "truncated_rows": None,
        "stats_rows": None,
        "max_seq_length": None,
        "preview": [],
        "warnings": [],
        "error": None,
    }


def report(
    ds: DatasetSpec,
    base: BaseModelSpec,
    max_seq_length: int = 0,
    rows: int = 3,
    stats_rows: int = 2000,
) -> dict:
    """Stats and rendered rows of one dataset through `base`'s tokenizer and chat template."""
    from engine.data.encode import Encoder
    from engine.data.formats import load_dataset_rows, normalize
    from engine.data.prepare import preview_rows
    from engine.data.templates import prepare_tokenizer
    from engine.models.sources import load_tokenizer, resolve_source

    out = empty_report()
    seq = max_seq_length or DEFAULT_SEQ
    out["max_seq_length"] = seq
    all_rows, fmt = load_dataset_rows(ds)
    out["rows"], out["format"] = len(all_rows), fmt
    tokenizer = load_tokenizer(base, resolve_source(base))
    setup = prepare_tokenizer(tokenizer)
    out["template_origin"] = setup.origin
    encoder = Encoder(tokenizer, setup.template, seq)
    lengths, truncated, trained = [], 0, 0
    for row in all_rows[:stats_rows]:
        try:
            enc = encoder.encode(normalize(row, fmt))
        except TunegraphError:
            continue
        lengths.append(len(enc.input_ids))
        truncated += enc.truncated
        trained += enc.trained
    out["stats_rows"] = len(lengths)
    out["truncated_rows"] = truncated
    if lengths:
        out["tokens"] = {
            "min": min(lengths),
            "mean": round(sum(lengths) / len(lengths), 1),
            "max": max(lengths),
            "trained_mean": round(trained / len(lengths), 1),
            "histogram": histogram(lengths, seq),
        }
    out["preview"] = [
        {
            "segments": [[t, bool(m)] for t, m in r.segments],
            "tokens": r.tokens,
            "truncated": r.truncated,
        }
        for r in preview_rows(ds, tokenizer, n=rows, max_seq_length=seq)
    ]
    if len(all_rows) < FEW_ROWS:
        out["warnings"].append(
            f"only {len(all_rows)} rows: fewer than 1,000 examples usually "
            "teach a style more than new knowledge"
        )
    if truncated:
        out["warnings"].append(
            f"{truncated} of {len(lengths)} rows are longer than {seq} tokens and will be truncated"
        )
    return out


def histogram(lengths: list[int], limit: int, bins: int = HISTOGRAM_BINS) -> list[list[int]]:
    """[[bin start, count], …] of token lengths over 0..max(lengths, limit)."""
    top = max(max(lengths), 1)
    width = max(1, -(-top // bins))
    counts = [0] * bins
    for n in lengths:
        counts[min(bins - 1, n // width)] += 1
    return [[i * width, c] for i, c in enumerate(counts)]


def run(request: dict) -> dict:
    """`report` from a request dict; errors become the answer's `error`."""
    try:
        ds = DatasetSpec(**_known(DatasetSpec, request.get("dataset") or {}))
        base = BaseModelSpec(**_known(BaseModelSpec, request.get("base_model") or {}))
        return report(
            ds,
            base,
            int(request.get("max_seq_length") or 0),
            int(request.get("rows") or 3),
            int(request.get("stats_rows") or 2000),
        )
    except TunegraphError as err:
        out = empty_report()
        out["error"] = {
            "message": err.message if hasattr(err, "message") else str(err),
            "hint": getattr(err, "hint", None),
        }
        return out
    except (OSError, ValueError, TypeError) as err:
        out = empty_report()
        out["error"] = {"message": str(err), "hint": None}
        return out


def _known(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in values.items() if k in names}


def main(argv: list[str] | None = None) -> int:
    """`python -m engine.plan.preview REQUEST_JSON`: print the data preview report as JSON."""
    argv = sys.argv[1:] if argv is None else argv
    print(json.dumps(run(json.loads(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
