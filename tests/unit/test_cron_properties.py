"""cron.next_after agrees with cronsim, the contract's definition of cron semantics."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
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
def field(draw: st.DrawFn, low: int, high: int, names: list[str] | None = None) -> str:
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
        _, end_text = value(draw, start)
        if kind == "range":
            return f"{start_text}-{end_text}"
        return f"{start_text}-{end_text}/{draw(st.integers(1, high - low + 1))}"

    if draw(st.integers(0, 4)) == 0:
        return "*"
    return ",".join(term(draw) for _ in range(draw(st.integers(1, 3))))


@st.composite
def expressions(draw: st.DrawFn) -> str:
    minute = draw(field(0, 59))
    hour = draw(field(0, 23))
    # Days 1..28 exist in every month, so no combination can never fire.
    dom = draw(field(1, 28))
    month = draw(field(1, 12, MONTHS))
    # 0..7: both 0 and 7 are Sunday (only 0 has the name SUN).
    dow = draw(field(0, 7, DAYS))
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
@given(expr=expressions(), zone=st.sampled_from(ZONES), after=instants)
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
