"""The spec parts of the data nodes: Generate, Filter, Deduplicate, Mix and Split.

Each is a dataclass of declared fields (engine.fields.param: help, range, choices, widget), so the
node catalogue can build a data node's properties from it as it does for the Fine-Tune parts, and
`validate(prefix)` raises a SpecError naming `prefix.field` and the value for the first field the
step cannot run with. A part holds the node's own knobs only: the datasets that flow into the node
through its input port are arguments of the step's function (engine.recipes.generate.generate,
filters.filter_rows, dedup.deduplicate, mix.mix, mix.split), resolved by the compiler.

Like the Fine-Tune parts, a relative path is the graph folder's and is resolved by the compiler;
an absolute path that does not exist, or a teacher file that is not a GGUF, is refused here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from engine.errors import SpecError
from engine.fields import SpecPart, param
from engine.recipes.checks import TEACHER_HELP, check_suffix, check_teacher, parse_numbers
from engine.spec import RewardSpec

# raised whenever a step makes different rows from the same inputs and spec (a fix in how rows
# are generated, filtered, deduplicated, mixed or split): it is part of each step's key and each
# artifact's cache key, so a recipe made by older code is made again instead of silently reused
RECIPE_VERSION = 1

TASKS = ("conversations", "qa", "preferences")
DOCUMENT_SUFFIXES = (".txt", ".md", ".markdown", ".pdf")
SEED_FILE_SUFFIXES = (".txt", ".jsonl", ".json", ".csv", ".parquet")
TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
PLACEHOLDERS = {"documents": "{passage}", "seeds": "{seed}"}
COMPARED = ("row", "prompt", "answer")
# the scorers of engine.eval a Filter node can keep rows by (length:N is min/max chars here)
FILTER_SCORERS = ("exact", "contains", "rouge_l", "json", "judge", "regex:…", "json:…", "python:…")
TASK_HELP = (
    "What the teacher writes. conversations: it answers each prompt made from the template (a "
    "user turn and the teacher's answer). qa: it writes a question about the passage and its "
    'answer ("Question: … Answer: …"), which become a user and an assistant turn. '
    "preferences: it answers each prompt twice, once asked to be helpful (chosen) and once asked "
    "to be careless (rejected), for dpo, orpo or simpo."
)
TEMPLATE_HELP = (
    "The prompt the teacher gets for each row. {passage} stands for a passage of the documents "
    "and {seed} for a seed prompt; the template must hold the placeholder of each source given. "
    "Empty: the task's default (questions a customer would ask about the passage, with answers "
    "from it; the seed itself for conversations)."
)


@dataclass
class GenerateSpec(SpecPart):
    """Synthesize rows with a local teacher model from seed prompts and/or documents."""

    seeds: list[str] = param(
        [],
        "Seed prompts or topics, one per line; each row starts from one.",
        label="Seeds",
        widget="lines",
    )
    seeds_file: str = param(
        "",
        "A file of seeds: a .txt file with one seed per line (blank lines skipped), or a .jsonl, "
        ".json, .csv or .parquet file whose seed, prompt, question or text column holds them.",
        label="Seeds file",
        widget="file",
    )
    documents: list[str] = param(
        [],
        "Text, Markdown or PDF files, cut into passages at paragraph breaks; each row starts "
        "from one passage.",
        widget="files",
    )
    teacher: str = param("", TEACHER_HELP, label="Teacher model", short="teacher", widget="gguf")
    task: str = param("conversations", TASK_HELP, choices=TASKS)
    template: str = param("", TEMPLATE_HELP, label="Prompt template", widget="template")
    temperature: float = param(
        0.7, "Sampling temperature of the teacher (0 = always its likeliest words).", min=0, max=2
    )
    max_tokens: int = param(
        256, "The longest reply the teacher may write, in tokens.", min=1, max=8192
    )
    rows: int = param(100, "Rows wanted in the dataset.", min=1, max=1_000_000, short="rows")
    seed: int = param(
        0,
        "Seed of the order the sources are taken in and of the teacher's sampling: the same "
        "seed gives the same rows.",
        min=0,
        max=2**31 - 1,
    )
    passage_chars: int = param(
        1500,
        "The longest passage a document is cut into, in characters (paragraphs are kept whole "
        "when they fit).",
        min=200,
        max=20_000,
    )
    drop_cut: bool = param(
        True,
        "Drop replies the teacher had not finished at max tokens (a student would learn to stop "
        "mid-sentence).",
        label="Drop cut-off replies",
    )

    part: ClassVar[str] = "generate"

    def check_rules(self, prefix: str) -> None:
        """There is something to generate from, every file is of a type we read, the teacher
        is a GGUF, and the template holds the placeholder of each source given."""
        if not self.has_seeds() and not self.documents:
            raise SpecError(
                f"{prefix}.seeds",
                self.seeds,
                "give seed prompts, a seeds file or documents to generate from",
            )
        if self.seeds_file.strip():
            check_suffix(f"{prefix}.seeds_file", self.seeds_file, SEED_FILE_SUFFIXES)
        for i, doc in enumerate(self.documents):
            check_suffix(f"{prefix}.documents[{i}]", doc, DOCUMENT_SUFFIXES)
        check_teacher(f"{prefix}.teacher", self.teacher)
        self.check_template(prefix)

    def has_seeds(self) -> bool:
        """Whether seeds are given (as a list or a file)."""
        return any(s.strip() for s in self.seeds) or bool(self.seeds_file.strip())

    def source_kinds(self) -> list[str]:
        """The kinds of source given: "seeds", "documents" or both."""
        return [
            k for k, given in (("seeds", self.has_seeds()), ("documents", self.documents)) if given
        ]

    def check_template(self, prefix: str) -> None:
        """A template of one's own holds `{passage}` when documents are given and `{seed}` when
        seeds are, and no placeholder of a source that is not given."""
        if not self.template.strip():
            return
        kinds = self.source_kinds()
        for kind in kinds:
            mark = PLACEHOLDERS[kind]
            if mark not in self.template:
                raise SpecError(
                    f"{prefix}.template",
                    self.template,
                    f"the template has no {mark} placeholder, so the {kind} never reach the "
                    "teacher",
                    f"Write {mark} where the {kind[:-1]} goes, or empty the template for the "
                    "task's default.",
                )
        for kind, mark in PLACEHOLDERS.items():
            if kind not in kinds and mark in self.template:
                raise SpecError(
                    f"{prefix}.template",
                    self.template,
                    f"the template uses {mark} but no {kind} are given",
                    f"Give {kind}, or take {mark} out of the template.",
                )


@dataclass
class FilterSpec(SpecPart):
    """Drop rows by length, by regular expression, or by a scorer of engine.eval."""

    min_chars: int = param(
        0, "Drop rows whose text (all turns) is shorter than this (0 = no minimum).", min=0
    )
    max_chars: int = param(
        0, "Drop rows whose text (all turns) is longer than this (0 = no maximum).", min=0
    )
    keep_regex: str = param(
        "",
        "Keep only rows whose text matches this regular expression (empty: all).",
        label="Keep if matches",
    )
    drop_regex: str = param(
        "", "Drop rows whose text matches this regular expression.", label="Drop if matches"
    )
    languages: str = param(
        "",
        "Keep only rows whose answer is in one of these languages: ISO 639-1 codes separated by "
        "commas, e.g. en, de (detected by langdetect). Empty: any language.",
        label="Languages",
    )
    scorer: str = param(
        "",
        "Score each row's answer and keep the rows scoring at least Minimum score: judge (the "
        "judge model grades it 1-10 against the row's reference, else the passage or seed it "
        "was generated from), exact, contains or rouge_l (against that reference), json, "
        "json:SCHEMA.json, regex:PATTERN or python:FILE.py. Empty: no scorer.",
        widget="reward",
    )
    judge: str = param(
        "",
        "The GGUF model that grades each answer for the judge scorer (a small instruct model "
        "will do; every row costs a short llama.cpp call).",
        label="Judge model",
        widget="gguf",
        visible_if=("scorer", ("judge",)),
    )
    min_score: float = param(
        0.0,
        "Keep rows whose score is at least this (the judge grades 1-10, e.g. 7; the other "
        "scorers give 0-1).",
        min=0,
        max=10,
        label="Minimum score",
    )

    part: ClassVar[str] = "filter"

    def check_rules(self, prefix: str) -> None:
        """The length bounds are in order, the patterns compile, and the scorer is one a filter
        can use, with its judge model when it is the judge."""
        if self.min_chars and self.max_chars and self.max_chars < self.min_chars:
            raise SpecError(
                f"{prefix}.max_chars",
                self.max_chars,
                f"is below min_chars ({self.min_chars}): every row would be dropped",
            )
        for name in ("keep_regex", "drop_regex"):
            try:
                re.compile(getattr(self, name))
            except re.error as err:
                raise SpecError(
                    f"{prefix}.{name}", getattr(self, name), f"the pattern does not compile: {err}"
                ) from None
        for code in self.language_codes():
            if not re.fullmatch(r"[a-z]{2,3}(-[a-z]{2})?", code):
                raise SpecError(
                    f"{prefix}.languages",
                    self.languages,
                    f"{code!r} is not a language code",
                    "Use ISO 639-1 codes such as en, de, fr, zh-cn.",
                )
        scorer = self.scorer.strip()
        if not scorer:
            return
        if scorer.startswith("length:"):
            raise SpecError(
                f"{prefix}.scorer",
                self.scorer,
                "is not a filter scorer; use min_chars and max_chars for lengths",
                "Scorers: " + ", ".join(FILTER_SCORERS) + ".",
            )
        RewardSpec(scorer=scorer, judge=self.judge).check_rules(prefix)

    def language_codes(self) -> list[str]:
        """The languages kept, lower-cased ([] for any)."""
        return [c.strip().lower() for c in re.split(r"[,;\s]+", self.languages) if c.strip()]


@dataclass
class DedupSpec(SpecPart):
    """Drop exact and near duplicates within a dataset, and rows too close to another one."""

    exact: bool = param(
        True,
        "Drop rows whose text is the same as an earlier row's once case, spacing and Unicode "
        "forms are normalised.",
        label="Exact duplicates",
    )
    near_threshold: float = param(
        0.8,
        "Drop rows whose word shingles overlap an earlier row's by at least this Jaccard "
        "similarity (found with MinHash LSH; 1 = the same words). 0 = no near-duplicate search.",
        min=0,
        max=1,
        label="Near-duplicate threshold",
        short="near",
    )
    num_perm: int = param(
        128,
        "MinHash permutations: more find near duplicates more surely and cost more time.",
        min=16,
        max=1024,
        label="MinHash permutations",
    )
    ngram: int = param(
        2, "Words per shingle of the near-duplicate search.", min=1, max=10, label="Shingle words"
    )
    compare: str = param(
        "row",
        "What is compared: the whole row (all turns), its prompt (the turns before the answer) "
        "or its answer.",
        choices=COMPARED,
    )
    against: str = param(
        "",
        "Another dataset (e.g. the eval set): rows exactly the same as or near one of its rows "
        "are contamination, reported by count and example.",
        label="Check against",
        widget="file",
    )
    drop_against: bool = param(
        True,
        "Drop the rows found in the Check against dataset (off: only report them).",
        label="Drop contaminated rows",
    )

    part: ClassVar[str] = "dedup"

    def check_rules(self, prefix: str) -> None:
        """Something is searched for, and the against file is a dataset file (an existing one
        when its path is absolute)."""
        if not self.exact and not self.near_threshold and not self.against.strip():
            raise SpecError(
                f"{prefix}.exact",
                self.exact,
                "nothing to search for: exact duplicates are off, the near-duplicate threshold "
                "is 0 and no dataset to check against is given",
            )
        if self.against.strip():
            check_suffix(f"{prefix}.against", self.against, TABLE_SUFFIXES)


@dataclass
class MixSpec(SpecPart):
    """Several datasets in one, by ratios or row counts, shuffled by seed."""

    ratios: str = param(
        "",
        "The share of each connected dataset in the mix, in the order of the inputs, adding up "
        "to 1 (or 100), e.g. 0.7, 0.3. Empty: all rows of every input (or Row counts).",
    )
    counts: str = param(
        "",
        "Rows to take from each connected dataset, in the order of the inputs, e.g. 500, 200 "
        "(instead of ratios).",
        label="Row counts",
    )
    total_rows: int = param(
        0,
        "Rows of the mix with ratios (0 = as many as the inputs give without repeating a row).",
        min=0,
    )
    seed: int = param(0, "Seed of which rows are taken and of the shuffle.", min=0, max=2**31 - 1)

    part: ClassVar[str] = "mix"

    def check_rules(self, prefix: str) -> None:
        """Ratios or counts (not both) are numbers; ratios are positive and add up to 1 or
        100; counts are whole numbers; total_rows needs ratios."""
        if self.ratios.strip() and self.counts.strip():
            raise SpecError(f"{prefix}.counts", self.counts, "give ratios or row counts, not both")
        if self.ratios.strip():
            ratios = parse_numbers(f"{prefix}.ratios", self.ratios)
            if any(r <= 0 for r in ratios):
                raise SpecError(f"{prefix}.ratios", self.ratios, "every ratio must be above 0")
            total = sum(ratios)
            if not any(abs(total - whole) <= 1e-6 * whole for whole in (1.0, 100.0)):
                raise SpecError(
                    f"{prefix}.ratios",
                    self.ratios,
                    f"the ratios add up to {total:g}, not 1 (or 100)",
                    "Give each input's share of the mix, e.g. 0.7, 0.3.",
                )
        elif self.total_rows:
            raise SpecError(
                f"{prefix}.total_rows",
                self.total_rows,
                "a total needs ratios to share it out",
                "Give ratios, or row counts for each input instead of a total.",
            )
        if self.counts.strip():
            counts = parse_numbers(f"{prefix}.counts", self.counts)
            if any(c < 0 or c != int(c) for c in counts):
                raise SpecError(
                    f"{prefix}.counts", self.counts, "row counts must be whole numbers, 0 or more"
                )

    def check_inputs(self, inputs: int, prefix: str | None = None) -> None:
        """The ratios or counts give one number per connected dataset (`inputs`)."""
        prefix = self.part if prefix is None else prefix
        if inputs < 1:
            raise SpecError(f"{prefix}.inputs", inputs, "connect at least one dataset to mix")
        for name in ("ratios", "counts"):
            text = getattr(self, name)
            if text.strip() and len(parse_numbers(f"{prefix}.{name}", text)) != inputs:
                found = len(parse_numbers(f"{prefix}.{name}", text))
                raise SpecError(
                    f"{prefix}.{name}",
                    text,
                    f"gives {found} numbers for {inputs} connected datasets",
                    "Give one number per input, in the order of the inputs.",
                )

    def amounts(self, name: str) -> list[float]:
        """The ratios or counts as numbers ([] when not given); ratios as shares of 1."""
        text = getattr(self, name)
        if not text.strip():
            return []
        numbers = parse_numbers(f"{self.part}.{name}", text)
        if name == "ratios":
            total = sum(numbers)
            return [n / total for n in numbers]
        return numbers


@dataclass
class SplitSpec(SpecPart):
    """Cut a dataset into a train and an eval part, stratified by a column if given."""

    eval_fraction: float = param(
        0.1, "The share of rows held out for evaluation.", min=0.0, max=0.9, label="Eval fraction"
    )
    eval_rows: int = param(
        0, "Rows held out for evaluation (0 = use the fraction).", min=0, label="Eval rows"
    )
    stratify: str = param(
        "",
        "A column whose values keep the same shares in both parts (e.g. category). Empty: a "
        "plain shuffled split.",
    )
    seed: int = param(0, "Seed of the shuffle.", min=0, max=2**31 - 1)

    part: ClassVar[str] = "split"

    def check_rules(self, prefix: str) -> None:
        """Some rows are held out."""
        if not self.eval_rows and self.eval_fraction <= 0:
            raise SpecError(
                f"{prefix}.eval_fraction",
                self.eval_fraction,
                "hold out some rows: the fraction is 0 and no eval rows are asked for",
            )
