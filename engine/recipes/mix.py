"""The Mix and Split steps.

`mix(spec, sources, root)`: rows of several datasets in one. With row counts, that many rows of
each input; with ratios, each input's share of `total_rows` (or of the largest mix the inputs give
without repeating a row), its rows counted out by largest remainder so they add up to the total;
with neither, every row of every input. Which rows of an input are taken, and the order of the
mix, are shuffles of numpy's generator seeded with the spec's seed. An input with fewer rows than
it is asked for is a DataError naming it and the numbers.

`split(spec, source, root)`: a train and an eval dataset (two artifacts) by HF `datasets`'
`train_test_split` (seeded; stratified by a column's values when the spec names one, so each
value keeps its share in both parts). A split that cannot be made (more eval rows than rows, a
column the rows lack, a value with a single row) is one DataError naming the file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from engine.errors import DataError
from engine.recipes import manifest as mf
from engine.recipes.rows import read_table
from engine.recipes.specs import MixSpec, SplitSpec

PARTS = ("train", "eval")


def mix(spec: MixSpec, sources: list[Path | str], root: Path | str | None = None) -> mf.Artifact:
    """The mixed dataset (see the module docstring); the cached artifact when the same spec ran
    on the same inputs. SpecError when the ratios or counts do not give one number per input."""
    spec.validate("mix")
    spec.check_inputs(len(sources))
    tables = [read_table(path) for path in sources]
    inputs = [mf.input_record(p, len(t)) for p, t in zip(sources, tables, strict=True)]
    key = mf.cache_key("mix", spec, inputs)
    art_id = mf.artifact_id("mix", key)
    root = Path(root) if root is not None else mf.default_root()
    cached = mf.find_cached(root, art_id, key)
    if cached is not None:
        return cached
    take = rows_to_take(spec, [len(t) for t in tables], [str(p) for p in sources])
    rng = np.random.default_rng(spec.seed)
    picked = []
    for table, count in zip(tables, take, strict=True):
        picked += [table[int(i)] for i in rng.permutation(len(table))[:count]]
    rows = [picked[int(i)] for i in rng.permutation(len(picked))]
    total_in = sum(len(t) for t in tables)
    counts = {"in": total_in, "kept": len(rows), "dropped": {}}
    if total_in > len(rows):
        counts["dropped"]["not_taken"] = total_in - len(rows)
    report = {
        "taken": [
            {"path": i["path"], "rows": i["rows"], "taken": n}
            for i, n in zip(inputs, take, strict=True)
        ]
    }
    return mf.write_artifact(
        root,
        art_id,
        rows,
        [],
        {
            "step": "mix",
            "spec": mf.spec_dict(spec),
            "inputs": inputs,
            "seed": spec.seed,
            "counts": counts,
            "rules": {"not_taken": "not taken into the mix"} if counts["dropped"] else {},
            "examples": {},
            "report": report,
            "cache_key": key,
            "name": f"mix of {len(sources)} ({len(rows):,} rows)",
        },
    )


def rows_to_take(spec: MixSpec, sizes: list[int], names: list[str]) -> list[int]:
    """How many rows of each input the mix takes; DataError naming an input that has too few."""
    counts, ratios = spec.amounts("counts"), spec.amounts("ratios")
    if counts:
        take = [int(c) for c in counts]
        for name, size, want in zip(names, sizes, take, strict=True):
            if want > size:
                raise DataError(
                    f"the mix asks for {want:,} rows of this file, which holds {size:,}",
                    name,
                    hint="Lower its row count in the Mix node, or give it more rows.",
                )
        return take
    if not ratios:
        return list(sizes)
    total = spec.total_rows or min(
        math.floor(size / r + 1e-9) for size, r in zip(sizes, ratios, strict=True)
    )
    take = largest_remainder(total, ratios)
    for name, size, want, ratio in zip(names, sizes, take, ratios, strict=True):
        if want > size:
            raise DataError(
                f"a mix of {total:,} rows at ratio {ratio:g} needs {want:,} rows of this file, "
                f"which holds {size:,}",
                name,
                hint="Lower Total rows (0 takes the largest mix the inputs give), or give it "
                "more rows.",
            )
    return take


def largest_remainder(total: int, shares: list[float]) -> list[int]:
    """Whole numbers in proportion to `shares` (adding up to 1) that add up to `total`."""
    exact = [total * s for s in shares]
    out = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(shares)), key=lambda i: (out[i] - exact[i], i))
    for i in by_remainder[: total - sum(out)]:
        out[i] += 1
    return out


def split(
    spec: SplitSpec, source: Path | str, root: Path | str | None = None
) -> tuple[mf.Artifact, mf.Artifact]:
    """(train, eval) artifacts of the source (see the module docstring); the cached ones when
    the same spec ran on the same source."""
    spec.validate("split")
    rows = read_table(source)
    inputs = [mf.input_record(source, len(rows))]
    key = mf.cache_key("split", spec, inputs)
    ids = [mf.artifact_id("split", key, part) for part in PARTS]
    root = Path(root) if root is not None else mf.default_root()
    cached = [mf.find_cached(root, art_id, key) for art_id in ids]
    if all(c is not None for c in cached):
        return cached[0], cached[1]  # type: ignore[return-value]
    train_index, eval_index = split_indices(spec, rows, str(source))
    out = []
    for part, art_id, index, other in zip(
        PARTS, ids, (train_index, eval_index), (eval_index, train_index), strict=True
    ):
        counts = {
            "in": len(rows),
            "kept": len(index),
            "dropped": {f"in_{_other(part)}": len(other)},
        }
        out.append(
            mf.write_artifact(
                root,
                art_id,
                [rows[i] for i in index],
                [],
                {
                    "step": "split",
                    "part": part,
                    "spec": mf.spec_dict(spec),
                    "inputs": inputs,
                    "seed": spec.seed,
                    "counts": counts,
                    "rules": {f"in_{_other(part)}": f"held in the {_other(part)} part"},
                    "examples": {},
                    "report": _shares(spec, rows, index),
                    "cache_key": key,
                    "name": f"{part} split ({len(index):,} of {len(rows):,} rows)",
                },
            )
        )
    return out[0], out[1]


def split_indices(spec: SplitSpec, rows: list[dict], where: str) -> tuple[list[int], list[int]]:
    """(train, eval) row numbers by datasets' train_test_split; DataError naming `where`."""
    from datasets import Dataset

    n = len(rows)
    size: float | int = spec.eval_rows or spec.eval_fraction
    if spec.eval_rows and spec.eval_rows >= n:
        raise DataError(
            f"cannot hold out {spec.eval_rows:,} eval rows of {n:,}: none would be left to train on",
            where,
        )
    columns = {"i": list(range(n))}
    column = spec.stratify.strip()
    if column:
        lacking = [i for i, row in enumerate(rows) if row.get(column) is None]
        if lacking:
            have = ", ".join(sorted(rows[lacking[0]])) or "(none)"
            raise DataError(
                f"row {lacking[0] + 1} has no {column!r} value to stratify by (its columns: {have})",
                where,
                hint="Name a column every row has in the Split node's stratify, or empty it.",
            )
        columns["value"] = [_label(row[column]) for row in rows]
    table = Dataset.from_dict(columns)
    try:
        if column:
            table = table.class_encode_column("value")
        parts = table.train_test_split(
            test_size=size, seed=spec.seed, stratify_by_column="value" if column else None
        )
    except ValueError as err:
        hint = "Every value of the stratify column needs at least two rows." if column else None
        raise DataError(f"cannot split its {n:,} rows: {err}", where, hint=hint) from None
    return list(parts["train"]["i"]), list(parts["test"]["i"])


def _label(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _other(part: str) -> str:
    return "eval" if part == "train" else "train"


def _shares(spec: SplitSpec, rows: list[dict], index: list[int]) -> dict:
    """The part's rows per value of the stratify column (empty without one)."""
    column = spec.stratify.strip()
    if not column:
        return {}
    shares: dict[str, int] = {}
    for i in index:
        label = _label(rows[i][column])
        shares[label] = shares.get(label, 0) + 1
    return {"stratify": {"column": column, "rows": dict(sorted(shares.items()))}}
