"""The first rows of a dataset file as they are in the file (engine.plan.preview.head), as HTML:
conversations turn by turn, other columns as `name  value`. The dataset preview shows them at
once, while the helper process tokenizes the file."""

from __future__ import annotations

import html
import json
from typing import Any

KEY_FG = "#9aa0a8"
CLIP = 600  # characters of one value shown; the tokenized view shows whole examples

# a turn's role and text keys: OpenAI messages, ShareGPT conversations
_TURN_KEYS = (("role", "content"), ("from", "value"))


def head_html(rows: list[dict], more: bool, fmt: str | None = None) -> str:
    """Rows as HTML under a line saying what they are."""
    count = f"first {len(rows)} rows" if more else f"all {len(rows)} rows"
    legend = f"The {count} as they are in the file" + (f" (format {fmt})" if fmt else "") + "."
    blocks = [f"<p style='color:{KEY_FG}'>{html.escape(legend)}</p>"]
    for number, row in enumerate(rows, 1):
        lines = []
        for key, value in row.items():
            turns = _turns(value)
            if turns is None:
                lines.append(_line(str(key), _text(value)))
            else:
                lines += [_line(role, content) for role, content in turns]
        blocks.append(
            f"<p><b>Row {number}</b></p><pre style='white-space:pre-wrap;"
            f"font-family:monospace'>{'<br>'.join(lines)}</pre>"
        )
    return "".join(blocks)


def _line(label: str, text: str) -> str:
    return f"<span style='color:{KEY_FG}'>{html.escape(label)}:</span> {html.escape(text)}"


def _turns(value: Any) -> list[tuple[str, str]] | None:
    """(role, text) of a list of turns (also one stored as JSON text, as in a CSV cell)."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if not isinstance(value, list) or not value or not all(isinstance(t, dict) for t in value):
        return None
    for role_key, text_key in _TURN_KEYS:
        if all(role_key in t for t in value):
            return [(str(t.get(role_key)), _text(t.get(text_key))) for t in value]
    return None


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= CLIP else text[:CLIP] + f"… ({len(text):,} characters)"
