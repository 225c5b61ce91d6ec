"""The Generate step: a local teacher writes rows from seeds and passages, one at a time.

`generate(spec, root, progress=, cancel=, threads=)` makes (or finds) the artifact folder
`<root>/dataset-generate-<key>/` of the spec (engine.recipes.manifest). Each reply the teacher
gives becomes a row of `data.jsonl` or, when it gives none (the rule in
engine.recipes.tasks.DROP_RULES), a line of `dropped.jsonl`, appended and flushed as it is made.
A row keeps where it came from in its `origin` side field: the attempt number, the seed and/or
passage and their labels (trainers read only their own columns).

Attempt `n` takes the source at position `n` of a shuffled order (numpy's generator seeded with
the spec's seed and the pass over the sources) and samples with a seed made of the spec's seed
and `n` (numpy's SeedSequence): so a run interrupted and started again with the same spec goes on
at the next attempt, keeping every row already written and writing none twice, and gives the
rows an uninterrupted run would have given. At most `ATTEMPTS_PER_ROW` × rows replies are asked
for; a teacher whose replies keep failing leaves fewer rows and a warning, or, with no row at
all, a DataError naming the teacher and counting the drops by rule.

`progress` is called after each attempt with a GenerateProgress; `cancel` is called before each
attempt and, when it returns True, the step stops with RunCancelled (what was written stays, and
the next run with the same spec resumes from it). The manifest is written when the rows wanted
are there (or the attempts are spent), which makes the folder a finished, cached artifact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data.jsonl import append_rows, drop_torn_tail
from engine.errors import DataError, RunCancelled
from engine.recipes import manifest as mf
from engine.recipes.passages import Source, document_sources, seed_sources
from engine.recipes.rows import ORIGIN, read_lines
from engine.recipes.specs import GenerateSpec
from engine.recipes.tasks import (
    CHOSEN_SYSTEM,
    DROP_RULES,
    REJECTED_SYSTEM,
    default_template,
    fill,
    make_row,
    request_messages,
)
from engine.recipes.teacher import CONTEXT_TOKENS, Teacher, teacher_file

STEP = "generate"
ATTEMPTS_PER_ROW = 3


@dataclass
class GenerateProgress:
    """Where a Generate step stands: rows wanted and kept, replies asked for (kept + dropped),
    and the teacher's speed in this run (tokens per second of generation)."""

    rows_wanted: int
    rows_kept: int
    rows_done: int
    rows_dropped: int
    tokens_per_s: float | None


def generate(
    spec: GenerateSpec,
    root: Path | str | None = None,
    *,
    progress: Callable[[GenerateProgress], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    threads: int | None = None,
) -> mf.Artifact:
    """Make the spec's dataset (see the module docstring) and return its artifact: the cached
    one when the same spec ran to the end on the same sources and teacher. SpecError for a bad
    spec, DataError naming a seeds file or document that cannot be read, ModelError for a
    teacher that cannot be loaded, RunCancelled when `cancel` said so."""
    spec.validate(STEP)
    template = (
        spec.template if spec.template.strip() else default_template(spec.task, spec.source_kinds())
    )
    items = source_pairs(spec)
    teacher_path = teacher_file(spec.teacher)
    teacher = {"path": str(teacher_path), "sha256": mf.file_sha256(teacher_path)}
    files = [spec.seeds_file] if spec.seeds_file.strip() else []
    inputs = [mf.input_record(p) for p in files + list(spec.documents)]
    key = mf.cache_key(STEP, spec, inputs, teacher)
    art_id = mf.artifact_id(STEP, key)
    root = Path(root) if root is not None else mf.default_root()
    cached = mf.find_cached(root, art_id, key)
    if cached is not None:
        return cached
    folder = root / art_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / mf.MANIFEST_FILE).unlink(missing_ok=True)  # a stale one: the rows changed
    run = _Run(spec, folder, items, template)
    chat_template = run.produce(teacher_path, progress, cancel, threads)
    if not run.counts["kept"]:
        reasons = "; ".join(f"{DROP_RULES[k]}: {n}" for k, n in run.counts["dropped"].items())
        raise DataError(
            f"the teacher gave no usable row in {run.counts['in']} replies ({reasons})",
            str(teacher_path),
            hint="Raise max tokens, simplify the prompt template, or choose a stronger teacher; "
            "dropped.jsonl in the step's folder holds the replies.",
        )
    warnings = []
    if run.counts["kept"] < spec.rows:
        warnings.append(
            f"the teacher gave {run.counts['kept']} of {spec.rows} rows in {run.counts['in']} "
            f"replies; the others were dropped (see the counts)"
        )
    return mf.Artifact(
        folder,
        mf.finish_manifest(
            folder,
            art_id,
            {
                "step": STEP,
                "spec": mf.spec_dict(spec),
                "inputs": inputs,
                "teacher": teacher,
                "prompts": _prompts(spec, template, chat_template),
                "seed": spec.seed,
                "counts": run.counts,
                "rules": {k: DROP_RULES[k] for k in run.counts["dropped"]},
                "examples": run.examples,
                "cache_key": key,
                "warnings": warnings,
                "name": f"generate {spec.task} ({teacher_path.name})",
            },
        ),
    )


def source_pairs(spec: GenerateSpec) -> list[tuple[Source | None, Source | None]]:
    """(seed, passage) of each source: seeds alone, passages alone, or, with both, the i-th seed
    with the i-th passage (the shorter list taken round again)."""
    seeds = seed_sources(spec) if spec.has_seeds() else []
    passages = document_sources(spec.documents, spec.passage_chars) if spec.documents else []
    count = max(len(seeds), len(passages))
    return [
        (
            seeds[i % len(seeds)] if seeds else None,
            passages[i % len(passages)] if passages else None,
        )
        for i in range(count)
    ]


class _Run:
    """One Generate run on its folder: what is already written, and the loop that adds to it."""

    def __init__(self, spec: GenerateSpec, folder: Path, items: list, template: str):
        self.spec, self.folder, self.items, self.template = spec, folder, items, template
        self.data, self.dropped = folder / mf.DATA_FILE, folder / mf.DROPPED_FILE
        for path in (self.data, self.dropped):
            path.touch()
            drop_torn_tail(path)
        kept, dropped = read_lines(self.data), read_lines(self.dropped)
        self.counts = mf.new_counts(len(kept) + len(dropped))
        self.counts["kept"] = len(kept)
        self.examples: dict[str, list] = {}
        for line in dropped:
            mf.note_drop(self.counts, self.examples, line["rule"], _example(line))
        done = [r[ORIGIN]["attempt"] for r in kept] + [d["attempt"] for d in dropped]
        self.next = max(done, default=-1) + 1
        self.tokens, self.seconds = 0, 0.0

    def produce(self, teacher_path: Path, progress, cancel, threads) -> str | None:
        """Ask the teacher until the rows wanted are kept or the attempts are spent; returns
        the name of the chat template the teacher was prompted with."""
        spec = self.spec
        limit = spec.rows * ATTEMPTS_PER_ROW
        teacher: Teacher | None = None
        try:
            while self.counts["kept"] < spec.rows and self.next < limit:
                if cancel is not None and cancel():
                    raise RunCancelled()
                if teacher is None:
                    teacher = Teacher(teacher_path, _context(spec.max_tokens), threads)
                self.attempt(teacher, self.next)
                self.next += 1
                if progress is not None:
                    progress(self.progress())
            if teacher is None:
                from engine.chat.chat_format import choose_chat_format

                return choose_chat_format(teacher_path).name
            return teacher.template_name
        finally:
            if teacher is not None:
                teacher.close()

    def attempt(self, teacher: Teacher, number: int) -> None:
        """Ask for one row and append it (or its drop) to the folder's files."""
        spec = self.spec
        seed, passage = self.source(number)
        prompt = fill(self.template, seed.text if seed else None, passage.text if passage else None)
        seeds = np.random.SeedSequence([spec.seed, number]).generate_state(2)
        replies = []
        for messages, sample_seed in zip(request_messages(spec.task, prompt), seeds, strict=False):
            reply = teacher.reply(messages, spec.max_tokens, spec.temperature, int(sample_seed))
            self.tokens += reply.tokens
            self.seconds += reply.seconds
            replies.append((reply.text, reply.finish))
        asked = seed.text if seed and not passage else None  # a passage's prompt stays whole
        row, rule = make_row(spec.task, prompt, replies, spec.drop_cut, asked)
        origin = _origin(number, seed, passage)
        self.counts["in"] += 1
        if row is not None:
            append_rows(self.data, [{**row, ORIGIN: origin}])
            self.counts["kept"] += 1
            return
        line = {
            "attempt": number,
            "rule": rule,
            "prompt": prompt,
            "replies": [t for t, _ in replies],
            ORIGIN: origin,
        }
        append_rows(self.dropped, [line])
        mf.note_drop(self.counts, self.examples, str(rule), _example(line))

    def source(self, number: int) -> tuple[Source | None, Source | None]:
        """The (seed, passage) attempt `number` starts from: each pass over the sources takes
        them in its own shuffled order."""
        count = len(self.items)
        order = np.random.default_rng([self.spec.seed, number // count]).permutation(count)
        return self.items[int(order[number % count])]

    def progress(self) -> GenerateProgress:
        """Where the run stands now."""
        speed = self.tokens / self.seconds if self.seconds > 0 else None
        dropped = sum(self.counts["dropped"].values())
        return GenerateProgress(
            self.spec.rows, self.counts["kept"], self.counts["in"], dropped, speed
        )


def _context(max_tokens: int) -> int:
    return CONTEXT_TOKENS if max_tokens <= CONTEXT_TOKENS // 2 else max_tokens + CONTEXT_TOKENS // 2


def _origin(number: int, seed: Source | None, passage: Source | None) -> dict:
    origin: dict = {"attempt": number}
    if seed is not None:
        origin["seed"], origin["seed_source"] = seed.text, seed.label
    if passage is not None:
        origin["passage"], origin["passage_source"] = passage.text, passage.label
    return origin


def _example(line: dict) -> dict:
    return {
        "attempt": line["attempt"],
        "prompt": line["prompt"][:300],
        "replies": [r[:300] for r in line["replies"]],
    }


def _prompts(spec: GenerateSpec, template: str, chat_template: str | None) -> dict:
    prompts = {"task": spec.task, "template": template, "chat_template": chat_template}
    if spec.task == "preferences":
        prompts["system"] = {"chosen": CHOSEN_SYSTEM, "rejected": REJECTED_SYSTEM}
    return prompts
