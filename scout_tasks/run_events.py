"""Every query on ``scout_run_events``, the ledger of lifecycle events already applied."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import Connection, text


class _Recordable(Protocol):
    @property
    def event_id(self) -> uuid.UUID: ...
    @property
    def run_id(self) -> uuid.UUID: ...
    @property
    def EVENT_TYPE(self) -> str: ...


_RECORD_EVENTS = text(
    """
    INSERT INTO scout_run_events (event_id, run_id, event_type)
    SELECT * FROM unnest(
        CAST(:event_ids AS uuid[]), CAST(:run_ids AS uuid[]), CAST(:event_types AS text[])
    )
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
    """
)


def record_run_events(conn: Connection, events: Sequence[_Recordable]) -> set[uuid.UUID]:
    """Write the events' ids to the ledger; return the ids that were not there yet.

    The ids must be distinct. They are inserted in id order, so two
    transactions inserting some of the same ids (a redelivery racing the
    original) wait for each other in the same order and never deadlock; the
    one that commits first gets the id, the other sees a duplicate.
    """
    if not events:
        return set()
    ordered = sorted(events, key=lambda e: e.event_id.int)
    rows = conn.execute(
        _RECORD_EVENTS,
        {
            "event_ids": [str(e.event_id) for e in ordered],
            "run_ids": [str(e.run_id) for e in ordered],
            "event_types": [e.EVENT_TYPE for e in ordered],
        },
    )
    return {value if isinstance(value, uuid.UUID) else uuid.UUID(value) for (value,) in rows}


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
