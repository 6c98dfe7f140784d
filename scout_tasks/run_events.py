"""Every query on ``scout_run_events``, the ledger of lifecycle events already applied."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

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


_EVENTS_OF_RUNS = text(
    """
    SELECT run_id, event_id, event_type, received_at
    FROM scout_run_events
    WHERE run_id = ANY(CAST(:run_ids AS uuid[]))
    ORDER BY received_at, event_id
    """
)


def events_of_runs(
    conn: Connection, run_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[dict[str, Any]]]:
    """The recorded lifecycle events of these runs, each run's in arrival order."""
    found: dict[uuid.UUID, list[dict[str, Any]]] = {run_id: [] for run_id in run_ids}
    if not run_ids:
        return found
    for row in conn.execute(_EVENTS_OF_RUNS, {"run_ids": [str(r) for r in run_ids]}):
        found.setdefault(row.run_id, []).append(dict(row._mapping))
    return found


_DELETE_FOR_RUNS = text("DELETE FROM scout_run_events WHERE run_id = ANY(CAST(:run_ids AS uuid[]))")


def delete_for_runs(conn: Connection, run_ids: Sequence[uuid.UUID]) -> int:
    """Forget the recorded events of runs being deleted (retention); returns how many."""
    if not run_ids:
        return 0
    return conn.execute(_DELETE_FOR_RUNS, {"run_ids": [str(r) for r in run_ids]}).rowcount
