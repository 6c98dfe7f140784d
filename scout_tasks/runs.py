"""Every query on ``scout_runs``, named for what it does."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, func, insert, select, text, update

from scout_tasks.errors import RunAlreadyTerminal, RunNotFound
from scout_tasks.tables import runs

COLUMNS = tuple(runs.c)
ENDED_STATUSES = ("completed", "failed", "cancelled")


def _as_dict(row: Row[Any]) -> dict[str, Any]:
    return dict(row._mapping)


@dataclass(frozen=True, slots=True)
class NewScheduledRun:
    schedule_id: uuid.UUID
    scheduled_for: datetime
    triggered_by: str
    source: str
    max_strategies: int


@dataclass(frozen=True, slots=True)
class InsertedRun:
    """A scheduled run just inserted, in the form its trigger event is written from.

    The ids are text: a burst turns thousands of them into JSON and back into
    SQL parameters, and never needs them as ``uuid.UUID``.
    """

    id: str
    schedule_id: str
    scheduled_for: datetime
    triggered_by: str
    source: str
    max_strategies: int


def insert_manual_run(
    conn: Connection, *, source: str, max_strategies: int, triggered_by: str | None
) -> dict[str, Any]:
    row = conn.execute(
        insert(runs)
        .values(
            trigger_type="manual",
            triggered_by=triggered_by,
            source=source,
            max_strategies=max_strategies,
            status="pending",
        )
        .returning(*COLUMNS)
    ).one()
    return _as_dict(row)


def get_run(conn: Connection, run_id: uuid.UUID, *, lock: bool = False) -> dict[str, Any]:
    query = select(*COLUMNS).where(runs.c.id == run_id)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).one_or_none()
    if row is None:
        raise RunNotFound(f"no run with id {run_id}")
    return _as_dict(row)


@dataclass(frozen=True, slots=True)
class RunFilter:
    status: str | None = None
    source: str | None = None
    schedule_id: uuid.UUID | None = None
    trigger_type: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def list_runs(
    conn: Connection, filters: RunFilter = RunFilter(), *, limit: int = 50, offset: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """A page of runs, newest first, and the total matching the filters."""
    conditions = []
    if filters.status is not None:
        conditions.append(runs.c.status == filters.status)
    if filters.source is not None:
        conditions.append(runs.c.source == filters.source)
    if filters.schedule_id is not None:
        conditions.append(runs.c.schedule_id == filters.schedule_id)
    if filters.trigger_type is not None:
        conditions.append(runs.c.trigger_type == filters.trigger_type)
    if filters.created_after is not None:
        conditions.append(runs.c.created_at >= filters.created_after)
    if filters.created_before is not None:
        conditions.append(runs.c.created_at < filters.created_before)
    total = conn.execute(select(func.count()).select_from(runs).where(*conditions)).scalar_one()
    rows = conn.execute(
        select(*COLUMNS)
        .where(*conditions)
        # A backfill creates its runs in one instant: among those, the latest slot
        # first, as the rest of the list reads (an incremental sort on the index).
        .order_by(runs.c.created_at.desc(), runs.c.scheduled_for.desc().nulls_last(), runs.c.id)
        .limit(limit)
        .offset(offset)
    )
    return [_as_dict(r) for r in rows], total


def cancel_run(conn: Connection, run_id: uuid.UUID) -> dict[str, Any]:
    """Mark a pending or running run cancelled; a terminal run never changes."""
    row = conn.execute(
        update(runs)
        .where(runs.c.id == run_id, runs.c.status.in_(("pending", "running")))
        .values(status="cancelled", completed_at=func.now(), updated_at=func.now())
        .returning(*COLUMNS)
    ).one_or_none()
    if row is not None:
        return _as_dict(row)
    current = get_run(conn, run_id)
    raise RunAlreadyTerminal(f"run {run_id} is already {current['status']}")


def run_status(conn: Connection, run_id: uuid.UUID) -> str | None:
    """The run's status, or None when there is no such run."""
    return conn.execute(select(runs.c.status).where(runs.c.id == run_id)).scalar_one_or_none()


# The first status IN (...) repeats the predicate of ix_scout_runs_active, so
# the planner can use that partial index whichever branch matches.
# The stale runs are locked first, skipping any another transaction holds (an
# operator's open edit, an event being recorded): a row locked for an hour
# must not hold the tick, and with it a worker's pool process, for an hour.
# A skipped run is swept by a later tick. The lock re-reads the row, so one
# that a concurrent event made fresh again is not taken.
_FAIL_STALE = text(
    """
    WITH stale AS (
        SELECT id FROM scout_runs
        WHERE status IN ('pending', 'running')
          AND (
            (status = 'pending' AND created_at < COALESCE(CAST(:now AS timestamptz), now())
                                                 - make_interval(secs => :pending_timeout))
            OR (status = 'running' AND updated_at < COALESCE(CAST(:now AS timestamptz), now())
                                                    - make_interval(secs => :run_timeout))
          )
        FOR NO KEY UPDATE SKIP LOCKED
    )
    UPDATE scout_runs r
    SET status = 'failed',
        error_message = CASE r.status
            WHEN 'pending' THEN :pending_message ELSE :running_message END,
        completed_at = COALESCE(CAST(:now AS timestamptz), now()),
        updated_at = COALESCE(CAST(:now AS timestamptz), now())
    FROM stale
    WHERE r.id = stale.id AND r.status IN ('pending', 'running')
    RETURNING r.id, r.error_message
    """
)


def fail_stale_runs(
    conn: Connection,
    *,
    now: datetime | None,
    pending_timeout: float,
    run_timeout: float,
    pending_message: str,
    running_message: str,
) -> list[tuple[uuid.UUID, str]]:
    """Fail every run that waited too long; returns (run id, error message) for each.

    A run still pending ``pending_timeout`` seconds after it was created never
    got its ``scout.started``; a running one with no event for ``run_timeout``
    seconds lost its agent. ``now`` defaults to the database's clock, the one
    ``created_at`` and ``updated_at`` were written with.
    """
    rows = conn.execute(
        _FAIL_STALE,
        {
            "now": now,
            "pending_timeout": pending_timeout,
            "run_timeout": run_timeout,
            "pending_message": pending_message,
            "running_message": running_message,
        },
    )
    return [(row.id, row.error_message) for row in rows]


def count_active(conn: Connection) -> dict[str, int]:
    """How many runs are pending and running, read from ix_scout_runs_active only."""
    active = runs.c.status.in_(("pending", "running"))
    found = {"pending": 0, "running": 0}
    rows = conn.execute(select(runs.c.status, func.count()).where(active).group_by(runs.c.status))
    return found | {status: int(n) for status, n in rows}


# --- retention: ended runs only, through ix_scout_runs_ended. A run ended by
# scout-tasks always has its completed_at; one made terminal by plain SQL
# without it is never pruned.


def _ended_before(cutoff: datetime) -> tuple[Any, ...]:
    return (runs.c.status.in_(ENDED_STATUSES), runs.c.completed_at < cutoff)


# Deleting a run also writes every schedule whose last_run_id names it (ON
# DELETE SET NULL), so those rows are locked here too, and a run whose schedule
# another transaction holds (an operator's open edit, a fire batch) is left for
# a later batch instead of waited for.
_LOCK_PRUNABLE = text(
    """
    WITH candidate AS MATERIALIZED (
        SELECT id, completed_at FROM scout_runs
        WHERE status IN ('completed', 'failed', 'cancelled') AND completed_at < :cutoff
        ORDER BY completed_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ), pointing AS MATERIALIZED (
        SELECT s.id FROM scout_schedules s
        WHERE s.last_run_id IN (SELECT id FROM candidate)
        FOR NO KEY UPDATE SKIP LOCKED
    )
    SELECT c.id, NOT EXISTS (
        SELECT 1 FROM scout_schedules s
        WHERE s.last_run_id = c.id AND s.id NOT IN (SELECT id FROM pointing)
    ) AS free
    FROM candidate c
    ORDER BY c.completed_at
    """
)


def lock_prunable(conn: Connection, cutoff: datetime, limit: int) -> tuple[list[uuid.UUID], int]:
    """Lock up to ``limit`` runs that ended before ``cutoff``, oldest first.

    A run another transaction holds (an event being recorded), or whose
    schedule it holds, is skipped, not waited for: the next batch or the next
    tick takes it. Returns the runs to delete, and how many runs were locked
    (so the caller knows whether the batch was full).
    """
    rows = conn.execute(_LOCK_PRUNABLE, {"cutoff": cutoff, "limit": limit}).all()
    return [run_id for run_id, free in rows if free], len(rows)


def count_prunable(conn: Connection, cutoff: datetime) -> int:
    """How many runs ended before ``cutoff`` (what a prune would delete)."""
    query = select(func.count()).select_from(runs).where(*_ended_before(cutoff))
    return int(conn.execute(query).scalar_one())


def delete_runs(conn: Connection, ids: Sequence[uuid.UUID]) -> int:
    """Delete these (locked) runs; a schedule pointing at one loses its last_run_id."""
    return conn.execute(delete(runs).where(runs.c.id.in_(ids))).rowcount if ids else 0


def insert_schedule_manual_run(
    conn: Connection,
    *,
    schedule_id: uuid.UUID,
    source: str,
    max_strategies: int,
    triggered_by: str | None,
) -> dict[str, Any]:
    """A manual run of a schedule ("run now"): linked to it, but for no slot.

    ``scheduled_for`` stays NULL, so it never takes a slot's place under
    UNIQUE (schedule_id, scheduled_for).
    """
    row = conn.execute(
        insert(runs)
        .values(
            trigger_type="manual",
            triggered_by=triggered_by,
            source=source,
            max_strategies=max_strategies,
            status="pending",
            schedule_id=schedule_id,
        )
        .returning(*COLUMNS)
    ).one()
    return _as_dict(row)


def slots_with_runs(
    conn: Connection, schedule_id: uuid.UUID, slots: Sequence[datetime]
) -> set[datetime]:
    """Which of ``slots`` already have a run of the schedule (a backfill skips them)."""
    if not slots:
        return set()
    rows = conn.execute(
        select(runs.c.scheduled_for).where(
            runs.c.schedule_id == schedule_id, runs.c.scheduled_for.in_(list(slots))
        )
    )
    return {row[0] for row in rows}
