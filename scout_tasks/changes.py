"""Every query on ``scout_schedule_changes``: the history of each schedule.

The rows are written by a trigger on ``scout_schedules`` (migration 0003), so
an edit made with plain SQL is recorded like one made through the API. The
application's only part is to say who is acting, with :func:`set_actor`, in
the same transaction as the change; without it the trigger records the
database role and the client's ``application_name`` (e.g. ``postgres (psql)``).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, exists, func, select, text

from scout_tasks.tables import schedule_changes

# What a history entry shows (the contract's keys, plus the entry's own id and
# its schedule's, which outlive the schedule).
COLUMNS = (
    schedule_changes.c.id,
    schedule_changes.c.schedule_id,
    schedule_changes.c.at,
    schedule_changes.c.actor,
    schedule_changes.c.action,
    schedule_changes.c.changes,
)

_SET_ACTOR = text("SELECT set_config('scout.actor', :actor, true)")


def set_actor(conn: Connection, actor: str | None) -> None:
    """Name the actor of the changes this transaction makes (None: let the database say).

    ``set_config(..., true)`` lasts until the transaction ends, so a pooled
    connection never carries one caller's name into the next caller's changes.
    Validate ``actor`` first (:func:`scout_tasks.validation.actor`).
    """
    if actor is not None:
        conn.execute(_SET_ACTOR, {"actor": actor})


def list_changes(
    conn: Connection, schedule_id: uuid.UUID, *, limit: int = 50, offset: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """A page of one schedule's changes, newest first, and how many there are in all."""
    condition = schedule_changes.c.schedule_id == schedule_id
    total = conn.execute(
        select(func.count()).select_from(schedule_changes).where(condition)
    ).scalar_one()
    rows = conn.execute(
        select(*COLUMNS)
        .where(condition)
        .order_by(schedule_changes.c.at.desc(), schedule_changes.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [dict(r._mapping) for r in rows], int(total)


def has_changes(conn: Connection, schedule_id: uuid.UUID) -> bool:
    """Whether any change of this schedule was recorded (it may since have been deleted)."""
    return bool(
        conn.execute(
            select(exists().where(schedule_changes.c.schedule_id == schedule_id))
        ).scalar_one()
    )
