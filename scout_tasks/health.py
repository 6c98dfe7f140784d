"""Is scheduling healthy? One snapshot of what the database knows, and the verdict on it.

``scout-tasks status`` prints both; /metrics serves the same snapshot as
gauges. Every number comes from an indexed query (the partial due-index of
enabled schedules, the active-runs index, the outbox's primary key, the one
``scout_beat`` row), so reading it costs the same with a year of history as
with none. The verdict is pure: :func:`problems` takes the snapshot and
nothing else, its ``now`` being the database's clock when it was read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine

from scout_tasks import heartbeat, outbox, runs, schedules
from scout_tasks.db import db_now
from scout_tasks.heartbeat import BeatState

# An enabled schedule whose next_run_at is this far past is overdue (contract).
OVERDUE_AFTER_SECONDS = 60.0
# The beat is silent after this many of its tick periods without a tick.
SILENT_AFTER_PERIODS = 3
# The outbox is stuck when its oldest event has waited this long.
OUTBOX_STUCK_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    now: datetime
    beat: BeatState | None
    schedules_enabled: int
    schedules_due: int
    schedules_overdue: int
    # Enabled, but with a last_error and no next_run_at: they never fire as they are.
    schedules_cannot_fire: int
    outbox_backlog: int
    outbox_oldest_at: datetime | None
    runs_pending: int
    runs_running: int

    @property
    def last_tick_age(self) -> float | None:
        """Seconds since the leading beat's last tick (None: never ticked)."""
        if self.beat is None:
            return None
        return max(0.0, (self.now - self.beat.last_tick_at).total_seconds())

    @property
    def outbox_oldest_age(self) -> float:
        """Seconds the oldest undelivered event has waited (0 when none waits)."""
        if self.outbox_oldest_at is None:
            return 0.0
        return max(0.0, (self.now - self.outbox_oldest_at).total_seconds())


def read_snapshot(conn: Connection) -> Snapshot:
    """Everything, judged by one clock: the transaction's ``now()``."""
    enabled = schedules.count_enabled(conn, OVERDUE_AFTER_SECONDS)
    backlog, oldest = outbox.backlog(conn)
    active = runs.count_active(conn)
    return Snapshot(
        now=db_now(conn),
        beat=heartbeat.read_beat(conn),
        schedules_enabled=enabled.enabled,
        schedules_due=enabled.due,
        schedules_overdue=enabled.overdue,
        schedules_cannot_fire=enabled.cannot_fire,
        outbox_backlog=backlog,
        outbox_oldest_at=oldest,
        runs_pending=active["pending"],
        runs_running=active["running"],
    )


def snapshot(engine: Engine) -> Snapshot:
    with engine.connect() as conn:
        return read_snapshot(conn)


def beat_problems(snap: Snapshot) -> list[str]:
    """What is wrong with the beat itself: no leader, or no tick for 3 of its periods.

    The beat is judged by its own tick period (recorded with its ticks), so
    a status run with another SCOUT_TICK_SECONDS judges it the same way.
    This is all the beat's container healthcheck asks (``status --only beat``):
    overdue schedules or a stuck outbox are not fixed by restarting the beat.
    """
    found = []
    age = snap.last_tick_age
    if snap.beat is None or age is None:
        found.append("no beat has ever ticked against this database")
    elif age > SILENT_AFTER_PERIODS * snap.beat.tick_seconds:
        found.append(
            f"the beat is silent: last tick {age:.0f}s ago "
            f"(more than {SILENT_AFTER_PERIODS} periods of {snap.beat.tick_seconds:g}s)"
        )
    return found


def problems(snap: Snapshot, only: str | None = None) -> list[str]:
    """What is wrong, one sentence each; empty when healthy. ``only="beat"``: the beat's."""
    found = beat_problems(snap)
    if only == "beat":
        return found
    if snap.schedules_overdue:
        found.append(
            f"{snap.schedules_overdue} schedule(s) overdue by more than "
            f"{OVERDUE_AFTER_SECONDS:.0f}s"
        )
    if snap.schedules_cannot_fire:
        found.append(
            f"{snap.schedules_cannot_fire} enabled schedule(s) cannot fire: their expression "
            "or time zone does not evaluate (last_error in `scout-tasks schedules list --json`)"
        )
    if snap.outbox_oldest_age > OUTBOX_STUCK_SECONDS:
        found.append(
            f"the outbox is stuck: {snap.outbox_backlog} event(s) waiting, "
            f"the oldest for {snap.outbox_oldest_age:.0f}s"
        )
    return found


def report(snap: Snapshot, only: str | None = None) -> dict[str, Any]:
    """The snapshot and its verdict as a plain object (``status --json``)."""
    issues = problems(snap, only)
    beat = snap.beat
    return {
        "healthy": not issues,
        "problems": issues,
        "checked_at": snap.now,
        "beat": None
        if beat is None
        else {
            "leader": beat.leader,
            "leader_since": beat.leader_since,
            "last_tick_at": beat.last_tick_at,
            "last_tick_age_seconds": round(snap.last_tick_age or 0.0, 3),
            "tick_seconds": beat.tick_seconds,
        },
        "schedules": {
            "enabled": snap.schedules_enabled,
            "due": snap.schedules_due,
            "overdue": snap.schedules_overdue,
            "cannot_fire": snap.schedules_cannot_fire,
        },
        "outbox": {
            "backlog": snap.outbox_backlog,
            "oldest_created_at": snap.outbox_oldest_at,
            "oldest_age_seconds": round(snap.outbox_oldest_age, 3),
        },
        "runs": {"pending": snap.runs_pending, "running": snap.runs_running},
    }
