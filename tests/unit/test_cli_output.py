"""The CLI's text output: one line per row, whatever plain SQL stored."""

from __future__ import annotations

from datetime import UTC, datetime

from scout_tasks.cli.common import record, table
from scout_tasks.cli.control import _history_text


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


def test_history_text_tells_an_empty_string_from_null() -> None:
    at = datetime(2026, 12, 1, 7, 47, tzinfo=UTC)
    text = _history_text(
        [
            {
                "at": at,
                "actor": "postgres (psql)",
                "action": "update",
                "changes": {"description": ["", "by sql"], "paused_by": [None, "x\ny"]},
            }
        ]
    )
    assert text.splitlines() == [
        "2026-12-01T07:47:00+00:00  postgres (psql)  update",
        "    description: '' -> by sql",
        "    paused_by: null -> x\\ny",
    ]
