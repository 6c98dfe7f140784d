"""The ledger statement: it writes every ledger row, then locks the runs, in id order.

One statement does both (one round trip a batch). Two workers applying
overlapping batches must take their locks in the same order (ledger ids, then
runs, each in id order) or they could deadlock; these tests hold the
statement to that order against a real PostgreSQL.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

from scout_tasks import run_events

from .helpers import scalar


def _runs(engine: Engine, n: int, status: str = "pending") -> list[str]:
    with engine.begin() as conn:
        ids = conn.execute(
            text(
                "INSERT INTO scout_runs (trigger_type, source, max_strategies, status)"
                " SELECT 'manual', 's', 1, :status FROM generate_series(1, :n) RETURNING id"
            ),
            {"n": n, "status": status},
        ).scalars()
        return sorted(str(i) for i in ids)


@pytest.fixture
def blocker(engine: Engine) -> Iterator[Connection]:
    """A connection whose open transaction can hold row locks."""
    with engine.connect() as conn:
        conn.begin()
        yield conn
        conn.rollback()


def test_new_ids_and_the_statuses_of_the_runs_they_name(engine: Engine) -> None:
    pending, running = _runs(engine, 1)[0], _runs(engine, 1, "running")[0]
    nowhere = str(uuid.uuid4())
    old, new_1, new_2, new_3 = (str(uuid.uuid4()) for _ in range(4))
    with engine.begin() as conn:
        run_events.record_and_lock(conn, [(old, pending, "scout.started")])
    events = [
        (old, pending, "scout.started"),
        (new_1, pending, "scout.completed"),
        (new_2, running, "scout.progress"),
        (new_3, nowhere, "scout.started"),
    ]
    with engine.begin() as conn:
        new_ids, statuses = run_events.record_and_lock(conn, events)
    assert new_ids == {new_1, new_2, new_3}
    # Only runs that exist; the text is str(uuid)'s, so the caller's keys match.
    assert statuses == {pending: "pending", running: "running"}
    assert scalar(engine, "SELECT count(*) FROM scout_run_events") == 4
    with engine.begin() as conn:
        assert run_events.record_and_lock(conn, events) == (set(), {})


def test_a_run_named_only_by_a_duplicate_is_not_locked(engine: Engine, blocker: Connection) -> None:
    run = _runs(engine, 1)[0]
    event_id = str(uuid.uuid4())
    with engine.begin() as conn:
        run_events.record_and_lock(conn, [(event_id, run, "scout.started")])
    blocker.execute(text("SELECT 1 FROM scout_runs WHERE id = :id FOR UPDATE"), {"id": run})
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL lock_timeout = '2s'"))
        assert run_events.record_and_lock(conn, [(event_id, run, "scout.started")]) == (set(), {})


def test_every_ledger_row_is_written_before_the_first_run_is_locked(
    engine: Engine, blocker: Connection
) -> None:
    low, high = _runs(engine, 2)
    # The batch: the smaller event id names the higher run, the larger one the
    # lower run. Interleaved (insert, lock, insert, lock), the statement would
    # wait on the lower run before writing its second ledger row.
    first_event, second_event = sorted(str(uuid.uuid4()) for _ in range(2))
    blocker.execute(text("SELECT 1 FROM scout_runs WHERE id = :id FOR UPDATE"), {"id": low})
    done = threading.Event()

    def apply() -> None:
        with engine.begin() as conn:
            run_events.record_and_lock(
                conn,
                [(first_event, high, "scout.started"), (second_event, low, "scout.started")],
            )
        done.set()

    worker = threading.Thread(target=apply)
    worker.start()
    try:
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
            " AND query LIKE '%INSERT INTO scout_run_events%'"
        )
        for _ in range(200):
            if scalar(engine, waiting):
                break
            threading.Event().wait(0.02)
        assert scalar(engine, waiting) == 1, "the statement should be waiting for the run lock"
        # Both ledger rows are written (uncommitted): inserting either id again waits.
        for event_id in (first_event, second_event):
            with engine.connect() as probe, probe.begin():
                probe.execute(text("SET LOCAL lock_timeout = '200ms'"))
                with pytest.raises(OperationalError, match="lock timeout"):
                    probe.execute(
                        text(
                            "INSERT INTO scout_run_events (event_id, run_id, event_type)"
                            " VALUES (:e, :r, 'scout.started') ON CONFLICT DO NOTHING"
                        ),
                        {"e": event_id, "r": low},
                    )
        assert not done.is_set()
    finally:
        blocker.rollback()
        worker.join(10)
    assert done.is_set()
    assert scalar(engine, "SELECT count(*) FROM scout_run_events") == 2
