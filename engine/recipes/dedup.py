"""The Deduplicate step: exact and near duplicates within a dataset, and contamination.

Texts are compared after normalising (Unicode NFKC, case folded, runs of whitespace made one
space): an exact duplicate has the same sha256 of its normalised text as an earlier row; a near
duplicate has word shingles (`ngram` words) whose Jaccard similarity with an earlier row's is at
least the threshold. Near duplicates are found with datasketch's MinHash LSH: the index proposes
candidates at a threshold 0.1 below the one asked, with its bands chosen to miss few pairs
(datasketch's weights: false negatives 0.95, false positives 0.05; a pair right at the threshold
is missed at most about 1 time in 100 with 128 permutations, far less above it), and each
candidate's Jaccard similarity is then computed exactly from the two shingle sets, so a row is
never removed below the threshold. The first of a group of duplicates is kept.

With an `against` dataset (e.g. the eval set), a row exactly the same as, or near, one of its
rows is contamination: reported in the manifest by count and examples (and dropped unless
`drop_against` is off), checked before the duplicates within the dataset.

`deduplicate(spec, source, root, progress=, cancel=)` returns the artifact
(engine.recipes.manifest) with counts by rule (`against`, `exact`, `near`) adding up, examples
of each (the row and the earlier row or against row it matched, with the similarity), and
`report.contamination`.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path

from engine.errors import RunCancelled
from engine.recipes import manifest as mf
from engine.recipes.rows import answer_text, prompt_text, read_table, row_text
from engine.recipes.specs import DedupSpec

STEP = "dedup"
LSH_MARGIN = 0.1  # the index proposes candidates this far below the threshold asked
LSH_WEIGHTS = (0.05, 0.95)  # datasketch's (false positive, false negative) weights: find pairs
RULES = {
    "against": "the same as or near a row of the Check against dataset",
    "exact": "the same text as an earlier row",
    "near": "near an earlier row",
}
_WORD = re.compile(r"\w+")


def normalise(text: str) -> str:
    """Text as compared: Unicode NFKC, case folded, runs of whitespace made one space."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def text_hash(text: str) -> str:
    """The sha256 of the normalised text (the exact-duplicate key)."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()


def shingles(text: str, ngram: int) -> set[str]:
    """The word n-grams of the normalised text (all its words as one when it has fewer)."""
    words = _WORD.findall(normalise(text))
    if not words:
        return set()
    return {" ".join(words[i : i + ngram]) for i in range(max(1, len(words) - ngram + 1))}


def jaccard(a: set[str], b: set[str]) -> float:
    """|a ∩ b| / |a ∪ b| (0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


class NearIndex:
    """Shingle sets in a MinHash LSH index: `match` finds the most similar one at or above the
    threshold (exact Jaccard of the candidates the index proposes)."""

    def __init__(self, threshold: float, num_perm: int):
        from datasketch import MinHashLSH

        self.threshold, self.num_perm = threshold, num_perm
        lsh_threshold = min(0.9, max(0.05, threshold - LSH_MARGIN))
        self.lsh = MinHashLSH(threshold=lsh_threshold, num_perm=num_perm, weights=LSH_WEIGHTS)
        self.sets: dict[int, set[str]] = {}

    def minhash(self, items: set[str]):
        """The MinHash of a shingle set (datasketch, fixed seed)."""
        from datasketch import MinHash

        found = MinHash(num_perm=self.num_perm, seed=1)
        found.update_batch([s.encode("utf-8") for s in sorted(items)])
        return found

    def match(self, items: set[str], minhash=None) -> tuple[int, float] | None:
        """(key, Jaccard similarity) of the most similar stored set at or above the threshold."""
        if not items or not self.sets:
            return None
        best = None
        for key in self.lsh.query(self.minhash(items) if minhash is None else minhash):
            similarity = jaccard(items, self.sets[key])
            if similarity >= self.threshold and (best is None or similarity > best[1]):
                best = (key, similarity)
        return best

    def add(self, key: int, items: set[str], minhash=None) -> None:
        """Store a shingle set under `key`."""
        if items:
            self.lsh.insert(key, self.minhash(items) if minhash is None else minhash)
            self.sets[key] = items


def deduplicate(
    spec: DedupSpec,
    source: Path | str,
    root: Path | str | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> mf.Artifact:
    """The deduplicated dataset (see the module docstring); the cached artifact when the same
    spec ran on the same source (and against dataset)."""
    spec.validate(STEP)
    rows = read_table(source)
    inputs = [mf.input_record(source, len(rows))]
    against_rows = read_table(spec.against) if spec.against.strip() else []
    if against_rows:
        inputs.append(mf.input_record(spec.against, len(against_rows)))
    key = mf.cache_key(STEP, spec, inputs)
    art_id = mf.artifact_id(STEP, key)
    root = Path(root) if root is not None else mf.default_root()
    cached = mf.find_cached(root, art_id, key)
    if cached is not None:
        return cached
    texts = [compared_text(row, spec.compare) for row in rows]
    against = _Against(spec, against_rows) if against_rows else None
    near = NearIndex(spec.near_threshold, spec.num_perm) if spec.near_threshold > 0 else None
    counts, examples = mf.new_counts(len(rows)), {}
    kept, dropped, seen = [], [], {}
    contaminated = []
    for index, (row, text) in enumerate(zip(rows, texts, strict=True)):
        if cancel is not None and cancel():
            raise RunCancelled()
        if progress is not None and index % 1000 == 0:
            progress(index, len(rows))
        digest = text_hash(text)
        items = shingles(text, spec.ngram) if near is not None or against is not None else set()
        minhash = near.minhash(items) if near is not None and items else None
        hit = against.match(digest, items) if against is not None else None
        if hit is not None:
            other, similarity = hit
            example = _example(
                index, text, "against_line", other + 1, against.texts[other], similarity
            )
            contaminated.append(example)
            if spec.drop_against:
                mf.note_drop(counts, examples, "against", example)
                dropped.append({"rule": "against", "row": row, **example})
                continue
        rule, match = None, None
        if spec.exact and digest in seen:
            rule, match = "exact", (seen[digest], 1.0)
        elif near is not None:
            found = near.match(items, minhash)
            rule, match = ("near", found) if found else (None, None)
        if rule is not None and match is not None:
            example = _example(index, text, "of_line", match[0] + 1, texts[match[0]], match[1])
            mf.note_drop(counts, examples, rule, example)
            dropped.append({"rule": rule, "row": row, **example})
            continue
        seen.setdefault(digest, index)
        if near is not None:
            near.add(index, items, minhash)
        kept.append(row)
    counts["kept"] = len(kept)
    report = {}
    if against is not None:
        report["contamination"] = {
            "against": str(Path(spec.against).expanduser().resolve()),
            "rows": len(contaminated),
            "dropped": spec.drop_against,
            "examples": contaminated[: mf.EXAMPLES_PER_RULE],
        }
    warnings = []
    if contaminated and not spec.drop_against:
        warnings.append(f"{len(contaminated)} rows are in or near the Check against dataset")
    return mf.write_artifact(
        root,
        art_id,
        kept,
        dropped,
        {
            "step": STEP,
            "spec": mf.spec_dict(spec),
            "inputs": inputs,
            "counts": counts,
            "rules": {k: RULES[k] for k in counts["dropped"]},
            "examples": examples,
            "report": report,
            "warnings": warnings,
            "cache_key": key,
            "name": f"deduplicated ({len(kept):,} of {len(rows):,} rows)",
        },
    )


def compared_text(row: dict, compare: str) -> str:
    """The text of a row that is compared: all of it, its prompt or its answer."""
    if compare == "prompt":
        return prompt_text(row)
    if compare == "answer":
        return answer_text(row)
    return row_text(row)


class _Against:
    """The rows of the Check against dataset, by exact key and in a near-duplicate index."""

    def __init__(self, spec: DedupSpec, rows: list[dict]):
        self.texts = [compared_text(row, spec.compare) for row in rows]
        self.keys: dict[str, int] = {}
        for index, text in enumerate(self.texts):
            self.keys.setdefault(text_hash(text), index)
        self.near = None
        self.ngram = spec.ngram
        if spec.near_threshold > 0:
            self.near = NearIndex(spec.near_threshold, spec.num_perm)
            for index, text in enumerate(self.texts):
                self.near.add(index, shingles(text, spec.ngram))

    def match(self, digest: str, items: set[str]) -> tuple[int, float] | None:
        """(against row, similarity) the text matches, exactly or near, else None."""
        if digest in self.keys:
            return self.keys[digest], 1.0
        return self.near.match(items) if self.near is not None else None


def _example(
    index: int, text: str, other_key: str, other_line: int, other: str, similarity: float
) -> dict:
    return {
        "line": index + 1,
        "text": text[:300],
        other_key: other_line,
        "matched": other[:300],
        "similarity": round(similarity, 4),
    }
