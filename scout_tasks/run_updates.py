"""The lifecycle's updates of ``scout_runs``: one set-based statement per kind of event.

The rest of the table's queries (inserts, reads, cancel, the sweep, retention)
are in :mod:`scout_tasks.runs`; these are the ones :mod:`scout_tasks.recorder`
applies a batch of agents' events with, after
``run_events.record_and_lock`` locked the batch's runs in id order.

Each statement applies one kind of event to a batch of runs (one row per run
for started and the terminal kinds, any number for progress). Every one
changes a run only while it is pending or running: the WHERE clause, not
Python, is what keeps a terminal run (completed, failed, cancelled) from
ever changing again, whatever order events arrive in and however many
workers apply them at once. Run timestamps come from the database's clock,
the same one created_at and the stale-run sweep use, so created_at <=
started_at <= completed_at holds even when an agent's clock is off. Every
applied event sets updated_at: the sweep measures silence from it.

``metrics`` is an object or NULL (a CHECK since migration 0007); the
statements still read anything else as ``{}``, so a row
from before the constraint cannot turn a merge into an array append.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

# A run's id: the UUID, or its text (the recorder keys its batches by text).
RunId = uuid.UUID | str


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


def mark_runs_started(conn: Connection, run_ids: Sequence[RunId]) -> int:
    """pending -> running with ``started_at``; how many runs are active.

    A run already running (a progress event came first) keeps its started_at
    but still counts the event as a sign of life.
    """
    if not run_ids:
        return 0
    return _count(conn.execute(_MARK_STARTED, {"run_ids": [str(r) for r in run_ids]}))


@dataclass(frozen=True, slots=True)
class RunProgress:
    run_id: RunId
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
#
# The stored ``at`` is read with jsonpath's datetime() in silent mode: one that
# plain SQL made unreadable ("garbage", a number) is NULL, so the new progress
# replaces it, where a cast would fail the statement and set a good event aside.
_STORED_AT = (
    "CAST(jsonb_path_query_first(r.metrics, '$.progress.at.datetime()', '{}', true)"
    " #>> '{}' AS timestamptz)"
)
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
            WHEN $stored_at IS NULL
                 OR $stored_at <= latest.at
                 OR $stored_at > now() + make_interval(secs => :max_ahead)
            THEN jsonb_set(
                CASE WHEN jsonb_typeof(r.metrics) = 'object' THEN r.metrics ELSE '{}'::jsonb END,
                '{progress}',
                latest.progress || jsonb_build_object('at', latest.at)
            )
            ELSE r.metrics
        END
    FROM latest
    WHERE r.id = latest.run_id AND r.status IN ('pending', 'running')
    """.replace("$stored_at", _STORED_AT)
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
        metrics = CASE WHEN jsonb_typeof(r.metrics) = 'object' THEN r.metrics
                       ELSE '{}'::jsonb END || u.counters,
        started_at = COALESCE(r.started_at, now()),
        completed_at = now(),
        updated_at = now()
    FROM unnest(CAST(:run_ids AS uuid[]), CAST(:counters AS jsonb[])) AS u(run_id, counters)
    WHERE r.id = u.run_id AND r.status IN ('pending', 'running')
    """
)


def mark_runs_completed(conn: Connection, items: Sequence[tuple[RunId, dict[str, int]]]) -> int:
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
            ELSE CASE WHEN jsonb_typeof(r.metrics) = 'object' THEN r.metrics
                      ELSE '{}'::jsonb END || jsonb_build_object('stage', u.stage)
        END,
        completed_at = now(),
        updated_at = now()
    FROM unnest(
        CAST(:run_ids AS uuid[]), CAST(:error_messages AS text[]), CAST(:stages AS text[])
    ) AS u(run_id, error_message, stage)
    WHERE r.id = u.run_id AND r.status IN ('pending', 'running')
    """
)


def mark_runs_failed(conn: Connection, items: Sequence[tuple[RunId, str, str | None]]) -> int:
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
