"""Helpers shared by the integration tests: plain SQL, a scratch database, the app's
settings, the CLI.

Nothing here fakes PostgreSQL or RabbitMQ. The TCP proxy a test puts between a
client and a real server, to cut it at will, is ``tests.tcp_proxy.TcpProxy``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg2
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from scout_tasks.settings import Settings
from tests.conftest import ADMIN_URL

REPO_ROOT = Path(__file__).resolve().parents[2]
SCOUT_TASKS = str(Path(sys.executable).with_name("scout-tasks"))

# The keys a `scout.trigger` payload must carry (docs/contract.md, "Events").
TRIGGER_KEYS = frozenset(
    {
        "event_id",
        "event_type",
        "timestamp",
        "run_id",
        "source",
        "max_strategies",
        "trigger_type",
        "triggered_by",
        "schedule_id",
        "scheduled_for",
    }
)


# --- plain SQL -------------------------------------------------------------------


def execute(engine: Engine, statement: str, **params: Any) -> int:
    """Run one statement in its own transaction, as an operator's psql would; returns rowcount."""
    with engine.begin() as conn:
        return conn.execute(text(statement), params).rowcount


def scalar(engine: Engine, statement: str, **params: Any) -> Any:
    """One value read back. Read-only: the connection is rolled back, so use
    :func:`execute` (or ``engine.begin()``) for anything that writes."""
    with engine.connect() as conn:
        return conn.execute(text(statement), params).scalar_one()


def rows(engine: Engine, statement: str, **params: Any) -> list[dict[str, Any]]:
    """Every row read back, as dicts (read-only, like :func:`scalar`)."""
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(statement), params)]


def row(engine: Engine, statement: str, **params: Any) -> dict[str, Any]:
    found = rows(engine, statement, **params)
    assert len(found) == 1, f"expected one row, got {len(found)}"
    return found[0]


def count(engine: Engine, table: str) -> int:
    return int(scalar(engine, f"SELECT count(*) FROM {table}"))


def counts(engine: Engine) -> dict[str, int]:
    """Row counts of every scout table: a refused write must leave all three unchanged."""
    return {t: count(engine, t) for t in ("scout_schedules", "scout_runs", "scout_outbox")}


def insert_due_schedules(
    engine: Engine,
    n: int,
    *,
    cron: str = "0 12 29 2 *",
    ago: str = "5 minutes",
    prefix: str = "due",
) -> None:
    """``n`` enabled schedules due ``ago``, inserted by one plain-SQL statement.

    The default expression is leap-day noon, so no slot of it falls between
    ``ago`` and now: an hourly one would, in an hour's first minutes, and the
    planner would then rightly fire that later slot instead of the one set here.
    """
    execute(
        engine,
        """
        INSERT INTO scout_schedules (name, cron_expression, source, max_strategies, next_run_at)
        SELECT :prefix || '-' || g, :cron, 'stratninja', 10,
               date_trunc('second', now()) - CAST(:ago AS interval)
        FROM generate_series(1, :n) AS g
        """,
        prefix=prefix,
        cron=cron,
        ago=ago,
        n=n,
    )


# --- a scratch database ------------------------------------------------------------


def _admin() -> Any:
    conn = psycopg2.connect(ADMIN_URL)
    conn.autocommit = True
    return conn


@contextlib.contextmanager
def empty_database() -> Iterator[str]:
    """A brand-new, empty database (no schema at all); dropped afterwards."""
    name = f"scout_test_empty_{uuid.uuid4().hex[:12]}"
    admin = _admin()
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield (
            make_url(ADMIN_URL)
            .set(drivername="postgresql+psycopg2", database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


# --- the app's settings ------------------------------------------------------------


def app_settings(db_url: str, broker_url: str, exchange_name: str, /, **overrides: Any) -> Settings:
    """Settings for an app on this test's database and exchange (no ``.env`` file read);
    ``overrides`` may replace any of them, e.g. a broker URL nothing listens on."""
    values = {
        "database_url": db_url,
        "broker_url": broker_url,
        "exchange": exchange_name,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


# --- the console script ---------------------------------------------------------------


def run_cli(
    *args: str, env: Mapping[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``scout-tasks`` script with exactly the given SCOUT_* settings.

    ``cwd`` should be an empty directory so no ``.env`` or ``.scout`` of the
    checkout leaks into the test.
    """
    base = {k: v for k, v in os.environ.items() if not k.startswith("SCOUT_")}
    base.update(env)
    return subprocess.run(
        [SCOUT_TASKS, *args],
        env=base,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


Cli = Callable[..., subprocess.CompletedProcess[str]]


def cli_ok(result: subprocess.CompletedProcess[str]) -> str:
    """The stdout of a command that must have succeeded, without a traceback."""
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout


def cli_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(cli_ok(result))


def one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The single stderr line of a command that must have exited with ``code``."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# --- the events queue -------------------------------------------------------------------


def queue_depth(event_queue: Any) -> int:
    """Messages ready in the test's events queue, without consuming them."""
    bound = event_queue.queue(event_queue.connection.default_channel)
    return int(bound.queue_declare(passive=True).message_count)


def wait_for_depth(event_queue: Any, expected: int, timeout: float = 15.0) -> int:
    """Poll the queue depth until it reaches ``expected`` (or the time is up)."""
    import time

    deadline = time.monotonic() + timeout
    depth = queue_depth(event_queue)
    while depth < expected and time.monotonic() < deadline:
        time.sleep(0.1)
        depth = queue_depth(event_queue)
    return depth


@contextlib.contextmanager
def fresh_process_publisher_env(monkeypatch: Any, broker_url: str, exchange: str) -> Iterator[None]:
    """This process's publisher (``process_publisher()``) made afresh for ``broker_url``.

    The settings come from the environment, as in a worker; the database URL is
    required by them but never used.
    """
    from scout_tasks import publisher
    from scout_tasks.settings import get_settings

    monkeypatch.setenv("SCOUT_BROKER_URL", broker_url)
    monkeypatch.setenv("SCOUT_EXCHANGE", exchange)
    monkeypatch.setenv("SCOUT_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    get_settings.cache_clear()
    publisher.close_process_publisher()
    try:
        yield
    finally:
        publisher.close_process_publisher()
        get_settings.cache_clear()
