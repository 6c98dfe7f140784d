"""The whole path with real processes: SQL row -> beat -> worker -> run row -> scout.trigger."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tests.conftest import EventQueue
from tests.e2e.procs import CeleryProcess, delete_worker_queues, scout_env, stop_all
from tests.integration.helpers import TRIGGER_KEYS


@pytest.fixture
def stack(
    db_url: str, broker_url: str, exchange_name: str, tmp_path: Path
) -> Iterator[dict[str, CeleryProcess]]:
    env = scout_env(db_url, broker_url, exchange_name)
    worker = CeleryProcess("worker", env, tmp_path)
    beat = CeleryProcess("beat", env, tmp_path)
    procs = {"worker": worker, "beat": beat}
    try:
        worker.wait_for("ready")
        beat.wait_for("this beat is now the leader")
        yield procs
    finally:
        stop_all(procs.values())
        delete_worker_queues(broker_url, env["SCOUT_TASK_QUEUE"])


def _insert_due_in(engine: Engine, name: str, seconds: float, cron: str = "* * * * *") -> uuid.UUID:
    with engine.begin() as conn:
        return conn.execute(
            text(
                "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies,"
                " next_run_at) VALUES (:n, :c, 'stratninja', 7, now() + make_interval(secs => :s))"
                " RETURNING id"
            ),
            {"n": name, "c": cron, "s": seconds},
        ).scalar_one()


def test_plain_sql_schedule_fires_once_on_time(
    stack: dict[str, CeleryProcess], engine: Engine, event_queue: EventQueue
) -> None:
    # A yearly expression: the next slot cannot come due while the test watches.
    schedule_id = _insert_due_in(engine, "Daily Scout Run", 2.0, cron="0 9 1 1 *")

    got = event_queue.get(timeout=15)
    assert len(got) == 1, stack["worker"].log()[-3000:]
    message = got[0]
    body = message.body
    assert message.routing_key == "scout.trigger"
    assert message.properties["content_type"] == "application/json"
    assert message.properties["delivery_mode"] == 2
    assert message.properties["message_id"] == body["event_id"]
    assert set(body) >= TRIGGER_KEYS
    assert body["event_type"] == "scout.trigger"
    assert body["trigger_type"] == "scheduled"
    assert body["triggered_by"] == "Daily Scout Run"
    assert body["source"] == "stratninja"
    assert body["max_strategies"] == 7
    assert body["schedule_id"] == str(schedule_id)
    assert body["timestamp"].endswith("Z") and body["scheduled_for"].endswith("Z")

    with engine.connect() as conn:
        run = conn.execute(
            text("SELECT * FROM scout_runs WHERE schedule_id = :s"), {"s": schedule_id}
        ).one()
        schedule = conn.execute(
            text("SELECT * FROM scout_schedules WHERE id = :s"), {"s": schedule_id}
        ).one()
    assert str(run.id) == body["run_id"]
    assert run.status == "pending"
    assert run.trigger_type == "scheduled"
    # Fired on time: the run was committed well within a second of its slot, and
    # not before it (the fire task was sent ahead and waited for the slot).
    assert timedelta(0) <= run.created_at - run.scheduled_for < timedelta(seconds=1)
    assert schedule.last_run_id == run.id
    assert schedule.next_run_at > run.scheduled_for
    assert schedule.next_run_at.second == 0 and schedule.next_run_at.microsecond == 0
    # Nothing fires twice, however many ticks pass.
    assert event_queue.get(timeout=6) == []


def test_sql_change_is_honoured_without_restart(
    stack: dict[str, CeleryProcess], engine: Engine, event_queue: EventQueue
) -> None:
    schedule_id = _insert_due_in(engine, "later", 3600.0, cron="0 0 * * *")
    time.sleep(1.0)
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE scout_schedules SET next_run_at = now() + interval '1 second' WHERE id = :s"
            ),
            {"s": schedule_id},
        )
        changed_at = conn.execute(text("SELECT now()")).scalar_one()
    got = event_queue.get(timeout=10)
    assert len(got) == 1
    with engine.connect() as conn:
        run = conn.execute(
            text("SELECT created_at, scheduled_for FROM scout_runs WHERE schedule_id = :s"),
            {"s": schedule_id},
        ).one()
    # The beat woke for the new slot (NOTIFY), not at its next tick.
    assert run.created_at - run.scheduled_for < timedelta(seconds=1)
    assert run.scheduled_for - changed_at < timedelta(seconds=2)


def test_beat_and_worker_exit_promptly_on_sigterm(
    db_url: str, broker_url: str, exchange_name: str, tmp_path: Path
) -> None:
    env = scout_env(db_url, broker_url, exchange_name, SCOUT_TICK_SECONDS="30")
    beat = CeleryProcess("beat", env, tmp_path)
    try:
        beat.wait_for("this beat is now the leader")
        time.sleep(1.0)
    finally:
        took = beat.stop()
    assert took < 5.0
    assert beat.proc.returncode is not None
