"""A backfill's slots, pure: [from, to), the 1000 cap, future slots, bare timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scout_tasks import cron
from scout_tasks.backfill import MAX_SLOTS, parse_instant, plan_slots
from scout_tasks.errors import InvalidInput

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HOURLY = {"cron_expression": "0 * * * *", "timezone": "UTC"}


def test_slots_are_from_inclusive_to_exclusive() -> None:
    start = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)

    slots = plan_slots(HOURLY, start, start + timedelta(hours=3), NOW)

    assert [s.isoformat() for s in slots] == [
        "2026-12-01T08:00:00+00:00",
        "2026-12-01T09:00:00+00:00",
        "2026-12-01T10:00:00+00:00",
    ]


def test_fall_back_night_in_new_york_has_both_one_oclocks_for_an_hourly_job() -> None:
    # 2024-11-03: 01:00 EDT (05:00Z) and 01:00 EST (06:00Z) both match "0 * * * *".
    slots = list(
        cron.iter_between(
            "0 * * * *",
            "America/New_York",
            datetime(2024, 11, 3, 4, 30, tzinfo=UTC),
            datetime(2024, 11, 3, 7, 0, tzinfo=UTC),
        )
    )

    assert [s.isoformat() for s in slots] == [
        "2024-11-03T05:00:00+00:00",
        "2024-11-03T06:00:00+00:00",
    ]


def test_more_than_the_cap_is_refused_naming_to() -> None:
    minutely = {"cron_expression": "* * * * *", "timezone": "UTC"}
    start = NOW - timedelta(minutes=MAX_SLOTS + 1)

    assert len(plan_slots(minutely, start, start + timedelta(minutes=MAX_SLOTS), NOW)) == 1000
    with pytest.raises(InvalidInput) as caught:
        plan_slots(minutely, start, start + timedelta(minutes=MAX_SLOTS, seconds=1), NOW)
    assert caught.value.field == "to"
    assert "1000" in str(caught.value)


@pytest.mark.parametrize("delta", [timedelta(0), timedelta(hours=-1)])
def test_from_not_before_to_is_refused_naming_to(delta: timedelta) -> None:
    with pytest.raises(InvalidInput) as caught:
        plan_slots(HOURLY, NOW - timedelta(hours=2), NOW - timedelta(hours=2) + delta, NOW)
    assert caught.value.field == "to"


def test_a_slot_still_to_come_is_refused_naming_to() -> None:
    with pytest.raises(InvalidInput) as caught:
        plan_slots(HOURLY, NOW - timedelta(hours=1), NOW + timedelta(hours=2), NOW)
    assert caught.value.field == "to"
    assert "2026-12-01T13:00:00+00:00" in str(caught.value)
    # A range that ends after now but holds no future slot is fine.
    assert len(plan_slots(HOURLY, NOW - timedelta(hours=1), NOW + timedelta(minutes=59), NOW)) == 2


def test_a_bare_timestamp_is_utc_and_bad_ones_name_their_field() -> None:
    assert parse_instant("from", "2026-12-01T08:00:00") == datetime(2026, 12, 1, 8, tzinfo=UTC)
    assert parse_instant("from", "2026-12-01T10:00:00+02:00") == datetime(
        2026, 12, 1, 8, tzinfo=UTC
    )
    assert parse_instant("to", "2026-12-01T08:00:00Z").tzinfo == UTC
    for bad in ("yesterday", 12, None, ""):
        with pytest.raises(InvalidInput) as caught:
            parse_instant("to", bad)
        assert caught.value.field == "to"
