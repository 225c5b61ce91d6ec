"""Scorers: `score(output, reference, row) -> float`, the one interface of eval metrics and (later)
GRPO rewards.

The text scorers (engine.eval.metrics.make_scorer builds one from a metric name): `exact` (the
trimmed output equals the trimmed reference), `contains` (the reference appears in the output,
ignoring case and runs of whitespace), `regex:PATTERN` (`re.search` finds PATTERN in the output),
`json` (the output parses as JSON; one fenced ```json block is accepted), `json:SCHEMA.json` (it
parses and is valid against that JSON schema, checked with `jsonschema`), `rouge_l` (ROUGE-L F1 of
output against reference, `rouge-score` with stemming) and `python:FILE.py` (the user's own
`score`, engine.eval.pyscore). Each gives a number per row; a metric's score is the mean over rows.

`row` is the eval set's row as read from the file, plus `prompt_messages` (the turns before the
reference). A bad pattern or schema file is one EvalError naming it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from engine.errors import EvalError

_FENCED = re.compile(r"\A```(?:json)?\s*\n(?P<body>.*?)\n?```\Z", re.DOTALL)


class Scorer(Protocol):
    """Scores one output against its reference; `row` is the eval set's row as read, plus
    `prompt_messages`. Higher is better (engine.eval.metrics.lower_is_better names exceptions)."""

    name: str

    def score(self, output: str, reference: str, row: dict) -> float:
        """The row's score."""


class FunctionScorer:
    """A scorer made of a plain function of (output, reference, row)."""

    def __init__(self, name: str, fn: Callable[[str, str, dict], float]):
        self.name = name
        self._fn = fn

    def score(self, output: str, reference: str, row: dict) -> float:
        """The row's score."""
        return float(self._fn(output, reference, row))


def _normalized(text: str) -> str:
    return " ".join(text.split()).casefold()


def exact(output: str, reference: str, row: dict | None = None) -> float:
    """1.0 when the output, trimmed, is the reference, trimmed; else 0.0."""
    return float(output.strip() == reference.strip())


def contains(output: str, reference: str, row: dict | None = None) -> float:
    """1.0 when the reference appears in the output (case and runs of whitespace ignored)."""
    return float(_normalized(reference) in _normalized(output))


def regex_scorer(pattern: str) -> FunctionScorer:
    """`regex:PATTERN`: 1.0 when `re.search` finds PATTERN in the output; EvalError when the
    pattern does not compile."""
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise EvalError(
            f"metric regex:{pattern}: the pattern does not compile: {err}",
            "Write a Python regular expression, e.g. regex:^ACK: (quote it in the shell).",
        ) from None
    return FunctionScorer(
        f"regex:{pattern}", lambda output, reference, row: float(bool(compiled.search(output)))
    )


def parse_json_output(output: str) -> Any:
    """The output's JSON value (one ```json fenced block accepted); ValueError when it is none."""
    text = output.strip()
    fenced = _FENCED.match(text)
    return json.loads(fenced.group("body") if fenced else text)


def json_scorer(schema_path: str | None = None) -> FunctionScorer:
    """`json`: 1.0 when the output parses as JSON; `json:SCHEMA.json`: and is valid against the
    schema in that file (EvalError when the file is missing or not a JSON schema)."""
    if not schema_path:

        def valid(output: str, reference: str, row: dict) -> float:
            try:
                parse_json_output(output)
            except ValueError:
                return 0.0
            return 1.0

        return FunctionScorer("json", valid)
    validator = _schema_validator(Path(schema_path).expanduser())

    def valid_against(output: str, reference: str, row: dict) -> float:
        try:
            value = parse_json_output(output)
        except ValueError:
            return 0.0
        return float(validator.is_valid(value))

    return FunctionScorer(f"json:{schema_path}", valid_against)


def _schema_validator(path: Path) -> Any:
    import jsonschema

    if not path.is_file():
        raise EvalError(f"metric json:{path}: the schema file does not exist")
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise EvalError(f"metric json:{path}: the schema file is not JSON: {err}") from None
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as err:
        raise EvalError(f"metric json:{path}: not a valid JSON schema: {err.message}") from None
    return cls(schema)


class RougeL:
    """`rouge_l`: ROUGE-L F1 of the output against the reference (rouge-score, stemmed)."""

    name = "rouge_l"

    def __init__(self) -> None:
        from rouge_score import rouge_scorer

        self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)

    def score(self, output: str, reference: str, row: dict | None = None) -> float:
        """The row's ROUGE-L F1 (0-1)."""
        return float(self._scorer.score(reference, output)["rougeL"].fmeasure)
