"""A Dataset node's preview as JSON: stats over the file and its first rows as the model sees them.

`python -m engine.plan.preview '<request json>'` prints one JSON object; the app runs it as a
helper process so the UI never imports transformers. The request holds `dataset` (DatasetSpec
fields), `base_model` (BaseModelSpec fields), and optionally `max_seq_length` (0: 2048), `rows`
(rows rendered, default 3) and `stats_rows` (rows tokenized for the length statistics, default
2000). The answer always has the keys of `empty_report`; `error` is null or
{"message", "hint"} naming the file or model to fix.

`head` is the quick half, with no tokenizer and no torch: the first rows as they are in the file,
read with plain json/csv, so the app shows them at once while the helper loads the tokenizer.
Both read files with the same plain reader (engine.data.check.read_rows), never with the
`datasets` library, whose import alone takes seconds.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.errors import DataError, TunegraphError
from engine.spec import BaseModelSpec, DatasetSpec

DEFAULT_SEQ = 2048
FEW_ROWS = 1000
HISTOGRAM_BINS = 12
HEAD_ROWS = 20
# a .json array or a Parquet file is read whole even for its head: only small ones are read at once
HEAD_WHOLE_FILE_BYTES = 8 << 20
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
    from engine.data.formats import check_rows, detect_format
    from engine.data.method_formats import row_format
    from engine.data.templates import prepare_tokenizer
    from engine.models.sources import load_tokenizer, resolve_source

    out = empty_report()
    seq = max_seq_length or DEFAULT_SEQ
    out["max_seq_length"] = seq
    all_rows = read_all(ds)
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
        out["preview"] = _sft_preview(ds, all_rows[:rows], fmt, tokenizer, setup.template, seq)
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


def _sft_preview(
    ds: DatasetSpec, rows: list[dict], fmt: str, tokenizer: Any, template: str, seq: int
) -> list[dict]:
    """The first rows through the chat template as (text, trained) pieces; DataError naming the
    file and line of a row that does not encode."""
    from engine.data.encode import Encoder, segments
    from engine.data.formats import normalize, row_error

    encoder = Encoder(tokenizer, template, seq)
    out = []
    for index, row in enumerate(rows):
        try:
            enc = encoder.encode(normalize(row, fmt), with_offsets=True)
        except DataError as err:
            raise row_error(ds.path, index, err.message) from None
        out.append(
            {
                "kind": "sft",
                "segments": [[t, bool(m)] for t, m in segments(enc, tokenizer)],
                "tokens": len(enc.input_ids),
                "truncated": enc.truncated,
            }
        )
    return out


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


def read_all(ds: DatasetSpec) -> list[dict]:
    """Every row of `ds` (columns renamed, cut to `max_rows`) after the checks a reader needs
    (engine.data.formats.check_file: a file of a known type, not empty, UTF-8); DataError naming
    the file and line otherwise."""
    from engine.data.formats import check_file

    check_file(Path(ds.path).expanduser())
    rows = list(iter_rows(ds))
    if not rows:
        raise DataError("the file holds no rows", str(Path(ds.path).expanduser()))
    return rows


def iter_rows(ds: DatasetSpec) -> Iterator[dict]:
    """The rows of `ds` one by one, as engine.data.check reads them (plain json/csv, pyarrow for
    Parquet; columns renamed, cut to `max_rows`); DataError naming the file and line."""
    from engine.data.check import dataset_rows

    yield from dataset_rows(ds)


def head(ds: DatasetSpec, n: int = HEAD_ROWS) -> dict:
    """The first `n` rows of `ds` as they are in the file, with no tokenizer: `{"rows",
    "format" (detected from them, or None), "more" (the file goes on), "error"}`. Quick enough
    for the UI process: JSONL and CSV are read line by line, and a .json array or a Parquet
    file over HEAD_WHOLE_FILE_BYTES is left to the full report (`rows` empty, no error)."""
    from engine.data.formats import detect_format
    from engine.data.method_formats import row_format

    out: dict = {"rows": [], "format": None, "more": False, "error": None}
    path = Path(ds.path).expanduser()
    try:
        if path.suffix.lower() in (".json", ".parquet") and path.is_file():
            if path.stat().st_size > HEAD_WHOLE_FILE_BYTES:
                return out
        rows = list(itertools.islice(iter_rows(ds), n + 1))
    except DataError as err:
        out["error"] = {"message": err.message, "hint": err.hint}
        return out
    except OSError as err:
        out["error"] = {"message": f"{path}: {err.strerror or err}", "hint": None}
        return out
    out["rows"], out["more"] = rows[:n], len(rows) > n
    if rows and ds.format in ("", "auto"):
        try:
            out["format"] = row_format(rows[0]) or detect_format(rows[:n], path)
        except DataError:
            out["format"] = None  # the full report says what is wrong with the rows
    elif rows:
        out["format"] = ds.format
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
        ds = dataset_spec(request.get("dataset") or {})
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


def dataset_spec(values: dict[str, Any]) -> DatasetSpec:
    """A DatasetSpec from a request's `dataset` (a Dataset node's values; others are ignored)."""
    return DatasetSpec(**_known(DatasetSpec, values))


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
