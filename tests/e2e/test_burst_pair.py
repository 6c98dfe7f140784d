"""What a real beat sends: a burst's fire task to two pool processes at once, a slot ahead.

Only the beat runs, so the fire tasks it sends stay in the task queue to be read.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import amqp
import kombu
import pytest
from sqlalchemy import Engine, text

from scout_tasks.celery_app import EARLY, FIRE, PAIRED
from tests.e2e.procs import CeleryProcess, delete_worker_queues, scout_env, stop_all
from tests.integration.helpers import insert_due_schedules


def _fire_tasks(broker_url: str, queue: str, settle: float) -> list[dict[str, Any]]:
    """The headers of the fire tasks in ``queue``, read until ``settle`` s pass with no new one."""
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + 15
    quiet_since: float | None = None
    with kombu.Connection(broker_url) as conn:
        channel = conn.channel()
        while time.monotonic() < deadline:
            try:
                message = channel.basic_get(queue, no_ack=True)
            except amqp.exceptions.NotFound:
                # The beat declares the queue with its first send; the error closed the channel.
                channel = conn.channel()
                time.sleep(0.05)
                continue
            if message is None:
                if found and quiet_since is not None and time.monotonic() - quiet_since > settle:
                    break
                time.sleep(0.05)
                continue
            headers = dict(message.headers or {})
            if headers.get("task") == FIRE:
                found.append(headers)
                quiet_since = time.monotonic()
    return found


@pytest.mark.parametrize(("due", "sent"), [(5, 1), (25, 2)])
def test_the_beat_hands_a_burst_to_two_pool_processes_at_once(
    due: int, sent: int, engine: Engine, db_url: str, broker_url: str, exchange_name: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    env = scout_env(
        db_url, broker_url, exchange_name, SCOUT_FIRE_BATCH_SIZE="10", SCOUT_TICK_SECONDS="30"
    )
    beat = CeleryProcess("beat", env, tmp_path)
    try:
        beat.wait_for("this beat is now the leader")
        # Plain SQL NOTIFYs the beat; nothing consumes what it sends.
        insert_due_schedules(engine, due)
        fires = _fire_tasks(broker_url, env["SCOUT_TASK_QUEUE"], settle=3.0)
    finally:
        stop_all([beat])
        delete_worker_queues(broker_url, env["SCOUT_TASK_QUEUE"])

    assert len(fires) == sent, beat.log()[-3000:]
    # More than a batch (10) due: both marked, so each leaves the first two batches
    # to the pair; a handful: one task, unmarked, which hands on after one full claim.
    assert [bool(h.get(PAIRED)) for h in fires] == [sent > 1] * sent
    assert len({h["kwargsrepr"] for h in fires}) == 1  # the same slot


def test_a_slot_is_sent_ahead_marked_early_and_again_if_nothing_came_of_it(
    engine: Engine, db_url: str, broker_url: str, exchange_name: str, tmp_path: Path
) -> None:
    env = scout_env(db_url, broker_url, exchange_name, SCOUT_TICK_SECONDS="30")
    beat = CeleryProcess("beat", env, tmp_path)
    try:
        beat.wait_for("this beat is now the leader")
        with engine.begin() as conn:
            slot = conn.execute(
                text(
                    "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies,"
                    " next_run_at) VALUES ('ahead', '0 12 29 2 *', 's', 1,"
                    " date_trunc('second', now()) + interval '3 seconds') RETURNING next_run_at"
                )
            ).scalar_one()
        arrivals: list[tuple[float, dict[str, Any]]] = []
        deadline = time.monotonic() + 15
        with kombu.Connection(broker_url) as conn:
            channel = conn.channel()
            while time.monotonic() < deadline and len(arrivals) < 2:
                try:
                    message = channel.basic_get(env["SCOUT_TASK_QUEUE"], no_ack=True)
                except amqp.exceptions.NotFound:
                    channel = conn.channel()
                    message = None
                if message is None:
                    time.sleep(0.01)
                elif (message.headers or {}).get("task") == FIRE:
                    arrivals.append((time.time(), dict(message.headers)))
    finally:
        stop_all([beat])
        delete_worker_queues(broker_url, env["SCOUT_TASK_QUEUE"])

    assert len(arrivals) == 2, beat.log()[-3000:]
    (first_at, first), (second_at, second) = arrivals
    at_slot = slot.timestamp()
    # Sent ahead (this host's clock is the database's), marked to wait for the slot.
    assert first_at < at_slot and first.get(EARLY) is True
    assert slot.isoformat() in first["kwargsrepr"]
    # No worker consumed it, so no commit NOTIFYed the beat: sent again, unmarked,
    # soon after the slot instead of a tick later (what a worker that ignores the
    # mark, having fired too soon and found nothing, needs).
    assert not second.get(EARLY)
    assert at_slot + 0.3 < second_at < at_slot + 5
