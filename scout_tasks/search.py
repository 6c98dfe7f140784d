"""What the operator console reads from ``scout_schedules``: keyset pages, searches, counts.

Each query stays cheap with a million schedules: pages are keyset pages on
the name (the unique index), searches use the trigram indexes of
``scout_schedule_search`` (migration 0006), and counts are either bounded (a
LIMIT inside) or read a small partial index. The writes stay in
:mod:`scout_tasks.schedules`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Row, func, select, text

from scout_tasks.schedules import COLUMNS
from scout_tasks.tables import runs, schedule_search, schedules


def _as_dict(row: Row[Any]) -> dict[str, Any]:
    return dict(row._mapping)


@dataclass(frozen=True, slots=True)
class ScheduleSearch:
    """What the console's schedules page asks for: one keyset page of matches."""

    text: str | None = None
    # "enabled", "paused" (every disabled schedule), or None for all.
    state: str | None = None
    last_run_failed: bool = False
    # Keyset cursors: names strictly after / before (by the name's order).
    after: str | None = None
    before: str | None = None


# Shorter than a trigram: searched as a prefix, which still uses the index.
_MIN_INFIX = 3


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _search_conditions(search: ScheduleSearch) -> list[Any]:
    """The filters; a text search reads ``scout_schedule_search`` (join it by id)."""
    conditions: list[Any] = []
    if search.text:
        escaped = _like_escape(search.text)
        pattern = f"%{escaped}%" if len(search.text) >= _MIN_INFIX else f"{escaped}%"
        conditions.append(
            schedule_search.c.name.ilike(pattern, escape="\\")
            | schedule_search.c.source.ilike(pattern, escape="\\")
        )
    if search.state == "enabled":
        conditions.append(schedules.c.enabled)
    elif search.state == "paused":
        conditions.append(~schedules.c.enabled)
    if search.last_run_failed:
        last = runs.alias("failed_run")
        conditions.append(
            select(last.c.id)
            .where(last.c.id == schedules.c.last_run_id, last.c.status == "failed")
            .correlate(schedules)
            .exists()
        )
    return conditions


def _searched(search: ScheduleSearch) -> tuple[Any, Any]:
    """The FROM clause and the name column to order and page by."""
    if not search.text:
        return schedules, schedules.c.name
    # The copy's name equals the schedule's; ordering by it lets a broad
    # search walk the copy's name index and stop after one page.
    joined = schedule_search.join(schedules, schedules.c.id == schedule_search.c.schedule_id)
    return joined, schedule_search.c.name


def search_schedules(
    conn: Connection, search: ScheduleSearch, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """One page of matching schedules by name, each with its last run's status.

    Returns the rows (in name order) and whether more lie beyond the page in
    the direction asked (after the last row, or before the first one).
    """
    source, name = _searched(search)
    conditions = _search_conditions(search)
    backwards = search.before is not None and search.after is None
    if search.after is not None:
        conditions.append(name > search.after)
    if backwards:
        conditions.append(name < search.before)
    query = (
        select(
            *COLUMNS,
            runs.c.status.label("last_run_status"),
            runs.c.created_at.label("last_run_created_at"),
            runs.c.completed_at.label("last_run_completed_at"),
        )
        .select_from(source.outerjoin(runs, runs.c.id == schedules.c.last_run_id))
        .where(*conditions)
        .order_by(name.desc() if backwards else name)
        .limit(limit + 1)
    )
    rows = [_as_dict(r) for r in conn.execute(query)]
    more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
    return rows, more


def count_matching(conn: Connection, search: ScheduleSearch, cap: int) -> int:
    """How many schedules match, counting no further than ``cap`` (then ``cap``)."""
    source, _name = _searched(search)
    inner = select(schedules.c.id).select_from(source).where(*_search_conditions(search)).limit(cap)
    return int(conn.execute(select(func.count()).select_from(inner.subquery())).scalar_one())


_ESTIMATED_ROWS = text(
    "SELECT reltuples::bigint FROM pg_class WHERE oid = 'scout_schedules'::regclass"
)
# Below this many rows an exact count costs less than a millisecond or two.
EXACT_COUNT_BELOW = 100_000


def count_all(conn: Connection) -> tuple[int, bool]:
    """How many schedules exist, and whether the number is the planner's estimate.

    A large table is not counted on every page view: PostgreSQL's own row
    estimate (kept by autovacuum and ANALYZE) is close enough for a header.
    """
    estimate = int(conn.execute(_ESTIMATED_ROWS).scalar_one())
    if estimate >= EXACT_COUNT_BELOW:
        return estimate, True
    return int(conn.execute(select(func.count()).select_from(schedules)).scalar_one()), False


def count_disabled(conn: Connection, cap: int) -> int:
    """Disabled (paused) schedules, read from their partial index, up to ``cap``."""
    inner = select(schedules.c.id).where(~schedules.c.enabled).limit(cap)
    return int(conn.execute(select(func.count()).select_from(inner.subquery())).scalar_one())


def count_overdue(conn: Connection, grace_seconds: int, cap: int) -> int:
    """Enabled schedules whose ``next_run_at`` passed more than ``grace_seconds`` ago."""
    inner = (
        select(schedules.c.id)
        .where(
            schedules.c.enabled,
            schedules.c.next_run_at < func.now() - timedelta(seconds=grace_seconds),
        )
        .limit(cap)
    )
    return int(conn.execute(select(func.count()).select_from(inner.subquery())).scalar_one())


def names_of(conn: Connection, ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The names of these schedules (a deleted one is simply absent)."""
    if not ids:
        return {}
    rows = conn.execute(select(schedules.c.id, schedules.c.name).where(schedules.c.id.in_(ids)))
    return {row.id: row.name for row in rows}
