"""Every query on ``scout_runs``, named for what it does."""

from __future__ import annotations

import json
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
    id: uuid.UUID
    schedule_id: uuid.UUID
    scheduled_for: datetime
    triggered_by: str
    source: str
    max_strategies: int


_INSERT_SCHEDULED = text(
    """
    INSERT INTO scout_runs (id, trigger_type, triggered_by, source, max_strategies,
                            status, schedule_id, scheduled_for)
    SELECT u.id, 'scheduled', u.triggered_by, u.source, u.max_strategies,
           'pending', u.schedule_id, u.scheduled_for
    FROM unnest(
        CAST(:ids AS uuid[]), CAST(:triggered_by AS text[]), CAST(:sources AS text[]),
        CAST(:max_strategies AS int[]), CAST(:schedule_ids AS uuid[]),
        CAST(:scheduled_for AS timestamptz[])
    ) AS u(id, triggered_by, source, max_strategies, schedule_id, scheduled_for)
    ON CONFLICT (schedule_id, scheduled_for) DO NOTHING
    RETURNING id
    """
)


def insert_scheduled_runs(conn: Connection, new: Sequence[NewScheduledRun]) -> set[uuid.UUID]:
    """Insert one pending run per (schedule, slot); return the ids actually inserted.

    A slot that already has a run is skipped by the unique constraint: losing
    that race to another claimer is a normal outcome, not an error.
    """
    if not new:
        return set()
    rows = conn.execute(
        _INSERT_SCHEDULED,
        {
            "ids": [str(r.id) for r in new],
            "triggered_by": [r.triggered_by for r in new],
            "sources": [r.source for r in new],
            "max_strategies": [r.max_strategies for r in new],
            "schedule_ids": [str(r.schedule_id) for r in new],
            "scheduled_for": [r.scheduled_for for r in new],
        },
    )
    return {row[0] for row in rows}


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
        .order_by(runs.c.created_at.desc(), runs.c.id)
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


# --- lifecycle events ---------------------------------------------------------
#
# Each statement applies one kind of event to a batch of runs (one row per run
# for started and the terminal kinds, any number for progress). Every one
# changes a run only while it is pending or running: the WHERE clause, not
# Python, is what keeps a terminal run (completed, failed, cancelled) from
# ever changing again, whatever order events arrive in and however many
# workers apply them at once. Run timestamps come from the database's clock,
# the same one created_at and the stale-run sweep use, so created_at <=
# started_at <= completed_at holds even when an agent's clock is off. Every
# applied event sets updated_at: the sweep measures silence from it.

_LOCK_RUNS = text(
    """
    SELECT id, status FROM scout_runs
    WHERE id = ANY(CAST(:run_ids AS uuid[]))
    ORDER BY id
    FOR UPDATE
    """
)


def lock_runs(conn: Connection, run_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Lock the runs that exist among ``run_ids``, in id order; their statuses.

    Taking every lock of a batch up front, in one order, keeps two workers
    applying overlapping batches from deadlocking, and makes the statuses read
    here the ones the batch's updates will see.
    """
    if not run_ids:
        return {}
    rows = conn.execute(_LOCK_RUNS, {"run_ids": [str(r) for r in run_ids]})
    return {_uuid(run_id): status for run_id, status in rows}


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _count(result: Any) -> int:
    return int(result.rowcount)


_MARK_STARTED = text(
    """
    UPDATE scout_runs
    SET status = 'running',
        started_at = COALESCE(started_at, now()),
        updated_at = now()
    WHERE id = ANY(CAST(:run_ids AS uuid[])) AND status IN ('pending', 'running')
    """
)


def mark_runs_started(conn: Connection, run_ids: Sequence[uuid.UUID]) -> int:
    """pending -> running with ``started_at``; how many runs are active.

    A run already running (a progress event came first) keeps its started_at
    but still counts the event as a sign of life.
    """
    if not run_ids:
        return 0
    return _count(conn.execute(_MARK_STARTED, {"run_ids": [str(r) for r in run_ids]}))


@dataclass(frozen=True, slots=True)
class RunProgress:
    run_id: uuid.UUID
    progress: dict[str, Any]
    at: datetime | None


# An agent's timestamp only orders its progress events, and only while it is
# plausible: one more than :max_ahead seconds ahead of the database's clock (a
# forged 9999-12-31, say) counts as received now, and a stored ``at`` that far
# ahead (written before this rule) no longer outranks anything. Otherwise one
# forged event would freeze the run's progress for good. Of a run's progress
# events in one batch only the latest (by that clamped time, then the later
# in the batch) is compared with the stored one: one by one, the others would
# have been overwritten by it or kept out by the same comparison.
_RECORD_PROGRESS = text(
    """
    WITH given AS (
        SELECT u.run_id, u.ord, u.progress,
               CASE
                   WHEN u.at IS NULL OR u.at > now() + make_interval(secs => :max_ahead)
                   THEN now()
                   ELSE u.at
               END AS at
        FROM unnest(
            CAST(:run_ids AS uuid[]), CAST(:ords AS int[]),
            CAST(:progress AS jsonb[]), CAST(:ats AS timestamptz[])
        ) AS u(run_id, ord, progress, at)
    ),
    latest AS (
        SELECT DISTINCT ON (run_id) run_id, progress, at
        FROM given
        ORDER BY run_id, at DESC, ord DESC
    )
    UPDATE scout_runs AS r
    SET status = 'running',
        started_at = COALESCE(r.started_at, now()),
        updated_at = now(),
        metrics = CASE
            WHEN r.metrics -> 'progress' ->> 'at' IS NULL
                 OR CAST(r.metrics -> 'progress' ->> 'at' AS timestamptz) <= latest.at
                 OR CAST(r.metrics -> 'progress' ->> 'at' AS timestamptz)
                    > now() + make_interval(secs => :max_ahead)
            THEN jsonb_set(
                COALESCE(r.metrics, '{}'::jsonb),
                '{progress}',
                latest.progress || jsonb_build_object('at', latest.at)
            )
            ELSE r.metrics
        END
    FROM latest
    WHERE r.id = latest.run_id AND r.status IN ('pending', 'running')
    """
)

# How far ahead of the database's clock an agent's timestamp may be and still count.
PROGRESS_MAX_AHEAD_SECONDS = 300


def record_runs_progress(
    conn: Connection,
    items: Sequence[RunProgress],
    *,
    max_ahead: float = PROGRESS_MAX_AHEAD_SECONDS,
) -> int:
    """Keep each run's latest progress in ``metrics['progress']``; how many runs are active.

    ``items`` in arrival order. The stored object gets an ``at`` key (the
    event's timestamp, else the database's now()): a progress event that
    arrives after a newer one (a redelivery, say) does not overwrite it. A
    timestamp more than ``max_ahead`` seconds in the future is replaced by
    now(). A progress before any ``scout.started`` means the agent did start,
    so the run becomes running. Silence is measured from ``updated_at``
    (now(), whatever the event says), so no timestamp can keep a run from the
    stale-run sweep.
    """
    if not items:
        return 0
    rows = conn.execute(
        _RECORD_PROGRESS,
        {
            "run_ids": [str(i.run_id) for i in items],
            "ords": list(range(len(items))),
            "progress": [json.dumps(i.progress) for i in items],
            "ats": [i.at for i in items],
            "max_ahead": max_ahead,
        },
    )
    return _count(rows)


_MARK_COMPLETED = text(
    """
    UPDATE scout_runs AS r
    SET status = 'completed',
        metrics = COALESCE(r.metrics, '{}'::jsonb) || u.counters,
        started_at = COALESCE(r.started_at, now()),
        completed_at = now(),
        updated_at = now()
    FROM unnest(CAST(:run_ids AS uuid[]), CAST(:counters AS jsonb[])) AS u(run_id, counters)
    WHERE r.id = u.run_id AND r.status IN ('pending', 'running')
    """
)


def mark_runs_completed(conn: Connection, items: Sequence[tuple[uuid.UUID, dict[str, int]]]) -> int:
    """Complete active runs, merging each agent's counters into ``metrics``; how many.

    One item per run. Also from pending: a ``scout.completed`` that overtook
    its ``scout.started`` still completes the run (and sets ``started_at``).
    """
    if not items:
        return 0
    rows = conn.execute(
        _MARK_COMPLETED,
        {
            "run_ids": [str(run_id) for run_id, _ in items],
            "counters": [json.dumps(counters) for _, counters in items],
        },
    )
    return _count(rows)


_MARK_FAILED = text(
    """
    UPDATE scout_runs AS r
    SET status = 'failed',
        error_message = u.error_message,
        metrics = CASE
            WHEN u.stage IS NULL THEN r.metrics
            ELSE COALESCE(r.metrics, '{}'::jsonb) || jsonb_build_object('stage', u.stage)
        END,
        completed_at = now(),
        updated_at = now()
    FROM unnest(
        CAST(:run_ids AS uuid[]), CAST(:error_messages AS text[]), CAST(:stages AS text[])
    ) AS u(run_id, error_message, stage)
    WHERE r.id = u.run_id AND r.status IN ('pending', 'running')
    """
)


def mark_runs_failed(conn: Connection, items: Sequence[tuple[uuid.UUID, str, str | None]]) -> int:
    """Fail active runs with the agent's message (and stage, in ``metrics['stage']``).

    One (run id, error message, stage) per run; returns how many.
    """
    if not items:
        return 0
    rows = conn.execute(
        _MARK_FAILED,
        {
            "run_ids": [str(run_id) for run_id, _, _ in items],
            "error_messages": [message for _, message, _ in items],
            "stages": [stage for _, _, stage in items],
        },
    )
    return _count(rows)


def run_status(conn: Connection, run_id: uuid.UUID) -> str | None:
    """The run's status, or None when there is no such run."""
    return conn.execute(select(runs.c.status).where(runs.c.id == run_id)).scalar_one_or_none()


# The first status IN (...) repeats the predicate of ix_scout_runs_active, so
# the planner can use that partial index whichever branch matches.
_FAIL_STALE = text(
    """
    UPDATE scout_runs
    SET status = 'failed',
        error_message = CASE status
            WHEN 'pending' THEN :pending_message ELSE :running_message END,
        completed_at = COALESCE(CAST(:now AS timestamptz), now()),
        updated_at = COALESCE(CAST(:now AS timestamptz), now())
    WHERE status IN ('pending', 'running')
      AND (
        (status = 'pending' AND created_at < COALESCE(CAST(:now AS timestamptz), now())
                                             - make_interval(secs => :pending_timeout))
        OR (status = 'running' AND updated_at < COALESCE(CAST(:now AS timestamptz), now())
                                                - make_interval(secs => :run_timeout))
      )
    RETURNING id, error_message
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


def lock_prunable(conn: Connection, cutoff: datetime, limit: int) -> list[uuid.UUID]:
    """Lock up to ``limit`` runs that ended before ``cutoff``, oldest first.

    A run another transaction holds (an event being recorded) is skipped, not
    waited for: the next batch or the next tick takes it.
    """
    query = select(runs.c.id).where(*_ended_before(cutoff)).order_by(runs.c.completed_at)
    return list(conn.execute(query.limit(limit).with_for_update(skip_locked=True)).scalars())


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
