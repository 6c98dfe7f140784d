"""The SQL of ``scout_beat``: the leading beat records each tick it sends; readers ask when.

The beat talks to PostgreSQL through its own psycopg2 session (the one that
LISTENs and holds the leader lock), so :data:`RECORD_TICK` is written in
psycopg2's parameter style and :func:`record_tick` takes a DB-API cursor.
Times are the database's ``now()``, the clock every host shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

# leader_since changes only when another beat takes over.
RECORD_TICK = """
INSERT INTO scout_beat AS b (id, leader, tick_seconds, leader_since, last_tick_at)
VALUES (1, %(leader)s, %(tick_seconds)s, now(), now())
ON CONFLICT (id) DO UPDATE SET
    leader = EXCLUDED.leader,
    tick_seconds = EXCLUDED.tick_seconds,
    leader_since = CASE WHEN b.leader = EXCLUDED.leader THEN b.leader_since ELSE now() END,
    last_tick_at = now()
"""


def record_tick(cursor: Any, leader: str, tick_seconds: float) -> None:
    """Note that ``leader`` just sent a tick (a DB-API cursor, autocommit)."""
    cursor.execute(RECORD_TICK, {"leader": leader, "tick_seconds": tick_seconds})


@dataclass(frozen=True, slots=True)
class BeatState:
    """The leading beat as it last recorded itself."""

    leader: str
    tick_seconds: float
    leader_since: datetime
    last_tick_at: datetime


_READ = text("SELECT leader, tick_seconds, leader_since, last_tick_at FROM scout_beat WHERE id = 1")


def read_beat(conn: Connection) -> BeatState | None:
    """The last recorded tick, or None when no beat ever ticked against this database."""
    row = conn.execute(_READ).one_or_none()
    return None if row is None else BeatState(*row)
