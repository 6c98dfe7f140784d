"""A fire batch's one write: its runs, their ``scout.trigger`` events and the schedules' next slots.

One statement spanning ``scout_runs``, ``scout_outbox`` and ``scout_schedules``
instead of three, because in a burst PostgreSQL's share of the CPU per fire
was mostly per-statement work done three times: parsing the same ids, a join
against the schedules planned from scratch (a hash join over the whole table,
growing with it), a round trip each. Here the run ids are made by the caller
(random UUIDs), so every event's bytes are built before the statement and the
outbox rows are written by it too, only for the runs actually inserted.

What stays as it was: ``UNIQUE (schedule_id, scheduled_for)`` decides which
runs exist (ON CONFLICT DO NOTHING: a slot another writer took gets no run, no
event, and is not the schedule's last run); every trigger on the three tables
fires as for separate statements; the advance sets ``updated_at`` and clears
``last_error`` exactly as ``scout_schedules_before_update()`` would, so that
function's WHEN clause (migration 0008) lets the row skip it.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, text

from scout_tasks import pg_arrays
from scout_tasks.policy import Advance
from scout_tasks.publisher import OutgoingMessage
from scout_tasks.runs import NewScheduledRun

# The claimed schedules are read through the primary key (``s.id = ANY(:ids)``,
# with sequential scans off for the rest of the fire transaction): costed by the
# planner, 500 random index probes lose to a sequential scan of a table up to
# about 150,000 schedules, which then reads and hashes every schedule per batch
# (measured: 30 µs of PostgreSQL's CPU per fire at 20,000, growing with the
# table). All of them are in memory during a burst, where the probes are cheap.
_NO_SEQSCAN = text("SET LOCAL enable_seqscan = off")

_WRITE = text(
    """
    WITH planned AS (
        SELECT * FROM unnest(
            CAST(:run_ids AS uuid[]), CAST(:schedule_ids AS uuid[]),
            CAST(:scheduled_for AS timestamptz[]), CAST(:triggered_by AS text[]),
            CAST(:sources AS text[]), CAST(:max_strategies AS int[]),
            CAST(:event_ids AS uuid[]), CAST(:payloads AS json[])
        ) AS p(run_id, schedule_id, scheduled_for, triggered_by, source, max_strategies,
               event_id, payload)
    ), made AS (
        INSERT INTO scout_runs (id, trigger_type, triggered_by, source, max_strategies,
                                status, schedule_id, scheduled_for)
        SELECT run_id, 'scheduled', triggered_by, source, max_strategies,
               'pending', schedule_id, scheduled_for
        FROM planned
        ON CONFLICT (schedule_id, scheduled_for) DO NOTHING
        RETURNING id, schedule_id, scheduled_for
    ), queued AS (
        INSERT INTO scout_outbox (event_id, routing_key, payload, run_id)
        SELECT p.event_id, :routing_key, p.payload, p.run_id
        FROM planned p JOIN made m ON m.id = p.run_id
        RETURNING id, run_id
    ), latest AS (
        -- Catch-up inserts several runs per schedule: the last run is the latest slot's.
        SELECT DISTINCT ON (schedule_id) schedule_id, id
        FROM made
        ORDER BY schedule_id, scheduled_for DESC
    ), advanced AS (
        UPDATE scout_schedules s
        SET next_run_at = a.next_run_at,
            last_run_id = COALESCE(l.id, s.last_run_id),
            last_run_at = CASE WHEN l.id IS NULL THEN s.last_run_at ELSE now() END,
            skipped_slots = s.skipped_slots + a.skipped,
            updated_at = now(),
            last_error = CASE WHEN a.next_run_at IS DISTINCT FROM s.next_run_at
                              THEN NULL ELSE s.last_error END
        FROM unnest(
            CAST(:ids AS uuid[]), CAST(:next_run_ats AS timestamptz[]),
            CAST(:skipped AS bigint[])
        ) AS a(id, next_run_at, skipped)
        LEFT JOIN latest l ON l.schedule_id = a.id
        WHERE s.id = a.id AND s.id = ANY(CAST(:ids AS uuid[]))
    )
    SELECT run_id::text, id FROM queued
    """
)


def write_batch(
    conn: Connection,
    new: Sequence[NewScheduledRun],
    run_ids: Sequence[str],
    messages: Sequence[OutgoingMessage],
    advances: Sequence[Advance],
) -> dict[str, int]:
    """Insert ``new`` (ids ``run_ids``) with their events ``messages``, advance the schedules.

    The three sequences are parallel; every message has the same routing key.
    Returns, for each run actually inserted, its event's outbox id.
    """
    if not new and not advances:
        return {}
    conn.execute(_NO_SEQSCAN)
    rows = conn.execute(
        _WRITE,
        {
            "run_ids": pg_arrays.plain(run_ids),
            "schedule_ids": pg_arrays.plain(r.schedule_id for r in new),
            "scheduled_for": pg_arrays.instants(r.scheduled_for for r in new),
            "triggered_by": pg_arrays.texts(r.triggered_by for r in new),
            "sources": pg_arrays.texts(r.source for r in new),
            "max_strategies": pg_arrays.plain(r.max_strategies for r in new),
            "event_ids": pg_arrays.plain(m.message_id for m in messages),
            # A list: the JSON's many quotes cost the server more in one literal.
            "payloads": [m.body.decode() for m in messages],
            "routing_key": messages[0].routing_key if messages else "",
            "ids": pg_arrays.plain(a.schedule_id for a in advances),
            "next_run_ats": pg_arrays.instants(a.next_run_at for a in advances),
            "skipped": pg_arrays.plain(a.skipped for a in advances),
        },
    )
    return {run_id: outbox_id for run_id, outbox_id in rows}
