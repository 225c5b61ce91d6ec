"""What a Generate node starts from: seed prompts and passages of documents.

Seeds come from the spec's list and its seeds file (a .txt file, one seed per line; or a table
whose seed, prompt, question or text column holds them). Documents (.txt, .md, .markdown, .pdf)
are cut into passages of at most `max_chars` characters at paragraph breaks (blank lines; a
Markdown heading also opens a new paragraph): paragraphs are packed whole while they fit, a
paragraph longer than a passage is cut at sentence ends, and a sentence longer than that at a
space; a Markdown heading starts a new passage. PDFs are read with pypdf, page after page. A
file that cannot be read, or holds no text, is one DataError naming it.

Each seed or passage is a `Source` with a label saying where it is (`seeds.txt:3`,
`manual.pdf #2`), kept in each generated row's origin.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from engine.data.formats import check_utf8
from engine.errors import DataError
from engine.recipes.rows import read_table
from engine.recipes.specs import GenerateSpec

SEED_COLUMNS = ("seed", "prompt", "question", "text")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n|\n(?=#{1,6}\s)")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


@dataclass(frozen=True)
class Source:
    """One seed or passage: its text and where it is (`file:line`, `file #n` or `seeds[i]`)."""

    text: str
    label: str


def seed_sources(spec: GenerateSpec) -> list[Source]:
    """The seeds of the spec's list, then those of its seeds file; DataError naming the file
    when it cannot be read or holds no seed."""
    out = [Source(s.strip(), f"seeds[{i}]") for i, s in enumerate(spec.seeds) if s.strip()]
    if spec.seeds_file.strip():
        out += read_seeds(spec.seeds_file)
    return out


def read_seeds(path: Path | str) -> list[Source]:
    """The seeds in a file: a .txt file's non-blank lines, or a table's seed, prompt, question
    or text column; DataError naming the file when none is found."""
    path = Path(path).expanduser()
    if path.suffix.lower() == ".txt":
        lines = _read_text(path).splitlines()
        found = [Source(line.strip(), f"{path.name}:{n}") for n, line in enumerate(lines, 1)]
        found = [s for s in found if s.text]
    else:
        rows = read_table(path)
        column = next((c for c in SEED_COLUMNS if c in rows[0]), None)
        if column is None:
            raise DataError(
                "no seed column: the seeds are read from a seed, prompt, question or text "
                "column; the file's columns are " + ", ".join(sorted(rows[0])),
                str(path),
            )
        found = [
            Source(row[column].strip(), f"{path.name} row {i + 1}")
            for i, row in enumerate(rows)
            if isinstance(row.get(column), str) and row[column].strip()
        ]
    if not found:
        raise DataError("the file holds no seeds", str(path))
    return found


def document_sources(paths: list[str], max_chars: int) -> list[Source]:
    """The passages of every document, in order (see the module docstring)."""
    out: list[Source] = []
    for doc in paths:
        path = Path(doc).expanduser()
        passages = chunk_text(read_document(path), max_chars)
        out += [Source(text, f"{path.name} #{i}") for i, text in enumerate(passages, 1)]
    return out


def read_document(path: Path | str) -> str:
    """A document's text: a text or Markdown file as it is, a PDF's pages (pypdf) one after
    another; DataError naming the file when it is missing, unreadable or holds no text."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError("file not found", str(path), hint="Check the Generate node's documents.")
    text = _read_pdf(path) if path.suffix.lower() == ".pdf" else _read_text(path)
    if not text.strip():
        hint = (
            "A scanned PDF needs its text recognised (OCR) first."
            if path.suffix.lower() == ".pdf"
            else None
        )
        raise DataError("the document holds no text", str(path), hint=hint)
    return text


def chunk_text(text: str, max_chars: int) -> list[str]:
    """Passages of at most `max_chars` characters, cut at paragraph breaks where they fit, else
    at sentence ends, else at spaces (a word longer than a passage is cut where it must); a
    Markdown heading starts a new passage."""
    paragraphs = [
        "\n".join(" ".join(line.split()) for line in p.splitlines() if line.strip())
        for p in _PARAGRAPH_BREAK.split(text)
    ]
    pieces: list[str] = []
    for paragraph in filter(None, paragraphs):
        pieces += _cut(paragraph, max_chars) if len(paragraph) > max_chars else [paragraph]
    passages: list[str] = []
    current = ""
    for piece in pieces:
        joined = f"{current}\n\n{piece}" if current else piece
        if len(joined) <= max_chars and not (current and piece.startswith("#")):
            current = joined
        else:
            passages.append(current)
            current = piece
    if current:
        passages.append(current)
    return passages


def _cut(paragraph: str, max_chars: int) -> list[str]:
    """A paragraph too long for one passage, cut at sentence ends (else spaces) into pieces."""
    out: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(paragraph):
        while len(sentence) > max_chars:  # a sentence longer than a passage: cut at a space
            cut = sentence.rfind(" ", 0, max_chars + 1)
            cut = cut if cut > 0 else max_chars
            head, sentence = sentence[:cut].strip(), sentence[cut:].strip()
            if current:
                out.append(current)
                current = ""
            out.append(head)
        joined = f"{current} {sentence}" if current else sentence
        if len(joined) <= max_chars:
            current = joined
        else:
            out.append(current)
            current = sentence
    if current:
        out.append(current)
    return out


def _read_text(path: Path) -> str:
    check_utf8(path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise DataError(f"cannot be read: {err.strerror or err}", str(path)) from err


def _read_pdf(path: Path) -> str:
    try:
        from pypdf import PdfReader
    except ImportError:
        raise DataError(
            "reading PDF needs pypdf", str(path), hint="Install it with `pip install pypdf`."
        ) from None
    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):  # many open with no password
            raise DataError(
                "the PDF is encrypted and cannot be read",
                str(path),
                hint="Save a copy without a password, or give its text as a .txt file.",
            )
        return "\n\n".join(page.extract_text() or "" for page in reader.pages)
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - pypdf raises many kinds for a damaged file
        raise DataError(
            f"cannot be read as a PDF: {str(err).strip() or type(err).__name__}",
            str(path),
            hint="Check that the file is a whole PDF, or give its text as a .txt file.",
        ) from None
