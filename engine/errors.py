"""One door for errors: typed exceptions that carry a user-facing sentence and a hint.

Anything the user can cause raises a subclass of `TunegraphError`. The CLI prints `str(err)` (one
sentence, plus the hint) and exits non-zero; the worker writes it as an `error` event; the app shows
it on the node or run. Tracebacks go to logs only.
"""

from __future__ import annotations


class TunegraphError(Exception):
    """A failure the user can act on: `message` says what is wrong, `hint` what to change."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if not self.hint:
            return self.message
        stop = "" if self.message.rstrip().endswith((".", "!", "?", ":")) else "."
        return f"{self.message}{stop} {self.hint}"

    def as_dict(self) -> dict:
        """The `error` event / JSON shape: class, message, hint."""
        return {"class": type(self).__name__, "message": self.message, "hint": self.hint}


class SpecError(TunegraphError):
    """A job-spec field holds a value we cannot run with."""

    def __init__(self, field: str, value, message: str, hint: str | None = None):
        super().__init__(f"{field} = {value!r}: {message}", hint)
        self.field = field
        self.value = value


class DataError(TunegraphError):
    """A dataset file is missing, unreadable, empty, or holds a row we cannot use."""

    def __init__(
        self,
        message: str,
        path: str | None = None,
        line: int | None = None,
        hint: str | None = None,
    ):
        where = ""
        if path:
            where = f"{path}:{line}: " if line else f"{path}: "
        super().__init__(where + message, hint)
        self.path = path
        self.line = line


class ModelError(TunegraphError):
    """The base model cannot be found, loaded, or adapted as asked."""


class ExportError(TunegraphError):
    """Building an export artifact failed; the adapter is kept."""


class EvalError(TunegraphError):
    """An eval cannot run as asked: a bad metric, eval set, judge, target or scorer file."""


class NotFoundError(TunegraphError):
    """A run, artifact or file named on the command line does not exist."""


class RunCancelled(Exception):
    """Raised inside the worker when the user cancelled the run (not an error)."""


class RunPruned(Exception):
    """Raised inside the worker when its sweep pruned the run (a checkpoint was written)."""


class RunPaused(Exception):
    """Raised inside the worker when the user paused the run after the checkpoint was written."""


class EngineMissingError(TunegraphError):
    """The training engine (the Python environment with torch) is not set up on this machine."""

    def __init__(self, message: str | None = None, hint: str | None = None):
        super().__init__(
            message or "The training engine is not set up: no Python with torch was found.",
            hint
            or "Set it up from Help → Set up training engine… in the app, or run "
            "`tunegraph engine setup` (add `--bundle FILE` to install from an offline bundle).",
        )


class EngineSetupError(TunegraphError):
    """Setting up the training engine failed (no space, no network, a bad bundle, a failed install)."""


class SettingsError(TunegraphError):
    """A settings value is out of range; the message names the field."""
