"""The Filter step: drop rows by length, by regular expression, or by a scorer's score.

`filter_rows(spec, source, root, progress=, cancel=, threads=)` reads the source dataset and
keeps the rows every rule lets through; a row dropped is counted once, under the first rule that
drops it, in this order: shorter than min_chars, longer than max_chars, not matching keep_regex,
matching drop_regex (all on the row's text: every turn), then the scorer's score below min_score
or no score at all (the judge gave no grade). The scorer is one of engine.eval's (the judge model
of engine.eval.judge, or a text scorer of engine.eval.metrics) and grades the row's answer
against its reference (engine.recipes.rows.reference_text: its reference or answer column, else
the passage or seed it was generated from). Only rows the cheap rules kept are scored.

The result is an artifact (engine.recipes.manifest) whose counts add up (in = kept + dropped),
with examples of each rule's drops and the scores' summary in its report; the scorer's files
and the judge model are part of its cache key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

from engine.errors import RunCancelled
from engine.recipes import manifest as mf
from engine.recipes.rows import answer_text, prompt_turns, read_table, reference_text, row_text
from engine.recipes.specs import FilterSpec

STEP = "filter"


def filter_rows(
    spec: FilterSpec,
    source: Path | str,
    root: Path | str | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    threads: int | None = None,
) -> mf.Artifact:
    """The filtered dataset (see the module docstring); the cached artifact when the same spec
    ran on the same source (and judge). `progress(rows done, rows)` follows the scoring;
    `cancel` is asked between rows (RunCancelled: nothing is written)."""
    spec.validate(STEP)
    rows = read_table(source)
    inputs = [mf.input_record(source, len(rows))] + [
        mf.input_record(f) for f in _scorer_files(spec)
    ]
    judge = _judge_record(spec)
    key = mf.cache_key(STEP, spec, inputs, judge)
    art_id = mf.artifact_id(STEP, key)
    root = Path(root) if root is not None else mf.default_root()
    cached = mf.find_cached(root, art_id, key)
    if cached is not None:
        return cached
    counts, examples, rules = mf.new_counts(len(rows)), {}, {}
    kept_rows, dropped = [], []

    def drop(index: int, row: dict, rule: str, sentence: str, **detail) -> None:
        rules[rule] = sentence
        mf.note_drop(
            counts, examples, rule, {"line": index + 1, "text": row_text(row)[:300], **detail}
        )
        dropped.append({"line": index + 1, "rule": rule, "row": row, **detail})

    survivors = []
    for index, row in enumerate(rows):
        found = _cheap_rule(spec, row_text(row)) or _language_rule(spec, answer_text(row))
        if found is None:
            survivors.append((index, row))
        else:
            drop(index, row, *found)
    scores: list[float] = []
    if spec.scorer.strip() and survivors:
        scorer, close = _scorer(spec, threads)
        name = spec.scorer.strip()
        try:
            for done, (index, row) in enumerate(survivors, 1):
                if cancel is not None and cancel():
                    raise RunCancelled()
                row_for_scorer = {**row, "prompt_messages": prompt_turns(row)}
                score = scorer.score(answer_text(row), reference_text(row), row_for_scorer)
                if progress is not None:
                    progress(done, len(survivors))
                if math.isnan(score):
                    drop(index, row, "no_score", f"the {name} scorer gave no score")
                    continue
                scores.append(score)
                if score < spec.min_score:
                    drop(
                        index,
                        row,
                        "low_score",
                        f"{name} score below {spec.min_score:g}",
                        score=score,
                    )
                    continue
                kept_rows.append(row)
        finally:
            close()
    else:
        kept_rows = [row for _, row in survivors]
    counts["kept"] = len(kept_rows)
    report = {}
    if scores:
        report["scores"] = {
            "scorer": spec.scorer.strip(),
            "rows": len(scores),
            "mean": sum(scores) / len(scores),
            "min": min(scores),
            "max": max(scores),
        }
    return mf.write_artifact(
        root,
        art_id,
        kept_rows,
        dropped,
        {
            "step": STEP,
            "spec": mf.spec_dict(spec),
            "inputs": inputs,
            "judge": judge,
            "counts": counts,
            "rules": rules,
            "examples": examples,
            "report": report,
            "cache_key": key,
            "name": f"filter ({len(kept_rows):,} of {len(rows):,} rows)",
        },
    )


def _cheap_rule(spec: FilterSpec, text: str) -> tuple[str, str] | None:
    """(rule, sentence) of the first length or pattern rule that drops `text`, else None."""
    if spec.min_chars and len(text) < spec.min_chars:
        return "too_short", f"shorter than {spec.min_chars} characters"
    if spec.max_chars and len(text) > spec.max_chars:
        return "too_long", f"longer than {spec.max_chars} characters"
    if spec.keep_regex and not re.search(spec.keep_regex, text):
        return "no_keep_match", f"does not match {spec.keep_regex!r}"
    if spec.drop_regex and re.search(spec.drop_regex, text):
        return "drop_match", f"matches {spec.drop_regex!r}"
    return None


def _language_rule(spec: FilterSpec, answer: str) -> tuple[str, str] | None:
    """("language", sentence) when the answer's language is not one the spec keeps."""
    codes = spec.language_codes()
    if not codes:
        return None
    from langdetect import DetectorFactory, LangDetectException, detect

    DetectorFactory.seed = 0  # langdetect samples: a fixed seed gives the same answer each time
    try:
        found = detect(answer)
    except LangDetectException:  # no letters to tell a language by
        return "language", "no language could be detected"
    if found in codes or found.split("-")[0] in codes:
        return None
    return "language", f"not in {', '.join(codes)} (detected {found})"


def _scorer(spec: FilterSpec, threads: int | None):
    """(scorer, close) for the spec's scorer: the judge model loaded, or a text scorer."""
    name = spec.scorer.strip()
    if name == "judge":
        from engine.eval.judge import Judge, JudgeScorer

        judge = Judge(spec.judge.strip(), n_threads=threads)
        return JudgeScorer(judge), judge.close
    from engine.eval.metrics import make_scorer

    return make_scorer(name), lambda: None


def _scorer_files(spec: FilterSpec) -> list[str]:
    """The files a scorer reads (python:FILE.py, json:SCHEMA.json): their contents count."""
    name = spec.scorer.strip()
    for prefix in ("python:", "json:"):
        if name.startswith(prefix):
            return [name[len(prefix) :].strip()]
    return []


def _judge_record(spec: FilterSpec) -> dict | None:
    """The judge model's path and sha256 when the scorer is the judge."""
    if spec.scorer.strip() != "judge":
        return None
    from engine.eval.judge import check_judge

    path = check_judge(spec.judge.strip())
    return {"path": str(path), "sha256": mf.file_sha256(path)}
