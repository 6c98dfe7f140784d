"""Races the database must settle: exclusive claims, one run per slot, concurrent firers."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from sqlalchemy import Engine, text

from scout_tasks import firing, runs, schedules
from scout_tasks.publisher import ConfirmingPublisher
from tests.integration.helpers import count, insert_due_schedules, row, scalar


def test_claims_are_exclusive(engine: Engine) -> None:
    insert_due_schedules(engine, 10)

    with engine.connect() as first, engine.connect() as second:
        with first.begin():
            mine = schedules.claim_due(first, 10)
            with second.begin():
                theirs = schedules.claim_due(second, 10)
            assert len(mine) == 10
            assert theirs == []
        # The first transaction ended without advancing anything: all due again.
        with second.begin():
            assert len(schedules.claim_due(second, 10)) == 10


def test_concurrent_claimers_split_the_work(engine: Engine) -> None:
    insert_due_schedules(engine, 10)

    with engine.connect() as first, engine.connect() as second:
        with first.begin():
            mine = schedules.claim_due(first, 4)
            with second.begin():
                theirs = schedules.claim_due(second, 10)
        assert len(mine) == 4
        assert len(theirs) == 6
        assert {d.id for d in mine}.isdisjoint({d.id for d in theirs})
        assert len({d.id for d in mine} | {d.id for d in theirs}) == 10


def _slot_run(schedule_id: uuid.UUID, slot: datetime) -> runs.NewScheduledRun:
    return runs.NewScheduledRun(
        schedule_id=schedule_id,
        scheduled_for=slot,
        triggered_by="race",
        source="stratninja",
        max_strategies=10,
    )


def _one_schedule(engine: Engine) -> uuid.UUID:
    insert_due_schedules(engine, 1)
    return scalar(engine, "SELECT id FROM scout_schedules")


SLOT = datetime(2025, 12, 15, 12, 0, tzinfo=UTC)


def test_the_loser_of_a_slot_race_gets_nothing_and_no_error(engine: Engine) -> None:
    schedule_id = _one_schedule(engine)
    winner_run, loser_run = _slot_run(schedule_id, SLOT), _slot_run(schedule_id, SLOT)
    loser_result: list[list[runs.InsertedRun]] = []
    loser_errors: list[BaseException] = []

    def loser() -> None:
        try:
            with engine.begin() as conn:
                loser_result.append(firing.insert_runs(conn, [loser_run], SLOT)[0])
        except Exception as exc:  # noqa: BLE001 - any error is the failure we look for
            loser_errors.append(exc)

    with engine.begin() as conn:
        (won,) = firing.insert_runs(conn, [winner_run], SLOT)[0]
        assert (won.schedule_id, won.scheduled_for) == (str(schedule_id), SLOT)
        thread = threading.Thread(target=loser)
        thread.start()
        # The loser waits on the unique index until the winner's transaction ends.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            waiting = scalar(
                engine,
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            if waiting:
                break
            time.sleep(0.02)
        assert waiting == 1, "the second insert did not wait for the first"
        assert thread.is_alive()
    thread.join(timeout=10)

    assert loser_errors == []
    assert loser_result == [[]]
    only = row(engine, "SELECT id, scheduled_for FROM scout_runs")
    assert only == {"id": uuid.UUID(won.id), "scheduled_for": SLOT}


def test_many_threads_racing_for_one_slot_make_one_run(engine: Engine) -> None:
    schedule_id = _one_schedule(engine)
    threads = 8
    barrier = threading.Barrier(threads)

    def insert() -> list[runs.InsertedRun]:
        with engine.begin() as conn:
            conn.execute(text("SELECT 1"))
            barrier.wait(timeout=10)
            return firing.insert_runs(conn, [_slot_run(schedule_id, SLOT)], SLOT)[0]

    with ThreadPoolExecutor(threads) as pool:
        results = [f.result(timeout=30) for f in [pool.submit(insert) for _ in range(threads)]]

    winners = [r for r in results if r]
    assert len(winners) == 1
    assert results.count([]) == threads - 1
    assert count(engine, "scout_runs") == 1
    assert str(scalar(engine, "SELECT id FROM scout_runs")) == winners[0][0].id


def test_concurrent_fire_due_makes_each_run_and_event_once(
    engine: Engine, broker_url: str, exchange_name: str, event_queue
) -> None:
    total, workers = 3000, 4
    insert_due_schedules(engine, total, cron="0 0 1 1 *")
    barrier = threading.Barrier(workers)

    def fire() -> firing.FireReport:
        publisher = ConfirmingPublisher(broker_url, exchange_name)
        try:
            barrier.wait(timeout=10)
            return firing.fire_due(engine, publisher, batch_size=250)
        finally:
            publisher.close()

    with ThreadPoolExecutor(workers) as pool:
        reports = [f.result(timeout=120) for f in [pool.submit(fire) for _ in range(workers)]]

    assert sum(r.runs for r in reports) == total
    assert sum(r.claimed for r in reports) == total
    assert not any(r.publish_failed for r in reports)
    # More than one worker did some of the work (the claims split it).
    assert sum(1 for r in reports if r.runs) > 1
    assert count(engine, "scout_runs") == total
    assert (
        scalar(
            engine,
            "SELECT count(*) FROM (SELECT DISTINCT schedule_id, scheduled_for FROM scout_runs) d",
        )
        == total
    )
    assert scalar(engine, "SELECT count(DISTINCT schedule_id) FROM scout_runs") == total
    assert count(engine, "scout_outbox") == 0

    events = event_queue.get(timeout=30, count=total)
    assert len(events) == total
    assert event_queue.get(timeout=0.5) == []
    assert len({e.body["event_id"] for e in events}) == total
    run_ids = {str(r) for r in _run_ids(engine)}
    assert {e.body["run_id"] for e in events} == run_ids


def _run_ids(engine: Engine) -> list[uuid.UUID]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT id FROM scout_runs")).scalars())
