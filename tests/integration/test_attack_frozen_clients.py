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
