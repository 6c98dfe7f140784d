"""Cron expressions: validation and fire times, with Debian cron's semantics.

Fire times come from ``cronsim``, whose DST handling is the contract's: a
fixed-time job (neither minute nor hour starts with ``*``) fires once at a
local time that occurs twice and at the first instant after a spring-forward
gap; any other job fires at every real instant whose local time matches.
croniter fires fixed-time jobs twice on fall-back nights, which is why it is
not used here.

Where cronsim's reading of a field departs from Debian cron (``entry.c``,
``get_range``, in cron 3.0pl1-162), this module follows Debian and hands
cronsim an equivalent expression it reads the same way:

- a range with a step sets every value from its start to its end by the step:
  ``4-4/1`` is just 4 (cronsim reads a single-value range with a step as "from
  there to the end"), so such terms are written out as a list;
- a step needs a range or a star: Debian refuses ``5/10`` (cronsim reads it as
  ``5-59/10``);
- Debian's nicknames (``@daily`` ...) stand for their five fields; they are
  lowercase only, as Debian compares them with ``strcmp``.

Debian silently accepts a descending range (``5-1`` sets nothing) and a job
that can never fire (``0 0 30 2 *``); both are refused here, with a message
that names the problem. Only standard five-field expressions are accepted:
cronsim also understands seconds, ``L``, ``LW`` and ``#``, which Debian does
not.

Python's datetime ends at year 9999: a fire time past that does not exist, and
the functions that must return one raise :class:`NoFireTime` (an
:class:`InvalidCronExpression`) rather than ``OverflowError`` or ``ValueError``.
"""

from __future__ import annotations

import calendar
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from scout_tasks.errors import InvalidCronExpression, InvalidInput

__all__ = [
    "NICKNAMES",
    "NoFireTime",
    "expand",
    "field_values",
    "get_zone",
    "iter_after",
    "latest_at_or_before",
    "next_after",
    "next_times",
    "validate_expression",
]

# Debian's entry.c, load_entry(): each nickname sets the same bits (and the same
# *_STAR flags) as these five fields, so DST treats @hourly as a wildcard job
# (HR_STAR) and the others as fixed-time jobs.
NICKNAMES: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_MONTHS = {name.upper(): number for number, name in enumerate(calendar.month_abbr) if name}
# Sunday first: Debian's DowNames, where 0 and 7 are both Sunday.
_DAYS = {
    name: number for number, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])
}
_NAMES: tuple[dict[str, int], ...] = ({}, {}, {}, _MONTHS, _DAYS)
# Longest month in each month (February counts its leap day).
_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# The calendar ends at year 9999; no conversion near its ends may overflow, so
# "after" is never earlier than this (earlier fire times are lost).
_EARLIEST = datetime(1, 1, 1, 23, 59, tzinfo=UTC)


class NoFireTime(InvalidCronExpression):
    """No fire time exists before the end of the calendar (year 9999)."""


@dataclass(frozen=True, slots=True)
class _Parsed:
    text: str  # what is stored and shown: the nickname, or the fields normalised
    fields: str  # the five fields it stands for
    cronsim: str  # the same meaning, written so that cronsim reads it as Debian does


def _bad(index: int, field: str, why: str = "") -> InvalidCronExpression:
    return InvalidCronExpression(
        f"bad {_FIELDS[index]} field {field!r}" + (f": {why}" if why else "")
    )


def _number(text: str) -> bool:
    # ASCII only: str.isdigit() also accepts superscripts and other scripts' digits.
    return text.isascii() and text.isdigit()


def _value(index: int, field: str, atom: str) -> int:
    if atom in _NAMES[index]:
        return _NAMES[index][atom]
    if not _number(atom):
        raise _bad(index, field)
    low, high = _BOUNDS[index]
    # Length first: int() of thousands of digits is slow (and refused past 4300).
    if len(atom) > 4 or not low <= int(atom) <= high:
        raise _bad(index, field, f"{atom} is outside {low}-{high}")
    return int(atom)


def _field(index: int, field: str) -> tuple[str, frozenset[int]]:
    """cronsim's text for one field, and the values Debian's get_list() sets for it."""
    low, high = _BOUNDS[index]
    terms: list[str] = []
    values: set[int] = set()
    for term in field.split(","):
        base, slash, step_text = term.partition("/")
        step = 1
        if slash:
            if not _number(step_text):
                raise _bad(index, field, f"the step {step_text!r} is not a number")
            # Any step past the field's span sets the start alone, as in Debian.
            step = int(step_text) if len(step_text) <= 4 else high + 1
            if step == 0:
                raise _bad(index, field, "a step must be at least 1")
        if base == "*":
            # Kept as written: a field that starts with "*" is a wildcard for
            # Debian's day-of-month/day-of-week rule and for DST.
            terms.append(term)
            values.update(range(low, high + 1, step))
            continue
        start_text, dash, end_text = base.partition("-")
        start = _value(index, field, start_text)
        if not dash:
            if slash:
                raise _bad(
                    index,
                    field,
                    f"a step needs a range, as in {start_text}-{high}/{step_text} or "
                    f"*/{step_text} (Debian cron refuses {term!r})",
                )
            terms.append(str(start))
            values.add(start)
            continue
        end = _value(index, field, end_text)
        if end < start:
            raise _bad(
                index, field, f"the range {base!r} runs backwards (Debian cron sets nothing)"
            )
        span = range(start, end + 1, step)
        values.update(span)
        # Written out: cronsim reads a one-value range with a step (4-4/1) as
        # "from 4 to the end", Debian as 4 alone.
        terms.append(",".join(map(str, span)) if slash else f"{start}-{end}")
    return ",".join(terms), frozenset(values)


def field_values(index: int, field: str) -> frozenset[int]:
    """The values Debian sets for field ``index`` (0 minute .. 4 day-of-week) of ``field``.

    Raises :class:`InvalidCronExpression` when the field does not parse.
    """
    return _field(index, field.upper())[1]


def _five_fields(expr: str, text: str) -> _Parsed:
    parts = text.upper().split()
    if len(parts) != 5:
        raise InvalidCronExpression(
            f"expected 5 fields (minute hour day-of-month month day-of-week) or a nickname "
            f"such as @daily, got {len(parts)}"
        )
    parsed = [_field(index, part) for index, part in enumerate(parts)]
    doms, months = parsed[2][1], parsed[3][1]
    # Debian: day-of-month and day-of-week are AND-ed when either starts with "*";
    # then a day-of-month that no chosen month has can never match.
    day_and = parts[2].startswith("*") or parts[4].startswith("*")
    if day_and and min(doms) > max(_DAYS_IN_MONTH[m] for m in months):
        names = ", ".join(calendar.month_abbr[m].upper() for m in sorted(months))
        raise InvalidCronExpression(
            f"{expr!r} can never fire: no day {min(doms)} in {names}"
            " (day-of-month and month never meet)"
        )
    cronsim_text = " ".join(text for text, _ in parsed)
    try:
        it = CronSim(cronsim_text, datetime(2000, 1, 1, tzinfo=UTC))
        # A valid expression fires within 28 years (the calendar repeats).
        next(it)
    except CronSimError as exc:
        raise InvalidCronExpression(f"{expr!r}: {str(exc).lower()}") from None
    except StopIteration:
        raise InvalidCronExpression(f"{expr!r} can never fire") from None
    return _Parsed(" ".join(parts), " ".join(parts), cronsim_text)


def _nickname(expr: str, word: str, extra: int) -> _Parsed:
    if word.lower() == "@reboot":
        raise InvalidCronExpression(
            "@reboot means nothing to a scheduler (it runs when a cron daemon starts); "
            "use a time, such as @daily or 0 4 * * *"
        )
    if word not in NICKNAMES:
        hint = (
            f"nicknames are lowercase, as in Debian cron: {word.lower()}"
            if word.lower() in NICKNAMES
            else "known: " + ", ".join(NICKNAMES)
        )
        raise InvalidCronExpression(f"unknown nickname {word!r} ({hint})")
    if extra:
        raise InvalidCronExpression(
            f"a nickname stands alone: {expr.strip()!r} has more after {word}"
        )
    fields = _five_fields(expr, NICKNAMES[word])
    return _Parsed(word, fields.fields, fields.cronsim)


@functools.lru_cache(maxsize=4096)
def _parse(expr: str) -> _Parsed:
    if not isinstance(expr, str) or not expr.strip():
        raise InvalidCronExpression("must not be empty")
    words = expr.split()
    if words[0].startswith("@"):
        return _nickname(expr, words[0], len(words) - 1)
    return _five_fields(expr, expr)


def validate_expression(expr: str) -> str:
    """The expression as stored, or raise :class:`InvalidCronExpression` naming the problem.

    A nickname is kept as written (``@daily``); five fields come back upper-case
    and single-spaced.
    """
    return _parse(expr).text


def expand(expr: str) -> str:
    """The five fields an expression stands for: ``@daily`` is ``0 0 * * *``."""
    return _parse(expr).fields


# What available_timezones() leaves out of the tz database's files: "localtime"
# follows each host's /etc/localtime, and the posix/ and right/ trees are not
# zone names at all.
_NOT_ZONES = frozenset({"localtime", "posixrules"})
_NOT_ZONE_TREES = frozenset({"posix", "right"})


@functools.lru_cache(maxsize=1024)
def get_zone(name: str) -> tzinfo:
    """The ``tzinfo`` for an IANA name; raises :class:`InvalidInput` naming ``timezone``.

    The names accepted are exactly ``available_timezones()`` less ``localtime``
    and ``posixrules``, decided for this name alone: listing them all walks the
    whole tz database (about 600 files, 60 ms of CPU), which every worker
    process paid in the first fire of a burst. A name ZoneInfo loads is a file
    of that database (or of the tzdata package) holding a zone, as listed, unless
    it is one of what the listing leaves out.
    """
    if name == "UTC":
        return UTC
    if name in _NOT_ZONES or name.partition("/")[0] in _NOT_ZONE_TREES:
        raise InvalidInput("timezone", f"unknown time zone {name!r} (use an IANA name)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidInput("timezone", f"unknown time zone {name!r} (use an IANA name)") from None


def _as_utc(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware")
    return dt.astimezone(UTC)


def _start(after: datetime) -> datetime | None:
    """``after`` in UTC, moved clear of the calendar's ends; None when past its end."""
    try:
        start = _as_utc(after)
    except OverflowError:
        # An offset pushed it off the calendar: before its start or after its end.
        return _EARLIEST if after.year == 1 else None
    return max(start, _EARLIEST)


def iter_after(expr: str, zone: str, after: datetime) -> Iterator[datetime]:
    """Fire times strictly after ``after``, ascending, as aware datetimes in ``zone``.

    Ends where the calendar does (year 9999).
    """
    tz = get_zone(zone)
    parsed = _parse(expr)
    start = _start(after)
    if start is None:
        return
    try:
        local = start.astimezone(tz)
    except OverflowError:
        return  # within hours of the end: no local time after it exists
    previous = start
    it = CronSim(parsed.cronsim, local)
    while True:
        try:
            fire = next(it)
            utc = fire.astimezone(UTC)
        except (StopIteration, OverflowError, ValueError):
            # No fire time before the end of datetime's range (cronsim steps
            # past year 9999 with OverflowError or ValueError).
            return
        # cronsim walks fixed-time jobs in naive local time, so just after a
        # fall-back it can name a wall time of the first pass that is already
        # behind us; those are not "after".
        if utc <= previous:
            continue
        previous = utc
        yield fire


def _no_fire_time(expr: str, after: datetime) -> NoFireTime:
    return NoFireTime(
        f"{expr!r} has no fire time after {after.isoformat()} (the calendar ends in 9999)"
    )


def next_after(expr: str, zone: str, after: datetime) -> datetime:
    """The first fire time strictly after ``after``, in UTC.

    Raises :class:`NoFireTime` when there is none before the end of year 9999.
    """
    # Keyed in UTC: two wall times of a repeated hour compare equal in Python
    # but are different instants.
    start = _start(after)
    if start is None:
        raise _no_fire_time(expr, after)
    return _next_after_utc(expr, zone, start)


@functools.lru_cache(maxsize=65536)
def _next_after_utc(expr: str, zone: str, after: datetime) -> datetime:
    # Cached: every schedule sharing an expression and a zone asks the same
    # question with the same ``after`` when a burst of slots comes due.
    for fire in iter_after(expr, zone, after):
        return fire.astimezone(UTC)
    raise _no_fire_time(expr, after)


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
        candidate = next(iter_after(expr, zone, probe), None)
        if candidate is not None and candidate.astimezone(UTC) <= limit:
            latest = candidate.astimezone(UTC)
            break
        probe -= timedelta(days=1)
    for fire in iter_after(expr, zone, latest):
        utc = fire.astimezone(UTC)
        if utc > limit:
            break
        latest = utc
    return latest


def next_times(expr: str, zone: str, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire times after ``after``, in the schedule's zone.

    Fewer (possibly none) when the calendar ends first, in year 9999.
    """
    if count < 1:
        raise InvalidInput("n", "must be at least 1")
    result: list[datetime] = []
    for fire in iter_after(expr, zone, after):
        result.append(fire)
        if len(result) >= count:
            break
    return result


def iter_between(expr: str, zone: str, start: datetime, end: datetime) -> Iterator[datetime]:
    """Fire times t with ``start <= t < end``, ascending, in UTC (a backfill's slots)."""
    # Fire times fall on whole minutes, so "after start - 1 µs" includes start.
    for fire in iter_after(expr, zone, start - timedelta(microseconds=1)):
        utc = fire.astimezone(UTC)
        if utc >= end:
            return
        yield utc
