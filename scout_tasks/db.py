"""The engine each process shares, and the transaction helper everything uses."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.pool import NullPool

from scout_tasks.settings import get_settings

_lock = threading.Lock()
_engines: dict[tuple[int, str], Engine] = {}


def make_engine(url: str, *, pooled: bool = True) -> Engine:
    """An engine whose sessions speak UTC, so every timestamp read back is UTC."""
    engine = create_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        connect_args={"connect_timeout": 5, "application_name": "scout-tasks"},
        **({} if pooled else {"poolclass": NullPool}),
    )

    @event.listens_for(engine, "connect")
    def _utc(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        with dbapi_connection.cursor() as cur:
            cur.execute("SET TIME ZONE 'UTC'")
        dbapi_connection.commit()

    return engine


def get_engine(url: str | None = None) -> Engine:
    """The process's engine for ``url`` (default: the configured database).

    Keyed by pid as well, so a forked Celery worker child never reuses the
    parent's sockets.
    """
    url = url or get_settings().database_url
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


@contextmanager
def transaction(engine: Engine | None = None) -> Iterator[Connection]:
    """A connection inside one transaction: commit on success, roll back on error."""
    with (engine or get_engine()).begin() as conn:
        yield conn
