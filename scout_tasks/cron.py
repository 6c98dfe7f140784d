"""Cron expressions: validation and fire times, with Debian cron's semantics.

Fire times come from ``cronsim``, whose behaviour is the contract's definition:
day-of-month and day-of-week are OR-ed unless either starts with ``*``; a
fixed-time job (neither minute nor hour starts with ``*``) fires once at a local
time that occurs twice and at the first instant after a spring-forward gap; any
other job fires at every real instant whose local time matches. croniter fires
fixed-time jobs twice on fall-back nights, which is why it is not used here.

Only standard five-field expressions are accepted: cronsim also understands
seconds, ``L``, ``LW`` and ``#``, which Debian cron does not.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

from scout_tasks.errors import InvalidCronExpression, InvalidInput

_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_MONTHS = frozenset(
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
)
_DAYS = frozenset(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])
_ATOM = re.compile(r"^(\*|[0-9]+|[A-Z]{3})$")


def _check_standard_field(index: int, field: str) -> None:
    """Refuse the non-standard syntax cronsim would accept (``L``, ``#``, ``W``)."""
    names = _MONTHS if index == 3 else _DAYS if index == 4 else frozenset()
    for term in field.split(","):
        base, _, step = term.partition("/")
        if step and not step.isdigit():
            raise InvalidCronExpression(f"bad {_FIELDS[index]} field {field!r}")
        for atom in base.split("-", 1):
            if not _ATOM.match(atom) or (atom.isalpha() and atom not in names):
                raise InvalidCronExpression(f"bad {_FIELDS[index]} field {field!r}")


def _parses_with_every_month(parts: list[str]) -> bool:
    try:
        CronSim(" ".join([*parts[:3], "*", parts[4]]), datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError:
        return False
    return True


@functools.lru_cache(maxsize=4096)
def validate_expression(expr: str) -> str:
    """Return the normalised expression, or raise :class:`InvalidCronExpression`."""
    if not isinstance(expr, str) or not expr.strip():
        raise InvalidCronExpression("must not be empty")
    parts = expr.upper().split()
    if len(parts) != 5:
        raise InvalidCronExpression(
            f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(parts)}"
        )
    for index, field in enumerate(parts):
        _check_standard_field(index, field)
    normalised = " ".join(parts)
    try:
        it = CronSim(normalised, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        reason = str(exc).lower()
        if reason == "bad day-of-month" and _parses_with_every_month(parts):
            reason = "can never fire: that day-of-month does not occur in the given month(s)"
        raise InvalidCronExpression(f"{expr!r}: {reason}") from None
    try:
        # A valid expression fires within 28 years (the calendar repeats).
        next(it)
    except StopIteration:
        raise InvalidCronExpression(f"{expr!r} can never fire") from None
    return normalised


@functools.lru_cache(maxsize=1024)
def get_zone(name: str) -> tzinfo:
    """The ``tzinfo`` for an IANA name; raises :class:`InvalidInput` naming ``timezone``."""
    if name == "UTC":
        return UTC
    if name not in _iana_names():
        raise InvalidInput("timezone", f"unknown time zone {name!r} (use an IANA name)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidInput("timezone", f"unknown time zone {name!r} (use an IANA name)") from None


@functools.cache
def _iana_names() -> frozenset[str]:
    # Only real IANA names: "localtime" follows each host's /etc/localtime, and
    # the posix/ and right/ trees are not zone names at all.
    return frozenset(available_timezones()) - {"localtime", "posixrules"}


def _as_utc(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware")
    return dt.astimezone(UTC)


def iter_after(expr: str, zone: str, after: datetime) -> Iterator[datetime]:
    """Fire times strictly after ``after``, ascending, as aware datetimes in ``zone``."""
    tz = get_zone(zone)
    start = _as_utc(after)
    local = start.astimezone(tz)
    previous = start
    it = CronSim(validate_expression(expr), local)
    while True:
        try:
            fire = next(it)
            utc = fire.astimezone(UTC)
        except (StopIteration, OverflowError):
            # No further fire time, or none before the end of datetime's range.
            return
        # cronsim walks fixed-time jobs in naive local time, so just after a
        # fall-back it can name a wall time of the first pass that is already
        # behind us; those are not "after".
        if utc <= previous:
            continue
        previous = utc
        yield fire


def next_after(expr: str, zone: str, after: datetime) -> datetime:
    """The first fire time strictly after ``after``, in UTC."""
    # Keyed in UTC: two wall times of a repeated hour compare equal in Python
    # but are different instants.
    return _next_after_utc(expr, zone, _as_utc(after))


@functools.lru_cache(maxsize=65536)
def _next_after_utc(expr: str, zone: str, after: datetime) -> datetime:
    # Cached: every schedule sharing an expression and a zone asks the same
    # question with the same ``after`` when a burst of slots comes due.
    for fire in iter_after(expr, zone, after):
        return fire.astimezone(UTC)
    raise InvalidCronExpression(f"{expr!r} never fires after {after.isoformat()}")


def latest_at_or_before(expr: str, zone: str, at: datetime, not_before: datetime) -> datetime:
    """The last fire time in ``[not_before, at]``, or ``not_before`` when there is none.

    Walks forward from ``not_before``, so its cost grows with the number of
    slots in the window; callers use it only when more than one slot was missed.
    """
    latest = _as_utc(not_before)
    limit = _as_utc(at)
    # Jump close to the end first: step back one day at a time until the window
    # start, so long outages of frequent schedules stay cheap.
    probe = limit - timedelta(days=1)
    while probe > latest:
        candidate = next_after(expr, zone, probe)
        if candidate <= limit:
            latest = candidate
            break
        probe -= timedelta(days=1)
    for fire in iter_after(expr, zone, latest):
        utc = fire.astimezone(UTC)
        if utc > limit:
            break
        latest = utc
    return latest


def next_times(expr: str, zone: str, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire times after ``after``, in the schedule's zone."""
    if count < 1:
        raise InvalidInput("n", "must be at least 1")
    result: list[datetime] = []
    for fire in iter_after(expr, zone, after):
        result.append(fire)
        if len(result) >= count:
            break
    return result
