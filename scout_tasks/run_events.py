"""Every query on ``scout_run_events``, the ledger of lifecycle events already applied."""

from __future__ import annotations

import uuid

from sqlalchemy import Connection, text

_RECORD_EVENT = text(
    """
    INSERT INTO scout_run_events (event_id, run_id, event_type)
    VALUES (:event_id, :run_id, :event_type)
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
    """
)


def record_run_event(
    conn: Connection, *, event_id: uuid.UUID, run_id: uuid.UUID, event_type: str
) -> bool:
    """Write ``event_id`` to the ledger; False when it was already there (a duplicate).

    A concurrent transaction inserting the same id makes this one wait for its
    outcome, so exactly one of them gets True.
    """
    row = conn.execute(
        _RECORD_EVENT, {"event_id": event_id, "run_id": run_id, "event_type": event_type}
    ).one_or_none()
    return row is not None
