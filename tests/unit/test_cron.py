"""Cron semantics (docs/contract.md, "Cron semantics"), cronsim style.

Every instant is fixed and every expectation is an ISO 8601 string with its UTC
offset, so a failure shows exactly which wall time and which offset went wrong.
The DST tables use the real 2024 transitions of each zone, described in the
comment above each table.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from scout_tasks import cron
from scout_tasks.errors import InvalidCronExpression, InvalidInput


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def fires(expr: str, zone: str, after: datetime, n: int) -> list[str]:
    return [t.isoformat() for t in cron.next_times(expr, zone, after, n)]


# America/New_York: EST (-05:00) in winter, EDT (-04:00) in summer.
# On 2024-03-10 at 02:00 EST clocks jump to 03:00 EDT: 02:00-02:59 does not exist.
# On 2024-11-03 at 02:00 EDT clocks go back to 01:00 EST: 01:00-01:59 happens
# twice, first at -04:00 (05:00Z-05:59Z), then at -05:00 (06:00Z-06:59Z).
NEW_YORK = [
    # A fixed-time job whose time falls in the gap fires at the first instant
    # after the gap, once, then returns to 02:30 on the following days.
    (
        "30 2 * * *",
        "2024-03-09T12:00:00-05:00",
        [
            "2024-03-10T03:00:00-04:00",
            "2024-03-11T02:30:00-04:00",
            "2024-03-12T02:30:00-04:00",
        ],
    ),
    # The day before the gap is still EST.
    (
        "30 2 * * *",
        "2024-03-08T12:00:00-05:00",
        [
            "2024-03-09T02:30:00-05:00",
            "2024-03-10T03:00:00-04:00",
        ],
    ),
    # An hourly job has no 02:00 on the spring-forward night: 01:00 EST is
    # followed by 03:00 EDT, one real hour later.
    (
        "0 * * * *",
        "2024-03-10T00:30:00-05:00",
        [
            "2024-03-10T01:00:00-05:00",
            "2024-03-10T03:00:00-04:00",
            "2024-03-10T04:00:00-04:00",
        ],
    ),
    # Every 30 minutes across the gap: 02:00 and 02:30 do not exist.
    (
        "*/30 * * * *",
        "2024-03-10T01:00:00-05:00",
        [
            "2024-03-10T01:30:00-05:00",
            "2024-03-10T03:00:00-04:00",
            "2024-03-10T03:30:00-04:00",
        ],
    ),
    # A fixed-time job in the repeated hour fires at its first occurrence only.
    (
        "30 1 * * *",
        "2024-11-02T12:00:00-04:00",
        [
            "2024-11-03T01:30:00-04:00",
            "2024-11-04T01:30:00-05:00",
            "2024-11-05T01:30:00-05:00",
        ],
    ),
    # An hourly job fires at every real instant whose local time matches,
    # so in both 01:00s of the fall-back night.
    (
        "0 * * * *",
        "2024-11-03T00:30:00-04:00",
        [
            "2024-11-03T01:00:00-04:00",
            "2024-11-03T01:00:00-05:00",
            "2024-11-03T02:00:00-05:00",
            "2024-11-03T03:00:00-05:00",
        ],
    ),
    # The minute field starts with a star, so the job is not fixed-time: both
    # passes of 01:00-01:59 fire.
    (
        "*/20 1 * * *",
        "2024-11-03T00:59:00-04:00",
        [
            "2024-11-03T01:00:00-04:00",
            "2024-11-03T01:20:00-04:00",
            "2024-11-03T01:40:00-04:00",
            "2024-11-03T01:00:00-05:00",
            "2024-11-03T01:20:00-05:00",
            "2024-11-03T01:40:00-05:00",
            "2024-11-04T01:00:00-05:00",
        ],
    ),
    # Hour 2 exists once on the fall-back night (after the repeat), at -05:00.
    (
        "0 2 * * *",
        "2024-11-02T12:00:00-04:00",
        [
            "2024-11-03T02:00:00-05:00",
            "2024-11-04T02:00:00-05:00",
        ],
    ),
]


@pytest.mark.parametrize(("expr", "after", "expected"), NEW_YORK)
def test_new_york(expr: str, after: str, expected: list[str]) -> None:
    assert fires(expr, "America/New_York", at(after), len(expected)) == expected


# After is inside the second pass of the repeated hour (fold=1, -05:00). The
# 01:30 of this night already fired at -04:00; a fixed-time job must not fire
# again at 01:30 -05:00, nor name the first pass's 01:30, which is in the past.
NEW_YORK_SECOND_PASS = [
    # 01:15 -05:00 == 06:15Z: the first 01:30 (05:30Z) is behind us.
    ("30 1 * * *", ["2024-11-04T01:30:00-05:00", "2024-11-05T01:30:00-05:00"]),
    ("45 1 * * *", ["2024-11-04T01:45:00-05:00"]),
    # Not fixed-time: the rest of the second pass still fires.
    ("*/30 * * * *", ["2024-11-03T01:30:00-05:00", "2024-11-03T02:00:00-05:00"]),
    ("0 * * * *", ["2024-11-03T02:00:00-05:00", "2024-11-03T03:00:00-05:00"]),
]


@pytest.mark.parametrize(("expr", "expected"), NEW_YORK_SECOND_PASS)
@pytest.mark.parametrize(
    "after",
    [
        datetime(2024, 11, 3, 1, 15, fold=1, tzinfo=ZoneInfo("America/New_York")),
        at("2024-11-03T01:15:00-05:00"),
        at("2024-11-03T06:15:00+00:00"),
    ],
    ids=["local-fold1", "fixed-offset", "utc"],
)
def test_new_york_after_inside_second_pass(expr: str, expected: list[str], after: datetime) -> None:
    assert fires(expr, "America/New_York", after, len(expected)) == expected


def test_fixed_time_job_fires_once_on_fall_back_night() -> None:
    # Walk the whole night one answer at a time, as the beat does: each
    # fire time becomes the next "after".
    after = at("2024-11-02T23:00:00-04:00")
    seen = []
    for _ in range(3):
        after = cron.next_after("30 1 * * *", "America/New_York", after)
        seen.append(after.isoformat())
    assert seen == [
        "2024-11-03T05:30:00+00:00",
        "2024-11-04T06:30:00+00:00",
        "2024-11-05T06:30:00+00:00",
    ]


def test_next_after_distinguishes_the_two_passes_of_a_repeated_hour() -> None:
    # 01:30 fold=0 (-04:00, 05:30Z) and 01:30 fold=1 (-05:00, 06:30Z) are an
    # hour apart, but compare and hash equal as datetimes in the same zone.
    ny = ZoneInfo("America/New_York")
    first = datetime(2024, 11, 3, 1, 30, fold=0, tzinfo=ny)
    second = datetime(2024, 11, 3, 1, 30, fold=1, tzinfo=ny)
    answers = (
        cron.next_after("0 * * * *", "America/New_York", first),
        cron.next_after("0 * * * *", "America/New_York", second),
    )
    assert [a.isoformat() for a in answers] == [
        "2024-11-03T06:00:00+00:00",
        "2024-11-03T07:00:00+00:00",
    ]


# Europe/Riga: EET (+02:00) in winter, EEST (+03:00) in summer.
# On 2024-03-31 at 03:00 EET clocks jump to 04:00 EEST: 03:00-03:59 does not exist.
# On 2024-10-27 at 04:00 EEST clocks go back to 03:00 EET: 03:00-03:59 happens
# twice, first at +03:00 (00:00Z-00:59Z), then at +02:00 (01:00Z-01:59Z).
RIGA = [
    (
        "30 3 * * *",
        "2024-03-30T12:00:00+02:00",
        [
            "2024-03-31T04:00:00+03:00",
            "2024-04-01T03:30:00+03:00",
        ],
    ),
    (
        "0 * * * *",
        "2024-03-31T01:30:00+02:00",
        [
            "2024-03-31T02:00:00+02:00",
            "2024-03-31T04:00:00+03:00",
            "2024-03-31T05:00:00+03:00",
        ],
    ),
    (
        "30 3 * * *",
        "2024-10-26T12:00:00+03:00",
        [
            "2024-10-27T03:30:00+03:00",
            "2024-10-28T03:30:00+02:00",
        ],
    ),
    (
        "0 * * * *",
        "2024-10-27T01:30:00+03:00",
        [
            "2024-10-27T02:00:00+03:00",
            "2024-10-27T03:00:00+03:00",
            "2024-10-27T03:00:00+02:00",
            "2024-10-27T04:00:00+02:00",
        ],
    ),
    # A job at 04:00 is just after both transitions and is not affected.
    (
        "0 4 * * *",
        "2024-03-30T12:00:00+02:00",
        [
            "2024-03-31T04:00:00+03:00",
            "2024-04-01T04:00:00+03:00",
        ],
    ),
]


@pytest.mark.parametrize(("expr", "after", "expected"), RIGA)
def test_riga(expr: str, after: str, expected: list[str]) -> None:
    assert fires(expr, "Europe/Riga", at(after), len(expected)) == expected


# Australia/Lord_Howe shifts by 30 minutes: +10:30 in winter, +11:00 in summer
# (southern hemisphere, so summer time spans the new year).
# On 2024-04-07 at 02:00 +11:00 clocks go back to 01:30 +10:30: 01:30-01:59
# happens twice, first at +11:00 (14:30Z-14:59Z on the 6th), then at +10:30
# (15:00Z-15:29Z).
# On 2024-10-06 at 02:00 +10:30 clocks jump to 02:30 +11:00: 02:00-02:29 does
# not exist.
LORD_HOWE = [
    (
        "45 1 * * *",
        "2024-04-06T12:00:00+11:00",
        [
            "2024-04-07T01:45:00+11:00",
            "2024-04-08T01:45:00+10:30",
        ],
    ),
    (
        "*/30 * * * *",
        "2024-04-07T00:45:00+11:00",
        [
            "2024-04-07T01:00:00+11:00",
            "2024-04-07T01:30:00+11:00",
            "2024-04-07T01:30:00+10:30",
            "2024-04-07T02:00:00+10:30",
        ],
    ),
    # 01:00 is before the repeated half hour and occurs once.
    (
        "0 1 * * *",
        "2024-04-06T12:00:00+11:00",
        [
            "2024-04-07T01:00:00+11:00",
            "2024-04-08T01:00:00+10:30",
        ],
    ),
    (
        "15 2 * * *",
        "2024-10-04T12:00:00+10:30",
        [
            "2024-10-05T02:15:00+10:30",
            "2024-10-06T02:30:00+11:00",
            "2024-10-07T02:15:00+11:00",
        ],
    ),
    (
        "*/15 * * * *",
        "2024-10-06T01:30:00+10:30",
        [
            "2024-10-06T01:45:00+10:30",
            "2024-10-06T02:30:00+11:00",
            "2024-10-06T02:45:00+11:00",
        ],
    ),
]


@pytest.mark.parametrize(("expr", "after", "expected"), LORD_HOWE)
def test_lord_howe(expr: str, after: str, expected: list[str]) -> None:
    assert fires(expr, "Australia/Lord_Howe", at(after), len(expected)) == expected


# Pacific/Chatham: +12:45 in winter, +13:45 in summer (southern hemisphere).
# On 2024-04-07 at 03:45 +13:45 clocks go back to 02:45 +12:45: 02:45-03:44
# happens twice, first at +13:45 (13:00Z-13:59Z on the 6th), then at +12:45
# (14:00Z-14:59Z).
# On 2024-09-29 at 02:45 +12:45 clocks jump to 03:45 +13:45: 02:45-03:44 does
# not exist.
CHATHAM = [
    (
        "0 3 * * *",
        "2024-04-06T12:00:00+13:45",
        [
            "2024-04-07T03:00:00+13:45",
            "2024-04-08T03:00:00+12:45",
        ],
    ),
    (
        "0 * * * *",
        "2024-04-07T01:30:00+13:45",
        [
            "2024-04-07T02:00:00+13:45",
            "2024-04-07T03:00:00+13:45",
            "2024-04-07T03:00:00+12:45",
            "2024-04-07T04:00:00+12:45",
        ],
    ),
    (
        "0 3 * * *",
        "2024-09-28T12:00:00+12:45",
        [
            "2024-09-29T03:45:00+13:45",
            "2024-09-30T03:00:00+13:45",
        ],
    ),
    # 02:30 is just before the gap and is not moved.
    (
        "30 2 * * *",
        "2024-09-28T12:00:00+12:45",
        [
            "2024-09-29T02:30:00+12:45",
            "2024-09-30T02:30:00+13:45",
        ],
    ),
    (
        "0 * * * *",
        "2024-09-29T00:30:00+12:45",
        [
            "2024-09-29T01:00:00+12:45",
            "2024-09-29T02:00:00+12:45",
            "2024-09-29T04:00:00+13:45",
        ],
    ),
]


@pytest.mark.parametrize(("expr", "after", "expected"), CHATHAM)
def test_chatham(expr: str, after: str, expected: list[str]) -> None:
    assert fires(expr, "Pacific/Chatham", at(after), len(expected)) == expected


# In Debian cron, if either the day-of-month or the day-of-week field starts
# with a star, the two are AND-ed; otherwise a day matching either one fires.
# 2024-01-01 is a Monday.
DAYS = [
    # AND: odd days of the month that are also Mondays.
    (
        "0 0 */2 * 1",
        [
            "2024-01-15T00:00:00+00:00",
            "2024-01-29T00:00:00+00:00",
            "2024-02-05T00:00:00+00:00",
            "2024-02-19T00:00:00+00:00",
            "2024-03-11T00:00:00+00:00",
        ],
    ),
    # OR: the 1st, the 15th and every Monday.
    (
        "0 0 1,15 * MON",
        [
            "2024-01-08T00:00:00+00:00",
            "2024-01-15T00:00:00+00:00",
            "2024-01-22T00:00:00+00:00",
            "2024-01-29T00:00:00+00:00",
            "2024-02-01T00:00:00+00:00",
            "2024-02-05T00:00:00+00:00",
        ],
    ),
    # Month and day names; day-of-month is a star, so Mondays in January only.
    (
        "0 9 * JAN MON",
        [
            "2024-01-01T09:00:00+00:00",
            "2024-01-08T09:00:00+00:00",
            "2024-01-15T09:00:00+00:00",
            "2024-01-22T09:00:00+00:00",
            "2024-01-29T09:00:00+00:00",
            "2025-01-06T09:00:00+00:00",
        ],
    ),
    # Lower-case names are the same names.
    ("0 9 * jan mon", ["2024-01-01T09:00:00+00:00", "2024-01-08T09:00:00+00:00"]),
    # A day-of-week star AND a day-of-month list: the 31st of months that have one.
    (
        "0 0 31 * *",
        [
            "2024-01-31T00:00:00+00:00",
            "2024-03-31T00:00:00+00:00",
            "2024-05-31T00:00:00+00:00",
        ],
    ),
    # 29 February only in leap years.
    ("0 0 29 FEB *", ["2024-02-29T00:00:00+00:00", "2028-02-29T00:00:00+00:00"]),
    # Day-of-week ranges with names, on weekdays in March.
    (
        "30 8 * MAR MON-FRI",
        [
            "2024-03-01T08:30:00+00:00",
            "2024-03-04T08:30:00+00:00",
            "2024-03-05T08:30:00+00:00",
        ],
    ),
]


@pytest.mark.parametrize(("expr", "expected"), DAYS)
def test_day_of_month_and_day_of_week(expr: str, expected: list[str]) -> None:
    assert fires(expr, "UTC", at("2024-01-01T00:00:00+00:00"), len(expected)) == expected


@pytest.mark.parametrize("sunday", ["7", "0", "SUN", "sun"])
def test_seven_is_sunday(sunday: str) -> None:
    assert fires(f"0 12 * * {sunday}", "UTC", at("2024-01-01T00:00:00+00:00"), 2) == [
        "2024-01-07T12:00:00+00:00",
        "2024-01-14T12:00:00+00:00",
    ]


def test_times_are_in_the_schedule_zone() -> None:
    # The same instant asked in three ways gives the same answer, written in
    # the schedule's zone whatever zone "after" was written in.
    expected = ["2024-06-01T09:00:00+05:30", "2024-06-02T09:00:00+05:30"]
    for after in (
        "2024-06-01T00:00:00+00:00",
        "2024-05-31T20:00:00-04:00",
        "2024-06-01T05:30:00+05:30",
    ):
        assert fires("0 9 * * *", "Asia/Kolkata", at(after), 2) == expected


def test_next_is_strictly_after() -> None:
    on_slot = at("2024-01-01T12:00:00+00:00")
    assert cron.next_after("0 12 * * *", "UTC", on_slot).isoformat() == (
        "2024-01-02T12:00:00+00:00"
    )
    # A fraction of a second past the slot is past it too.
    assert cron.next_after(
        "* * * * *", "UTC", at("2024-01-01T12:00:00.500000+00:00")
    ).isoformat() == ("2024-01-01T12:01:00+00:00")


def test_next_after_answers_in_utc() -> None:
    result = cron.next_after("30 2 * * *", "America/New_York", at("2024-03-09T12:00:00-05:00"))
    assert result.tzinfo is UTC
    assert result.isoformat() == "2024-03-10T07:00:00+00:00"


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        cron.next_times("0 * * * *", "UTC", datetime(2024, 1, 1), 1)


def test_next_times_needs_at_least_one() -> None:
    with pytest.raises(InvalidInput) as info:
        cron.next_times("0 * * * *", "UTC", at("2024-01-01T00:00:00+00:00"), 0)
    assert info.value.field == "n"


# --- Debian's rules where cronsim departs ---------------------------------------------
#
# Each expectation follows Debian cron 3.0pl1-162 (bookworm), entry.c: get_range()
# sets every value from a range's start to its end by the step (a one-value range
# with a step is that value); load_entry() maps each nickname to fixed bits, with
# HR_STAR for @hourly only. cronsim 2.8 reads "a-a/s" as "from a to the end".
# Written by hand from those rules, not computed by cronsim.

# 2024-03-04 is a Monday.
MONDAY = "2024-03-04T00:00:00+00:00"
DEBIAN_UTC = [
    # cronsim: 04:00, 05:00, 06:00 ...
    ("0 4-4/1 * * *", ["2024-03-04T04:00:00+00:00", "2024-03-05T04:00:00+00:00",
                       "2024-03-06T04:00:00+00:00"]),
    ("0 4-4/7 * * *", ["2024-03-04T04:00:00+00:00", "2024-03-05T04:00:00+00:00"]),
    ("1-5/2 0 * * *", ["2024-03-04T00:01:00+00:00", "2024-03-04T00:03:00+00:00",
                       "2024-03-04T00:05:00+00:00", "2024-03-05T00:01:00+00:00"]),
    # Step past the range's end: the start alone.
    ("10-12/5 0 * * *", ["2024-03-04T00:10:00+00:00", "2024-03-05T00:10:00+00:00"]),
    # Names with a step: MON, WED, FRI.
    ("0 0 * * MON-FRI/2", ["2024-03-06T00:00:00+00:00", "2024-03-08T00:00:00+00:00",
                           "2024-03-11T00:00:00+00:00", "2024-03-13T00:00:00+00:00"]),
    ("0 0 * * mon-mon/3", ["2024-03-11T00:00:00+00:00", "2024-03-18T00:00:00+00:00"]),
    # 7 is Sunday too: FRI and SUN.
    ("30 12 * * 5-7/2", ["2024-03-08T12:30:00+00:00", "2024-03-10T12:30:00+00:00",
                         "2024-03-15T12:30:00+00:00"]),
    ("0 0 * * 0-7/7", ["2024-03-10T00:00:00+00:00", "2024-03-17T00:00:00+00:00"]),
    # cronsim: the 4th to the 31st of every month.
    ("0 0 4-4/1 * *", ["2024-04-04T00:00:00+00:00", "2024-05-04T00:00:00+00:00"]),
    # cronsim: February to December.
    ("0 0 1 FEB-FEB/5 *", ["2025-02-01T00:00:00+00:00", "2026-02-01T00:00:00+00:00"]),
    ("0 0 */10 * *", ["2024-03-11T00:00:00+00:00", "2024-03-21T00:00:00+00:00",
                      "2024-03-31T00:00:00+00:00", "2024-04-01T00:00:00+00:00"]),
    ("0 0 1-31/15 * *", ["2024-03-16T00:00:00+00:00", "2024-03-31T00:00:00+00:00",
                         "2024-04-01T00:00:00+00:00"]),
    ("*/100 * * * *", ["2024-03-04T01:00:00+00:00", "2024-03-04T02:00:00+00:00"]),
    # OR (neither day field starts with "*"): the 13th, or a Friday. cronsim
    # would add the 18th, 23rd and 28th.
    ("0 0 13-13/5 * FRI", ["2024-03-08T00:00:00+00:00", "2024-03-13T00:00:00+00:00",
                           "2024-03-15T00:00:00+00:00", "2024-03-22T00:00:00+00:00",
                           "2024-03-29T00:00:00+00:00"]),
    # Nicknames.
    ("@yearly", ["2025-01-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00"]),
    ("@annually", ["2025-01-01T00:00:00+00:00"]),
    ("@monthly", ["2024-04-01T00:00:00+00:00", "2024-05-01T00:00:00+00:00"]),
    ("@weekly", ["2024-03-10T00:00:00+00:00", "2024-03-17T00:00:00+00:00"]),
    ("@daily", ["2024-03-05T00:00:00+00:00", "2024-03-06T00:00:00+00:00"]),
    ("@midnight", ["2024-03-05T00:00:00+00:00"]),
    ("@hourly", ["2024-03-04T01:00:00+00:00", "2024-03-04T02:00:00+00:00"]),
    (" \t@hourly\n", ["2024-03-04T01:00:00+00:00"]),
]  # fmt: skip


@pytest.mark.parametrize(("expr", "expected"), DEBIAN_UTC)
def test_debian_ranges_steps_and_nicknames(expr: str, expected: list[str]) -> None:
    assert fires(expr, "UTC", at(MONDAY), len(expected)) == expected


# Nicknames across DST nights: @hourly is a wildcard job (Debian sets HR_STAR),
# so it fires in both passes of a repeated hour; the others are fixed-time jobs.
# New York and Riga: see the tables above. A one-value range with a step is a
# fixed-time job as well: it does not start with "*".
NICKNAMES_NEW_YORK = [
    ("@daily", "2024-03-09T12:00:00-05:00",
     ["2024-03-10T00:00:00-05:00", "2024-03-11T00:00:00-04:00"]),
    ("@daily", "2024-11-02T12:00:00-04:00",
     ["2024-11-03T00:00:00-04:00", "2024-11-04T00:00:00-05:00"]),
    ("@hourly", "2024-03-10T00:30:00-05:00",
     ["2024-03-10T01:00:00-05:00", "2024-03-10T03:00:00-04:00", "2024-03-10T04:00:00-04:00"]),
    ("@hourly", "2024-11-03T00:30:00-04:00",
     ["2024-11-03T01:00:00-04:00", "2024-11-03T01:00:00-05:00", "2024-11-03T02:00:00-05:00"]),
    ("@weekly", "2024-11-01T12:00:00-04:00",
     ["2024-11-03T00:00:00-04:00", "2024-11-10T00:00:00-05:00"]),
    ("@monthly", "2024-10-15T12:00:00-04:00",
     ["2024-11-01T00:00:00-04:00", "2024-12-01T00:00:00-05:00"]),
    ("@yearly", "2024-06-01T00:00:00-04:00", ["2025-01-01T00:00:00-05:00"]),
    # 01:00 once on the fall-back night (cronsim alone: every hour from 01:00).
    ("0 1-1/1 * * *", "2024-11-02T12:00:00-04:00",
     ["2024-11-03T01:00:00-04:00", "2024-11-04T01:00:00-05:00"]),
    # 02:30 does not exist on 2024-03-10: the first instant after the gap, once.
    ("30 2-2/5 * * *", "2024-03-09T12:00:00-05:00",
     ["2024-03-10T03:00:00-04:00", "2024-03-11T02:30:00-04:00"]),
]  # fmt: skip

NICKNAMES_RIGA = [
    # 2024-03-31 is a Sunday.
    ("@weekly", "2024-03-30T12:00:00+02:00",
     ["2024-03-31T00:00:00+02:00", "2024-04-07T00:00:00+03:00"]),
    ("@daily", "2024-10-26T12:00:00+03:00",
     ["2024-10-27T00:00:00+03:00", "2024-10-28T00:00:00+02:00"]),
    ("@midnight", "2024-03-30T12:00:00+02:00",
     ["2024-03-31T00:00:00+02:00", "2024-04-01T00:00:00+03:00"]),
    ("@hourly", "2024-03-31T01:30:00+02:00",
     ["2024-03-31T02:00:00+02:00", "2024-03-31T04:00:00+03:00", "2024-03-31T05:00:00+03:00"]),
    ("@hourly", "2024-10-27T02:30:00+03:00",
     ["2024-10-27T03:00:00+03:00", "2024-10-27T03:00:00+02:00", "2024-10-27T04:00:00+02:00"]),
    ("@monthly", "2024-03-15T12:00:00+02:00", ["2024-04-01T00:00:00+03:00"]),
    ("@annually", "2024-06-01T00:00:00+03:00", ["2025-01-01T00:00:00+02:00"]),
    ("0 3-3/1 * * *", "2024-03-30T12:00:00+02:00",
     ["2024-03-31T04:00:00+03:00", "2024-04-01T03:00:00+03:00"]),
    ("0 3-3/1 * * *", "2024-10-26T12:00:00+03:00",
     ["2024-10-27T03:00:00+03:00", "2024-10-28T03:00:00+02:00"]),
]  # fmt: skip

# America/Havana moves its clocks at midnight. On 2024-03-10 at 00:00 CST (-05:00)
# clocks jump to 01:00 CDT (-04:00): midnight does not exist. On 2024-11-03 at
# 01:00 CDT clocks go back to 00:00 CST: midnight happens twice, at 04:00Z and 05:00Z.
NICKNAMES_HAVANA = [
    ("@daily", "2024-03-09T12:00:00-05:00",
     ["2024-03-10T01:00:00-04:00", "2024-03-11T00:00:00-04:00"]),
    ("@daily", "2024-11-02T12:00:00-04:00",
     ["2024-11-03T00:00:00-04:00", "2024-11-04T00:00:00-05:00"]),
    ("@hourly", "2024-03-09T23:30:00-05:00",
     ["2024-03-10T01:00:00-04:00", "2024-03-10T02:00:00-04:00"]),
    ("@hourly", "2024-11-02T23:30:00-04:00",
     ["2024-11-03T00:00:00-04:00", "2024-11-03T00:00:00-05:00", "2024-11-03T01:00:00-05:00"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("zone", "expr", "after", "expected"),
    [("America/New_York", *row) for row in NICKNAMES_NEW_YORK]
    + [("Europe/Riga", *row) for row in NICKNAMES_RIGA]
    + [("America/Havana", *row) for row in NICKNAMES_HAVANA],
)
def test_nicknames_and_single_value_steps_across_dst(
    zone: str, expr: str, after: str, expected: list[str]
) -> None:
    assert fires(expr, zone, at(after), len(expected)) == expected


@pytest.mark.parametrize(
    ("nickname", "fields"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        (" @daily ", "0 0 * * *"),
        ("0 9 * * mon-fri", "0 9 * * MON-FRI"),
    ],
)
def test_expand(nickname: str, fields: str) -> None:
    assert cron.expand(nickname) == fields


def test_reboot_says_why() -> None:
    with pytest.raises(InvalidCronExpression) as info:
        cron.validate_expression("@reboot")
    assert info.value.field == "cron_expression"
    assert "@reboot means nothing to a scheduler" in str(info.value)


def test_uppercase_nickname_suggests_the_lowercase_one() -> None:
    with pytest.raises(InvalidCronExpression, match=r"nicknames are lowercase.*@daily"):
        cron.validate_expression("@DAILY")


# --- the end of the calendar ----------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "zone", "after"),
    [
        ("0 0 * * *", "UTC", "9999-12-31T12:00:00+00:00"),
        ("@yearly", "Europe/Riga", "9999-06-01T00:00:00+00:00"),
        ("0 0 29 2 *", "UTC", "9997-03-01T00:00:00+00:00"),
        # Kiritimati is 14 hours ahead: its local time overflows before UTC does.
        ("* * * * *", "Pacific/Kiritimati", "9999-12-31T23:59:00+00:00"),
        # An offset that puts the instant past the end of the calendar.
        ("* * * * *", "UTC", "9999-12-31T23:59:00-05:00"),
    ],
)
def test_no_fire_time_before_year_10000_is_a_clear_error(expr: str, zone: str, after: str) -> None:
    with pytest.raises(cron.NoFireTime) as info:
        cron.next_after(expr, zone, at(after))
    assert isinstance(info.value, InvalidCronExpression)
    assert "the calendar ends in 9999" in str(info.value)
    assert cron.next_times(expr, zone, at(after), 3) == []


def test_last_fire_times_of_the_calendar() -> None:
    # New York is behind UTC: its last midnight is 05:00Z on 9999-12-31.
    assert fires("0 0 * * *", "America/New_York", at("9999-12-30T12:00:00+00:00"), 5) == [
        "9999-12-31T00:00:00-05:00"
    ]
    assert fires("59 23 31 12 *", "UTC", at("9999-12-31T00:00:00+00:00"), 2) == [
        "9999-12-31T23:59:00+00:00"
    ]


def test_latest_at_or_before_near_the_end_of_the_calendar() -> None:
    result = cron.latest_at_or_before(
        "0 0 1 1 *", "Europe/Riga", at("9999-12-31T12:00:00+00:00"), at("9999-06-01T00:00:00+00:00")
    )
    assert result.isoformat() == "9999-06-01T00:00:00+00:00"


def test_the_start_of_the_calendar_does_not_overflow() -> None:
    # An offset that puts the instant before year 1 means "from the start".
    assert fires("0 0 * * *", "UTC", at("0001-01-01T00:00:00+05:00"), 1) == [
        "0001-01-02T00:00:00+00:00"
    ]
    assert cron.next_after("0 12 * * *", "America/New_York", at("0001-01-01T01:00:00+00:00"))


# --- latest_at_or_before -------------------------------------------------------------

LATEST = [
    # The last hourly slot before 12:30 is 12:00, even from an off-grid start.
    ("0 * * * *", "UTC", "2024-05-01T12:30:00+00:00", "2024-05-01T10:07:00+00:00",
     "2024-05-01T12:00:00+00:00"),
    # "at" itself counts.
    ("0 * * * *", "UTC", "2024-05-01T12:00:00+00:00", "2024-05-01T10:07:00+00:00",
     "2024-05-01T12:00:00+00:00"),
    # No slot in the window: not_before comes back.
    ("0 0 1 1 *", "UTC", "2024-06-01T00:00:00+00:00", "2024-03-05T10:00:00+00:00",
     "2024-03-05T10:00:00+00:00"),
    # A long outage of a daily job.
    ("0 3 * * *", "UTC", "2024-03-20T02:00:00+00:00", "2024-01-01T03:00:00+00:00",
     "2024-03-19T03:00:00+00:00"),
    # A yearly job, two years missed.
    ("0 0 1 1 *", "UTC", "2026-06-01T00:00:00+00:00", "2024-02-01T00:00:00+00:00",
     "2026-01-01T00:00:00+00:00"),
    # Every minute, several days missed.
    ("* * * * *", "UTC", "2024-05-04T12:00:30+00:00", "2024-05-01T00:00:00+00:00",
     "2024-05-04T12:00:00+00:00"),
    # Hourly in New York on the fall-back night: the second 01:00 (06:00Z).
    ("0 * * * *", "America/New_York", "2024-11-03T06:30:00+00:00",
     "2024-11-03T04:00:00+00:00", "2024-11-03T06:00:00+00:00"),
    # Fixed-time in New York on the fall-back night: only the first 01:30 (05:30Z).
    ("30 1 * * *", "America/New_York", "2024-11-03T06:45:00+00:00",
     "2024-11-02T00:00:00+00:00", "2024-11-03T05:30:00+00:00"),
    # Fixed-time in New York across the spring-forward gap: 03:00 EDT (07:00Z).
    ("30 2 * * *", "America/New_York", "2024-03-10T08:00:00+00:00",
     "2024-03-09T00:00:00+00:00", "2024-03-10T07:00:00+00:00"),
]  # fmt: skip


@pytest.mark.parametrize(("expr", "zone", "at_", "not_before", "expected"), LATEST)
def test_latest_at_or_before(
    expr: str, zone: str, at_: str, not_before: str, expected: str
) -> None:
    result = cron.latest_at_or_before(expr, zone, at(at_), at(not_before))
    assert result.isoformat() == expected


# --- validation ----------------------------------------------------------------------

REFUSED = [
    ("0 0 * *", "expected 5 fields"),
    ("0 0 * * * *", "expected 5 fields"),
    ("*", "expected 5 fields"),
    ("@reboot", "means nothing to a scheduler"),
    ("@REBOOT", "means nothing to a scheduler"),
    # Debian compares nicknames with strcmp: lowercase only.
    ("@DAILY", "nicknames are lowercase"),
    ("@Hourly", "nicknames are lowercase"),
    ("@fortnightly", "unknown nickname"),
    ("@", "unknown nickname"),
    ("@ daily", "unknown nickname"),
    ("@daily 5", "stands alone"),
    ("@daily * * * *", "stands alone"),
    ("0 @daily", "expected 5 fields"),
    ("", "empty"),
    ("   ", "empty"),
    ("0 0 30 2 *", "never fire"),
    ("0 0 31 4,6,9,11 *", "never fire"),
    ("60 * * * *", "minute"),
    ("0-60 * * * *", "minute"),
    ("5-1 * * * *", "runs backwards"),
    ("0 0 * * 5-1", "runs backwards"),
    ("0 0 * * FRI-MON/2", "runs backwards"),
    # Debian refuses a step without a range (cronsim reads 5/10 as 5-59/10).
    ("5/10 * * * *", "a step needs a range"),
    ("0 0 * * MON/2", "a step needs a range"),
    ("0 4/1 * * *", "hour"),
    ("0 0 31 4-4/1 *", "can never fire: no day 31 in APR"),
    ("0 0 31 APR-APR/3 *", "can never fire"),
    ("0 0 30-31 2 *", "can never fire: no day 30 in FEB"),
    ("0 0 31 2-6/2 *", "can never fire: no day 31 in FEB, APR, JUN"),
    ("0-60/5 * * * *", "60 is outside 0-59"),
    ("*/-1 * * * *", "minute"),
    ("*/\u00b2 * * * *", "minute"),
    ("\u0661 * * * *", "minute"),
    ("1,,2 * * * *", "minute"),
    ("1, * * * *", "minute"),
    ("*-5 * * * *", "minute"),
    ("99999999999999999999 * * * *", "minute"),
    ("-1 * * * *", "minute"),
    ("0 24 * * *", "hour"),
    ("0 0 0 * *", "day-of-month"),
    ("0 0 32 * *", "day-of-month"),
    ("0 0 * 13 *", "month"),
    ("0 0 * 0 *", "month"),
    ("0 0 * * 8", "day-of-week"),
    ("L * * * *", "minute"),
    ("0 0 L * *", "day-of-month"),
    ("0 0 LW * *", "day-of-month"),
    ("0 0 15W * *", "day-of-month"),
    ("0 0 * * 5L", "day-of-week"),
    ("0 0 * * 5#2", "day-of-week"),
    ("0 0 * * FRI#2", "day-of-week"),
    ("0 0 ? * *", "day-of-month"),
    ("0 0 * * ?", "day-of-week"),
    ("*/0 * * * *", "minute"),
    ("*/x * * * *", "minute"),
    ("0 0 * * MONDAY", "day-of-week"),
    ("0 0 * MON *", "month"),
    ("0 0 * * JAN", "day-of-week"),
    ("0 0 1 * * # comment", "expected 5 fields"),
]


@pytest.mark.parametrize(("expr", "problem"), REFUSED)
def test_validate_expression_refuses(expr: str, problem: str) -> None:
    with pytest.raises(InvalidCronExpression) as info:
        cron.validate_expression(expr)
    assert info.value.field == "cron_expression"
    assert problem in str(info.value)


def test_an_expression_that_never_fires_says_so() -> None:
    with pytest.raises(InvalidCronExpression, match="can never fire"):
        cron.validate_expression("0 0 30 2 *")


@pytest.mark.parametrize(
    ("expr", "normalised"),
    [
        ("0 12 * * *", "0 12 * * *"),
        ("  0   12 * *\t*  ", "0 12 * * *"),
        ("0 9 * jan mon-fri", "0 9 * JAN MON-FRI"),
        ("*/15 0-6/2 1,15 */3 0,6", "*/15 0-6/2 1,15 */3 0,6"),
        ("0 0 * * 7", "0 0 * * 7"),
        # OR with a day-of-week: fires on the Mondays of February.
        ("0 0 30 2 MON", "0 0 30 2 MON"),
        ("0 0 29 2 *", "0 0 29 2 *"),
        # A range with a step is stored as written; only its meaning follows Debian.
        ("0 4-4/1 * * *", "0 4-4/1 * * *"),
        ("0 0 * * mon-fri/2", "0 0 * * MON-FRI/2"),
        # Nicknames are kept as the user wrote them, without surrounding blanks.
        ("@daily", "@daily"),
        ("  @hourly\t", "@hourly"),
        ("\n@weekly\n", "@weekly"),
        ("@midnight", "@midnight"),
        ("@annually", "@annually"),
        # Debian: a step past the field's span sets the start alone.
        ("*/100 * * * *", "*/100 * * * *"),
        ("0 0 * * 0-7/7", "0 0 * * 0-7/7"),
    ],
)
def test_validate_expression_accepts_and_normalises(expr: str, normalised: str) -> None:
    assert cron.validate_expression(expr) == normalised


@pytest.mark.parametrize(
    "name",
    ["Mars/Olympus_Mons", "", "../etc/passwd", "/etc/passwd", "America/../Europe/Riga", " UTC"],
)
def test_get_zone_refuses(name: str) -> None:
    with pytest.raises(InvalidInput) as info:
        cron.get_zone(name)
    assert info.value.field == "timezone"


def test_unknown_zone_is_refused_when_computing_times() -> None:
    with pytest.raises(InvalidInput) as info:
        cron.next_times("0 * * * *", "Nowhere/Special", at("2024-01-01T00:00:00+00:00"), 1)
    assert info.value.field == "timezone"


@pytest.mark.parametrize(
    "name", ["UTC", "America/New_York", "Pacific/Chatham", "Australia/Lord_Howe", "Etc/UTC"]
)
def test_get_zone_accepts_iana_names(name: str) -> None:
    reference = datetime(2024, 7, 1, tzinfo=UTC)
    assert reference.astimezone(cron.get_zone(name)).utcoffset() == (
        reference.astimezone(ZoneInfo(name)).utcoffset()
    )


def _tz_files() -> list[str]:
    """Every file of the host's tz database, as a key (what a name could point at)."""
    import os
    import zoneinfo

    keys = set()
    for root in zoneinfo.TZPATH:
        for folder, _dirs, files in os.walk(root):
            keys.update(os.path.relpath(os.path.join(folder, f), root) for f in files)
    return sorted(keys)


def test_get_zone_accepts_exactly_the_listed_zone_names() -> None:
    """Deciding per name accepts what available_timezones() lists, less localtime and posixrules.

    Every file of the tz database is tried (posix/ and right/ copies, tables,
    localtime, posixrules included), plus names that are not files.
    """
    from zoneinfo import available_timezones

    listed = available_timezones() - {"localtime", "posixrules"}
    candidates = set(_tz_files()) | listed | {"Europe", "posix", "right", "Etc/../UTC", "./UTC"}
    assert len(candidates) > 500
    cron.get_zone.cache_clear()
    accepted = set()
    for name in candidates:
        try:
            cron.get_zone(name)
        except InvalidInput:
            continue
        accepted.add(name)
    assert accepted == listed
