"""The console's template helpers: relative times, zoned wall clocks, durations, ids.

``now`` is fixed; expectations are strings, one table per concern, a DST table
per zone written out (Europe/Berlin leaves CEST for CET on 2026-10-25 at 03:00).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from scout_tasks.console.formatting import (
    clock,
    count,
    counters,
    duration,
    in_zone,
    instant,
    plain,
    progress,
    progress_at,
    relative,
    schedule_state,
    short_id,
    utc_iso,
    utc_title,
)

NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (timedelta(0), "just now"),
        (timedelta(seconds=4), "just now"),
        (timedelta(seconds=-4), "just now"),
        (timedelta(seconds=5), "in 5 s"),
        (timedelta(seconds=59), "in 59 s"),
        (timedelta(minutes=1), "in 1 min"),
        (timedelta(minutes=14, seconds=59), "in 14 min"),
        (timedelta(hours=1, minutes=20), "in 1 h 20 min"),
        (timedelta(hours=3), "in 3 h"),
        (timedelta(hours=13, minutes=5), "in 13 h"),
        (timedelta(days=1, hours=23), "in 1 d"),
        (timedelta(days=400), "in 1 y"),
        (timedelta(hours=-3), "3 h ago"),
        (timedelta(minutes=-90), "1 h 30 min ago"),
        (timedelta(days=-2), "2 d ago"),
    ],
)
def test_relative(delta: timedelta, expected: str) -> None:
    assert relative(NOW + delta, NOW) == expected


def test_relative_of_nothing_is_empty() -> None:
    assert relative(None, NOW) == ""


# Europe/Berlin around the end of summer time, 2026-10-25 (01:00 UTC).
@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        ("2026-10-25T00:30:00+00:00", "Sun 25 Oct 02:30 CEST"),
        ("2026-10-25T01:30:00+00:00", "Sun 25 Oct 02:30 CET"),
        ("2026-12-01T08:00:00+00:00", "Tue 1 Dec 09:00 CET"),
        ("2027-01-04T08:00:00+00:00", "Mon 4 Jan 2027 09:00 CET"),  # another year shows it
    ],
)
def test_in_zone_shows_the_wall_clock_and_its_abbreviation(instant: str, expected: str) -> None:
    assert in_zone(datetime.fromisoformat(instant), "Europe/Berlin", NOW) == expected


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("UTC", "Mon 30 Nov 12:00 UTC"),
        ("Asia/Kolkata", "Mon 30 Nov 17:30 IST"),
        # No abbreviation in the tz database: shown as an offset.
        ("America/Sao_Paulo", "Mon 30 Nov 09:00 UTC-03"),
        ("Asia/Kathmandu", "Mon 30 Nov 17:45 UTC+05:45"),
        ("Not/AZone", "Mon 30 Nov 12:00 UTC"),
    ],
)
def test_in_zone_for_zones_without_abbreviations_or_unknown(zone: str, expected: str) -> None:
    assert in_zone(NOW, zone, NOW) == expected


def test_utc_forms_for_hover_and_machine() -> None:
    berlin = datetime.fromisoformat("2026-12-01T09:00:00+01:00")
    assert utc_iso(berlin) == "2026-12-01T08:00:00Z"
    assert utc_title(berlin) == "2026-12-01 08:00:00 UTC"
    assert utc_iso(None) == utc_title(None) == ""
    assert clock(berlin, "Asia/Tokyo") == "17:00:00"
    # A timeline says which clock it reads, as the other times on its page do.
    assert clock(berlin, "America/New_York", labelled=True) == "03:00:00 EST"
    assert clock(berlin, "Asia/Kathmandu", labelled=True) == "13:45:00 UTC+05:45"


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0 s"),
        (59, "59 s"),
        (60, "1 min"),
        (80, "1 min 20 s"),
        (3600, "1 h"),
        (5430, "1 h 30 min"),
    ],
)
def test_duration(seconds: int, expected: str) -> None:
    assert duration(NOW, NOW + timedelta(seconds=seconds)) == expected


def test_duration_needs_both_ends_in_order() -> None:
    assert duration(None, NOW) == duration(NOW, None) == ""
    assert duration(NOW, NOW - timedelta(seconds=1)) == ""


def test_ids_states_counts_and_history_values() -> None:
    run_id = uuid.UUID("3f2c1a9b-0000-4000-8000-000000000000")
    assert short_id(run_id) == "3f2c1a9b"
    assert short_id(None) == ""
    assert schedule_state({"enabled": True, "paused_reason": None}) == "enabled"
    assert schedule_state({"enabled": False, "paused_reason": "outage"}) == "paused"
    assert schedule_state({"enabled": False, "paused_reason": None}) == "disabled"
    assert count(1234) == "1,234"
    assert count(10_000, 10_000) == "10,000+"
    assert count(9_999, 10_000) == "9,999"
    assert [plain(v) for v in (None, True, False, "", 3, "x")] == [
        "null",
        "true",
        "false",
        '""',
        "3",
        "x",
    ]


def test_progress_and_counters_read_whatever_metrics_hold() -> None:
    latest = {"stage": "fetch", "progress": 40.5, "message": " page 3 ", "at": "2026-11-30T11:59Z"}
    assert progress({"progress": latest}) == "40.5 % · fetch · page 3"
    assert progress({"progress": latest}, short=True) == "40.5 % · fetch"
    assert progress_at({"progress": latest}) == NOW - timedelta(minutes=1)
    # Rows written with plain SQL: nothing usable is nothing shown, never an error.
    for odd in (None, [], "x", {"progress": 3}, {"progress": {"progress": True, "at": "soon"}}):
        assert progress(odd) == ""
        assert progress_at(odd) is None
    assert counters({"total_fetched": 1200, "submitted": 86, "validated": "many"}) == (
        "1,200 fetched · 86 submitted"
    )
    assert counters(None) == counters({"progress": latest}) == ""


def test_instant_reads_only_timestamps_of_at_fields() -> None:
    assert instant("paused_at", "2026-11-30T12:00:00.5+00:00") == NOW + timedelta(seconds=0.5)
    assert instant("paused_at", "2026-11-30T12:00:00") == NOW  # no offset: UTC
    assert instant("paused_at", None) is None
    assert instant("paused_at", "2026-11-30") is None  # a date is not an instant
    assert instant("paused_at", "soon") is None
    assert instant("paused_reason", "2026-11-30T12:00:00+00:00") is None
