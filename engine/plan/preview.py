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
from pathlib import Path
from typing import Any

from engine.errors import DataError, TunegraphError
from engine.spec import BaseModelSpec, DatasetSpec

DEFAULT_SEQ = 2048
FEW_ROWS = 1000
HISTOGRAM_BINS = 12
# a method format's rows are converted as this method's (its pairs train dpo, orpo and simpo alike)
_METHOD_OF_FORMAT = {"preference": "dpo", "kto": "kto"}


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
    """Stats and rendered rows of one dataset through `base`'s tokenizer and chat template.

    Preference pairs and KTO rows (engine.data.method_formats.row_format) are split as their
    trainer splits them (engine.data.method_preview): the prompt once, each answer with the
    tokens the loss is computed on; any other file as SFT examples, trained on the answers."""
    from engine.data.formats import check_rows, detect_format, read_rows
    from engine.data.method_formats import row_format
    from engine.data.templates import prepare_tokenizer
    from engine.models.sources import load_tokenizer, resolve_source

    out = empty_report()
    seq = max_seq_length or DEFAULT_SEQ
    out["max_seq_length"] = seq
    all_rows = read_rows(ds)
    method_format = row_format(all_rows[0]) if ds.format in ("", "auto") else None
    if method_format is None:
        path = Path(ds.path).expanduser()
        fmt = ds.format if ds.format not in ("", "auto") else detect_format(all_rows, path)
        check_rows(all_rows, fmt, path)
    out["rows"], out["format"] = len(all_rows), method_format or fmt
    tokenizer = load_tokenizer(base, resolve_source(base))
    setup = prepare_tokenizer(tokenizer)
    out["template_origin"] = setup.origin
    sample = all_rows[:stats_rows]
    if method_format is None:
        lengths, truncated, trained = _sft_stats(sample, fmt, tokenizer, setup.template, seq)
        out["preview"] = _sft_preview(ds, tokenizer, rows, seq)
    else:
        stats = _method_stats(sample, method_format, tokenizer, setup.template, seq)
        lengths, truncated, trained = stats
        out["preview"] = _method_preview(
            ds, all_rows[:rows], method_format, tokenizer, setup.template, seq
        )
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


def _sft_stats(rows: list[dict], fmt: str, tokenizer: Any, template: str, seq: int) -> tuple:
    """(token lengths, truncated rows, trained tokens) of SFT examples; rows that do not encode
    are left out (the preview rows name the first one)."""
    from engine.data.encode import Encoder
    from engine.data.formats import normalize

    encoder = Encoder(tokenizer, template, seq)
    lengths, truncated, trained = [], 0, 0
    for row in rows:
        try:
            enc = encoder.encode(normalize(row, fmt))
        except TunegraphError:
            continue
        lengths.append(len(enc.input_ids))
        truncated += enc.truncated
        trained += enc.trained
    return lengths, truncated, trained


def _sft_preview(ds: DatasetSpec, tokenizer: Any, rows: int, seq: int) -> list[dict]:
    from engine.data.prepare import preview_rows

    return [
        {
            "kind": "sft",
            "segments": [[t, bool(m)] for t, m in r.segments],
            "tokens": r.tokens,
            "truncated": r.truncated,
        }
        for r in preview_rows(ds, tokenizer, n=rows, max_seq_length=seq)
    ]


def _method_stats(rows: list[dict], fmt: str, tokenizer: Any, template: str, seq: int) -> tuple:
    """(token lengths, truncated rows, trained tokens) of preference pairs or KTO rows, as their
    trainer tokenizes them; rows that do not convert are left out."""
    from engine.data.method_formats import method_row
    from engine.data.method_preview import encode_method_row

    method = _METHOD_OF_FORMAT[fmt]
    lengths, truncated, trained = [], 0, 0
    for row in rows:
        try:
            enc = encode_method_row(method_row(row, method), tokenizer, template, seq)
        except TunegraphError:
            continue
        lengths.append(enc.tokens)
        truncated += enc.truncated
        trained += enc.trained
    return lengths, truncated, trained


def _method_preview(
    ds: DatasetSpec, rows: list[dict], fmt: str, tokenizer: Any, template: str, seq: int
) -> list[dict]:
    """The first rows split as their trainer splits them; DataError naming the file and line of
    a row that does not fit the format."""
    from engine.data.formats import row_error
    from engine.data.method_formats import method_row
    from engine.data.method_preview import encode_method_row

    method = _METHOD_OF_FORMAT[fmt]
    out = []
    for index, row in enumerate(rows):
        try:
            converted = method_row(row, method)
        except DataError as err:
            raise row_error(ds.path, index, err.message) from None
        out.append(encode_method_row(converted, tokenizer, template, seq).as_dict())
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
