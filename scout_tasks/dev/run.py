"""``scout-tasks dev``: the whole system in one terminal, with no server to install.

Unless ``SCOUT_DATABASE_URL`` / ``SCOUT_BROKER_URL`` say otherwise it starts
(or reuses, when a ``dev`` already runs in this folder) the embedded servers:
a PostgreSQL (:mod:`scout_tasks.dev.postgres`) with its state in ``./.scout``
(:mod:`scout_tasks.dev.state`) and a ``filesystem://`` broker
(:mod:`scout_tasks.broker`). Then it migrates the database, creates a demo
schedule when there is none, starts a worker, a beat and the HTTP API as
child processes (their logs go to ``.scout/logs/``) and prints one line per
``scout.*`` event on the exchange, with its routing key and ``run_id``.

Every other command run in this folder finds the instance through
``.scout/dev.json``. Ctrl-C (or SIGTERM) stops the children first, so they let
go of the database cleanly, then PostgreSQL; none is left behind, and each
child is also told to stop if ``dev`` itself is killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import kombu
from kombu import Exchange, Queue

from scout_tasks import broker, migrate
from scout_tasks.dev import state
from scout_tasks.dev.children import Children, executable
from scout_tasks.dev.postgres import LocalPostgres
from scout_tasks.dev.state import DevInstance, Layout
from scout_tasks.settings import Settings, mask_url

DEMO_SCHEDULE = {
    "name": "demo: every minute",
    "cron_expression": "* * * * *",
    "source": "demo",
    "max_strategies": 5,
}
# The event tail's queue on the filesystem broker. A fixed name, so the queue a
# killed dev left bound is reused (and purged) instead of filling up forever.
TAIL_QUEUE = "scout-tasks.dev-tail"
# How often the filesystem broker's leftovers are pruned, in seconds.
HOUSEKEEPING_INTERVAL = 30.0


def _say(message: str) -> None:
    print(f"scout-tasks dev: {message}", flush=True)


@dataclass(slots=True)
class Servers:
    """The database and broker this dev uses, and whether it must stop the database."""

    settings: Settings
    # Started by this dev: stopped by it too.
    postgres: LocalPostgres | None = None
    # The running dev whose servers this one reuses.
    reused: DevInstance | None = None


def _start_servers(servers: Servers, layout: Layout) -> None:
    """Resolve each unset URL to the embedded default, starting PostgreSQL if needed.

    Fills ``servers`` as it goes, so a failure half-way still leaves the caller
    what it must stop.
    """
    raw = servers.settings
    database_url = None if raw.database_url is None else raw.database_url_value()
    broker_url = raw.broker_url_value()
    running = state.running_instance(layout)
    if database_url is None:
        if running is not None:
            servers.reused = running
            database_url = running.database_url
            _say(
                f"reusing the PostgreSQL of the `scout-tasks dev` already running here "
                f"(pid {running.dev_pid})"
            )
        else:
            postgres = LocalPostgres(layout)
            first_run = postgres.first_run
            setup = f" (first run: initialising {layout.relative(postgres.pgdata)})"
            _say(f"starting PostgreSQL{setup if first_run else ''} ...")
            started = time.monotonic()
            servers.postgres = postgres
            postgres.start()
            _say(
                f"PostgreSQL ready in {time.monotonic() - started:.1f}s "
                f"(Unix socket in {layout.relative(postgres.socket_dir)}, no TCP port; "
                f"log {layout.relative(postgres.log_path)})"
            )
            if postgres.account is not None:
                _say(
                    f"running as root: PostgreSQL runs as {postgres.account.name!r}, "
                    f"which owns {layout.relative(postgres.pgdata)} and "
                    f"{layout.relative(postgres.socket_dir)}"
                )
                if postgres.binaries_copy is not None:
                    _say(
                        f"{postgres.account.name!r} cannot reach this virtualenv, so it runs "
                        f"a root-owned copy of PostgreSQL in {postgres.binaries_copy}"
                    )
                for pruned in postgres.prune_temp_folders(time.time()):
                    _say(f"removed {pruned.path} from the temp folder: {pruned.why}")
            database_url = postgres.url
    else:
        _say(f"database {mask_url(database_url)}")
    if broker_url is None:
        broker_url = (
            running.broker_url if running is not None else broker.filesystem_url(layout.broker_dir)
        )
        _say(
            f"broker: kombu's filesystem transport in {layout.relative(layout.broker_dir)} "
            "(one host, development only)"
        )
    else:
        _say(f"broker {mask_url(broker_url)}")
    broker.broker_transport_options(broker_url)  # creates the folders, checks the URL
    servers.settings = raw.model_copy(
        update={"database_url": database_url, "broker_url": broker_url}
    )


def _record(layout: Layout, servers: Servers, children: Children, api_url: str | None) -> None:
    """Write ``.scout/dev.json`` so other commands run here find this instance."""
    assert servers.postgres is not None
    settings = servers.settings
    state.write_state(
        layout,
        DevInstance(
            folder=str(layout.folder),
            database_url=settings.database_url_value(),
            broker_url=settings.broker_url_value() or "",
            postgres_pid=servers.postgres.pid,
            dev_pid=os.getpid(),
            pgdata=str(servers.postgres.pgdata),
            started_at=state.now_iso(),
            api_url=api_url,
            children=children.pids(),
        ),
    )


def _prepare_database(database_url: str) -> None:
    if migrate.ensure_database(database_url):
        _say("created the database")
    _say("migrating the database ...")
    started = time.monotonic()
    migrate.upgrade(database_url)
    _say(
        f"database at revision {migrate.current(database_url)} ({time.monotonic() - started:.1f}s)"
    )


def _ensure_demo_schedule(engine: Any, first_in: float | None) -> None:
    """Create the demo schedule when there are no schedules at all.

    ``first_in`` (the hidden ``--demo-in-seconds``, for tests) sets its first
    ``next_run_at`` that many seconds ahead, off the cron grid, as an operator
    may; afterwards it returns to its minutes.
    """
    from scout_tasks import db, schedules, service
    from scout_tasks.validation import ScheduleCreate, parse

    with engine.connect() as conn:
        _rows, total = schedules.list_schedules(conn, limit=1)
    if total:
        return
    if first_in is None:
        row = service.create_schedule(engine, DEMO_SCHEDULE)
    else:
        values = parse(ScheduleCreate, DEMO_SCHEDULE).model_dump()
        with engine.begin() as conn:
            values["next_run_at"] = db.db_now(conn) + timedelta(seconds=first_in)
            row = schedules.create_schedule(conn, values)
    _say(
        f"created demo schedule {row['name']!r} (fires every minute, "
        f"next at {row['next_run_at']:%H:%M:%S} UTC)"
    )


@contextlib.contextmanager
def _event_tail(settings: Settings, *, shared: bool) -> Iterator[tuple[kombu.Connection, Queue]]:
    """A queue bound to ``scout.#`` on the events exchange, and its connection.

    On RabbitMQ it is an exclusive auto-delete queue. The filesystem transport
    has neither: the queue is purged when dev starts and deleted when it stops
    (``shared``: another dev in this folder owns the fixed name, so this one
    takes its own).
    """
    broker_url = settings.broker_url_value()
    assert broker_url is not None
    filesystem = broker.is_filesystem_url(broker_url)
    connection = kombu.Connection(
        broker_url,
        connect_timeout=5,
        transport_options=broker.broker_transport_options(broker_url),
    )
    exchange = Exchange(settings.exchange, type="topic", durable=True)
    if filesystem:
        name = f"{TAIL_QUEUE}.{os.getpid()}" if shared else TAIL_QUEUE
        queue = Queue(name, exchange, routing_key="scout.#", durable=False, auto_delete=False)
    else:
        queue = Queue(
            f"{TAIL_QUEUE}.{uuid.uuid4().hex[:8]}",
            exchange,
            routing_key="scout.#",
            exclusive=True,
            auto_delete=True,
            durable=False,
        )
    bound = queue(connection.default_channel)
    try:
        bound.declare()
        if filesystem:
            bound.purge()
        yield connection, queue
    finally:
        if filesystem:
            # Best effort on the way out: a queue left behind is purged next start.
            with contextlib.suppress(Exception):
                bound.purge()
            with contextlib.suppress(Exception):
                bound.delete()
        connection.release()


def _print_event(body: Any, message: Any) -> None:
    routing_key = message.delivery_info.get("routing_key", "?")
    run_id = body.get("run_id") if isinstance(body, dict) else None
    extra = ""
    if isinstance(body, dict) and body.get("scheduled_for"):
        extra = f" scheduled_for={body['scheduled_for']}"
    print(f"{routing_key} run_id={run_id}{extra}", flush=True)
    message.ack()


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _child_env(settings: Settings) -> dict[str, str]:
    """Our environment with the resolved URLs, so children never depend on their cwd."""
    env = dict(os.environ)
    env.update(
        SCOUT_DATABASE_URL=settings.database_url_value(),
        SCOUT_BROKER_URL=settings.broker_url_value() or "",
        PYTHONUNBUFFERED="1",
    )
    return env


def _start_children(
    children: Children, settings: Settings, layout: Layout, api_port: int | None
) -> str | None:
    """Start the worker, the beat and (unless ``api_port`` is None) the API; the API's URL."""
    celery = executable("celery")
    env = _child_env(settings)
    names = "worker, beat and HTTP API" if api_port is not None else "worker and beat"
    _say(f"starting {names} ...")
    # Two pool processes start and stop faster than one per CPU, and are plenty here.
    worker = [celery, "-A", "scout_tasks", "worker", "-l", "info", "-c", "2", "-n", "dev@%h"]
    children.start("worker", worker, env)
    # ScoutScheduler keeps no schedule file: the schedules live in the database.
    children.start("beat", [celery, "-A", "scout_tasks", "beat", "-l", "info"], env)
    if api_port is None:
        return None
    children.start("api", [executable("scout-tasks"), "api", "--port", str(api_port)], env)
    api_url = f"http://127.0.0.1:{api_port}"
    _say(f"HTTP API on {api_url} (console at {api_url}/ui, OpenAPI at {api_url}/docs)")
    return api_url


def _watch(
    connection: kombu.Connection, queue: Queue, servers: Servers, children: Children, log_dir: Path
) -> int:
    """Print events until a child or the database dies (1); Ctrl-C ends it from outside."""
    broker_url = servers.settings.broker_url_value()
    assert broker_url is not None
    next_housekeeping = 0.0
    with kombu.Consumer(connection, [queue], callbacks=[_print_event], accept=["json"]):
        while True:
            with contextlib.suppress(TimeoutError):
                connection.drain_events(timeout=0.5)
            dead = children.check()
            if dead:
                _say(f"{dead} exited; see {log_dir / f'{dead}.log'}")
                return 1
            if servers.postgres is not None and not servers.postgres.running():
                _say(f"PostgreSQL exited; see {servers.postgres.log_path}")
                return 1
            if servers.reused is not None and not state.postgres_running(
                servers.reused.postgres_pid, Path(servers.reused.pgdata)
            ):
                owner = servers.reused.dev_pid
                _say(f"the `scout-tasks dev` (pid {owner}) whose PostgreSQL this one used stopped")
                return 1
            if time.monotonic() >= next_housekeeping:
                next_housekeeping = time.monotonic() + HOUSEKEEPING_INTERVAL
                broker.prune_broker(broker_url)


def run(
    raw: Settings,
    *,
    api_port: int = 8000,
    with_api: bool = True,
    demo_in_seconds: float | None = None,
) -> int:
    """Run everything until Ctrl-C or SIGTERM (0), or until a part dies (1)."""
    from scout_tasks import db

    started = time.monotonic()
    layout = Layout.here()
    layout.prepare()
    children = Children(layout.log_dir)
    servers = Servers(settings=raw)
    engine: Any = None
    # SIGTERM stops dev exactly as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        _start_servers(servers, layout)
        settings = servers.settings
        _prepare_database(settings.database_url_value())
        if servers.postgres is not None:
            # Other commands run here find the instance from now on, migrated.
            _record(layout, servers, children, api_url=None)
        engine = db.get_engine(settings.database_url_value())
        _ensure_demo_schedule(engine, demo_in_seconds)
        with _event_tail(settings, shared=servers.reused is not None) as (connection, queue):
            port: int | None = api_port if with_api else None
            if port is not None and not _port_free(port):
                _say(f"port {port} is in use: the HTTP API is not started (try --api-port)")
                port = None
            api_url = _start_children(children, settings, layout, port)
            if servers.postgres is not None:
                _record(layout, servers, children, api_url)
            shared = (
                " commands run in this folder use this instance;"
                if servers.postgres is not None
                else ""
            )
            _say(
                f"ready in {time.monotonic() - started:.1f}s; logs in "
                f"{layout.relative(layout.log_dir)}/;{shared} Ctrl-C stops everything."
            )
            _say("waiting for scout.* events ...")
            return _watch(connection, queue, servers, children, layout.log_dir)
    except KeyboardInterrupt:
        return 0
    finally:
        # A second Ctrl-C reaches the children (a cold shutdown for the worker);
        # dev itself carries on stopping in order.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop(layout, servers, children, engine)


def _stop(layout: Layout, servers: Servers, children: Children, engine: Any) -> None:
    """Children first, so they let go of the database cleanly; then PostgreSQL."""
    stopping = time.monotonic()
    if children.procs:
        _say(f"stopping {', '.join(children.procs)} ...")
        children.stop()
    if engine is not None:
        engine.dispose()
    postgres = servers.postgres
    started_postgres = postgres is not None and postgres.proc is not None
    if postgres is not None and started_postgres:
        _say("stopping PostgreSQL ...")
        postgres.stop()
    state.remove_state(layout, os.getpid())
    if children.procs or started_postgres:
        _say(f"stopped in {time.monotonic() - stopping:.1f}s")
