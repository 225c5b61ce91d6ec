"""Values as people read them: the one family of `format_*` functions, shared by the app and the
command line (Qt-free, so `app/cli` uses the same text as the windows).

A setting has two renderings, on purpose, because it is read in two kinds of place:

- `format_setting` puts a value in a sentence about a node: lineage (`lr 2e-4 → 1e-4`), the names
  of sweep copies (`support · lr 1e-3`), the run confirmation. It is as short as it can be:
  `on`/`off`, small numbers in scientific form, a file's name rather than its path.
- `format_cell` puts a value in a table of runs: the run diff (window and `tunegraph diff`) and a
  run's frozen config. Columns line up and compare: `yes`/`no`, 4 significant digits (final
  metrics too), full paths (two runs may read files of the same name from different folders), a
  content hash cut to its first 12 characters.

Missing values read `—` everywhere except in estimates, where `?` says "could not be estimated".
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

MISSING = "—"
BYTE_UNITS = ("B", "KiB", "MiB", "GiB")  # 1024-based, named as such everywhere


# -- settings and tables -------------------------------------------------------------------------
def format_setting(value: Any) -> str:
    """A setting in a sentence: `2e-4`, `0.05`, `q_proj,v_proj`, `on`, a file's name, `—`."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or MISSING
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or MISSING
    if value is None or value == "":
        return MISSING
    text = str(value)
    if ("/" in text or "\\" in text) and PurePath(text).suffix:
        return PurePath(text).name
    return text


def format_cell(value: Any) -> str:
    """A config or metric value in a table of runs: floats with 4 significant digits, lists
    comma-joined, `yes`/`no`, a 64-digit hex hash cut to 12 characters, `—` when missing."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (tuple, list)):
        return ", ".join(format_cell(v) for v in value) or "[]"
    text = str(value)
    return text[:12] if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text


def format_delta(value: float | None) -> str:
    """A signed change (`+0.01234`), or "" for the baseline, no change or an unknown value."""
    if value is None or value == 0:
        return ""
    return f"{value:+.4g}"


# -- numbers ---------------------------------------------------------------------------------------
def format_number(value: float) -> str:
    """A number to read, not to edit: `2e-4` / `5e-3` for small or large ones (3 significant
    digits), `0.05` / `3` otherwise."""
    if value != 0 and (abs(value) < 0.01 or abs(value) >= 1e6):
        mantissa, exponent = f"{value:.3e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:g}"


def format_float(value: float) -> str:
    """A float to edit: every digit kept, so the text parses back to the same value (`2e-4`,
    `0.05`, `3.0`); `format_number` rounds and is for reading only."""
    if value != 0 and abs(value) < 0.01:
        mantissa, exponent = f"{value:.10e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return repr(float(value))


def format_count(n: Any) -> str:
    """A large count, rounded: `494 M`, `1.08 M`, `12.3 k`, `999`; `?` when not a number."""
    if not isinstance(n, (int, float)):
        return "?"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return str(int(n))


def format_bytes(size: float | None) -> str:
    """A byte count, 1024-based: `512 B`, `1.2 MiB`, `3.4 GiB` (and larger); `—` when unknown."""
    if size is None:
        return MISSING
    for unit in BYTE_UNITS:
        if size < 1024 or unit == BYTE_UNITS[-1]:
            return f"{size:.0f} {unit}" if unit == BYTE_UNITS[0] else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


# -- time ------------------------------------------------------------------------------------------
def format_duration(seconds: float | None) -> str:
    """A measured duration to the second: `42s`, `3m 05s`, `1h 02m`; `—` when unknown."""
    if seconds is None or seconds < 0:
        return MISSING
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


def format_rough_duration(seconds: Any) -> str:
    """An estimated duration in one rounded unit: `40 s`, `12 min`, `1.5 h`; `?` when not a
    number. An estimate is shown no finer than it is known."""
    if not isinstance(seconds, (int, float)):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
