"""What the beat reads to know when to wake: the earliest due instant and the leader lock.

Both read ``scout_schedules`` (and ``pg_locks``) on the beat's own session; the
queries that write schedules stay in :mod:`scout_tasks.schedules`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, text

from scout_tasks import jitter

# pg_try_advisory_lock key of the beats' leader: "scout beat" in ASCII. The
# beat takes it (scout_tasks.beat); the console asks whether anyone holds it.
LEADER_LOCK = 0x73636F7574_6265

# A bigint key shows in pg_locks as classid (high half) and objid (low half).
_LEADER_PRESENT = text(
    """
    SELECT EXISTS (
        SELECT 1 FROM pg_locks
        WHERE locktype = 'advisory' AND granted AND objsubid = 1
          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND classid::bigint = :high AND objid::bigint = :low
    )
    """
)


def leader_present(conn: Connection) -> bool:
    """Whether some beat holds the leader lock on this database now."""
    params = {"high": LEADER_LOCK >> 32, "low": LEADER_LOCK & 0xFFFFFFFF}
    return bool(conn.execute(_LEADER_PRESENT, params).scalar_one())


# Rows the horizon reads at most to find a jittered due instant (see below).
HORIZON_WINDOW = 1000
# Due schedules the horizon counts at most: enough to tell a burst (more than
# one claim's batch) from a handful, without reading a whole herd each wake-up.
DUE_COUNT_CAP = 1001

# The earliest instant a schedule is due: min(next_run_at + d). Without jitter
# that is two index probes on the partial due-index, never a scan of all
# schedules. With jitter, a row can be due before the first row by next_run_at
# only if its next_run_at is earlier than that row's due instant, so only
# that range is read, and at most HORIZON_WINDOW rows of it: past that (a herd
# of jittered schedules on one slot), the last row's next_run_at is a lower
# bound of every unread row's due instant, and the answer is marked
# ``bounded``: the beat then sends ``fire`` at a steady cadence instead of
# reading the whole herd on every wake-up. ``due_count`` is how many are due
# now among the first DUE_COUNT_CAP rows of the claim's own index range (a
# jittered herd reads no further): more than a batch, and the beat sends the
# fire task to two pool processes at once instead of to one that hands on
# after its first claim. The beat runs it on its own psycopg2 session (the
# one that LISTENs).
HORIZON_QUERY = text(
    """
    WITH head AS (
        SELECT s.next_run_at + $jitter AS due_at
        FROM scout_schedules s
        WHERE s.enabled AND s.next_run_at IS NOT NULL
        ORDER BY s.next_run_at LIMIT 1
    ), ahead AS (
        SELECT s.next_run_at, s.next_run_at + $jitter AS due_at
        FROM scout_schedules s
        -- A scalar subquery, not a join with head: only then is the bound an
        -- index condition (as a join filter it read all 1,000,000 rows, 0.5 s).
        WHERE s.enabled AND s.next_run_at < (SELECT due_at FROM head)
        ORDER BY s.next_run_at LIMIT $window
    ), cut AS (
        SELECT max(next_run_at) AS bound FROM ahead HAVING count(*) >= $window
    ), soonest AS (
        SELECT LEAST((SELECT due_at FROM head), (SELECT min(due_at) FROM ahead),
                     (SELECT bound FROM cut)) AS earliest
    )
    SELECT now() AS now,
           (SELECT earliest FROM soonest) AS earliest,
           EXISTS (SELECT 1 FROM scout_schedules
                    WHERE enabled AND next_run_at IS NULL AND last_error IS NULL) AS unscheduled,
           EXISTS (SELECT 1 FROM cut) AS bounded,
           -- Due by now, or by the earliest instant when that is still to come:
           -- what the horizon will read at that instant (a jittered head's slot
           -- has passed, so it is not the earliest instant itself).
           (SELECT max(next_run_at) FROM scout_schedules
             WHERE enabled
               AND next_run_at <= GREATEST(now(), (SELECT earliest FROM soonest))) AS latest_due,
           (SELECT min(next_run_at) FROM scout_schedules
             WHERE enabled AND next_run_at > now()) AS upcoming,
           -- Due by now, or by the earliest instant when that is still to come.
           -- Read from the index alone (jitter left out: an upper bound).
           (SELECT count(*) FROM (
                SELECT 1 FROM scout_schedules
                WHERE enabled
                  AND next_run_at <= GREATEST(now(), (SELECT earliest FROM soonest))
                ORDER BY next_run_at LIMIT $cap) AS due) AS due_count
    """.replace("$jitter", jitter.sql_interval("s"))
    .replace("$window", str(HORIZON_WINDOW))
    .replace("$cap", str(DUE_COUNT_CAP))
)


@dataclass(frozen=True, slots=True)
class Horizon:
    """What the beat needs to know to sleep: the database's clock and the next due instant.

    ``earliest`` is the earliest ``next_run_at + d`` (d the schedule's jitter),
    or, when ``bounded``, a lower bound of it (a herd of jittered schedules).
    """

    now: datetime
    earliest: datetime | None
    unscheduled: bool
    bounded: bool = False
    # The latest next_run_at that has come (a new one means another schedule
    # came due; while the earliest instant is still ahead, the latest that will
    # have come by then), and the earliest still to come. While a due schedule stays
    # due (another transaction holds its row, so every claim skips it),
    # ``earliest`` stands still, and these are how the beat sees the others.
    latest_due: datetime | None = None
    upcoming: datetime | None = None
    # How many are due now, counted up to DUE_COUNT_CAP.
    due_count: int = 0
