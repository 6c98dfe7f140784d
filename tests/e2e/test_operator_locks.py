"""An operator's open transaction holding a lock: firing and recording go on around it.

An operator (or a tool such as a SQL console that opens a transaction for an
edit) may hold a row of ``scout_runs`` locked for as long as they like. Nothing
scout-tasks runs may wait for that lock with no end: on main the tick's
stale-run sweep waited on a stale run so locked, each tick took another pool
process into the wait, and after two ticks no pool process was left to fire.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from tests.e2e.procs import CeleryProcess, scout_env, stop_all


@pytest.fixture
def operator(db_url: str) -> Iterator[psycopg2.extensions.connection]:
    """A psql-like session whose transaction the test leaves open."""
    dsn = make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = psycopg2.connect(dsn, application_name="operator console")
    yield conn
    conn.rollback()
    conn.close()


def _stale_pending_run(engine: Engine) -> uuid.UUID:
    with engine.begin() as conn:
        return conn.execute(
            text(
                "INSERT INTO scout_runs (trigger_type, source, max_strategies, status, created_at)"
                " VALUES ('manual', 'stratninja', 1, 'pending', now() - interval '2 days')"
                " RETURNING id"
            )
        ).scalar_one()


def _schedule_due_in(engine: Engine, seconds: float) -> uuid.UUID:
    with engine.begin() as conn:
        return conn.execute(
            text(
                "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies,"
                " next_run_at) VALUES (:n, '0 0 * * *', 'stratninja', 3,"
                " now() + make_interval(secs => :s)) RETURNING id"
            ),
            {"n": f"beside a lock {uuid.uuid4().hex[:6]}", "s": seconds},
        ).scalar_one()


def _runs_of(engine: Engine, schedule_id: uuid.UUID) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT count(*) FROM scout_runs WHERE schedule_id = :s"), {"s": schedule_id}
        ).scalar_one()


def test_a_stale_run_an_operator_holds_locked_does_not_stop_firing(
    db_url: str,
    broker_url: str,
    exchange_name: str,
    engine: Engine,
    tmp_path: Path,
    operator: psycopg2.extensions.connection,
) -> None:
    stale = _stale_pending_run(engine)
    with operator.cursor() as cur:
        # Left open, as a console session editing the row would.
        cur.execute("SELECT id FROM scout_runs WHERE id = %s FOR UPDATE", (str(stale),))
    env = scout_env(db_url, broker_url, exchange_name, SCOUT_TICK_SECONDS="1")
    worker = CeleryProcess("worker", env, tmp_path)
    beat = CeleryProcess("beat", env, tmp_path)
    try:
        worker.wait_for("ready")
        beat.wait_for("this beat is now the leader")
        # Several ticks have come and gone by the time the slot does: with two
        # pool processes, two ticks stuck behind the lock would leave none to fire.
        schedule_id = _schedule_due_in(engine, 6)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _runs_of(engine, schedule_id) == 0:
            time.sleep(0.2)
        assert _runs_of(engine, schedule_id) == 1, worker.log()[-4000:]
        # Once the operator lets go, the stale run is swept as usual.
        operator.rollback()
        deadline = time.monotonic() + 15
        status = None
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                status = conn.execute(
                    text("SELECT status FROM scout_runs WHERE id = :r"), {"r": stale}
                ).scalar_one()
            if status == "failed":
                break
            time.sleep(0.2)
        assert status == "failed"
    finally:
        stop_all([beat, worker])


def test_a_due_schedule_an_operator_holds_locked_does_not_delay_the_others(
    db_url: str,
    broker_url: str,
    exchange_name: str,
    engine: Engine,
    tmp_path: Path,
    operator: psycopg2.extensions.connection,
) -> None:
    # The held schedule stays due (every claim skips it), so the beat's earliest
    # due instant never moves: on main the beat then slept until its next tick,
    # and every other schedule fired up to a tick period late.
    held = _schedule_due_in(engine, -1)
    with operator.cursor() as cur:
        cur.execute("SELECT id FROM scout_schedules WHERE id = %s FOR UPDATE", (str(held),))
    env = scout_env(db_url, broker_url, exchange_name, SCOUT_TICK_SECONDS="30")
    worker = CeleryProcess("worker", env, tmp_path)
    beat = CeleryProcess("beat", env, tmp_path)
    try:
        worker.wait_for("ready")
        beat.wait_for("this beat is now the leader")
        time.sleep(2)  # the first tick and fire have gone by
        other = _schedule_due_in(engine, 4)
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline and _runs_of(engine, other) == 0:
            time.sleep(0.2)
        with engine.connect() as conn:
            lag = conn.execute(
                text(
                    "SELECT extract(epoch FROM created_at - scheduled_for) FROM scout_runs"
                    " WHERE schedule_id = :s"
                ),
                {"s": other},
            ).scalar()
        assert lag is not None and float(lag) < 2.0, (lag, beat.log()[-3000:])
        assert _runs_of(engine, held) == 0
    finally:
        stop_all([beat, worker])
