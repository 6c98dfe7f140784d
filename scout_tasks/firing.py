"""Firing due schedules: claim a batch, plan it, write runs and events at once, publish.

The decisions (misfire and overlap policies) are pure, in :mod:`scout_tasks.policy`.
:func:`fire_due` claims due schedules in batches, writes every batch's runs,
events and next slots in one transaction, then publishes the batch's events
with one confirm round trip.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine

from scout_tasks import counters, cron, fire_write, outbox, runs, schedules
from scout_tasks.db import db_now
from scout_tasks.errors import InvalidInput
from scout_tasks.events import TRIGGER, iso, trigger_body
from scout_tasks.policy import BatchPlan, plan_batch
from scout_tasks.publisher import ConfirmingPublisher, OutgoingMessage

log = logging.getLogger(__name__)

# Batches with at most this many runs log one line per run at INFO.
_LOGGED_ONE_BY_ONE = 10
# A batch is planned inside its claim's transaction, idle meanwhile, and the server
# ends a transaction idle for db.IDLE_IN_TRANSACTION_TIMEOUT (60 s). Planning a
# schedule long overdue walks its missed slots (a skip policy counts up to 10,000:
# 0.1 s each in a zone with DST), so a batch of 500 a year overdue planned for over
# a minute, was ended, and was claimed again to the same end: none of it ever fired.
# Past this many seconds the rest of a batch is left due, for the next claim.
PLAN_BUDGET_SECONDS = 10.0


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
    hand_over_on: int = 1,
) -> FireReport:
    """Fire every due schedule, one claimed batch per transaction, until none is due.

    Each batch's events are handed to the broker once its transaction commits,
    and settled after the next batch is written: the broker stores one batch
    while the database writes the next, instead of each waiting for the other.

    ``on_full_batch`` is called once, the moment the ``hand_over_on``-th
    claim comes back full, so the caller can hand the rest of a burst to other
    worker processes while this one writes and publishes its batch.
    """
    report = FireReport()
    full_claims = 0

    def on_full() -> None:
        nonlocal full_claims
        full_claims += 1
        if full_claims == hand_over_on and on_full_batch is not None:
            on_full_batch()

    in_flight: outbox.InFlight | None = None
    try:
        while True:
            queued, claimed, deferred = _fire_batch(engine, batch_size, report, on_full)
            if in_flight is not None:
                _settle(engine, publisher, in_flight, report)
                in_flight = None
            if publisher is not None and queued and not report.publish_failed:
                in_flight = outbox.send(engine, publisher, queued)
            if claimed < batch_size and not deferred:
                break
        if in_flight is not None:
            _settle(engine, publisher, in_flight, report)
            in_flight = None
        # After the claims, not before: what it plans is never due yet (its next
        # slot after now), and a burst's first claim does not wait for it.
        init, invalid = initialise_unscheduled(engine, batch_size)
        report.initialised, report.invalid = init, report.invalid + invalid
    finally:
        if in_flight is not None:
            # Failing half way (the database went away): the batch in flight stays
            # in the outbox, unlocked, for the relay, and the channel its verdicts
            # would come back on is dropped with them.
            outbox.abandon(in_flight)
            if publisher is not None:
                publisher.close()
    return report


def _settle(
    engine: Engine,
    publisher: ConfirmingPublisher | None,
    flight: outbox.InFlight,
    report: FireReport,
) -> None:
    assert publisher is not None
    delivered = outbox.settle(engine, publisher, flight)
    report.published += delivered.published
    # The broker is away: stop trying per batch; the relay sends the rest.
    report.publish_failed = delivered.failed


def _fire_batch(
    engine: Engine, batch_size: int, report: FireReport, on_full: Callable[[], None]
) -> tuple[outbox.Queued, int, int]:
    """Claim one batch, plan it (:func:`~scout_tasks.policy.plan_batch`), write it.

    Returns the events to publish, how many schedules were claimed, and how many
    of those were left due unplanned (:data:`PLAN_BUDGET_SECONDS`).
    """
    with engine.begin() as conn:
        claimed = schedules.claim_due(conn, batch_size)
        if not claimed:
            return {}, 0, 0
        if len(claimed) == batch_size:
            on_full()
        now = db_now(conn)
        deadline = time.monotonic() + PLAN_BUDGET_SECONDS
        batch = plan_batch(claimed, now, lambda: time.monotonic() >= deadline)
        inserted, queued = _write_batch(conn, batch, now)
    report.claimed += len(claimed) - batch.deferred
    report.runs += len(inserted)
    report.skipped += batch.skipped
    report.invalid += len(batch.invalid)
    _log_batch(batch, inserted, len(claimed))
    if batch.deferred:
        log.warning(
            "planning took over %.0fs: %d claimed schedule(s) left for the next claim",
            PLAN_BUDGET_SECONDS,
            batch.deferred,
            extra={"action": "fire.plan_deferred", "count": batch.deferred},
        )
    return queued, len(claimed), batch.deferred


def insert_runs(
    conn: Connection, new: list[runs.NewScheduledRun], now: datetime
) -> tuple[list[runs.InsertedRun], outbox.Queued, dict[str, str]]:
    """Insert scheduled runs and queue their ``scout.trigger`` events, in ``conn``'s transaction.

    A slot that already has a run is skipped by ``UNIQUE (schedule_id,
    scheduled_for)`` (ON CONFLICT DO NOTHING), so any writer of slots (the
    fire batch, a backfill) races every other safely. Returns the runs
    inserted, the queued events and, per schedule id, its latest inserted run's id.
    """
    # The run ids are made here, so each event's bytes are built before the one
    # statement that writes the runs and their events (scout_tasks.fire_write).
    ids = _event_ids(2 * len(new))
    run_ids, event_ids = ids[: len(new)], ids[len(new) :]
    planned = [
        runs.InsertedRun(
            run_id, str(r.schedule_id), r.scheduled_for, r.triggered_by, r.source, r.max_strategies
        )
        for r, run_id in zip(new, run_ids, strict=True)
    ]
    messages = _trigger_messages(planned, event_ids, now)
    outbox_ids = fire_write.insert_runs_and_events(conn, new, run_ids, messages)
    inserted: list[runs.InsertedRun] = []
    queued: outbox.Queued = {}
    for run, message in zip(planned, messages, strict=True):
        outbox_id = outbox_ids.get(run.id)
        if outbox_id is not None:  # None: the slot already had a run
            inserted.append(run)
            queued[outbox_id] = message
    return inserted, queued, _latest_runs(inserted)


def _trigger_messages(
    made: list[runs.InsertedRun], event_ids: list[str], now: datetime
) -> list[OutgoingMessage]:
    """The ``scout.trigger`` of each run, stamped ``now``, with the given event ids."""
    timestamp = _iso(now)
    slot_text: dict[datetime, str] = {}  # a burst's runs share a handful of slots
    messages: list[OutgoingMessage] = []
    for run, event_id in zip(made, event_ids, strict=True):
        slot = slot_text.get(run.scheduled_for)
        if slot is None:
            slot = slot_text[run.scheduled_for] = _iso(run.scheduled_for)
        body = trigger_body(
            event_id=event_id,
            timestamp=timestamp,
            run_id=run.id,
            source=run.source,
            max_strategies=run.max_strategies,
            trigger_type="scheduled",
            triggered_by=run.triggered_by,
            schedule_id=run.schedule_id,
            scheduled_for=slot,
        )
        messages.append(OutgoingMessage(event_id, TRIGGER, body))
    return messages


def _iso(dt: datetime) -> str:
    return iso(dt) or ""


def _latest_runs(inserted: list[runs.InsertedRun]) -> dict[str, str]:
    """Per schedule id, the id of its run for the latest slot (catch-up inserts several)."""
    latest: dict[str, tuple[datetime, str]] = {}
    for run in inserted:
        seen = latest.get(run.schedule_id)
        if seen is None or run.scheduled_for > seen[0]:
            latest[run.schedule_id] = (run.scheduled_for, run.id)
    return {schedule_id: run_id for schedule_id, (_slot, run_id) in latest.items()}


def _event_ids(n: int) -> list[str]:
    """``n`` random (version 4) UUIDs as text, from one read of the OS's random source."""
    pool = os.urandom(16 * n)
    return [str(uuid.UUID(bytes=pool[i : i + 16], version=4)) for i in range(0, 16 * n, 16)]


def _write_batch(
    conn: Connection, batch: BatchPlan, now: datetime
) -> tuple[list[runs.InsertedRun], outbox.Queued]:
    """Write the runs (a slot that already has one is skipped), their events, the advances.

    The runs and their events in one statement (:func:`insert_runs`), then
    the advance. Last, the batch's counters (runs
    created, slots skipped, the fire lag of each run: its ``created_at``, which
    is ``now``, minus its slot).
    """
    inserted, queued, last_run = insert_runs(conn, batch.runs, now)
    advances = batch.advances
    ids = [str(a.schedule_id) for a in advances]
    schedules.advance(
        conn,
        ids,
        [a.next_run_at for a in advances],
        [last_run.get(i) for i in ids],
        [a.skipped for a in advances],
    )
    if batch.invalid:
        schedules.set_next_run(
            conn,
            [i.schedule_id for i in batch.invalid],
            [None] * len(batch.invalid),
            [i.error for i in batch.invalid],
        )
    lags = [(now - run.scheduled_for).total_seconds() for run in inserted]
    counters.bump(
        conn,
        counters.merge(
            counters.runs_created("scheduled", len(inserted)),
            {(counters.SKIPPED_SLOTS, ""): batch.skipped},
            counters.fire_lag(lags),
        ),
    )
    return inserted, queued


def _log_batch(batch: BatchPlan, inserted: list[runs.InsertedRun], claimed: int) -> None:
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
    if not log.isEnabledFor(level):
        return  # a duplicate slot's line is DEBUG, never above ``level``
    made = {(run.schedule_id, run.scheduled_for) for run in inserted}
    for run in inserted:
        log.log(
            level,
            "run created",
            extra={
                "action": "run.created",
                "run_id": run.id,
                "schedule_id": run.schedule_id,
                "slot": run.scheduled_for.isoformat(),
            },
        )
    for new in batch.runs:
        if (str(new.schedule_id), new.scheduled_for) not in made:
            log.debug(
                "slot already has a run",
                extra={
                    "action": "run.duplicate_slot",
                    "schedule_id": str(new.schedule_id),
                    "slot": new.scheduled_for.isoformat(),
                },
            )
