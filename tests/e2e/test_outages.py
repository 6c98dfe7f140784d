"""Outages with real processes: the database or the broker goes away while slots come due.

Connections run through a TCP proxy the test controls, so the machine's servers
keep running for everyone else. After each outage the same audit: every due slot
has exactly one run, every run's scout.trigger reached the bound queue, and the
beat and the worker are still alive.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import kombu
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from tests.conftest import EventQueue
from tests.e2e.procs import CeleryProcess, scout_env
from tests.integration.helpers import TcpProxy

SLOTS = 6
OUTAGE = 12.0  # seconds; every slot comes due while the server is unreachable


@pytest.fixture
def pg_proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy(target_port=5432)
    yield proxy
    proxy.close()


@pytest.fixture
def amqp_proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy(target_port=5672)
    yield proxy
    proxy.close()


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(":5672", f":{port}")))


def _insert_one_off_slots(engine: Engine, first_in: float, spacing: float) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies,"
                " next_run_at) SELECT 'outage-' || g, '0 0 1 1 *', 'outage', 1,"
                " now() + make_interval(secs => :first + g * :spacing)"
                " FROM generate_series(1, :n) AS g"
            ),
            {"n": SLOTS, "first": first_in, "spacing": spacing},
        )


def _audit(engine: Engine, event_queue: EventQueue, procs: list[CeleryProcess]) -> None:
    events = event_queue.get(timeout=45, count=SLOTS)
    events += event_queue.get(timeout=4, count=1)  # anything more is a duplicate
    with engine.connect() as conn:
        per_schedule = conn.execute(
            text(
                "SELECT s.name, count(r.id) AS runs FROM scout_schedules s"
                " LEFT JOIN scout_runs r ON r.schedule_id = s.id GROUP BY s.name"
            )
        ).all()
        run_ids = {str(r) for r in conn.execute(text("SELECT id FROM scout_runs")).scalars()}
        backlog = conn.execute(text("SELECT count(*) FROM scout_outbox")).scalar_one()
    logs = "\n".join(p.log()[-2000:] for p in procs)
    assert all(n == 1 for _name, n in per_schedule), (per_schedule, logs)
    assert len(per_schedule) == SLOTS
    assert sorted(e.body["run_id"] for e in events) == sorted(run_ids), logs
    assert len({e.body["event_id"] for e in events}) == len(events) == SLOTS
    assert backlog == 0
    assert all(p.alive() for p in procs), logs


def test_database_outage(
    db_url: str,
    broker_url: str,
    exchange_name: str,
    engine: Engine,
    event_queue: EventQueue,
    pg_proxy: TcpProxy,
    tmp_path: Path,
) -> None:
    proxied = make_url(db_url).set(port=pg_proxy.port).render_as_string(hide_password=False)
    env = scout_env(proxied, broker_url, exchange_name, SCOUT_TICK_SECONDS="3")
    worker = CeleryProcess("worker", env, tmp_path)
    beat = CeleryProcess("beat", env, tmp_path)
    try:
        worker.wait_for("ready")
        beat.wait_for("this beat is now the leader")
        _insert_one_off_slots(engine, first_in=2.0, spacing=OUTAGE / SLOTS)
        time.sleep(1.0)
        pg_proxy.cut()
        time.sleep(OUTAGE + 2)
        assert beat.alive() and worker.alive()
        pg_proxy.restore()
        _audit(engine, event_queue, [worker, beat])
        assert "database unavailable" in beat.log()
    finally:
        for proc in (worker, beat):
            proc.stop()
        with kombu.Connection(broker_url) as conn:
            conn.default_channel.queue_delete(env["SCOUT_TASK_QUEUE"])


def test_broker_outage(
    db_url: str,
    broker_url: str,
    exchange_name: str,
    engine: Engine,
    event_queue: EventQueue,
    amqp_proxy: TcpProxy,
    tmp_path: Path,
) -> None:
    env = scout_env(
        db_url, _via(broker_url, amqp_proxy.port), exchange_name, SCOUT_TICK_SECONDS="3"
    )
    worker = CeleryProcess("worker", env, tmp_path)
    beat = CeleryProcess("beat", env, tmp_path)
    try:
        worker.wait_for("ready")
        beat.wait_for("this beat is now the leader")
        _insert_one_off_slots(engine, first_in=2.0, spacing=OUTAGE / SLOTS)
        time.sleep(1.0)
        amqp_proxy.cut()
        time.sleep(OUTAGE + 2)
        assert beat.alive() and worker.alive()
        amqp_proxy.restore()
        _audit(engine, event_queue, [worker, beat])
    finally:
        for proc in (worker, beat):
            proc.stop()
        with kombu.Connection(broker_url) as conn:
            for suffix in ("", ".lifecycle", ".lifecycle.dead"):
                conn.default_channel.queue_delete(env["SCOUT_TASK_QUEUE"] + suffix)
