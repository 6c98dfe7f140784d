"""Fault injection with real processes and real servers, each ending with the same audit.

The audit (tests/e2e/faults.py): every due slot has exactly one run, every run's
scout.trigger reached a queue bound to the exchange with one event_id, the outbox is
empty and the processes that should survive are alive. Outages of the database and
the broker go through a TCP proxy the test controls; two tests really restart
RabbitMQ and PostgreSQL (marker ``restart``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import kombu
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from tests.conftest import EventQueue
from tests.e2e.faults import audit, kill_tree
from tests.e2e.procs import CeleryProcess, scout_env, stop_all
from tests.tcp_proxy import TcpProxy

BROKER_OUTAGE = 30.0
DATABASE_OUTAGE = 20.0
TICK = 3  # SCOUT_TICK_SECONDS of every stack here
# The two-beat soak's window ends a few ticks after the first minute boundary whose runs
# all exist; SCOUT_SOAK_SECONDS=N waits for the first boundary N seconds on instead.
SOAK_SECONDS = float(os.environ.get("SCOUT_SOAK_SECONDS", "0"))


class Stack:
    """Beats and workers of one test, and the queues to delete afterwards."""

    def __init__(self, env: dict[str, str], workdir: Path, broker_url: str) -> None:
        self.env = env
        self.workdir = workdir
        self.broker_url = broker_url
        self.procs: list[CeleryProcess] = []

    def start(self, kind: str, env: dict[str, str] | None = None) -> CeleryProcess:
        proc = CeleryProcess(kind, env or self.env, self.workdir)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        stop_all(self.procs)
        with kombu.Connection(self.broker_url) as conn:
            for suffix in ("", ".lifecycle.v2", ".lifecycle.v2.dead"):
                conn.default_channel.queue_delete(self.env["SCOUT_TASK_QUEUE"] + suffix)


@pytest.fixture
def stack(db_url: str, broker_url: str, exchange_name: str, tmp_path: Path) -> Iterator[Stack]:
    env = scout_env(db_url, broker_url, exchange_name, SCOUT_TICK_SECONDS=str(TICK))
    s = Stack(env, tmp_path, broker_url)
    yield s
    s.close()


def _one_off_slots(engine: Engine, n: int, first_in: float, spacing: float) -> None:
    """``n`` schedules, each due once (a yearly cron), ``spacing`` seconds apart."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies,"
                " next_run_at) SELECT 'fault-' || g, '0 0 1 1 *', 'fault', 1,"
                " now() + make_interval(secs => :first + g * :spacing)"
                " FROM generate_series(1, :n) AS g"
            ),
            {"n": n, "first": first_in, "spacing": spacing},
        )


def _wait_leader(beats: list[CeleryProcess], timeout: float = 20) -> CeleryProcess:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leaders = [b for b in beats if "this beat is now the leader" in b.log()]
        if leaders:
            assert len(leaders) == 1
            return leaders[0]
        time.sleep(0.1)
    raise AssertionError("no beat became the leader")


def test_fault_broker_unreachable(
    stack: Stack, engine: Engine, event_queue: EventQueue, broker_url: str
) -> None:
    proxy = TcpProxy(target_port=5672)
    try:
        parts = urlsplit(broker_url)
        via = urlunsplit(parts._replace(netloc=parts.netloc.replace(":5672", f":{proxy.port}")))
        env = {**stack.env, "SCOUT_BROKER_URL": via}
        worker, beat = stack.start("worker", env), stack.start("beat", env)
        worker.wait_for("ready")
        beat.wait_for("this beat is now the leader")
        n = 8
        _one_off_slots(engine, n, first_in=2.0, spacing=BROKER_OUTAGE / n)
        time.sleep(1.0)
        proxy.cut()
        time.sleep(BROKER_OUTAGE + 1)
        proxy.restore()
        events = event_queue.get(timeout=45, count=n) + event_queue.drain(quiet=5.0)
        audit(
            "fault_broker_unreachable",
            f"broker unreachable for {BROKER_OUTAGE:.0f}s while {n} slots came due",
            engine,
            events,
            [worker, beat],
            expected_runs=n,
            outage_seconds=BROKER_OUTAGE,
        )
    finally:
        proxy.close()


def test_fault_database_unreachable(
    stack: Stack, engine: Engine, event_queue: EventQueue, db_url: str
) -> None:
    proxy = TcpProxy(target_port=5432)
    try:
        via = make_url(db_url).set(port=proxy.port).render_as_string(hide_password=False)
        env = {**stack.env, "SCOUT_DATABASE_URL": via}
        worker, beat = stack.start("worker", env), stack.start("beat", env)
        worker.wait_for("ready")
        beat.wait_for("this beat is now the leader")
        n = 8
        _one_off_slots(engine, n, first_in=2.0, spacing=DATABASE_OUTAGE / n)
        time.sleep(1.0)
        proxy.cut()
        time.sleep(DATABASE_OUTAGE + 1)
        proxy.restore()
        events = event_queue.get(timeout=45, count=n) + event_queue.drain(quiet=5.0)
        audit(
            "fault_database_unreachable",
            f"database unreachable for {DATABASE_OUTAGE:.0f}s while {n} slots came due",
            engine,
            events,
            [worker, beat],
            expected_runs=n,
            outage_seconds=DATABASE_OUTAGE,
        )
        assert "database unavailable" in beat.log()
    finally:
        proxy.close()


def test_fault_worker_killed_mid_burst(
    stack: Stack, engine: Engine, event_queue: EventQueue
) -> None:
    n = 1000
    # Batches of 100, so the worker dies with some batches committed and others not.
    env = {**stack.env, "SCOUT_FIRE_BATCH_SIZE": "100"}
    doomed = stack.start("worker", env)
    beat = stack.start("beat", env)
    doomed.wait_for("ready")
    beat.wait_for("this beat is now the leader")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies,"
                " next_run_at) SELECT 'burst-' || g, '0 0 1 1 *', 'burst', 1,"
                " date_trunc('second', now()) + interval '3 seconds'"
                " FROM generate_series(1, :n) AS g"
            ),
            {"n": n},
        )
    # Kill the worker once the burst is under way but not finished.
    deadline = time.monotonic() + 30
    done = 0
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            done = conn.execute(text("SELECT count(*) FROM scout_runs")).scalar_one()
        if done > 0:
            break
        time.sleep(0.02)
    kill_tree(doomed)
    rescuer = stack.start("worker", env)
    rescuer.wait_for("ready")
    events = event_queue.get(timeout=60, count=n) + event_queue.drain(quiet=5.0)
    audit(
        "fault_worker_killed_mid_burst",
        f"worker SIGKILLed in a burst of {n} due schedules (after {done} runs), then a new worker",
        engine,
        events,
        [rescuer, beat],
        expected_runs=n,
        runs_before_kill=done,
    )


def test_fault_leader_beat_killed(stack: Stack, engine: Engine, event_queue: EventQueue) -> None:
    worker = stack.start("worker")
    beats = [stack.start("beat"), stack.start("beat")]
    worker.wait_for("ready")
    leader = _wait_leader(beats)
    standby = next(b for b in beats if b is not leader)
    n, spacing = 10, 1.5
    _one_off_slots(engine, n, first_in=2.0, spacing=spacing)
    time.sleep(2 + 3 * spacing)
    kill_tree(leader)
    killed = time.monotonic()
    standby.wait_for("this beat is now the leader", timeout=2 * 3 + 2)
    takeover = time.monotonic() - killed
    events = event_queue.get(timeout=40, count=n) + event_queue.drain(quiet=5.0)
    audit(
        "fault_leader_beat_killed",
        f"leading beat SIGKILLed while {n} slots came due; the standby took over",
        engine,
        events,
        [worker, standby],
        expected_runs=n,
        takeover_seconds=round(takeover, 2),
    )
    assert takeover < 2 * 3, "the standby must lead within two ticks"


def test_fault_two_beats_two_workers_soak(
    stack: Stack, engine: Engine, event_queue: EventQueue
) -> None:
    procs = [stack.start("worker"), stack.start("worker"), stack.start("beat"), stack.start("beat")]
    for proc in procs[:2]:
        proc.wait_for("ready")
    _wait_leader(procs[2:])
    schedules = 20
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies)"
                " SELECT 'soak-' || g, '* * * * *', 'soak', 1 FROM generate_series(1, :n) AS g"
            ),
            {"n": schedules},
        )
        started = conn.execute(text("SELECT now()")).scalar_one()
    # Wait for a minute boundary's runs, not a fixed time: every schedule fired for it,
    # then a few more ticks in which a second beat or worker would have made a duplicate.
    # Ending the window that soon after a boundary also keeps it clear of the next one's
    # firing (a fixed window could end just as a boundary fired, half counted).
    boundary = (started + timedelta(seconds=SOAK_SECONDS)).replace(
        second=0, microsecond=0
    ) + timedelta(minutes=1)
    deadline = time.monotonic() + (boundary - started).total_seconds() + 60
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            fired = conn.execute(
                text("SELECT count(*) FROM scout_runs WHERE scheduled_for = :b"), {"b": boundary}
            ).scalar_one()
        if fired >= schedules:
            break
        time.sleep(0.5)
    time.sleep(3 * TICK)
    with engine.begin() as conn:
        # Stop new slots so the audit counts a closed window.
        conn.execute(text("UPDATE scout_schedules SET enabled = false"))
        ended = conn.execute(text("SELECT now()")).scalar_one()
    minutes = int(ended.timestamp() // 60) - int(started.timestamp() // 60)
    events = event_queue.drain(quiet=4.0)
    result = audit(
        "fault_two_beats_two_workers",
        f"two beats and two workers for {minutes} minute boundaries of {schedules}"
        " '* * * * *' schedules",
        engine,
        events,
        procs,
        soak_seconds=round((ended - started).total_seconds()),
        minute_boundaries=minutes,
    )
    # Every minute boundary in the window gave every schedule exactly one run.
    assert result["runs"] == schedules * minutes, result


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


@pytest.mark.restart
@pytest.mark.skipif(
    shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl (a local broker)"
)
def test_fault_rabbitmq_restart(
    stack: Stack, engine: Engine, broker_url: str, exchange_name: str
) -> None:
    events_queue = EventQueue(broker_url, exchange_name, durable=True)
    try:
        worker, beat = stack.start("worker"), stack.start("beat")
        worker.wait_for("ready")
        beat.wait_for("this beat is now the leader")
        n = 6
        _one_off_slots(engine, n, first_in=2.0, spacing=2.0)
        time.sleep(1.5)
        _rabbitmqctl("stop_app")
        try:
            time.sleep(10)
        finally:
            _rabbitmqctl("start_app")
            _rabbitmqctl("await_startup")
        events_queue.reconnect()
        events = events_queue.get(timeout=60, count=n) + events_queue.drain(quiet=5.0)
        audit(
            "fault_rabbitmq_restart",
            f"RabbitMQ stopped for 10s (rabbitmqctl stop_app/start_app) while {n} slots came due",
            engine,
            events,
            [worker, beat],
            expected_runs=n,
        )
    finally:
        events_queue.close()


@pytest.mark.restart
@pytest.mark.skipif(shutil.which("pg_ctlcluster") is None, reason="needs pg_ctlcluster")
def test_fault_postgresql_restart(stack: Stack, engine: Engine, event_queue: EventQueue) -> None:
    worker, beat = stack.start("worker"), stack.start("beat")
    worker.wait_for("ready")
    beat.wait_for("this beat is now the leader")
    n = 6
    _one_off_slots(engine, n, first_in=2.0, spacing=1.5)
    time.sleep(1.5)
    version = sorted(os.listdir("/etc/postgresql"))[0]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "stop", "-m", "fast"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        time.sleep(8)
    finally:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
            check=True,
            capture_output=True,
            timeout=120,
        )
    engine.dispose()
    events = event_queue.get(timeout=60, count=n) + event_queue.drain(quiet=5.0)
    audit(
        "fault_postgresql_restart",
        f"PostgreSQL stopped for 8s (pg_ctlcluster stop/start) while {n} slots came due",
        engine,
        events,
        [worker, beat],
        expected_runs=n,
    )
