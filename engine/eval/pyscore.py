"""`python:FILE.py`: the user's own scorer, a `score(output, reference, row) -> float` in a file.

The file is imported once (as a module of its own name, never added to sys.modules), and each
failure is one sentence naming the file and line: a syntax error, an exception while importing it,
no `score` function, an exception inside `score` (the line in the user's file where it was raised)
and a result that is not a finite number.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import traceback
from pathlib import Path
from typing import Any

from engine.errors import EvalError

HINT = "Fix the scorer file; it must define score(output, reference, row) returning a number."


class PythonScorer:
    """A scorer backed by the `score` function of a user's Python file."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser().resolve()
        self.name = f"python:{path}"
        if not self.path.is_file():
            raise EvalError(f"metric python:{path}: the file {self.path} does not exist")
        if self.path.suffix != ".py":
            raise EvalError(f"metric python:{path}: {self.path} is not a .py file")
        module = self._load()
        fn = getattr(module, "score", None)
        if not callable(fn):
            raise EvalError(f"{self.path}: defines no function score(output, reference, row)", HINT)
        self._fn = fn

    def _load(self) -> Any:
        digest = hashlib.sha1(str(self.path).encode()).hexdigest()[:8]
        spec = importlib.util.spec_from_file_location(f"tunegraph_scorer_{digest}", self.path)
        if spec is None or spec.loader is None:
            raise EvalError(f"{self.path}: cannot be imported as a Python module")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except SyntaxError as err:
            raise EvalError(
                f"{self.path}:{err.lineno}: syntax error in the scorer file: {err.msg}", HINT
            ) from None
        except Exception as exc:  # noqa: BLE001 - any error of the user's code is one sentence
            raise EvalError(
                f"{self.where(exc)}: importing the scorer file failed: {describe(exc)}", HINT
            ) from None
        return module

    def where(self, exc: BaseException) -> str:
        """`FILE:LINE` of the deepest frame of `exc` in the user's file (else just the file)."""
        line = None
        for frame, lineno in traceback.walk_tb(exc.__traceback__):
            if Path(frame.f_code.co_filename).resolve() == self.path:
                line = lineno
        return f"{self.path}:{line}" if line else str(self.path)

    def score(self, output: str, reference: str, row: dict) -> float:
        """The user's score for one row; EvalError naming the file and line when it raises or
        returns something that is not a finite number."""
        try:
            value = self._fn(output, reference, row)
        except Exception as exc:  # noqa: BLE001 - any error of the user's code is one sentence
            raise EvalError(f"{self.where(exc)}: score raised {describe(exc)}", HINT) from None
        if isinstance(value, bool):
            return float(value)
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise EvalError(
                f"{self.path}: score returned {value!r}, not a finite number", HINT
            ) from None
        return float(value)


def check_source(path: str | Path) -> Path:
    """A scorer file checked without running it (the canvas checks it on every edit): it exists,
    is a .py file and compiles; EvalError naming the file (and the line of a syntax error)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise EvalError(f"metric python:{path}: the file {file} does not exist")
    if file.suffix != ".py":
        raise EvalError(f"metric python:{path}: {file} is not a .py file")
    try:
        compile(file.read_text(encoding="utf-8"), str(file), "exec")
    except SyntaxError as err:
        raise EvalError(
            f"{file}:{err.lineno}: syntax error in the scorer file: {err.msg}", HINT
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise EvalError(f"{file}: cannot be read as Python source: {err}", HINT) from None
    return file


def describe(exc: BaseException) -> str:
    """`Class: message` of an exception (just the class when it has no message)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
