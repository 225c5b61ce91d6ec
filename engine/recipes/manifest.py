"""Every dataset a data step produces is an artifact folder, found again by its cache key.

`<root>/<id>/` (root: the library, `<data_dir>/library`, unless the caller names another) holds
`data.jsonl` (the rows), `dropped.jsonl` (each row a step dropped, with the rule that dropped
it: the preview's "what was dropped and why") and `manifest.json`, written last, so a folder
without one is unfinished. The manifest uses the library's keys (`id`, `kind` "dataset", `path`,
`bytes`, `sha256` of the output, `created_at`, `run_id` null) and the recipe's own:

- `step` (generate, filter, dedup, mix, split), `part` (train/eval of a split, else null),
  `spec` (the step's spec part as JSON), `inputs` (each with `path`, `sha256`, `rows`, and the
  `artifact` id when it is another step's output), `teacher` (`path`, `sha256`) and `prompts`
  (generate), `judge` (filter), `seed`;
- `counts`: `in`, `kept` and `dropped` (rule → rows; in = kept + the dropped ones), `examples`
  (rule → a few of the rows it dropped), `report` (what a step found without dropping it, such as
  contamination when only reported), `warnings`;
- `steps`: this step and every step before it, oldest first (step, id, spec, counts, teacher,
  judge, seed), so the last dataset of a recipe says how it was made; `rows`, `format`, `name`;
- `cache_key`: sha256 of the step, its spec, the inputs' sha256, the teacher's sha256 and
  RECIPE_VERSION (engine.recipes.specs). The folder is named after it, so running a step again
  on the same inputs finds the finished artifact (`find_cached`) instead of making it again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import paths
from engine.data.formats import detect_format
from engine.data.method_formats import row_format
from engine.errors import DataError
from engine.recipes.rows import write_rows
from engine.recipes.specs import RECIPE_VERSION

FORMAT_VERSION = 1
DATA_FILE = "data.jsonl"
DROPPED_FILE = "dropped.jsonl"
MANIFEST_FILE = "manifest.json"
KIND = "dataset"
EXAMPLES_PER_RULE = 3
_HASH_CACHE = "recipe-sha256.json"  # in <data_dir>/cache: (path, size, mtime) -> sha256


@dataclass
class Artifact:
    """A finished dataset: its folder, its manifest, and whether it came from the cache."""

    folder: Path
    manifest: dict
    cached: bool = False

    @property
    def id(self) -> str:
        """The artifact's id (its folder's name)."""
        return str(self.manifest["id"])

    @property
    def data_path(self) -> Path:
        """The rows: `<folder>/data.jsonl`."""
        return self.folder / DATA_FILE

    @property
    def rows(self) -> int:
        """How many rows the dataset holds."""
        return int(self.manifest["rows"])

    @property
    def counts(self) -> dict:
        """`in`, `kept` and `dropped` (rule → rows) of the step that made it."""
        return self.manifest["counts"]


def default_root() -> Path:
    """Where artifacts go unless the caller says: the library, `<data_dir>/library`."""
    return paths.library_dir()


def artifact_id(step: str, key: str, part: str | None = None) -> str:
    """The folder name of a step's artifact: `dataset-<step>[-<part>]-<key prefix>`."""
    return "-".join(p for p in (KIND, step, part, key[:16]) if p)


def file_sha256(path: Path | str) -> str:
    """A file's sha256, remembered by (path, size, modification time) in the data directory's
    cache, so a multi-gigabyte teacher is read once, not at every look-up."""
    path = Path(path).expanduser().resolve()
    stat = path.stat()
    memo_path = paths.data_dir() / "cache" / _HASH_CACHE
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    entry = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    if entry in memo:
        return memo[entry]
    digest = paths.sha256_file(path)
    if stat.st_size >= 1 << 26:  # only big files are worth remembering
        memo[entry] = digest
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        _write_json(memo_path, memo)
    return digest


def input_record(path: Path | str, rows: int | None = None) -> dict:
    """What a manifest says of one input file: path, sha256, rows, and the artifact it is the
    output of (with that artifact's steps) when it is one."""
    path = Path(path).expanduser().resolve()
    record: dict[str, Any] = {"path": str(path), "sha256": file_sha256(path), "rows": rows}
    upstream = read_manifest(path.parent) if path.name == DATA_FILE else None
    if upstream is not None and upstream.get("sha256") == record["sha256"]:
        record["artifact"] = upstream.get("id")
        record["steps"] = upstream.get("steps") or []
    return record


def cache_key(step: str, spec: Any, inputs: list[dict], model: dict | None = None) -> str:
    """The sha256 of what a step's output depends on: the step, its spec, its inputs' contents
    (in order) and the model's (a Generate node's teacher, a Filter node's judge)."""
    payload = {
        "format_version": FORMAT_VERSION,
        "recipe_version": RECIPE_VERSION,
        "step": step,
        "spec": spec_dict(spec),
        "inputs": [i["sha256"] for i in inputs],
        "model": model["sha256"] if model else None,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def spec_dict(spec: Any) -> dict:
    """A spec part as JSON-ready data."""
    return dataclasses.asdict(spec) if dataclasses.is_dataclass(spec) else dict(spec)


def read_manifest(folder: Path | str) -> dict | None:
    """The manifest in `folder`, or None when there is none (or it cannot be read)."""
    try:
        data = json.loads((Path(folder) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def find_cached(root: Path | str, artifact: str, key: str) -> Artifact | None:
    """The finished artifact `artifact` in `root` when its manifest carries `key` and its rows
    are the ones the manifest describes (same sha256), else None."""
    folder = Path(root) / artifact
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("cache_key") != key:
        return None
    data = folder / DATA_FILE
    try:
        if data.stat().st_size != manifest.get("bytes"):
            return None
    except OSError:
        return None
    if paths.sha256_file(data) != manifest.get("sha256"):
        return None
    return Artifact(folder, manifest, cached=True)


def new_counts(rows_in: int = 0) -> dict:
    """Counts of a step before it runs: `in`, `kept`, `dropped` (rule → rows)."""
    return {"in": rows_in, "kept": 0, "dropped": {}}


def note_drop(counts: dict, examples: dict, rule: str, example: dict) -> None:
    """Count one dropped row under `rule`, keeping the first few as examples."""
    counts["dropped"][rule] = counts["dropped"].get(rule, 0) + 1
    kept = examples.setdefault(rule, [])
    if len(kept) < EXAMPLES_PER_RULE:
        kept.append(example)


def write_artifact(
    root: Path | str,
    artifact: str,
    rows: list[dict],
    dropped: list[dict],
    manifest: dict,
) -> Artifact:
    """Write a whole artifact: the rows and dropped rows into a temporary folder moved into
    place (replacing an older folder of the same id), then the manifest; returns it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{artifact}-", dir=root))
    target = root / artifact
    try:
        write_rows(staging / DATA_FILE, rows)
        write_rows(staging / DROPPED_FILE, dropped)
        if target.exists():
            shutil.rmtree(target)
        staging.replace(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Artifact(target, finish_manifest(target, artifact, manifest))


def finish_manifest(folder: Path, artifact: str, manifest: dict) -> dict:
    """Complete `manifest` (id, output sha256 and size, rows, format, this step in `steps`,
    created_at) for the rows in `folder/data.jsonl` and write it, atomically, as the folder's
    last file; returns it."""
    data = folder / DATA_FILE
    with open(data, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    rows, first = len(lines), json.loads(lines[0]) if lines else None
    out = {
        "id": artifact,
        "kind": KIND,
        "path": DATA_FILE,
        "bytes": data.stat().st_size,
        "sha256": paths.sha256_file(data),
        "created_at": time.time(),
        "run_id": None,
        "base_model": None,
        "quant": None,
        "format_version": FORMAT_VERSION,
        "part": None,
        "teacher": None,
        "judge": None,
        "prompts": None,
        "seed": None,
        "report": {},
        "warnings": [],
        **manifest,
        "rows": rows,
        "format": _format(first) if first else None,
    }
    out["name"] = out.get("name") or f"{out['step']} ({rows:,} rows)"
    step = {
        k: out.get(k) for k in ("step", "id", "part", "spec", "counts", "teacher", "judge", "seed")
    }
    earlier = [s for i in out.get("inputs", []) for s in i.get("steps") or []]
    out["steps"] = _unique(earlier) + [step]
    _write_json(folder / MANIFEST_FILE, out)
    return out


def _format(row: dict) -> str | None:
    method = row_format(row)
    if method is not None:
        return method
    try:
        return detect_format([row])
    except DataError:
        return None


def _unique(steps: list[dict]) -> list[dict]:
    seen, out = set(), []
    for step in steps:
        if step.get("id") not in seen:
            seen.add(step.get("id"))
            out.append(step)
    return out


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
