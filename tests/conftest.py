"""Shared fixtures. Unit tests need no server; the rest talk to the real ones.

- PostgreSQL: a template database is migrated once per session and copied per
  test (``CREATE DATABASE ... TEMPLATE``), so every test starts from a fresh
  schema in ~100 ms.
- RabbitMQ: tests run in their own vhost (``SCOUT_TEST_VHOST``, created by
  ``.ci/run`` or here with rabbitmqctl) and each test gets a uniquely named
  exchange and task queue, deleted afterwards.
- Tests marked ``restart`` really stop and start the machine's PostgreSQL and
  RabbitMQ, taking them away from every other user; they run only when
  ``SCOUT_TEST_RESTART_SERVERS=1`` (``.ci/run`` sets it) and are skipped otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import kombu
import psycopg2
import pytest
from kombu import Exchange, Queue
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

ADMIN_URL = os.environ.get("SCOUT_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_ROOT = os.environ.get("SCOUT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")
VHOST = os.environ.get("SCOUT_TEST_VHOST", "scout-tasks-test")
TEMPLATE = f"scout_test_template_{os.getpid()}"
RESTART_SERVERS = "SCOUT_TEST_RESTART_SERVERS"


def _parallel_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")  # set by pytest-xdist in its worker processes


def _parallel_controller(config: pytest.Config) -> bool:
    return config.pluginmanager.has_plugin("dsession")  # pytest-xdist's scheduler


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the ``restart`` tests unless asked: a workstation's servers serve others too.

    When asked and the suite runs in parallel, the parallel workers leave them
    out: a restart would pull the servers from under the other workers' tests.
    The controller runs them alone once the workers are done (see
    :func:`pytest_sessionfinish`).
    """
    restarts = [item for item in items if item.get_closest_marker("restart") is not None]
    if not restarts:
        return
    if os.environ.get(RESTART_SERVERS) != "1":
        skip = pytest.mark.skip(
            reason=f"restarts the machine's PostgreSQL/RabbitMQ; set {RESTART_SERVERS}=1 to run it"
        )
        for item in restarts:
            item.add_marker(skip)
    elif _parallel_worker(config):
        items[:] = [item for item in items if item.get_closest_marker("restart") is None]
        config.hook.pytest_deselected(items=restarts)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After a parallel run, run the ``restart`` tests alone, in one process of their own.

    Only after a run that went to its end (not one stopped by ``-x``, Ctrl-C or a
    collection error), and with the run's own ``-m`` and ``-k``, so a run that
    left the restart tests out never restarts a server.
    """
    config = session.config
    if not _parallel_controller(config) or os.environ.get(RESTART_SERVERS) != "1":
        return
    code = pytest.ExitCode
    finished = (code.OK, code.TESTS_FAILED, code.NO_TESTS_COLLECTED)
    if session.exitstatus not in finished or session.shouldstop or session.shouldfail:
        return
    marks = config.getoption("markexpr") or ""
    keywords = config.getoption("keyword") or ""
    command = [
        sys.executable, "-m", "pytest", "-n", "0", "-p", "no:cacheprovider", "-q", "-rfEs",
        "-m", f"restart and ({marks})" if marks else "restart",
        *(["-k", keywords] if keywords else []),
        *config.args,
    ]  # fmt: skip
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    if terminal is not None:
        terminal.write_sep("=", "the restart tests, alone: " + " ".join(command[1:]))
    done = subprocess.run(command, cwd=config.invocation_params.dir, check=False)
    # 5: none of them was selected (the run was given other paths or expressions).
    if done.returncode == 0 and session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK
    elif done.returncode not in (0, 5):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _admin() -> Any:
    conn = psycopg2.connect(ADMIN_URL)
    conn.autocommit = True
    return conn


def _admin_execute(*statements: str) -> None:
    # A fresh connection each time: a test may restart PostgreSQL in between.
    conn = _admin()
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


def _db_url(name: str) -> str:
    return (
        make_url(ADMIN_URL)
        .set(drivername="postgresql+psycopg2", database=name)
        .render_as_string(hide_password=False)
    )


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    from scout_tasks import migrate

    _admin_execute(
        f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)', f'CREATE DATABASE "{TEMPLATE}"'
    )
    migrate.upgrade(_db_url(TEMPLATE))
    yield TEMPLATE
    _admin_execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')


@pytest.fixture
def db_url(template_db: str) -> Iterator[str]:
    """A fresh, migrated database for this test."""
    name = f"scout_test_{uuid.uuid4().hex[:12]}"
    _admin_execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    try:
        yield _db_url(name)
    finally:
        _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    from scout_tasks.db import make_engine

    eng = make_engine(db_url)
    yield eng
    # Every pooled connection must be back in the pool by now: a leak would
    # show up here as checked-out connections.
    checked_out = eng.pool.checkedout()  # type: ignore[attr-defined]
    eng.dispose()
    assert checked_out == 0, f"{checked_out} database connection(s) leaked"


# --- RabbitMQ --------------------------------------------------------------------


def _ensure_vhost() -> None:
    try:
        with kombu.Connection(f"{AMQP_ROOT}/{quote(VHOST, safe='')}", connect_timeout=3) as conn:
            conn.connect()
            return
    except Exception:  # noqa: BLE001 - the vhost may simply not exist yet
        pass
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        pytest.fail(f"RabbitMQ vhost {VHOST!r} is missing and rabbitmqctl is not available")
    subprocess.run([ctl, "add_vhost", VHOST], check=False, capture_output=True, timeout=60)
    subprocess.run(
        [ctl, "set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture(scope="session")
def broker_url() -> str:
    _ensure_vhost()
    return f"{AMQP_ROOT}/{quote(VHOST, safe='')}"


@pytest.fixture
def exchange_name(broker_url: str) -> Iterator[str]:
    """A per-test events exchange, deleted afterwards."""
    name = f"scout-test-{uuid.uuid4().hex[:10]}"
    yield name
    with kombu.Connection(broker_url) as conn, contextlib.suppress(Exception):
        conn.default_channel.exchange_delete(name)


@dataclass
class Received:
    routing_key: str
    body: dict[str, Any]
    properties: dict[str, Any]
    delivery_info: dict[str, Any]
    raw: bytes = field(repr=False, default=b"")


class EventQueue:
    """A queue bound to the test's exchange: what an agent would receive."""

    def __init__(
        self, broker_url: str, exchange: str, binding: str = "scout.#", *, durable: bool = False
    ) -> None:
        self.broker_url = broker_url
        self.connection = kombu.Connection(broker_url)
        self.name = f"scout-test-events-{uuid.uuid4().hex[:8]}"
        self.exchange = Exchange(exchange, type="topic", durable=True)
        self.queue = Queue(
            self.name, self.exchange, routing_key=binding, durable=durable, auto_delete=False
        )
        self.queue(self.connection.default_channel).declare()

    def reconnect(self) -> None:
        """A fresh connection, after the broker restarted (the queue must be durable)."""
        with contextlib.suppress(Exception):
            self.connection.release()
        self.connection = kombu.Connection(self.broker_url)

    def get(self, timeout: float = 10.0, count: int = 1) -> list[Received]:
        """Wait up to ``timeout`` for ``count`` messages; returns what arrived."""
        out: list[Received] = []
        deadline = time.monotonic() + timeout
        bound = self.queue(self.connection.default_channel)
        while len(out) < count and time.monotonic() < deadline:
            message = bound.get(no_ack=False)
            if message is None:
                time.sleep(0.05)
                continue
            message.ack()
            out.append(
                Received(
                    routing_key=message.delivery_info["routing_key"],
                    body=json.loads(message.body),
                    properties=dict(message.properties),
                    delivery_info=dict(message.delivery_info),
                    raw=message.body,
                )
            )
        return out

    def drain(self, quiet: float = 1.0) -> list[Received]:
        """Everything that arrives until ``quiet`` seconds pass with nothing new."""
        out: list[Received] = []
        while True:
            got = self.get(timeout=quiet)
            if not got:
                return out
            out.extend(got)

    def close(self) -> None:
        try:
            self.queue(self.connection.default_channel).delete()
        finally:
            self.connection.release()


@pytest.fixture
def event_queue(broker_url: str, exchange_name: str) -> Iterator[EventQueue]:
    queue = EventQueue(broker_url, exchange_name)
    yield queue
    queue.close()


@pytest.fixture
def publisher(broker_url: str, exchange_name: str) -> Iterator[Any]:
    from scout_tasks.publisher import ConfirmingPublisher

    pub = ConfirmingPublisher(broker_url, exchange_name)
    yield pub
    pub.close()
