"""The lifecycle's run updates against ``metrics`` values plain SQL can write.

The database refuses a non-object ``metrics`` (migration 0007); a row written
before that constraint (here: with it dropped inside the test's transaction)
is read as ``{}`` by every update, never appended to or refused.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import IntegrityError

from scout_tasks import run_updates

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ODD = ["[1, 2, 3]", '"str"', "42", "null"]


def _run(conn: Connection, metrics: str | None) -> uuid.UUID:
    return conn.execute(
        text(
            "INSERT INTO scout_runs (trigger_type, source, max_strategies, status, metrics) "
            "VALUES ('manual', 'x', 1, 'running', CAST(:m AS jsonb)) RETURNING id"
        ),
        {"m": metrics},
    ).scalar_one()


def _metrics(conn: Connection, run_id: uuid.UUID) -> object:
    return conn.execute(
        text("SELECT metrics FROM scout_runs WHERE id = :id"), {"id": run_id}
    ).scalar_one()


@pytest.mark.parametrize("value", ODD)
def test_the_database_refuses_a_metrics_that_is_not_an_object(engine: Engine, value: str) -> None:
    with pytest.raises(IntegrityError, match="ck_scout_runs_metrics_object"), engine.begin() as c:
        _run(c, value)


@pytest.mark.parametrize("value", ODD)
def test_updates_read_a_non_object_metrics_as_empty(engine: Engine, value: str) -> None:
    with engine.connect() as conn, conn.begin() as tx:
        conn.execute(text("ALTER TABLE scout_runs DROP CONSTRAINT ck_scout_runs_metrics_object"))
        progressed, completed, failed = _run(conn, value), _run(conn, value), _run(conn, value)

        assert (
            run_updates.record_runs_progress(
                conn, [run_updates.RunProgress(progressed, {"stage": "fetch"}, AT)]
            )
            == 1
        )
        assert run_updates.mark_runs_completed(conn, [(completed, {"validated": 3})]) == 1
        assert run_updates.mark_runs_failed(conn, [(failed, "boom", "submit")]) == 1

        assert _metrics(conn, progressed) == {
            "progress": {"stage": "fetch", "at": "2026-03-01T12:00:00+00:00"}
        }
        assert _metrics(conn, completed) == {"validated": 3}
        assert _metrics(conn, failed) == {"stage": "submit"}
        tx.rollback()


@pytest.mark.parametrize(
    "stored", ['{"at": "garbage"}', '{"at": "2026-13-45T99:00:00+00:00"}', '{"at": 42}']
)
def test_a_progress_at_plain_sql_made_unreadable_is_replaced_not_refused(
    engine: Engine, stored: str
) -> None:
    """The event is fine; the row's old progress is what cannot be read, so the event wins."""
    with engine.begin() as conn:
        run_id = _run(conn, f'{{"progress": {stored}, "kept": 1}}')
    with engine.begin() as conn:
        assert (
            run_updates.record_runs_progress(
                conn, [run_updates.RunProgress(run_id, {"stage": "fetch"}, AT)]
            )
            == 1
        )
    with engine.connect() as conn:
        assert _metrics(conn, run_id) == {
            "kept": 1,
            "progress": {"stage": "fetch", "at": "2026-03-01T12:00:00+00:00"},
        }
