"""`schedules apply` rewriting schedules while a real beat and worker fire them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from scout_tasks import apply
from tests.conftest import EventQueue
from tests.e2e.procs import CeleryProcess, delete_worker_queues, scout_env, stop_all
from tests.integration.helpers import execute, rows, scalar

N = 30


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


def _document(max_strategies: int) -> dict[str, list[dict[str, object]]]:
    return {
        "schedules": [
            {
                "name": f"code-{i}",
                # Yearly: once its off-grid slot has fired, nothing else comes due.
                "cron_expression": "0 0 1 1 *",
                "source": "stratninja",
                "max_strategies": max_strategies,
                "description": f"rev {max_strategies}",
            }
            for i in range(N)
        ]
    }


def test_apply_racing_the_beat_loses_no_slot_and_doubles_none(
    stack: dict[str, CeleryProcess], engine: Engine, event_queue: EventQueue
) -> None:
    apply.apply(engine, _document(1))
    # Every schedule due 2 s from now, off the cron grid, as an operator's SQL would set it.
    execute(
        engine,
        "UPDATE scout_schedules SET next_run_at = date_trunc('second', now()) + interval '2 s'",
    )
    slot = scalar(engine, "SELECT min(next_run_at) FROM scout_schedules")
    stop = threading.Event()
    applied = []

    def keep_applying() -> None:
        revision = 1
        while not stop.is_set():
            revision = 3 - revision  # 2, 1, 2, ...: every apply rewrites every row
            plan = apply.apply(engine, _document(revision), actor="e2e")
            applied.append(plan.changes)
            # A deploy every 100 ms: far more often than any real one, and each
            # apply holds every row for its transaction, which a claim skips.
            stop.wait(0.1)

    writer = threading.Thread(target=keep_applying)
    writer.start()
    try:
        events = event_queue.get(count=N, timeout=30)
    finally:
        time.sleep(1.0)  # keep racing a little past the firing
        stop.set()
        writer.join(timeout=30)

    assert len(events) == N, stack["worker"].log()[-3000:]
    assert len(applied) >= 5 and set(applied) == {N}
    events += event_queue.drain(quiet=2.0)
    assert len(events) == N
    assert len({e.body["run_id"] for e in events}) == N
    per_schedule = rows(
        engine,
        "SELECT s.name, count(r.id) AS runs, min(r.scheduled_for) AS slot"
        " FROM scout_schedules s LEFT JOIN scout_runs r ON r.schedule_id = s.id GROUP BY s.name",
    )
    assert len(per_schedule) == N
    assert {(r["runs"], r["slot"]) for r in per_schedule} == {(1, slot)}
    # The applies were all recorded, and firing's bookkeeping was not.
    assert scalar(
        engine, "SELECT count(*) FROM scout_schedule_changes WHERE actor = 'e2e'"
    ) == N * len(applied)
    late = scalar(engine, "SELECT max(created_at - scheduled_for) FROM scout_runs")
    print(f"applies during the race: {len(applied)}, latest run {late} after its slot")
    # Skipped rows are re-sent after the apply's NOTIFY (1 s), not only each tick (5 s).
    assert late.total_seconds() < 5, late
