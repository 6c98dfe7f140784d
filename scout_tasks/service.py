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

from sqlalchemy import Engine

from scout_tasks import cron, outbox, runs, schedules
from scout_tasks.db import db_now
from scout_tasks.events import CANCELLED, TRIGGER, CancelledEvent, TriggerEvent
from scout_tasks.publisher import ConfirmingPublisher
from scout_tasks.validation import ScheduleCreate, ScheduleUpdate, TriggerRequest, parse

log = logging.getLogger(__name__)


def create_schedule(engine: Engine, data: dict[str, Any]) -> dict[str, Any]:
    """Validate and insert a schedule; an enabled one gets its first slot at once."""
    spec = parse(ScheduleCreate, data)
    values = spec.model_dump()
    with engine.begin() as conn:
        if spec.enabled:
            values["next_run_at"] = cron.next_after(
                spec.cron_expression, spec.timezone, db_now(conn)
            )
        row = schedules.create_schedule(conn, values)
    log.info(
        "schedule created", extra={"action": "schedule.created", "schedule_id": str(row["id"])}
    )
    return row


def update_schedule(engine: Engine, schedule_id: uuid.UUID, data: dict[str, Any]) -> dict[str, Any]:
    """Apply a partial update; a new expression, zone or enabling recomputes the next slot."""
    changes = parse(ScheduleUpdate, data).changes()
    with engine.begin() as conn:
        current = schedules.get_schedule(conn, schedule_id, lock=True)
        if not changes:
            return current
        merged = {**current, **changes}
        timing = {"cron_expression", "timezone", "enabled"} & changes.keys()
        if timing and any(changes[k] != current[k] for k in timing):
            merged_enabled = merged["enabled"]
            changes["next_run_at"] = (
                cron.next_after(merged["cron_expression"], merged["timezone"], db_now(conn))
                if merged_enabled
                else None
            )
            changes["last_error"] = None
        row = schedules.update_schedule(conn, schedule_id, changes)
        if row["enabled"] and row["next_run_at"] is None and changes.get("next_run_at"):
            # The database trigger clears next_run_at when the expression changes
            # but the next slot happens to stay the same; set it again.
            row = schedules.update_schedule(
                conn, schedule_id, {"next_run_at": changes["next_run_at"]}
            )
    log.info(
        "schedule updated", extra={"action": "schedule.updated", "schedule_id": str(schedule_id)}
    )
    return row


def set_enabled(engine: Engine, schedule_id: uuid.UUID, enabled: bool) -> dict[str, Any]:
    return update_schedule(engine, schedule_id, {"enabled": enabled})


def delete_schedule(engine: Engine, schedule_id: uuid.UUID) -> None:
    with engine.begin() as conn:
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
    previews from ``now``.
    """
    expr, zone = schedule["cron_expression"], schedule["timezone"]
    first: datetime | None = schedule["next_run_at"] if schedule["enabled"] else None
    times: list[datetime] = []
    if first is not None:
        times.append(first.astimezone(cron.get_zone(zone)))
    if len(times) < count:
        times += cron.next_times(expr, zone, first or now, count - len(times))
    return times


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
    log.info("run cancelled", extra={"action": "run.cancelled", "run_id": str(run_id)})
    delivered = False
    if publisher is not None:
        delivered = outbox.deliver(engine, publisher, queued).published == 1
    return run, delivered
