"""What operators do, for the CLI and the HTTP API alike.

Each function validates its input with :mod:`scout_tasks.validation`, writes in
one transaction, and publishes any event only after the commit, through the
outbox, so a broker outage delays an event but never loses it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine

from scout_tasks import counters, cron, outbox, policy, runs, schedules, validation
from scout_tasks.changes import has_changes, list_changes, set_actor
from scout_tasks.db import db_now
from scout_tasks.errors import ScheduleNotFound
from scout_tasks.events import CANCELLED, TRIGGER, CancelledEvent, TriggerEvent
from scout_tasks.publisher import ConfirmingPublisher
from scout_tasks.validation import ScheduleCreate, ScheduleUpdate, TriggerRequest, parse

log = logging.getLogger(__name__)


def create_schedule(
    engine: Engine, data: dict[str, Any], *, actor: str | None = None
) -> dict[str, Any]:
    """Validate and insert a schedule; an enabled one gets its first slot at once."""
    spec = parse(ScheduleCreate, data)
    who = validation.actor(actor)
    with engine.begin() as conn:
        set_actor(conn, who)
        row = write_create(conn, spec)
    log.info(
        "schedule created", extra={"action": "schedule.created", "schedule_id": str(row["id"])}
    )
    return row


def update_schedule(
    engine: Engine, schedule_id: uuid.UUID, data: dict[str, Any], *, actor: str | None = None
) -> dict[str, Any]:
    """Apply a partial update; a new expression, zone or enabling recomputes the next slot."""
    changes = parse(ScheduleUpdate, data).changes()
    who = validation.actor(actor)
    with engine.begin() as conn:
        set_actor(conn, who)
        current = schedules.get_schedule(conn, schedule_id, lock=True)
        if not changes:
            return current
        row = write_update(conn, current, changes)
    log.info(
        "schedule updated", extra={"action": "schedule.updated", "schedule_id": str(schedule_id)}
    )
    return row


def write_create(
    conn: Connection, spec: ScheduleCreate, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Insert a validated schedule in ``conn``'s transaction; an enabled one gets its first slot.

    ``extra`` holds columns no caller may write directly (``managed_by``).
    """
    values = {**spec.model_dump(), **(extra or {})}
    if spec.enabled:
        values["next_run_at"] = cron.next_after(spec.cron_expression, spec.timezone, db_now(conn))
    return schedules.create_schedule(conn, values)


def write_update(
    conn: Connection, current: Mapping[str, Any], changes: dict[str, Any]
) -> dict[str, Any]:
    """Write validated ``changes`` to the locked row ``current`` in ``conn``'s transaction.

    A new expression, zone or enabling recomputes the next slot.
    """
    schedule_id = current["id"]
    merged = {**current, **changes}
    timing = {"cron_expression", "timezone", "enabled"} & changes.keys()
    if timing and any(changes[k] != current[k] for k in timing):
        changes["next_run_at"] = (
            cron.next_after(merged["cron_expression"], merged["timezone"], db_now(conn))
            if merged["enabled"]
            else None
        )
        changes["last_error"] = None
    row = schedules.update_schedule(conn, schedule_id, changes)
    if row["enabled"] and row["next_run_at"] is None and changes.get("next_run_at"):
        # The database trigger clears next_run_at when the expression changes
        # but the next slot happens to stay the same; set it again.
        row = schedules.update_schedule(conn, schedule_id, {"next_run_at": changes["next_run_at"]})
    return row


def set_enabled(
    engine: Engine, schedule_id: uuid.UUID, enabled: bool, *, actor: str | None = None
) -> dict[str, Any]:
    return update_schedule(engine, schedule_id, {"enabled": enabled}, actor=actor)


def delete_schedule(engine: Engine, schedule_id: uuid.UUID, *, actor: str | None = None) -> None:
    who = validation.actor(actor)
    with engine.begin() as conn:
        set_actor(conn, who)
        schedules.delete_schedule(conn, schedule_id)
    log.info(
        "schedule deleted", extra={"action": "schedule.deleted", "schedule_id": str(schedule_id)}
    )


@dataclass(frozen=True, slots=True)
class FirePreview:
    """A schedule's next fire times, each in the schedule's own zone."""

    schedule_id: uuid.UUID
    cron_expression: str
    timezone: str
    times: list[datetime]


def preview_fire_times(schedule: Mapping[str, Any], now: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire times of ``schedule`` (a row), with the zone's offsets.

    An enabled schedule starts from its ``next_run_at``, which an operator may
    have set off the cron grid; a disabled one (or one not yet planned)
    previews from ``now``. An overdue one shows what the beat will do when it
    claims it (:func:`scout_tasks.policy.plan`, as if at ``now``): the missed
    slot(s) its misfire policy runs, then the cron slots after ``now``, never
    the slots missed in between.
    """
    expr, zone = schedule["cron_expression"], schedule["timezone"]
    first: datetime | None = schedule["next_run_at"] if schedule["enabled"] else None
    if first is None:
        return cron.next_times(expr, zone, now, count)
    times = [first] if first > now else _overdue(schedule, first, now)
    if len(times) < count:
        times += cron.next_times(expr, zone, times[-1] if times else now, count - len(times))
    tz = cron.get_zone(zone)
    return [t.astimezone(tz) for t in times[:count]]


def _overdue(schedule: Mapping[str, Any], first: datetime, now: datetime) -> list[datetime]:
    """The slots the beat runs for an overdue schedule claimed at ``now``, then its next slot."""
    due = schedules.DueSchedule(
        id=schedule.get("id") or uuid.UUID(int=0),
        name=schedule.get("name") or "",
        cron_expression=schedule["cron_expression"],
        timezone=schedule["timezone"],
        source=schedule.get("source") or "",
        max_strategies=schedule.get("max_strategies") or 0,
        next_run_at=first,
        misfire_policy=schedule.get("misfire_policy") or "coalesce",
        misfire_grace_seconds=schedule.get("misfire_grace_seconds") or 0,
        overlap_policy="allow",  # the previous run's status is not read here
        last_run_status=None,
    )
    planned = policy.plan(due, now, count_skipped=False)
    return [*planned.slots, planned.next_run_at]


def next_fire_times(engine: Engine, schedule_id: uuid.UUID, count: int) -> FirePreview:
    """:func:`preview_fire_times` for a stored schedule, from the database's clock."""
    with engine.connect() as conn:
        row = schedules.get_schedule(conn, schedule_id)
        now = db_now(conn)
    return FirePreview(
        schedule_id=row["id"],
        cron_expression=row["cron_expression"],
        timezone=row["timezone"],
        times=preview_fire_times(row, now, count),
    )


def reload_schedules(engine: Engine) -> None:
    """Ask every beat to re-read the schedule horizon now (changes apply without it too)."""
    with engine.begin() as conn:
        schedules.touch_all(conn)


def trigger_run(
    engine: Engine, data: dict[str, Any], publisher: ConfirmingPublisher | None
) -> tuple[dict[str, Any], bool]:
    """Record a manual run and publish its ``scout.trigger``.

    Returns the run and whether the event was confirmed by the broker now; when
    not, it waits in the outbox and the next tick delivers it.
    """
    request = parse(TriggerRequest, data)
    with engine.begin() as conn:
        run = runs.insert_manual_run(
            conn,
            source=request.source,
            max_strategies=request.max_strategies,
            triggered_by=request.triggered_by or "Manual trigger",
        )
        event = TriggerEvent(
            event_id=uuid.uuid4(),
            timestamp=db_now(conn),
            run_id=run["id"],
            source=run["source"],
            max_strategies=run["max_strategies"],
            trigger_type="manual",
            triggered_by=run["triggered_by"],
        )
        queued = outbox.add_events(
            conn, [outbox.PendingEvent(event.event_id, TRIGGER, event.to_payload(), run["id"])]
        )
        counters.bump(conn, counters.runs_created("manual"))
    log.info("manual run created", extra={"action": "run.created", "run_id": str(run["id"])})
    delivered = False
    if publisher is not None:
        delivered = outbox.deliver(engine, publisher, queued).published == 1
    return run, delivered


def cancel_run(
    engine: Engine, run_id: uuid.UUID, publisher: ConfirmingPublisher | None
) -> tuple[dict[str, Any], bool]:
    """Cancel a run and publish ``scout.cancelled``; refused for a terminal run."""
    with engine.begin() as conn:
        run = runs.cancel_run(conn, run_id)
        event = CancelledEvent(event_id=uuid.uuid4(), timestamp=db_now(conn), run_id=run_id)
        queued = outbox.add_events(
            conn, [outbox.PendingEvent(event.event_id, CANCELLED, event.to_payload(), run_id)]
        )
        counters.bump(conn, counters.runs_finished(["cancelled"]))
    log.info("run cancelled", extra={"action": "run.cancelled", "run_id": str(run_id)})
    delivered = False
    if publisher is not None:
        delivered = outbox.deliver(engine, publisher, queued).published == 1
    return run, delivered


# --- operating schedules: run now, pause, resume, history ----------------------
#
# Each takes a schedule by id (a UUID) or, as the CLI does, by id or name (a
# str), and an optional ``actor``: who is acting, recorded by the database's
# history trigger in the same transaction (None: the database role and
# application_name).


def _schedule(conn: Connection, key: uuid.UUID | str, *, lock: bool = False) -> dict[str, Any]:
    if isinstance(key, uuid.UUID):
        return schedules.get_schedule(conn, key, lock=lock)
    found = schedules.find_schedule(conn, key)
    return schedules.get_schedule(conn, found["id"], lock=True) if lock else found


def _queue_trigger(conn: Connection, run: dict[str, Any]) -> outbox.Queued:
    """The run's ``scout.trigger``, into the outbox in the run's own transaction."""
    event = TriggerEvent(
        event_id=uuid.uuid4(),
        timestamp=db_now(conn),
        run_id=run["id"],
        source=run["source"],
        max_strategies=run["max_strategies"],
        trigger_type=run["trigger_type"],
        triggered_by=run["triggered_by"],
        schedule_id=run["schedule_id"],
        scheduled_for=run["scheduled_for"],
    )
    return outbox.add_events(
        conn, [outbox.PendingEvent(event.event_id, TRIGGER, event.to_payload(), run["id"])]
    )


def run_now(
    engine: Engine,
    schedule_id_or_name: uuid.UUID | str,
    *,
    triggered_by: str | None = None,
    actor: str | None = None,
    publisher: ConfirmingPublisher | None = None,
) -> tuple[dict[str, Any], bool]:
    """A manual run of a schedule, published like ``trigger_run``'s; the next slot stays.

    The run has the schedule's id, source and max_strategies, ``trigger_type``
    manual and no ``scheduled_for``; ``triggered_by`` defaults to the actor. It
    becomes the schedule's last run. Returns the run and whether the broker
    confirmed its event now (else the outbox delivers it later).
    """
    request = parse(
        validation.RunNowRequest, {} if triggered_by is None else {"triggered_by": triggered_by}
    )
    who = validation.actor(actor)
    with engine.begin() as conn:
        set_actor(conn, who)
        # Locked so a concurrent delete waits for this run, or this finds nothing.
        schedule = _schedule(conn, schedule_id_or_name, lock=True)
        run = runs.insert_schedule_manual_run(
            conn,
            schedule_id=schedule["id"],
            source=schedule["source"],
            max_strategies=schedule["max_strategies"],
            triggered_by=request.triggered_by or who or "Manual trigger",
        )
        schedules.record_manual_run(conn, schedule["id"], run["id"])
        queued = _queue_trigger(conn, run)
        counters.bump(conn, counters.runs_created("manual"))
    log.info(
        "schedule run now",
        extra={
            "action": "run.created",
            "run_id": str(run["id"]),
            "schedule_id": str(run["schedule_id"]),
        },
    )
    delivered = False
    if publisher is not None:
        delivered = outbox.deliver(engine, publisher, queued).published == 1
    return run, delivered


def pause(
    engine: Engine, schedule_id_or_name: uuid.UUID | str, *, reason: Any, actor: str | None = None
) -> dict[str, Any]:
    """Disable a schedule with a reason (1..500 characters), stamped with when and by whom.

    Pausing a paused schedule replaces its reason.
    """
    request = parse(validation.PauseRequest, {"reason": reason})
    who = validation.actor(actor)
    with engine.begin() as conn:
        set_actor(conn, who)
        schedule = _schedule(conn, schedule_id_or_name, lock=True)
        row = schedules.pause_schedule(conn, schedule["id"], reason=request.reason, paused_by=who)
    log.info("schedule paused", extra={"action": "schedule.paused", "schedule_id": str(row["id"])})
    return row


def resume(
    engine: Engine, schedule_id_or_name: uuid.UUID | str, *, actor: str | None = None
) -> dict[str, Any]:
    """Enable a paused (or disabled) schedule; it fires next at its first slot after now.

    The slots that passed while it was paused are not caught up. An enabled
    schedule is returned as it is.
    """
    who = validation.actor(actor)
    with engine.begin() as conn:
        set_actor(conn, who)
        schedule = _schedule(conn, schedule_id_or_name, lock=True)
        if schedule["enabled"]:
            return schedule
        next_run_at = cron.next_after(
            schedule["cron_expression"], schedule["timezone"], db_now(conn)
        )
        row = schedules.resume_schedule(conn, schedule["id"], next_run_at)
    log.info(
        "schedule resumed", extra={"action": "schedule.resumed", "schedule_id": str(row["id"])}
    )
    return row


def history(
    engine: Engine, schedule_id_or_name: uuid.UUID | str, *, page: int = 1, page_size: int = 50
) -> tuple[list[dict[str, Any]], int]:
    """A page of a schedule's changes, newest first, and their total.

    Each is ``{"id", "schedule_id", "at", "actor", "action", "changes"}`` with
    ``changes`` as ``{"field": [old, new]}``. A deleted schedule's history is
    still there, by its id.
    """
    page, page_size = validation.page(page, page_size)
    with engine.connect() as conn:
        try:
            schedule_id = _schedule(conn, schedule_id_or_name)["id"]
        except ScheduleNotFound:
            schedule_id = _as_uuid(schedule_id_or_name)
            if schedule_id is None or not has_changes(conn, schedule_id):
                raise
        return list_changes(conn, schedule_id, limit=page_size, offset=(page - 1) * page_size)


def _as_uuid(key: uuid.UUID | str) -> uuid.UUID | None:
    if isinstance(key, uuid.UUID):
        return key
    try:
        return uuid.UUID(key)
    except ValueError:
        return None
