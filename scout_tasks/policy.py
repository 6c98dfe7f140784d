"""The misfire and overlap rules: which slots of due schedules get a run. Pure: ``now`` is given.

:func:`plan` decides for one due schedule; :func:`plan_batch` for a claimed
batch, returning the runs to insert, how to advance each schedule, and the
schedules that cannot be planned at all. Nothing here reads a clock or a
database: :mod:`scout_tasks.firing` claims the batch, asks, and writes.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from scout_tasks import cron
from scout_tasks.runs import NewScheduledRun
from scout_tasks.schedules import DueSchedule

# catch_up never creates more runs than this for one schedule in one pass.
MAX_CATCH_UP = 100
OUT_OF_RANGE = "next_run_at is out of range (before year 1 or after year 9999)"
# Counting skipped slots walks them; past this many the count is a lower bound.
_MAX_COUNTED = 10_000
# catch_up's first look back for its latest slots (see _latest_missed).
_FIRST_WINDOW = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do with one due schedule."""

    slots: tuple[datetime, ...]
    next_run_at: datetime
    skipped: int = 0
    reason: str | None = None


def _count_between(expr: str, zone: str, start: datetime, end: datetime) -> int:
    """Fire times in ``[start, end]``, counting ``start`` itself, capped at ``_MAX_COUNTED``."""
    count = 1
    for fire in cron.iter_after(expr, zone, start):
        if fire > end or count >= _MAX_COUNTED:
            break
        count += 1
    return count


def _latest_missed(
    expr: str, zone: str, first: datetime, grace_start: datetime, now: datetime
) -> list[datetime]:
    """The missed slots catch_up may run: ``first`` and the fire times after it up to ``now``.

    Only the latest :data:`MAX_CATCH_UP` on-time ones get a run, so the walk
    covers a window back from ``now`` that holds that many, doubling it from
    an hour, never the whole grace: a grace of 68 years (an int's worth of
    seconds, written with plain SQL) on a minutely schedule due since year 1
    was a walk of 35 million slots, minutes of CPU and gigabytes held while
    the claim kept its whole batch locked.
    """
    # Start a second early: a slot exactly grace_start old is on time.
    floor = max(first, grace_start - timedelta(seconds=1))
    window = _FIRST_WINDOW
    while True:
        start = max(floor, now - window)
        later: list[datetime] = []
        for fire in cron.iter_after(expr, zone, start):
            utc = fire.astimezone(UTC)
            if utc > now:
                break
            if utc > first and utc >= grace_start:
                later.append(utc)
        if start == floor:
            return [first, *later]
        if len(later) >= MAX_CATCH_UP:
            return later
        window *= 2


def plan(due: DueSchedule, now: datetime, *, count_skipped: bool = True) -> Plan:
    """Which slots of a due schedule get a run, and its next slot after ``now``.

    The missed slots are ``next_run_at`` (which an operator may have set off the
    cron grid) and every cron slot after it up to ``now``. A slot no older than
    ``misfire_grace_seconds`` is on time:
    - coalesce: one run, for the latest missed slot, however old;
    - skip: a run for the latest slot only if it is on time; the rest are counted as skipped;
    - catch_up: a run for every on-time slot (at most MAX_CATCH_UP); the rest are skipped.
    Overlap ``skip`` turns the runs into counted skips while the previous run is
    still pending or running.

    A jittered schedule (offset d) is planned on its own clock, ``now - d``:
    slot s is due at s + d, so lateness (the grace) is measured from s + d and
    its own jitter never makes a slot a misfire, and a slot whose s + d has
    not come yet is left for later even when s has passed.

    Counting the skipped slots walks up to 10,000 of them: a preview, which
    shows only the slots, passes ``count_skipped=False`` (``skipped`` is 0 then).
    """
    expr, zone, first = due.cron_expression, due.timezone, due.next_run_at
    if first is None:
        raise ValueError(OUT_OF_RANGE)
    now = now - timedelta(milliseconds=due.jitter_ms)
    grace_start = now - timedelta(seconds=due.misfire_grace_seconds)
    following = cron.next_after(expr, zone, first)
    several = following <= now
    next_run_at = cron.next_after(expr, zone, now) if several else following
    if due.misfire_policy == "catch_up":
        missed = _latest_missed(expr, zone, first, grace_start, now) if several else [first]
        slots = tuple(s for s in missed if s >= grace_start)[-MAX_CATCH_UP:]
    else:
        latest = cron.latest_at_or_before(expr, zone, now, first) if several else first
        on_time = due.misfire_policy == "coalesce" or latest >= grace_start
        slots = (latest,) if on_time else ()
    skipped = 0
    if due.misfire_policy != "coalesce" and count_skipped:
        total = _count_between(expr, zone, first, now) if several else 1
        skipped = max(0, total - len(slots))
    if slots and due.overlap_policy == "skip" and due.last_run_status in ("pending", "running"):
        return Plan((), next_run_at, skipped + len(slots), "overlap")
    return Plan(slots, next_run_at, skipped, "misfire" if skipped else None)


@dataclass(frozen=True, slots=True)
class Advance:
    """A planned schedule's next slot and the slots it skipped on the way."""

    schedule_id: uuid.UUID
    next_run_at: datetime
    skipped: int
    # Why slots were skipped ("misfire", "overlap"), for the log; None when none were.
    reason: str | None = None
    # The slot the schedule was due at, for the log.
    due_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Invalid:
    """A claimed schedule that cannot be planned; ``error`` becomes its ``last_error``."""

    schedule_id: uuid.UUID
    error: str


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """What one claimed batch comes to: runs to insert, schedules to advance or set aside."""

    runs: list[NewScheduledRun] = field(default_factory=list)
    advances: list[Advance] = field(default_factory=list)
    invalid: list[Invalid] = field(default_factory=list)
    # Claimed but left unplanned (``enough`` said so): untouched, still due.
    deferred: int = 0

    @property
    def skipped(self) -> int:
        return sum(a.skipped for a in self.advances)


def plan_batch(
    claimed: Iterable[DueSchedule], now: datetime, enough: Callable[[], bool] | None = None
) -> BatchPlan:
    """Plan every claimed schedule; one that cannot be planned is set aside, not fatal.

    A schedule written with plain SQL can hold anything the columns allow: an
    expression or zone that does not evaluate, or a ``next_run_at`` so far from
    now that date arithmetic overflows (year 1, year 9999). Such a schedule
    lands in ``invalid`` with the reason, and the rest of the batch fires.

    ``enough`` is asked after each schedule planned: once it says so, the rest
    are only counted in ``deferred`` (the caller leaves them due for a later claim).
    """
    result = BatchPlan()
    batch = list(claimed)
    for i, due in enumerate(batch):
        if i and enough is not None and enough():
            return dataclasses.replace(result, deferred=len(batch) - i)
        if due.next_run_at is None:
            # claim_due reads a timestamp Python cannot hold (before year 1, after 9999) as NULL.
            result.invalid.append(Invalid(due.id, OUT_OF_RANGE))
            continue
        try:
            p = plan(due, now)
        except Exception as exc:  # noqa: BLE001 - one bad row must not stall the batch
            result.invalid.append(Invalid(due.id, _invalid_reason(due, exc)))
            continue
        result.advances.append(Advance(due.id, p.next_run_at, p.skipped, p.reason, due.next_run_at))
        result.runs.extend(
            NewScheduledRun(
                schedule_id=due.id,
                scheduled_for=slot,
                triggered_by=due.name,
                source=due.source,
                max_strategies=due.max_strategies,
            )
            for slot in p.slots
        )
    return result


def _invalid_reason(due: DueSchedule, exc: Exception) -> str:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, ArithmeticError) or "out of range" in detail:
        return f"next_run_at {due.next_run_at.isoformat()} is out of range: {detail}"
    return f"cannot evaluate {due.cron_expression!r} in {due.timezone}: {detail}"
