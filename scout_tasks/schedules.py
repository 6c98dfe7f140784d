"""Every query on ``scout_schedules``, named for what it does.

Writers pass already-validated values (see :mod:`scout_tasks.validation`);
driver errors are translated here, at the boundary, into scout-tasks errors.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from scout_tasks import jitter, pg_arrays
from scout_tasks.db import translate_db_error
from scout_tasks.errors import DuplicateScheduleName, ScheduleNotFound
from scout_tasks.tables import schedules

COLUMNS = tuple(schedules.c)


def _as_dict(row: Row[Any]) -> dict[str, Any]:
    return dict(row._mapping)


def _translate(exc: IntegrityError, name: str | None) -> Exception:
    """A taken name becomes DuplicateScheduleName; any other refusal stays the driver's."""
    translated = translate_db_error(exc, schedule_name=name)
    return translated if isinstance(translated, DuplicateScheduleName) else exc


def create_schedule(conn: Connection, values: dict[str, Any]) -> dict[str, Any]:
    """Insert a schedule; ``values`` holds validated columns including ``next_run_at``."""
    try:
        with conn.begin_nested():
            row = conn.execute(insert(schedules).values(**values).returning(*COLUMNS)).one()
    except IntegrityError as exc:
        raise _translate(exc, values.get("name")) from None
    return _as_dict(row)


def get_schedule(conn: Connection, schedule_id: uuid.UUID, *, lock: bool = False) -> dict[str, Any]:
    query = select(*COLUMNS).where(schedules.c.id == schedule_id)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).one_or_none()
    if row is None:
        raise ScheduleNotFound(f"no schedule with id {schedule_id}")
    return _as_dict(row)


def find_schedule(conn: Connection, key: str) -> dict[str, Any]:
    """A schedule by id or, failing that, by name (the CLI accepts either)."""
    try:
        return get_schedule(conn, uuid.UUID(key))
    except (ValueError, ScheduleNotFound):
        pass
    row = conn.execute(select(*COLUMNS).where(schedules.c.name == key)).one_or_none()
    if row is None:
        raise ScheduleNotFound(f"no schedule with id or name {key!r}")
    return _as_dict(row)


def list_schedules(
    conn: Connection,
    *,
    enabled: bool | None = None,
    source: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """A page of schedules ordered by name, and the total matching the filters."""
    conditions = []
    if enabled is not None:
        conditions.append(schedules.c.enabled == enabled)
    if source is not None:
        conditions.append(schedules.c.source == source)
    total = conn.execute(
        select(func.count()).select_from(schedules).where(*conditions)
    ).scalar_one()
    query = select(*COLUMNS).where(*conditions).order_by(schedules.c.name).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return [_as_dict(r) for r in conn.execute(query)], total


def update_schedule(
    conn: Connection, schedule_id: uuid.UUID, values: dict[str, Any]
) -> dict[str, Any]:
    try:
        with conn.begin_nested():
            row = conn.execute(
                update(schedules)
                .where(schedules.c.id == schedule_id)
                .values(**values)
                .returning(*COLUMNS)
            ).one_or_none()
    except IntegrityError as exc:
        raise _translate(exc, values.get("name")) from None
    if row is None:
        raise ScheduleNotFound(f"no schedule with id {schedule_id}")
    return _as_dict(row)


def delete_schedule(conn: Connection, schedule_id: uuid.UUID) -> None:
    result = conn.execute(delete(schedules).where(schedules.c.id == schedule_id))
    if result.rowcount == 0:
        raise ScheduleNotFound(f"no schedule with id {schedule_id}")


def touch_all(conn: Connection) -> None:
    """Wake every beat (the explicit reload): NOTIFY the channel the beats LISTEN on.

    Sent when the transaction commits, like the trigger's NOTIFY on a real change;
    no row is written.
    """
    conn.execute(text("SELECT pg_notify('scout_schedules', 'reload')"))


# --- the scheduler's queries ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class DueSchedule:
    """A schedule claimed for firing, locked until the claiming transaction ends."""

    id: uuid.UUID
    name: str
    cron_expression: str
    timezone: str
    source: str
    max_strategies: int
    # None when the stored value is outside what Python can hold (see _CLAIM_DUE).
    next_run_at: datetime | None
    misfire_policy: str
    misfire_grace_seconds: int
    overlap_policy: str
    # Status of the previous run, read only for overlap_policy = 'skip'.
    last_run_status: str | None
    # The schedule's jitter offset d (see scout_tasks.jitter): due at next_run_at + d.
    jitter_ms: int = 0


_CLAIM_DUE = text(
    """
    SELECT s.id, s.name, s.cron_expression, s.timezone, s.source, s.max_strategies,
           -- A timestamp Python cannot hold would fail the whole batch's fetch:
           -- read as NULL, it sets just that schedule aside.
           CASE WHEN s.next_run_at >= '0001-01-01 00:00:00+00'
                 AND s.next_run_at < '10000-01-01 00:00:00+00'
                THEN s.next_run_at END AS next_run_at,
           s.misfire_policy, s.misfire_grace_seconds, s.overlap_policy,
           CASE WHEN s.overlap_policy = 'skip' THEN
               (SELECT r.status FROM scout_runs r WHERE r.id = s.last_run_id)
           END AS last_run_status,
           $jitter_ms AS jitter_ms
    FROM scout_schedules s
    -- The first condition is the due-index's range; the second holds back a
    -- jittered schedule until its own instant, slot + d (d < 3600 s).
    WHERE s.enabled AND s.next_run_at <= now()
      AND s.next_run_at + $jitter <= now()
    ORDER BY s.next_run_at
    LIMIT :limit
    FOR UPDATE OF s SKIP LOCKED
    """.replace("$jitter_ms", jitter.sql_ms("s")).replace("$jitter", jitter.sql_interval("s"))
)


def claim_due(conn: Connection, limit: int) -> list[DueSchedule]:
    """Lock up to ``limit`` due schedules that no other transaction holds.

    SKIP LOCKED makes concurrent claimers split the work instead of queueing on
    each other; "due" is measured by the database's clock, which every host shares.
    """
    # Positional: the SELECT lists the columns in the dataclass's field order.
    return [DueSchedule(*row) for row in conn.execute(_CLAIM_DUE, {"limit": limit})]


_CLAIM_UNSCHEDULED = text(
    """
    SELECT id, cron_expression, timezone
    FROM scout_schedules
    WHERE enabled AND next_run_at IS NULL AND last_error IS NULL
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)


def claim_unscheduled(conn: Connection, limit: int) -> list[tuple[uuid.UUID, str, str]]:
    """Lock enabled schedules whose ``next_run_at`` is NULL (new or changed by SQL)."""
    return [tuple(row) for row in conn.execute(_CLAIM_UNSCHEDULED, {"limit": limit})]  # type: ignore[misc]


# Also sets what scout_schedules_before_update() would (updated_at; last_error
# cleared when next_run_at moves), so its WHEN clause (migration 0008) lets the
# row skip it. ``s.id = ANY(:ids)`` with sequential scans off (``SET LOCAL``, for
# the rest of the fire transaction) reads the claimed rows by primary key: costed
# by the planner, 500 index probes lost to a sequential scan of every schedule
# with a hash join, per batch, on tables up to about 150,000 schedules
# (measured at 20,000: 30 µs of PostgreSQL's CPU per fire, growing with the table).
_NO_SEQSCAN = text("SET LOCAL enable_seqscan = off")

_ADVANCE = text(
    """
    UPDATE scout_schedules s
    SET next_run_at = u.next_run_at,
        last_run_id = COALESCE(u.run_id, s.last_run_id),
        last_run_at = CASE WHEN u.run_id IS NULL THEN s.last_run_at ELSE now() END,
        -- Saturates: a count set by hand near the end of bigint must not overflow
        -- and fail the whole batch's transaction, again on every claim.
        skipped_slots = LEAST(s.skipped_slots, 9223372036854775807 - u.skipped) + u.skipped,
        updated_at = now(),
        last_error = CASE WHEN u.next_run_at IS DISTINCT FROM s.next_run_at
                          THEN NULL ELSE s.last_error END
    FROM unnest(
        CAST(:ids AS uuid[]), CAST(:next_run_ats AS timestamptz[]),
        CAST(:run_ids AS uuid[]), CAST(:skipped AS bigint[])
    ) AS u(id, next_run_at, run_id, skipped)
    WHERE s.id = u.id AND s.id = ANY(CAST(:ids AS uuid[]))
    """
)


def advance(
    conn: Connection,
    ids: Sequence[uuid.UUID | str],
    next_run_ats: Sequence[datetime],
    run_ids: Sequence[uuid.UUID | str | None],
    skipped: Sequence[int],
) -> None:
    """Move claimed schedules to their next slot, recording the run each one made."""
    if not ids:
        return
    conn.execute(_NO_SEQSCAN)
    conn.execute(
        _ADVANCE,
        {
            "ids": pg_arrays.plain(ids),
            "next_run_ats": pg_arrays.instants(next_run_ats),
            "run_ids": pg_arrays.plain(run_ids),
            "skipped": pg_arrays.plain(skipped),
        },
    )


_SET_NEXT = text(
    """
    UPDATE scout_schedules s
    SET next_run_at = u.next_run_at, last_error = u.error
    FROM unnest(
        CAST(:ids AS uuid[]), CAST(:next_run_ats AS timestamptz[]), CAST(:errors AS text[])
    ) AS u(id, next_run_at, error)
    WHERE s.id = u.id
    """
)


def set_next_run(
    conn: Connection,
    ids: Sequence[uuid.UUID],
    next_run_ats: Sequence[datetime | None],
    errors: Sequence[str | None],
) -> None:
    """Give unscheduled schedules their first slot, or record why they have none."""
    if not ids:
        return
    conn.execute(
        _SET_NEXT,
        {"ids": [str(i) for i in ids], "next_run_ats": list(next_run_ats), "errors": list(errors)},
    )


# Range scans of the partial due-index (enabled schedules only). Due and overdue
# are measured from each schedule's own instant, next_run_at + d (its jitter),
# so a schedule waiting out its jitter is neither; the jitter is computed only
# for the rows the index range already selected.
_COUNT_ENABLED = text(
    """
    SELECT (SELECT count(*) FROM scout_schedules WHERE enabled),
           (SELECT count(*) FROM scout_schedules s
             WHERE s.enabled AND s.next_run_at <= now() AND s.next_run_at + $jitter <= now()),
           (SELECT count(*) FROM scout_schedules s
             WHERE s.enabled AND s.next_run_at < now() - make_interval(secs => :overdue_after)
               AND s.next_run_at + $jitter < now() - make_interval(secs => :overdue_after)),
           -- The index's NULL entries: enabled schedules the scheduler could not
           -- plan (an expression or zone written with plain SQL), with last_error.
           (SELECT count(*) FROM scout_schedules s
             WHERE s.enabled AND s.next_run_at IS NULL AND s.last_error IS NOT NULL)
    """.replace("$jitter", jitter.sql_interval("s"))
)


@dataclass(frozen=True, slots=True)
class EnabledCounts:
    enabled: int
    # next_run_at + d has passed (by the database's clock): firing is about to take them.
    due: int
    # next_run_at + d passed more than ``overdue_after`` seconds ago: nothing is firing them.
    overdue: int
    # No next_run_at and a last_error: they never fire until someone fixes them.
    cannot_fire: int = 0


def count_enabled(conn: Connection, overdue_after: float) -> EnabledCounts:
    """Enabled schedules, and how many of them are due, overdue, or cannot fire now."""
    enabled, due, overdue, broken = conn.execute(
        _COUNT_ENABLED, {"overdue_after": overdue_after}
    ).one()
    return EnabledCounts(int(enabled), int(due), int(overdue), int(broken))


# --- operating a schedule: run now, pause, resume -----------------------------


def record_manual_run(conn: Connection, schedule_id: uuid.UUID, run_id: uuid.UUID) -> None:
    """Make a "run now" run the schedule's last run; its next slot is left as it was.

    Bookkeeping only (last_run_*), so the change history records nothing.
    """
    conn.execute(
        update(schedules)
        .where(schedules.c.id == schedule_id)
        .values(last_run_id=run_id, last_run_at=func.now())
    )


def pause_schedule(
    conn: Connection, schedule_id: uuid.UUID, *, reason: str, paused_by: str | None
) -> dict[str, Any]:
    """Disable with a reason, stamped now and by ``paused_by`` (else the database's actor)."""
    return update_schedule(
        conn,
        schedule_id,
        {
            "enabled": False,
            "next_run_at": None,
            "paused_reason": reason,
            "paused_at": func.now(),
            "paused_by": func.coalesce(paused_by, func.scout_actor()),
        },
    )


def resume_schedule(
    conn: Connection, schedule_id: uuid.UUID, next_run_at: datetime
) -> dict[str, Any]:
    """Enable, clear the pause, fire next at ``next_run_at``: paused slots are not caught up."""
    return update_schedule(
        conn,
        schedule_id,
        {
            "enabled": True,
            "next_run_at": next_run_at,
            "last_error": None,
            "paused_reason": None,
            "paused_at": None,
            "paused_by": None,
        },
    )


# --- schedules as code ----------------------------------------------------------


def find_for_apply(
    conn: Connection, names: Sequence[str], *, managed: bool
) -> list[dict[str, Any]]:
    """The schedules named, and with ``managed`` every one apply wrote (what a plan compares)."""
    condition = schedules.c.name.in_(list(names))
    if managed:
        condition = condition | schedules.c.managed_by.is_not(None)
    return [_as_dict(r) for r in conn.execute(select(*COLUMNS).where(condition))]


def lock_schedules(conn: Connection, ids: Sequence[uuid.UUID]) -> list[dict[str, Any]]:
    """Lock these schedules (FOR UPDATE, in id order) and read them as they now are.

    Held until the transaction ends. A fire batch's claim skips a locked row
    (SKIP LOCKED) and takes it on a later pass; locking in id order keeps two
    writers of overlapping sets from deadlocking each other.
    """
    if not ids:
        return []
    query = (
        select(*COLUMNS)
        .where(schedules.c.id.in_(list(ids)))
        .order_by(schedules.c.id)
        .with_for_update()
    )
    return [_as_dict(r) for r in conn.execute(query)]
