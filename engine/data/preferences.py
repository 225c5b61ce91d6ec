"""Preference datasets made from votes in the chat pane: `<data_dir>/datasets/<name>.jsonl`.

When several models answer the same prompt side by side and the analyst marks one answer better
(optionally edited first), each other answer becomes one pair `{prompt, chosen, rejected}`
appended to the dataset, which a Dataset node feeding a dpo, orpo or simpo Fine-Tune node reads
as it is (engine.data.method_formats). A prompt of one user turn is written as text; a prompt
with earlier turns or a system prompt as TRL's conversational form (the prompt a list of
`{role, content}` turns, chosen and rejected each a list holding one assistant turn), and so is
every pair of a file that already holds that form. The loader reads a file holding both forms.
`chosen_model` and `rejected_model` name the models that gave the answers (trainers ignore them).

Appending is one `write` of whole lines on a file opened for appending, then fsync, so a pair is
never half-written by a crash of the app; a torn last line left by an earlier crash is removed
first, so the file stays one JSON object per line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from engine import paths
from engine.data.jsonl import append_rows
from engine.data.method_formats import first_row, method_row, row_format
from engine.errors import DataError

DEFAULT_NAME = "preferences"
KIND = "dataset"  # the library's kind for these files


@dataclass
class Pair:
    """One preference: the prompt turns (ending with the user's), the better answer and a worse
    one, and the models (file names) that gave them."""

    prompt: list[dict]
    chosen: str
    rejected: str
    chosen_model: str = ""
    rejected_model: str = ""

    @property
    def conversational(self) -> bool:
        """Whether the prompt needs the list form (earlier turns or a system prompt)."""
        return len(self.prompt) > 1 or self.prompt[0]["role"] != "user"

    def row(self, conversational: bool) -> dict:
        """The JSONL row: text fields, or TRL's conversational form."""
        if conversational:
            prompt = [{"role": t["role"], "content": t["content"]} for t in self.prompt]
            chosen = [{"role": "assistant", "content": self.chosen}]
            rejected = [{"role": "assistant", "content": self.rejected}]
        else:
            prompt, chosen, rejected = self.prompt[0]["content"], self.chosen, self.rejected
        return {
            "prompt": prompt,
            "chosen": chosen,
            "rejected": rejected,
            "chosen_model": self.chosen_model,
            "rejected_model": self.rejected_model,
        }


def datasets_dir() -> Path:
    """The folder of datasets made in the app, `<data_dir>/datasets` (not created here)."""
    return paths.data_dir() / "datasets"


def dataset_path(name: str) -> Path:
    """The file of the preference dataset called `name` (a safe file name made of it)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip("-.") or DEFAULT_NAME
    return datasets_dir() / f"{slug}.jsonl"


def pairs_from_vote(
    prompt: list[dict],
    chosen: str,
    others: list[tuple[str, str]],
    chosen_model: str = "",
) -> tuple[list[Pair], int]:
    """One pair per other answer (`others`: (model, answer)), and how many were left out because
    they are the chosen text itself (a pair of equal answers teaches nothing). DataError when
    the prompt does not end with a user turn or the chosen answer is empty."""
    if not prompt or prompt[-1].get("role") != "user":
        raise DataError("a vote needs the conversation up to the user's last question")
    if not chosen.strip():
        raise DataError("the chosen answer is empty: write one, or vote for another answer")
    pairs, same = [], 0
    for model, answer in others:
        if answer.strip() and answer.strip() == chosen.strip():
            same += 1
        elif makes_pair(chosen, answer):
            pairs.append(Pair(list(prompt), chosen, answer, chosen_model, model))
    return pairs, same


def makes_pair(chosen: str, answer: str) -> bool:
    """Whether `answer` becomes a rejected answer next to `chosen`: it has text, other text."""
    return bool(answer.strip()) and answer.strip() != chosen.strip()


def append_pairs(path: Path | str, pairs: list[Pair]) -> int:
    """Append `pairs` to the dataset at `path` (created with its folder when new); returns how
    many pairs the file holds afterwards. DataError, before anything is written, when the file
    holds other data or a pair would not train (method_formats.method_row refuses it)."""
    path = Path(path)
    existing = first_row(path) if _has_data(path) else None
    if _has_data(path) and (existing is None or row_format(existing) != "preference"):
        raise DataError(
            "holds other data than preference pairs; choose another dataset name",
            str(path),
        )
    conversational_file = existing is not None and isinstance(existing.get("prompt"), list)
    rows = []
    for pair in pairs:
        row = pair.row(conversational_file or pair.conversational)
        method_row(row, "dpo")  # raises DataError for a row the trainer would refuse
        rows.append(row)
    if rows:
        path.parent.mkdir(parents=True, exist_ok=True)
        append_rows(path, rows)
    return count_pairs(path)


def count_pairs(path: Path | str) -> int:
    """The number of rows (non-empty lines) in a JSONL file; 0 when it does not exist."""
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return 0


def list_datasets() -> list[dict]:
    """Every preference dataset in the datasets folder, newest first: `name`, `path`, `pairs`,
    `bytes`, `modified` (Unix seconds). Files of other data are left out."""
    folder = datasets_dir()
    out = []
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        row = first_row(path)
        if row is None or row_format(row) != "preference":
            continue
        try:
            stat = path.stat()
        except OSError:
            continue
        out.append(
            {
                "name": path.stem,
                "path": str(path),
                "pairs": count_pairs(path),
                "bytes": stat.st_size,
                "modified": stat.st_mtime,
            }
        )
    return sorted(out, key=lambda d: -d["modified"])


def library_entries() -> list[dict]:
    """The preference datasets as library entries (engine.store.library's keys) of kind
    "dataset": `id` is `dataset:<name>`, `rows` the number of pairs; no run made them."""
    return [
        {
            "id": f"{KIND}:{d['name']}",
            "kind": KIND,
            "format": "preference",
            "name": d["name"],
            "rows": d["pairs"],
            "path": Path(d["path"]).name,
            "file": d["path"],
            "folder": str(Path(d["path"]).parent),
            "bytes": d["bytes"],
            "created_at": d["modified"],
            "run_id": None,
            "run_name": "",
            "base_model": None,
            "quant": None,
        }
        for d in list_datasets()
    ]


def _has_data(path: Path) -> bool:
    try:
        return path.stat().st_size > 0 and count_pairs(path) > 0
    except OSError:
        return False
