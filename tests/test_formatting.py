"""The one family of value formatters (engine/formatting.py): each output pinned, and the editor's
text reads back to the same float."""

from __future__ import annotations

import pytest

from engine.formatting import (
    format_bytes,
    format_cell,
    format_count,
    format_delta,
    format_duration,
    format_float,
    format_number,
    format_rough_duration,
    format_setting,
)


@pytest.mark.parametrize(
    ("value", "setting", "cell"),
    [
        (True, "on", "yes"),
        (2e-4, "2e-4", "0.0002"),
        (0.05, "0.05", "0.05"),
        (["q_proj", "v_proj"], "q_proj,v_proj", "q_proj, v_proj"),
        ("/data/chats/support.jsonl", "support.jsonl", "/data/chats/support.jsonl"),
        (None, "—", "—"),
        ("a" * 64, "a" * 64, "a" * 12),
    ],
)
def test_a_setting_reads_short_in_a_sentence_and_comparable_in_a_table(value, setting, cell):
    assert format_setting(value) == setting
    assert format_cell(value) == cell


def test_numbers_counts_and_deltas():
    assert [format_number(v) for v in (1e-3, 5e-3, 0.05, 3.0, 2_500_000.0)] == [
        "1e-3",
        "5e-3",
        "0.05",
        "3",
        "2.5e6",
    ]
    assert [format_count(n) for n in (999, 12_345, 1_081_344, 494_032_768, None)] == [
        "999",
        "12.3 k",
        "1.08 M",
        "494 M",
        "?",
    ]
    assert (format_delta(0.012341), format_delta(0), format_delta(None)) == ("+0.01234", "", "")


@pytest.mark.parametrize("value", [2e-4, 1.5e-5, 0.05, 3.0, 0.1 + 0.2, 123456.789])
def test_an_edited_float_reads_back_exactly(value):
    assert float(format_float(value)) == value


def test_bytes_and_durations():
    assert [format_bytes(b) for b in (512, 1536, 5 * 2**20, 3 * 2**30, 2**42, None)] == [
        "512 B",
        "1.5 KiB",
        "5.0 MiB",
        "3.0 GiB",
        "4096.0 GiB",
        "—",
    ]
    assert [format_duration(s) for s in (42, 185, 3720, None)] == ["42s", "3m 05s", "1h 02m", "—"]
    assert [format_rough_duration(s) for s in (40, 720, 5400, "x")] == [
        "40 s",
        "12 min",
        "1.5 h",
        "?",
    ]
