"""The CLI's text output: one line per row, whatever plain SQL stored."""

from __future__ import annotations

from scout_tasks.cli.common import record, table


def test_a_table_row_stays_one_line_with_control_characters_in_a_value() -> None:
    rows = [
        {"id": "a", "triggered_by": "line1\nline2\tend\x1b[31m"},
        {"id": "b", "triggered_by": None},
    ]
    lines = table(rows, ("id", "triggered_by")).splitlines()
    assert len(lines) == 3
    assert lines[1].split() == ["a", "line1\\nline2\\tend\\x1b[31m"]
    assert lines[2].split() == ["b", "-"]


def test_a_record_is_one_line_per_field() -> None:
    text = record({"name": "x\ry", "description": "two\nlines", "id": "z"})
    assert text.splitlines() == ["name         x\\ry", "description  two\\nlines", "id           z"]


def test_printable_text_is_shown_as_it_is() -> None:
    assert table([{"name": "Zürich 日本 'q'"}], ("name",)).splitlines()[1] == "Zürich 日本 'q'"
