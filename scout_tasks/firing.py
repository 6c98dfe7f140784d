"""Firing due schedules: claim a batch, plan it, write runs and events at once, publish.

The decisions (misfire and overlap policies) are pure, in :mod:`scout_tasks.policy`.
:func:`fire_due` claims due schedules in batches, writes every batch's runs,
events and next slots in one transaction, then publishes the batch's events
with one confirm round trip.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine

from scout_tasks import counters, cron, outbox, runs, schedules
from scout_tasks.db import db_now
from scout_tasks.errors import InvalidInput
from scout_tasks.events import TRIGGER, TriggerEvent
from scout_tasks.policy import BatchPlan, plan_batch
from scout_tasks.publisher import ConfirmingPublisher

log = logging.getLogger(__name__)

# Batches with at most this many runs log one line per run at INFO.
_LOGGED_ONE_BY_ONE = 10


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
    """Claim one batch, plan it (:func:`~scout_tasks.policy.plan_batch`), write it."""
    with engine.begin() as conn:
        claimed = schedules.claim_due(conn, batch_size)
        if not claimed:
            return {}, 0
        now = db_now(conn)
        batch = plan_batch(claimed, now)
        inserted, queued = _write_batch(conn, batch, now)
    report.claimed += len(claimed)
    report.runs += len(inserted)
    report.skipped += batch.skipped
    report.invalid += len(batch.invalid)
    _log_batch(batch, inserted, len(claimed))
    return queued, len(claimed)


def insert_runs(
    conn: Connection, new: list[runs.NewScheduledRun], now: datetime
) -> tuple[set[uuid.UUID], outbox.Queued, dict[uuid.UUID, uuid.UUID]]:
    """Insert scheduled runs and queue their ``scout.trigger`` events, in ``conn``'s transaction.

    A slot that already has a run is skipped by ``UNIQUE (schedule_id,
    scheduled_for)`` (ON CONFLICT DO NOTHING), so any writer of slots (the
    fire batch, a backfill) races every other safely. Returns the ids inserted,
    the queued events and, per schedule, its latest inserted run.
    """
    inserted = runs.insert_scheduled_runs(conn, new)
    events = []
    last_run: dict[uuid.UUID, uuid.UUID] = {}
    for run in new:
        if run.id not in inserted:
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
    return inserted, outbox.add_events(conn, events), last_run


def _write_batch(
    conn: Connection, batch: BatchPlan, now: datetime
) -> tuple[set[uuid.UUID], outbox.Queued]:
    """Insert the runs (a slot that already has one is skipped), their events, the advances.

    Last, the batch's counters (runs created, slots skipped, the fire lag of
    each run: its ``created_at``, which is ``now``, minus its slot).
    """
    inserted, queued, last_run = insert_runs(conn, batch.runs, now)
    lags = [
        (now - run.scheduled_for).total_seconds() for run in batch.runs if run.id in inserted
    ]
    advances = batch.advances
    schedules.advance(
        conn,
        [a.schedule_id for a in advances],
        [a.next_run_at for a in advances],
        [last_run.get(a.schedule_id) for a in advances],
        [a.skipped for a in advances],
    )
    if batch.invalid:
        schedules.set_next_run(
            conn,
            [i.schedule_id for i in batch.invalid],
            [None] * len(batch.invalid),
            [i.error for i in batch.invalid],
        )
    counters.bump(
        conn,
        counters.merge(
            counters.runs_created("scheduled", len(inserted)),
            {(counters.SKIPPED_SLOTS, ""): batch.skipped},
            counters.fire_lag(lags),
        ),
    )
    return inserted, queued


def _log_batch(batch: BatchPlan, inserted: set[uuid.UUID], claimed: int) -> None:
    for bad in batch.invalid:
        log.error(
            "schedule cannot be fired: %s",
            bad.error,
            extra={"action": "schedule.invalid", "schedule_id": str(bad.schedule_id)},
        )
    for a in batch.advances:
        if a.skipped:
            log.info(
                "skipped %d slot(s) (%s)",
                a.skipped,
                a.reason,
                extra={
                    "action": f"schedule.skipped_{a.reason}",
                    "schedule_id": str(a.schedule_id),
                    "slot": a.due_at.isoformat() if a.due_at else None,
                },
            )
    if len(inserted) > _LOGGED_ONE_BY_ONE:
        # A burst: one line per batch at INFO; the runs' ids are in the table.
        log.info(
            "%d run(s) created for %d claimed schedule(s)",
            len(inserted),
            claimed,
            extra={"action": "run.created_batch", "runs": len(inserted)},
        )
    level = logging.INFO if len(inserted) <= _LOGGED_ONE_BY_ONE else logging.DEBUG
    if not log.isEnabledFor(min(level, logging.DEBUG)):
        return
    for run in batch.runs:
        if run.id not in inserted:
            log.debug(
                "slot already has a run",
                extra={
                    "action": "run.duplicate_slot",
                    "schedule_id": str(run.schedule_id),
                    "slot": run.scheduled_for.isoformat(),
                },
            )
        else:
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
