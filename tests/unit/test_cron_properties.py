"""cron.next_after agrees with Debian cron's rules.

Two oracles: cronsim (whose DST handling is the contract's) for every zone, on
expressions where cronsim reads the fields as Debian does; and, in UTC, a
search written here from Debian's entry.c for any expression, including the
one-value ranges with a step that cronsim reads as "from there to the end".
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim
from hypothesis import given, settings
from hypothesis import strategies as st

from scout_tasks import cron

ZONES = [
    "UTC",
    "America/New_York",
    "Europe/Riga",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Asia/Kolkata",
    "America/Sao_Paulo",
    "Europe/London",
]
MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


@st.composite
def field(
    draw: st.DrawFn,
    low: int,
    high: int,
    names: list[str] | None = None,
    single_value_steps: bool = True,
) -> str:
    """One cron field over [low, high]: a star, a value, a range, steps, or a list."""

    def value(draw: st.DrawFn, lo: int = low) -> tuple[int, str]:
        v = draw(st.integers(lo, high))
        if names is not None and v - low < len(names) and draw(st.booleans()):
            return v, names[v - low]
        return v, str(v)

    def term(draw: st.DrawFn) -> str:
        kind = draw(st.sampled_from(["value", "range", "range-step", "star-step"]))
        if kind == "value":
            return value(draw)[1]
        if kind == "star-step":
            return f"*/{draw(st.integers(1, high - low + 1))}"
        start, start_text = value(draw)
        if kind == "range-step" and not single_value_steps and start == high:
            return start_text
        # cronsim reads a one-value range with a step (4-4/1) as "from 4 on".
        lowest_end = start if single_value_steps or kind == "range" else start + 1
        _, end_text = value(draw, lowest_end)
        if kind == "range":
            return f"{start_text}-{end_text}"
        return f"{start_text}-{end_text}/{draw(st.integers(1, high - low + 1))}"

    if draw(st.integers(0, 4)) == 0:
        return "*"
    return ",".join(term(draw) for _ in range(draw(st.integers(1, 3))))


@st.composite
def expressions(draw: st.DrawFn, single_value_steps: bool = True) -> str:
    minute = draw(field(0, 59, single_value_steps=single_value_steps))
    hour = draw(field(0, 23, single_value_steps=single_value_steps))
    # Days 1..28 exist in every month, so no combination can never fire.
    dom = draw(field(1, 28, single_value_steps=single_value_steps))
    month = draw(field(1, 12, MONTHS, single_value_steps=single_value_steps))
    # 0..7: both 0 and 7 are Sunday (only 0 has the name SUN).
    dow = draw(field(0, 7, DAYS, single_value_steps=single_value_steps))
    return f"{minute} {hour} {dom} {month} {dow}"


instants = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2035, 12, 31, 23, 59, 59),
    timezones=st.just(UTC),
)


def cronsim_next(expr: str, zone: str, after: datetime) -> datetime:
    for fire in CronSim(expr, after.astimezone(ZoneInfo(zone))):
        if fire.astimezone(UTC) > after:
            return fire.astimezone(UTC)
    raise AssertionError(f"cronsim found no fire time for {expr!r} after {after}")


@settings(max_examples=300, deadline=None, database=None)
@given(expr=expressions(single_value_steps=False), zone=st.sampled_from(ZONES), after=instants)
def test_next_after_matches_cronsim(expr: str, zone: str, after: datetime) -> None:
    cron.validate_expression(expr)
    result = cron.next_after(expr, zone, after)
    assert result > after
    assert result == cronsim_next(expr, zone, after)


@settings(max_examples=100, deadline=None, database=None)
@given(expr=expressions(), zone=st.sampled_from(ZONES), after=instants)
def test_next_times_ascend_and_agree_with_next_after(expr: str, zone: str, after: datetime) -> None:
    times = cron.next_times(expr, zone, after, 5)
    assert len(times) == 5
    utc = [t.astimezone(UTC) for t in times]
    assert utc == sorted(set(utc))
    assert utc[0] == cron.next_after(expr, zone, after)
    # Each answer's successor is the next one: the walk is consistent.
    for earlier, later in itertools.pairwise(utc):
        assert cron.next_after(expr, zone, earlier) == later


# Debian's entry.c, get_range(): "*" is low-high; a-b/s sets a, a+s, ... up to b.
BOUNDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
NAMES = [{}, {}, {}, {m: i + 1 for i, m in enumerate(MONTHS)}, {d: i for i, d in enumerate(DAYS)}]


def debian_values(index: int, text: str) -> set[int]:
    low, high = BOUNDS[index]
    values: set[int] = set()
    for term in text.upper().split(","):
        base, _, step = term.partition("/")
        if base == "*":
            start, end = low, high
        else:
            first, _, last = base.partition("-")
            start = NAMES[index].get(first, None)
            start = int(first) if start is None else start
            end = NAMES[index].get(last, None) if last else start
            end = int(last) if end is None else end
        values.update(range(start, end + 1, int(step or 1)))
    if index == 4 and values & {0, 7}:
        values |= {0, 7}
    return values


def debian_next_utc(expr: str, after: datetime) -> datetime:
    """The first minute after ``after`` whose UTC wall time matches, by Debian's rules."""
    fields = expr.split()
    minutes, hours, doms, months, dows = (debian_values(i, f) for i, f in enumerate(fields))
    day_and = fields[2].startswith("*") or fields[4].startswith("*")
    day = after.replace(hour=0, minute=0, second=0, microsecond=0)
    while True:
        dom_ok = day.day in doms
        dow_ok = (day.isoweekday() % 7) in dows
        if day.month in months and ((dom_ok and dow_ok) if day_and else (dom_ok or dow_ok)):
            for hour in sorted(hours):
                for minute in sorted(minutes):
                    candidate = day.replace(hour=hour, minute=minute)
                    if candidate > after:
                        return candidate
        day += timedelta(days=1)


@settings(max_examples=300, deadline=None, database=None)
@given(expr=expressions(), after=instants)
def test_next_after_follows_debian_in_utc(expr: str, after: datetime) -> None:
    assert cron.next_after(expr, "UTC", after) == debian_next_utc(expr, after)
