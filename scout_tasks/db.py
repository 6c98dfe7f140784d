"""The engine each process shares, the database's clock, and the one translator of its errors.

Every face (CLI, API, the lifecycle consumer) turns a driver error into a
scout-tasks error through :func:`translate_db_errors` / :func:`translate_db_error`,
so a given failure means the same thing everywhere: unreachable or unmigrated
(retry later), a refused value (the caller's input), or anything else.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from scout_tasks.errors import (
    ConstraintViolation,
    DatabaseError,
    DatabaseNotMigrated,
    DatabaseUnavailable,
    DuplicateScheduleName,
    InvalidValue,
    ScoutTasksError,
)
from scout_tasks.settings import get_settings

# A connection whose peer vanished without a reset (a failover, a lost NAT entry) would
# leave a query waiting forever, and the server holding its row locks for hours (the OS
# default is 2 h of silence): probe after 10 s, give up 15 s of unanswered probes later,
# as the beat's own session does. libpq ignores these on a Unix socket.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}

# Client keepalives end the client's wait, not the server's session: a client frozen
# mid-transaction (SIGSTOP, a paused VM) or cut off without a reset keeps its row locks
# (a fire batch's claimed schedules, an outbox batch) for as long as the server sees the
# connection open, for ever or the OS's 2 h. The server ends a transaction idle this
# long instead. Well above any wait of ours inside one: an outbox batch waits for the
# broker's confirms (15 s at most) while the next fire batch is written.
IDLE_IN_TRANSACTION_TIMEOUT = 60.0

_lock = threading.Lock()
_engines: dict[tuple[int, str], Engine] = {}


def make_engine(
    url: str, *, idle_in_transaction_timeout: float = IDLE_IN_TRANSACTION_TIMEOUT
) -> Engine:
    """An engine whose sessions speak UTC, so every timestamp read back is UTC.

    A transaction left idle for ``idle_in_transaction_timeout`` seconds is ended by
    the server (see :data:`IDLE_IN_TRANSACTION_TIMEOUT`).
    """
    idle_ms = str(round(idle_in_transaction_timeout * 1000))
    engine = create_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        connect_args={"connect_timeout": 5, "application_name": "scout-tasks", **KEEPALIVES},
    )

    @event.listens_for(engine, "connect")
    def _utc(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        with dbapi_connection.cursor() as cur:
            cur.execute("SET TIME ZONE 'UTC'")
            cur.execute(
                "SELECT set_config('idle_in_transaction_session_timeout', %s, false)", (idle_ms,)
            )
        dbapi_connection.commit()

    return engine


def connect_engine() -> None:
    """Open a pooled session on the configured database now, not at the first query."""
    with get_engine().connect():
        pass


def get_engine(url: str | None = None) -> Engine:
    """The process's engine for ``url`` (default: the configured database).

    Keyed by pid as well, so a forked Celery worker child never reuses the
    parent's sockets.
    """
    url = url or get_settings().database_url_value()
    key = (os.getpid(), url)
    engine = _engines.get(key)
    if engine is None:
        with _lock:
            engine = _engines.get(key)
            if engine is None:
                engine = _engines[key] = make_engine(url)
    return engine


def dispose_engines() -> None:
    """Drop this process's engines (after a fork, or at shutdown)."""
    with _lock:
        for (pid, _url), engine in list(_engines.items()):
            if pid == os.getpid():
                engine.dispose()
            else:
                # Inherited from the parent: forget it without closing its sockets.
                engine.dispose(close=False)
        _engines.clear()


def db_now(conn: Connection) -> datetime:
    """The database's clock (the transaction's start), which every scout-tasks process shares."""
    return conn.execute(text("SELECT now()")).scalar_one()  # type: ignore[no-any-return]


_SECONDS_UNTIL = text(
    "SELECT EXTRACT(EPOCH FROM (CAST(:at AS timestamptz) - clock_timestamp()))::float8"
)


def sleep_until(engine: Engine, instant: datetime, longest: float) -> None:
    """Sleep until the database's clock reaches ``instant``, for at most ``longest`` seconds.

    Due is measured by the database's clock (``now()`` in the claim), which
    this host's may not match, so the wait is measured against it too.
    """
    with engine.connect() as conn:
        left = float(conn.execute(_SECONDS_UNTIL, {"at": instant}).scalar_one())
    if left > 0:
        # A millisecond over, so the claim's transaction starts past the instant.
        time.sleep(min(left, longest) + 0.001)


# --- errors ---------------------------------------------------------------------------

# "Does not exist" errors that mean the schema is missing or older than the code.
_NOT_MIGRATED = frozenset({"42P01", "42703", "42704", "42883", "3F000"})
# The unique index behind DuplicateScheduleName.
SCHEDULE_NAME_CONSTRAINT = "uq_scout_schedules_name"


def first_line(exc: BaseException) -> str:
    """The driver's message, first line only (the rest is context and SQL)."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__


def translate_db_error(
    exc: SQLAlchemyError, *, schedule_name: str | None = None
) -> ScoutTasksError:
    """The scout-tasks error for a SQLAlchemy/driver error, classified by SQLSTATE and class.

    - unreachable (connection, pool, operational errors): :class:`DatabaseUnavailable`;
    - a missing table, column or schema: :class:`DatabaseNotMigrated`;
    - class 22 (data exception): :class:`InvalidValue`;
    - the schedule-name unique index, given ``schedule_name``: :class:`DuplicateScheduleName`;
    - class 23 (integrity): :class:`ConstraintViolation`;
    - anything else: :class:`DatabaseError`.
    """
    detail = first_line(exc)
    invalidated = bool(getattr(exc, "connection_invalidated", False))
    orig = getattr(exc, "orig", None)
    pgcode = str(getattr(orig, "pgcode", None) or "")
    kind: type[DatabaseError]
    if pgcode in _NOT_MIGRATED:
        kind, message = DatabaseNotMigrated, None
    elif pgcode.startswith("22") or (not pgcode and isinstance(exc, DataError)):
        kind, message = InvalidValue, f"invalid value: {detail}"
    elif pgcode.startswith("23") or (not pgcode and isinstance(exc, IntegrityError)):
        constraint = getattr(getattr(orig, "diag", None), "constraint_name", None)
        if constraint == SCHEDULE_NAME_CONSTRAINT and schedule_name is not None:
            return DuplicateScheduleName(schedule_name)
        kind, message = ConstraintViolation, f"refused by the database: {detail}"
    elif invalidated or isinstance(
        exc, OperationalError | InterfaceError | DisconnectionError | PoolTimeoutError
    ):
        kind, message = DatabaseUnavailable, f"database unavailable: {detail}"
    else:
        kind, message = DatabaseError, f"database error: {detail}"
    return kind(message, detail=detail, connection_invalidated=invalidated)


@contextmanager
def translate_db_errors(*, schedule_name: str | None = None) -> Iterator[None]:
    """Run the block; re-raise any database error as :func:`translate_db_error` says.

    The original stays reachable as ``__cause__``.
    """
    try:
        yield
    except (DBAPIError, DisconnectionError, PoolTimeoutError) as exc:
        raise translate_db_error(exc, schedule_name=schedule_name) from exc
