"""A herd of jittered schedules on one slot, fired by a real beat and worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from scout_tasks import horizon, jitter
from tests.conftest import EventQueue
from tests.e2e.procs import CeleryProcess, delete_worker_queues, scout_env, stop_all
from tests.integration.helpers import execute, rows

# More than the beat reads of a herd, so its bounded mode (fire every 0.25 s) runs.
N = horizon.HORIZON_WINDOW + 500
J = 5


@pytest.fixture
def stack(
    db_url: str, broker_url: str, exchange_name: str, tmp_path: Path
) -> Iterator[dict[str, CeleryProcess]]:
    env = scout_env(db_url, broker_url, exchange_name)
    worker = CeleryProcess("worker", env, tmp_path)
    beat = CeleryProcess("beat", env, tmp_path)
    try:
        worker.wait_for("ready")
        beat.wait_for("this beat is now the leader")
        yield {"worker": worker, "beat": beat}
    finally:
        stop_all([beat, worker])
        delete_worker_queues(broker_url, env["SCOUT_TASK_QUEUE"])


def test_each_schedule_fires_at_its_own_slot_plus_d_not_before(
    stack: dict[str, CeleryProcess], engine: Engine, event_queue: EventQueue
) -> None:
    execute(
        engine,
        """
        INSERT INTO scout_schedules (name, cron_expression, source, max_strategies,
                                     jitter_seconds, next_run_at)
        SELECT 'herd-' || g, '0 0 1 1 *', 'stratninja', 1, :j,
               date_trunc('second', now()) + interval '3 seconds'
        FROM generate_series(1, :n) AS g
        """,
        j=J,
        n=N,
    )

    events = event_queue.get(count=N, timeout=60)

    assert len(events) == N, stack["worker"].log()[-3000:]
    found = rows(
        engine,
        f"""
        SELECT extract(epoch FROM r.created_at - r.scheduled_for)::float8 AS lag,
               {jitter.sql_ms("s")} / 1000.0 AS d, r.scheduled_for = s_slot.slot AS on_slot
        FROM scout_runs r JOIN scout_schedules s ON s.id = r.schedule_id,
             (SELECT min(scheduled_for) AS slot FROM scout_runs) AS s_slot
        """,
    )
    assert len(found) == N
    assert all(r["on_slot"] for r in found)  # scheduled_for stays the slot
    beyond = sorted(r["lag"] - float(r["d"]) for r in found)
    assert beyond[0] >= 0, "a run was made before its slot + d"
    # The herd spread over the window, and each run came soon after its own instant.
    assert max(r["lag"] for r in found) > J * 0.8
    assert beyond[int(0.99 * N)] < 2.0, beyond[-20:]
