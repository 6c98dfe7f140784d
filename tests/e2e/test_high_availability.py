"""Several beats: one leads, a SIGKILLed leader is replaced, no slot doubles or goes missing."""

from __future__ import annotations

import time
from pathlib import Path

import kombu
from sqlalchemy import Engine, text

from tests.conftest import EventQueue
from tests.e2e.procs import CeleryProcess, scout_env

SLOTS = 10
SPACING = 1.5  # seconds between the schedules' one-off slots


def test_killed_leader_is_replaced_without_duplicates_or_gaps(
    db_url: str,
    broker_url: str,
    exchange_name: str,
    engine: Engine,
    event_queue: EventQueue,
    tmp_path: Path,
) -> None:
    env = scout_env(db_url, broker_url, exchange_name, SCOUT_TICK_SECONDS="4")
    worker = CeleryProcess("worker", env, tmp_path)
    beats = [CeleryProcess("beat", env, tmp_path) for _ in range(2)]
    try:
        worker.wait_for("ready")
        deadline = time.monotonic() + 20
        leaders: list[CeleryProcess] = []
        while time.monotonic() < deadline and not leaders:
            leaders = [b for b in beats if "this beat is now the leader" in b.log()]
            time.sleep(0.1)
        assert len(leaders) == 1, "exactly one beat must lead"
        leader = leaders[0]
        standby = next(b for b in beats if b is not leader)

        # One-off slots spread over the next ~15 s (a yearly cron keeps them single).
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies,"
                    " next_run_at) SELECT 'ha-' || g, '0 0 1 1 *', 'ha', 1,"
                    " now() + make_interval(secs => 2 + g * :spacing)"
                    " FROM generate_series(1, :n) AS g"
                ),
                {"n": SLOTS, "spacing": SPACING},
            )
        time.sleep(2 + 3 * SPACING)
        leader.kill()
        killed_at = time.monotonic()
        standby.wait_for("this beat is now the leader", timeout=2 * 4 + 2)
        takeover = time.monotonic() - killed_at

        events = event_queue.get(timeout=2 + SLOTS * SPACING + 10, count=SLOTS)
        events += event_queue.get(timeout=3, count=1)  # anything extra would be a duplicate
    finally:
        for proc in (worker, *beats):
            proc.stop()
        with kombu.Connection(broker_url) as conn:
            conn.default_channel.queue_delete(env["SCOUT_TASK_QUEUE"])

    assert takeover < 2 * 4, f"standby took {takeover:.1f}s to lead"
    names = sorted(e.body["triggered_by"] for e in events)
    assert names == sorted(f"ha-{g}" for g in range(1, SLOTS + 1))
    with engine.connect() as conn:
        per_schedule = conn.execute(
            text(
                "SELECT s.name, count(r.id) FROM scout_schedules s"
                " LEFT JOIN scout_runs r ON r.schedule_id = s.id GROUP BY s.name"
            )
        ).all()
    assert all(count == 1 for _name, count in per_schedule), per_schedule
