"""A client that goes silent inside a transaction must not hold its row locks for good.

A pool process frozen mid-batch (SIGSTOP, a paused VM) or cut off without a reset keeps
its session open as far as the server can tell: the server's TCP keepalive is 2 h by
default, and a frozen peer's kernel answers it anyway. Its claimed schedules are skipped
(SKIP LOCKED) by every other worker until the server ends the transaction.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from scout_tasks import db, firing, schedules
from tests.integration.helpers import execute, scalar


def test_sessions_end_a_transaction_left_idle(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar_one() == "1min"


def test_a_claim_frozen_mid_batch_is_released_to_the_other_workers(
    engine: Engine, db_url: str, publisher
) -> None:
    execute(
        engine,
        "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies, next_run_at)"
        " VALUES ('held', '* * * * *', 'stratninja', 1, :due)",
        due=datetime.now(UTC) - timedelta(seconds=5),
    )
    frozen_engine = db.make_engine(db_url, idle_in_transaction_timeout=2.0)
    frozen = frozen_engine.connect()
    try:
        transaction = frozen.begin()
        assert len(schedules.claim_due(frozen, 10)) == 1
        # The claiming process freezes here: no statement, no commit, no rollback.
        assert firing.fire_due(engine, publisher).runs == 0

        deadline = time.monotonic() + 15
        runs = 0
        while runs == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
            runs = firing.fire_due(engine, publisher).runs
        assert runs == 1, "the frozen claim still holds the schedule"
        assert scalar(engine, "SELECT count(*) FROM scout_runs") == 1
        with contextlib.suppress(DBAPIError):
            transaction.rollback()
    finally:
        with contextlib.suppress(DBAPIError):
            frozen.close()
        frozen_engine.dispose()


def test_a_batch_that_plans_for_longer_than_the_idle_timeout_still_fires(
    db_url: str, monkeypatch
) -> None:
    # A batch is planned inside its claim's transaction, idle meanwhile. Every-minute
    # schedules with the skip policy, a year overdue in a zone with DST, cost 0.1 s each
    # to plan (the skipped slots are counted); 500 of them (the default batch) planned
    # for over a minute and the server ended the transaction, and the next claim took
    # the same batch to the same end: none of them ever fired. Scaled down here: a 2 s
    # timeout and 0.3 s of planning per batch.
    monkeypatch.setattr(firing, "PLAN_BUDGET_SECONDS", 0.3)
    short = db.make_engine(db_url, idle_in_transaction_timeout=2.0)
    try:
        execute(
            short,
            "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies,"
            " timezone, misfire_policy, next_run_at)"
            " SELECT 'late-' || g, '* * * * *', 'stratninja', 1, 'Europe/Berlin', 'skip',"
            " now() - interval '365 days' FROM generate_series(1, 40) g",
        )
        report = firing.fire_due(short, None, batch_size=40)
        assert report.claimed == 40
        assert (
            scalar(
                short,
                "SELECT count(*) FROM scout_schedules WHERE next_run_at < now() - interval '1 day'",
            )
            == 0
        )
    finally:
        short.dispose()
