"""Every query on ``scout_run_events``, the ledger of lifecycle events already applied.

The ledger insert also locks the runs its new events name (one statement, see
:func:`record_and_lock`); every other statement on ``scout_runs`` is in
:mod:`scout_tasks.runs` and :mod:`scout_tasks.run_updates`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, text

# The ledger insert and the lock of the runs its new events name, in one
# statement (one round trip a batch). Every ledger row is written before the
# first run is locked: the lock's ids are an array built from all of `new`, an
# InitPlan evaluated before the first row of scout_runs is read. That keeps the
# order every writer uses (ledger ids in id order, then runs in id order), so
# two workers applying overlapping batches wait for each other, never deadlock.
# MATERIALIZED and the UNION ALL make every locked row read, hence locked.
# FOR NO KEY UPDATE is the lock the batch's UPDATEs take anyway: it excludes
# every other writer of the row (an UPDATE, the sweep, a cancel, a DELETE),
# so the statuses read stay true until the commit, without also blocking
# the key-share locks of foreign keys that point at the run.
# Ids come back as text: the recorder keys its batch by text.
_RECORD_AND_LOCK = text(
    """
    WITH new AS (
        INSERT INTO scout_run_events (event_id, run_id, event_type)
        SELECT * FROM unnest(
            CAST(:event_ids AS uuid[]), CAST(:run_ids AS uuid[]), CAST(:event_types AS text[])
        )
        ON CONFLICT (event_id) DO NOTHING
        RETURNING event_id, run_id
    ),
    locked AS MATERIALIZED (
        SELECT id, status FROM scout_runs
        WHERE id = ANY(ARRAY(SELECT run_id FROM new))
        ORDER BY id
        FOR NO KEY UPDATE
    )
    SELECT CAST(event_id AS text) AS id, NULL AS status FROM new
    UNION ALL
    SELECT CAST(id AS text), status FROM locked
    """
)


def record_and_lock(
    conn: Connection, events: Sequence[tuple[str, str, str]]
) -> tuple[set[str], dict[str, str]]:
    """Write events to the ledger and lock the runs the new ones name, in id order.

    ``events`` are (event id, run id, event type), the ids as text in
    PostgreSQL's spelling (``str(uuid)``), each event id once. Returns the
    event ids that were not in the ledger yet, and the status of every
    existing run they name (a run that does not exist is absent).

    The ledger rows are inserted in id order, so two transactions inserting
    some of the same ids (a redelivery racing the original) wait for each
    other in the same order; the one that commits first gets the id, the
    other sees a duplicate. The runs are locked after every ledger row is
    written, in id order, for the same reason; their statuses are the ones
    the caller's updates in this transaction will see.
    """
    if not events:
        return set(), {}
    ordered = sorted(events)
    rows = conn.execute(
        _RECORD_AND_LOCK,
        {
            "event_ids": [e[0] for e in ordered],
            "run_ids": [e[1] for e in ordered],
            "event_types": [e[2] for e in ordered],
        },
    )
    new_ids: set[str] = set()
    statuses: dict[str, str] = {}
    for id_, status in rows.fetchall():
        if status is None:
            new_ids.add(id_)
        else:
            statuses[id_] = status
    return new_ids, statuses


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
