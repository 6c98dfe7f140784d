"""Cron expressions in plain English, 24-hour clock, as Debian reads them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scout_tasks.cron_description import describe, with_description


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("0 9 * * MON-FRI", "At 09:00, Monday through Friday"),
        ("0 9 * * mon-fri", "At 09:00, Monday through Friday"),
        ("30 17 * * *", "At 17:30"),
        ("*/15 * * * *", "Every 15 minutes"),
        ("0 9,17 * * 1-5", "At 09:00 and 17:00, Monday through Friday"),
        ("0 0 * * 0", "At 00:00, only on Sunday"),
        ("0 0 * * 7", "At 00:00, only on Sunday"),
        # Day-of-month and day-of-week are OR-ed when neither starts with "*".
        ("0 0 13 * 5", "At 00:00, on day 13 of the month, or on Friday"),
        # Debian's nicknames.
        ("@daily", "At 00:00"),
        ("@midnight", "At 00:00"),
        ("@hourly", "Every hour"),
        ("@weekly", "At 00:00, only on Sunday"),
        ("@monthly", "At 00:00, on day 1 of the month"),
        ("@yearly", "At 00:00, on day 1 of the month, only in January"),
        # A one-value range with a step is that value alone, as in Debian.
        ("0 4-4/1 * * *", "At 04:00"),
    ],
)
def test_describe(expr: str, expected: str) -> None:
    assert describe(expr) == expected


@pytest.mark.parametrize(
    "expr",
    ["", "bogus", "0 0 L * *", "0 0 ? * *", "0 0 * * 5#3", "60 * * * *", "@reboot", "0 0 30 2 *"],
)
def test_what_cron_refuses_has_no_description(expr: str) -> None:
    assert describe(expr) == ""


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_describe_never_raises(expr: str) -> None:
    assert isinstance(describe(expr), str)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        # 0 and 7 are both Sunday: a day-of-week field reaching 7 is read that way,
        # never as "Sunday through Sunday" for a job that fires every day.
        ("0 0 * * 0-7", "At 00:00, Sunday through Saturday"),
        ("0 0 * * 1-7", "At 00:00, Sunday through Saturday"),
        ("0 0 * * 0,7", "At 00:00, only on Sunday"),
        ("0 0 * * 7-7", "At 00:00, only on Sunday"),
        ("0 0 * * 5-7/2", "At 00:00, only on Sunday and Friday"),
        # Still OR-ed with the day of the month (neither starts with "*").
        ("0 0 1 * 6-7", "At 00:00, on day 1 of the month, or on Sunday and Saturday"),
        # A range that sets one value is that value.
        ("0 0 * * 1-2/2", "At 00:00, only on Monday"),
        ("0 0 * * 3-3", "At 00:00, only on Wednesday"),
        ("5-5 * * * *", "At 5 minutes past the hour"),
        ("0 4-5/2 * * *", "At 04:00"),
        ("0 0 * * MON-TUE/2", "At 00:00, only on Monday"),
        # A step past the field's span sets its start alone: an hourly job.
        ("*/90 * * * *", "Every hour"),
        ("0 */25 * * *", "At 00:00"),
        ("0 0 1 */13 *", "At 00:00, on day 1 of the month, only in January"),
    ],
)
def test_day_seven_is_sunday(expr: str, expected: str) -> None:
    assert describe(expr) == expected


def test_with_description_adds_the_field() -> None:
    row = {"id": 1, "cron_expression": "@daily"}
    assert with_description(row) == {
        "id": 1,
        "cron_expression": "@daily",
        "cron_description": "At 00:00",
    }
