"""Firing due schedules: decide which slots get a run, then write runs and events at once.

:func:`plan` is pure (time is an argument) and holds the misfire and overlap
policies. :func:`fire_due` claims due schedules in batches, writes every
batch's runs, events and next slots in one transaction, then publishes the
batch's events with one confirm round trip.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from scout_tasks import cron, outbox, runs, schedules
from scout_tasks.db import db_now
from scout_tasks.errors import InvalidInput
from scout_tasks.events import TRIGGER, TriggerEvent
from scout_tasks.publisher import ConfirmingPublisher
from scout_tasks.schedules import DueSchedule

log = logging.getLogger(__name__)

# catch_up never creates more runs than this for one schedule in one pass.
MAX_CATCH_UP = 100
# Batches with at most this many runs log one line per run at INFO.
_LOGGED_ONE_BY_ONE = 10
# Counting skipped slots walks them; past this many the count is a lower bound.
_MAX_COUNTED = 10_000


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


def plan(due: DueSchedule, now: datetime) -> Plan:
    """Which slots of a due schedule get a run, and its next slot after ``now``.

    The missed slots are ``next_run_at`` (which an operator may have set off the
    cron grid) and every cron slot after it up to ``now``. A slot no older than
    ``misfire_grace_seconds`` is on time:
    - coalesce: one run, for the latest missed slot, however old;
    - skip: a run for the latest slot only if it is on time; the rest are counted as skipped;
    - catch_up: a run for every on-time slot (at most MAX_CATCH_UP); the rest are skipped.
    Overlap ``skip`` turns the runs into counted skips while the previous run is
    still pending or running.
    """
    expr, zone, first = due.cron_expression, due.timezone, due.next_run_at
    grace_start = now - timedelta(seconds=due.misfire_grace_seconds)
    following = cron.next_after(expr, zone, first)
    several = following <= now
    next_run_at = cron.next_after(expr, zone, now) if several else following
    if due.misfire_policy == "catch_up":
        missed = [first]
        if several:
            # Start a second early: a slot exactly grace_start old is on time.
            start = max(first, grace_start - timedelta(seconds=1))
            for fire in cron.iter_after(expr, zone, start):
                utc = fire.astimezone(UTC)
                if utc > now:
                    break
                if utc > first:
                    missed.append(utc)
        slots = tuple(s for s in missed if s >= grace_start)[-MAX_CATCH_UP:]
    else:
        latest = cron.latest_at_or_before(expr, zone, now, first) if several else first
        on_time = due.misfire_policy == "coalesce" or latest >= grace_start
        slots = (latest,) if on_time else ()
    skipped = 0
    if due.misfire_policy != "coalesce":
        total = _count_between(expr, zone, first, now) if several else 1
        skipped = max(0, total - len(slots))
    if slots and due.overlap_policy == "skip" and due.last_run_status in ("pending", "running"):
        return Plan((), next_run_at, skipped + len(slots), "overlap")
    return Plan(slots, next_run_at, skipped, "misfire" if skipped else None)


@dataclass(slots=True)
class FireReport:
    claimed: int = 0
    runs: int = 0
    published: int = 0
    skipped: int = 0
    initialised: int = 0
    invalid: int = 0
    publish_failed: bool = False


def initialise_unscheduled(engine: Engine, batch_size: int) -> tuple[int, int]:
    """Compute ``next_run_at`` for enabled schedules that have none.

    Returns (initialised, invalid). A schedule whose expression or time zone
    cannot be evaluated (written with plain SQL, bypassing validation) gets
    ``last_error`` set instead, so it is reported rather than retried forever.
    """
    initialised = invalid = 0
    while True:
        with engine.begin() as conn:
            claimed = schedules.claim_unscheduled(conn, batch_size)
            if not claimed:
                return initialised, invalid
            now = db_now(conn)
            nexts: list[datetime | None] = []
            errors: list[str | None] = []
            for schedule_id, expr, zone in claimed:
                try:
                    nexts.append(cron.next_after(expr, zone, now))
                    errors.append(None)
                    initialised += 1
                except InvalidInput as exc:
                    nexts.append(None)
                    errors.append(str(exc))
                    invalid += 1
                    log.error(
                        "schedule cannot be scheduled: %s",
                        exc,
                        extra={"action": "schedule.invalid", "schedule_id": str(schedule_id)},
                    )
            schedules.set_next_run(conn, [c[0] for c in claimed], nexts, errors)
        if len(claimed) < batch_size:
            return initialised, invalid


def fire_due(
    engine: Engine,
    publisher: ConfirmingPublisher | None,
    *,
    batch_size: int = 1000,
    on_full_batch: Callable[[], None] | None = None,
) -> FireReport:
    """Fire every due schedule, one claimed batch per transaction, until none is due.

    ``on_full_batch`` is called once when the first batch comes back full, so
    the caller can hand the rest of a burst to other worker processes.
    """
    report = FireReport()
    init, invalid = initialise_unscheduled(engine, batch_size)
    report.initialised, report.invalid = init, invalid
    fanned_out = False
    while True:
        queued, claimed = _fire_batch(engine, batch_size, report)
        if claimed == batch_size and not fanned_out and on_full_batch is not None:
            fanned_out = True
            on_full_batch()
        if publisher is not None and queued and not report.publish_failed:
            delivered = outbox.deliver(engine, publisher, queued)
            report.published += delivered.published
            # The broker is away: stop trying per batch; the relay sends the rest.
            report.publish_failed = delivered.failed
        if claimed < batch_size:
            return report


def _fire_batch(engine: Engine, batch_size: int, report: FireReport) -> tuple[outbox.Queued, int]:
    with engine.begin() as conn:
        claimed = schedules.claim_due(conn, batch_size)
        if not claimed:
            return {}, 0
        now = db_now(conn)
        new_runs: list[runs.NewScheduledRun] = []
        plans: list[tuple[DueSchedule, Plan | None]] = []
        for due in claimed:
            try:
                p = plan(due, now)
            except InvalidInput as exc:
                log.error(
                    "schedule cannot be fired: %s",
                    exc,
                    extra={"action": "schedule.invalid", "schedule_id": str(due.id)},
                )
                plans.append((due, None))
                continue
            plans.append((due, p))
            for slot in p.slots:
                new_runs.append(
                    runs.NewScheduledRun(
                        id=uuid.uuid4(),
                        schedule_id=due.id,
                        scheduled_for=slot,
                        triggered_by=due.name,
                        source=due.source,
                        max_strategies=due.max_strategies,
                    )
                )
            if p.skipped:
                log.info(
                    "skipped %d slot(s) (%s)",
                    p.skipped,
                    p.reason,
                    extra={
                        "action": f"schedule.skipped_{p.reason}",
                        "schedule_id": str(due.id),
                        "slot": due.next_run_at.isoformat(),
                    },
                )
        inserted = runs.insert_scheduled_runs(conn, new_runs)
        events = []
        last_run: dict[uuid.UUID, uuid.UUID] = {}
        for run in new_runs:
            if run.id not in inserted:
                log.debug(
                    "slot already has a run",
                    extra={
                        "action": "run.duplicate_slot",
                        "schedule_id": str(run.schedule_id),
                        "slot": run.scheduled_for.isoformat(),
                    },
                )
                continue
            last_run[run.schedule_id] = run.id
            # Built without re-validation: every value was just read from typed columns.
            event = TriggerEvent.model_construct(
                event_id=uuid.uuid4(),
                timestamp=now,
                run_id=run.id,
                source=run.source,
                max_strategies=run.max_strategies,
                trigger_type="scheduled",
                triggered_by=run.triggered_by,
                schedule_id=run.schedule_id,
                scheduled_for=run.scheduled_for,
            )
            events.append(outbox.PendingEvent(event.event_id, TRIGGER, event.to_payload(), run.id))
        queued = outbox.add_events(conn, events)
        ids, nexts, run_ids, skipped = [], [], [], []
        invalid: list[tuple[uuid.UUID, str]] = []
        for due, p in plans:
            if p is None:
                invalid.append(
                    (due.id, f"cannot evaluate {due.cron_expression!r} in {due.timezone}")
                )
                continue
            ids.append(due.id)
            nexts.append(p.next_run_at)
            run_ids.append(last_run.get(due.id))
            skipped.append(p.skipped)
        schedules.advance(conn, ids, nexts, run_ids, skipped)
        if invalid:
            schedules.set_next_run(
                conn, [i for i, _ in invalid], [None] * len(invalid), [e for _, e in invalid]
            )
    report.claimed += len(claimed)
    report.runs += len(inserted)
    report.skipped += sum(skipped)
    if len(inserted) > _LOGGED_ONE_BY_ONE:
        # A burst: one line per batch at INFO; the runs' ids are in the table.
        log.info(
            "%d run(s) created for %d claimed schedule(s)",
            len(inserted),
            len(claimed),
            extra={"action": "run.created_batch", "runs": len(inserted)},
        )
    level = logging.INFO if len(inserted) <= _LOGGED_ONE_BY_ONE else logging.DEBUG
    if log.isEnabledFor(level):
        for run in new_runs:
            if run.id in inserted:
                log.log(
                    level,
                    "run created",
                    extra={
                        "action": "run.created",
                        "run_id": str(run.id),
                        "schedule_id": str(run.schedule_id),
                        "slot": run.scheduled_for.isoformat(),
                    },
                )
    return queued, len(claimed)
