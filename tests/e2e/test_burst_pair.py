"""A real beat sends a burst's fire task to two pool processes at once, a handful's to one.

Only the beat runs, so the fire tasks it sends stay in the task queue to be read.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import kombu
import pytest
from sqlalchemy import Engine

from scout_tasks.celery_app import FIRE, PAIRED
from tests.e2e.procs import CeleryProcess, scout_env, stop_all
from tests.integration.helpers import insert_due_schedules


def _fire_tasks(broker_url: str, queue: str, settle: float) -> list[dict[str, Any]]:
    """The headers of the fire tasks in ``queue``, read until ``settle`` s pass with no new one."""
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + 15
    quiet_since: float | None = None
    with kombu.Connection(broker_url) as conn:
        channel = conn.default_channel
        while time.monotonic() < deadline:
            message = channel.basic_get(queue, no_ack=True)
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
        with kombu.Connection(broker_url) as conn, contextlib.suppress(Exception):
            conn.default_channel.queue_delete(env["SCOUT_TASK_QUEUE"])

    assert len(fires) == sent, beat.log()[-3000:]
    # More than a batch (10) due: both marked, so each leaves the first two batches
    # to the pair; a handful: one task, unmarked, which hands on after one full claim.
    assert [bool(h.get(PAIRED)) for h in fires] == [sent > 1] * sent
    assert len({h["kwargsrepr"] for h in fires}) == 1  # the same slot
