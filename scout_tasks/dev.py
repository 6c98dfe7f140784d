"""``scout-tasks dev``: the whole system in one terminal, for development.

Migrates the database, starts a beat, a worker and the HTTP API as child
processes (their logs go to ``.scout/logs/``), creates a demo schedule when
there is none, and prints one line per ``scout.*`` event on the exchange.
Ctrl-C stops every child; none is left behind.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kombu
from kombu import Exchange, Queue

from scout_tasks.settings import Settings, mask_url

STATE_DIR = Path(".scout")
DEMO_SCHEDULE = {
    "name": "demo: every minute",
    "cron_expression": "* * * * *",
    "source": "demo",
    "max_strategies": 5,
}


def _say(message: str) -> None:
    print(f"scout-tasks dev: {message}", flush=True)


def _bin(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


class Children:
    """Child processes in our own process group, stopped together."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str]) -> None:
        log = (self.log_dir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def check(self) -> str | None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                return name
        return None

    def stop(self, timeout: float = 15.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def _ensure_demo_schedule(engine: Any) -> None:
    from scout_tasks import schedules, service

    with engine.connect() as conn:
        _rows, total = schedules.list_schedules(conn, limit=1)
    if total == 0:
        row = service.create_schedule(engine, DEMO_SCHEDULE)
        _say(
            f"created demo schedule {row['name']!r} (fires every minute, next {row['next_run_at']})"
        )


@contextlib.contextmanager
def _event_tail(settings: Settings) -> Iterator[tuple[kombu.Connection, Queue]]:
    connection = kombu.Connection(settings.broker_url, connect_timeout=5)
    exchange = Exchange(settings.exchange, type="topic", durable=True)
    queue = Queue(
        f"scout-tasks.dev-tail.{uuid.uuid4().hex[:8]}",
        exchange,
        routing_key="scout.#",
        exclusive=True,
        auto_delete=True,
        durable=False,
    )
    try:
        queue(connection.default_channel).declare()
        yield connection, queue
    finally:
        connection.release()


def _print_event(body: Any, message: Any) -> None:
    routing_key = message.delivery_info.get("routing_key", "?")
    run_id = body.get("run_id") if isinstance(body, dict) else None
    extra = ""
    if isinstance(body, dict) and body.get("scheduled_for"):
        extra = f" scheduled_for={body['scheduled_for']}"
    print(f"{routing_key} run_id={run_id}{extra}", flush=True)
    message.ack()


def run(settings: Settings, *, api_port: int = 8000, with_api: bool = True) -> int:
    from scout_tasks import db, migrate

    log_dir = STATE_DIR / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    _say(f"database {mask_url(settings.database_url)}")
    _say(f"broker {mask_url(settings.broker_url)}, exchange {settings.exchange!r}")
    if migrate.ensure_database(settings.database_url):
        _say("created the database")
    _say("migrating the database ...")
    migrate.upgrade(settings.database_url)
    engine = db.get_engine(settings.database_url)
    _ensure_demo_schedule(engine)
    children = Children(log_dir)
    stopping = False

    def _stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        with _event_tail(settings) as (connection, queue):
            celery = _bin("celery")
            children.start("worker", [celery, "-A", "scout_tasks", "worker", "-l", "info"])
            children.start(
                "beat",
                [
                    celery,
                    "-A",
                    "scout_tasks",
                    "beat",
                    "-l",
                    "info",
                    "-s",
                    str(STATE_DIR / "celerybeat-schedule"),
                ],
            )
            if with_api:
                children.start("api", [_bin("scout-tasks"), "api", "--port", str(api_port)])
                _say(f"HTTP API on http://127.0.0.1:{api_port} (OpenAPI at /docs)")
            _say(f"beat and worker started; logs in {log_dir}/. Ctrl-C stops everything.")
            _say("waiting for scout.* events ...")
            with kombu.Consumer(connection, [queue], callbacks=[_print_event], accept=["json"]):
                while not stopping:
                    with contextlib.suppress(TimeoutError):
                        connection.drain_events(timeout=0.5)
                    dead = children.check()
                    if dead:
                        _say(f"{dead} exited; see {log_dir}/{dead}.log")
                        return 1
    except KeyboardInterrupt:
        pass
    finally:
        _say("stopping ...")
        children.stop()
        engine.dispose()
        _say("stopped")
    return 0
