"""Retention: delete ended runs older than a cutoff, with their recorded events, in short batches.

``scout-tasks runs prune --older-than DAYS`` and the tick (``SCOUT_RUN_RETENTION_DAYS``)
both come here. Only completed, failed and cancelled runs are deleted, never a
pending or running one. Each batch is its own transaction that locks at most
``batch_size`` runs with SKIP LOCKED (a run whose event is being recorded right
now is left for later) and deletes them with their ``scout_run_events`` rows
and any undelivered outbox events, so no lock is held for long and firing and
the lifecycle consumer never wait on a prune. The counters behind /metrics
are kept apart (``scout_counters``), so pruning never lowers them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine

from scout_tasks import outbox, run_events, runs
from scout_tasks.db import db_now

log = logging.getLogger(__name__)

BATCH_SIZE = 1000


@dataclass(slots=True)
class PruneReport:
    cutoff: datetime
    dry_run: bool
    # Runs deleted (or, in a dry run, that would be).
    runs: int = 0
    events: int = 0
    outbox: int = 0
    batches: int = 0
    # False when max_batches stopped it with more left to delete.
    complete: bool = True


def cutoff_for(now: datetime, older_than_days: float) -> datetime:
    """The instant before which an ended run is old enough to delete."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if older_than_days < 0:
        raise ValueError("older_than_days must be 0 or more")
    return now - timedelta(days=older_than_days)


def prune_runs(
    engine: Engine,
    older_than_days: float,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
    max_batches: int | None = None,
) -> PruneReport:
    """Delete runs that ended more than ``older_than_days`` days before ``now``.

    ``now`` defaults to the database's clock (the one ``completed_at`` was
    written with). A dry run counts and deletes nothing. ``max_batches``
    bounds the work of one call (the tick's share); the rest waits for the next.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if now is None:
        with engine.connect() as conn:
            now = db_now(conn)
    report = PruneReport(cutoff=cutoff_for(now, older_than_days), dry_run=dry_run)
    if dry_run:
        with engine.connect() as conn:
            report.runs = runs.count_prunable(conn, report.cutoff)
        return report
    while max_batches is None or report.batches < max_batches:
        with engine.begin() as conn:
            ids, locked = runs.lock_prunable(conn, report.cutoff, batch_size)
            if not ids:
                # None, or only runs held elsewhere: those wait for a later call.
                break
            report.events += run_events.delete_for_runs(conn, ids)
            report.outbox += outbox.delete_for_runs(conn, ids)
            report.runs += runs.delete_runs(conn, ids)
        report.batches += 1
        if locked < batch_size:
            break
    else:
        report.complete = False
    if report.runs:
        log.info(
            "pruned %d run(s) that ended before %s (%d recorded event(s))",
            report.runs,
            report.cutoff.isoformat(),
            report.events,
            extra={
                "action": "runs.pruned",
                "runs": report.runs,
                "events": report.events,
                "batches": report.batches,
            },
        )
    return report
