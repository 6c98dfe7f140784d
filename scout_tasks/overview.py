"""What an operator reads: the console's pages as values, built from the query modules.

The console renders these and nothing else; it runs no SQL of its own. Every
function reads in one connection, with ``now`` from the database's clock so
"in 14 min" agrees with what the beat will do.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine

from scout_tasks import (
    heartbeat,
    horizon,
    outbox,
    run_events,
    runs,
    schedules,
    search,
    service,
)
from scout_tasks.cron_description import describe
from scout_tasks.db import db_now
from scout_tasks.errors import ScoutTasksError

# Counts in the header stop here: "10,000+" tells an operator as much as the
# exact number, and never costs a scan of a million rows.
COUNT_CAP = 10_000
# Counting the matches of a search stops sooner: "1,000+ matching" is enough to
# tell the operator to narrow it, and costs a tenth of counting to 10,000.
MATCH_CAP = 1_000
CHANGES_PAGE_SIZE = 50
# A schedule is overdue once its slot is this far behind (the contract's metric).
OVERDUE_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Header:
    """The schedules page's counters."""

    total: int
    total_estimated: bool
    paused: int
    overdue: int
    outbox_backlog: int
    outbox_oldest_at: datetime | None
    beat_leads: bool
    # When the leading beat last ticked (scout_beat), None if none ever did.
    last_tick_at: datetime | None

    @property
    def enabled(self) -> int:
        return max(self.total - self.paused, 0)


def header(conn: Connection) -> Header:
    total, estimated = search.count_all(conn)
    backlog, oldest = outbox.backlog(conn)
    beat = heartbeat.read_beat(conn)
    return Header(
        total=total,
        total_estimated=estimated,
        paused=search.count_disabled(conn, COUNT_CAP),
        overdue=search.count_overdue(conn, OVERDUE_SECONDS, COUNT_CAP),
        outbox_backlog=backlog,
        outbox_oldest_at=oldest,
        beat_leads=horizon.leader_present(conn),
        last_tick_at=None if beat is None else beat.last_tick_at,
    )


def fire_times(
    schedule: Mapping[str, Any], now: datetime, count: int
) -> tuple[list[datetime], str | None]:
    """The next fire times, or none and why when the stored expression or zone is unusable.

    The why matters before any beat has tried the row (``last_error`` is still
    empty then): a row written by plain SQL is not "planned soon", it never will be.
    """
    try:
        return service.preview_fire_times(schedule, now, count), None
    except ScoutTasksError as exc:
        return [], str(exc)
    except (ValueError, OverflowError) as exc:
        return [], f"cron_expression: cannot compute its fire times ({exc})"


def present(schedule: Mapping[str, Any], now: datetime, count: int) -> dict[str, Any]:
    """A schedule row with its description, next ``count`` fire times and ``plan_error``."""
    times, error = fire_times(schedule, now, count)
    return {
        **schedule,
        "cron_description": describe(str(schedule["cron_expression"])),
        "next_times": times,
        # Why it cannot be planned: the scheduler's word, else the console's own check.
        "plan_error": schedule.get("last_error") or error,
        # What the header's "overdue" counts, so the operator can find which one.
        "overdue": bool(
            schedule["enabled"]
            and schedule["next_run_at"] is not None
            and now - schedule["next_run_at"] > timedelta(seconds=OVERDUE_SECONDS)
        ),
    }


@dataclass(frozen=True, slots=True)
class SchedulePage:
    items: list[dict[str, Any]]
    # None when not counted (the last-run-failed filter).
    matching: int | None
    # Cursors for the neighbouring pages (names), None at either end.
    next_after: str | None
    previous_before: str | None
    now: datetime
    header: Header


def schedule_page(
    engine: Engine, query: search.ScheduleSearch, page_size: int, next_count: int = 3
) -> SchedulePage:
    """One keyset page of schedules, with the header counts."""
    with engine.connect() as conn:
        now = db_now(conn)
        rows, more = search.search_schedules(conn, query, page_size)
        filtered = bool(query.text or query.state or query.last_run_failed)
        top = header(conn)
        matching: int | None = top.total
        if query.last_run_failed:
            # Counting would test every schedule's last run (no index leads
            # there); the page says whether more follow instead.
            matching = None
        elif filtered:
            matching = search.count_matching(conn, query, MATCH_CAP)
    backwards = query.before is not None and query.after is None
    paged_in = query.after is not None or query.before is not None
    has_next = more if not backwards else paged_in
    has_previous = more if backwards else query.after is not None
    return SchedulePage(
        items=[present(row, now, next_count) for row in rows],
        matching=matching,
        next_after=rows[-1]["name"] if rows and has_next else None,
        previous_before=rows[0]["name"] if rows and has_previous else None,
        now=now,
        header=top,
    )


@dataclass(frozen=True, slots=True)
class RunWithEvents:
    run: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ScheduleDetail:
    schedule: dict[str, Any]
    runs: list[RunWithEvents]
    runs_total: int
    changes: list[dict[str, Any]]
    changes_total: int
    now: datetime
    # The newest change (whatever history page is shown): firing stamps
    # updated_at too, so only the history says when someone last changed it.
    last_change: dict[str, Any] | None = None


def schedule_detail(
    engine: Engine,
    schedule_id: uuid.UUID,
    *,
    runs_page: int = 1,
    changes_page: int = 1,
    page_size: int = 20,
    next_count: int = 5,
) -> ScheduleDetail:
    """A schedule with its next fire times, its runs (newest first) and its history."""
    with engine.connect() as conn:
        now = db_now(conn)
        row = schedules.get_schedule(conn, schedule_id)
        items, total = runs.list_runs(
            conn,
            runs.RunFilter(schedule_id=schedule_id),
            limit=page_size,
            offset=(runs_page - 1) * page_size,
        )
        events = run_events.events_of_runs(conn, [r["id"] for r in items])
    changes, changes_total = service.history(
        engine, schedule_id, page=changes_page, page_size=CHANGES_PAGE_SIZE
    )
    newest = changes if changes_page == 1 else service.history(engine, schedule_id, page_size=1)[0]
    return ScheduleDetail(
        schedule=present(row, now, next_count),
        runs=[RunWithEvents(r, events[r["id"]]) for r in items],
        runs_total=total,
        changes=changes,
        changes_total=changes_total,
        now=now,
        last_change=newest[0] if newest else None,
    )


@dataclass(frozen=True, slots=True)
class RunPage:
    items: list[dict[str, Any]]
    total: int
    schedule_names: dict[uuid.UUID, str]
    now: datetime


def run_page(engine: Engine, filters: runs.RunFilter, page: int, page_size: int) -> RunPage:
    """A page of runs, newest first, with the names of their schedules."""
    with engine.connect() as conn:
        now = db_now(conn)
        items, total = runs.list_runs(conn, filters, limit=page_size, offset=(page - 1) * page_size)
        ids = {r["schedule_id"] for r in items if r["schedule_id"] is not None}
        names = search.names_of(conn, ids)
    return RunPage(items=items, total=total, schedule_names=names, now=now)


@dataclass(frozen=True, slots=True)
class RunDetail:
    run: dict[str, Any]
    events: list[dict[str, Any]]
    schedule_name: str | None
    now: datetime


def run_detail(engine: Engine, run_id: uuid.UUID) -> RunDetail:
    with engine.connect() as conn:
        now = db_now(conn)
        run = runs.get_run(conn, run_id)
        events = run_events.events_of_runs(conn, [run_id])[run_id]
        names = search.names_of(conn, {run["schedule_id"]} if run["schedule_id"] else set())
    return RunDetail(run=run, events=events, schedule_name=names.get(run["schedule_id"]), now=now)


def schedule_zone(engine: Engine, schedule_id: uuid.UUID) -> str:
    """The schedule's time zone, in which the console's date fields are read."""
    with engine.connect() as conn:
        return str(schedules.get_schedule(conn, schedule_id)["timezone"])
