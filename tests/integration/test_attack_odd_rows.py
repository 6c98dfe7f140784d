"""Rows written with plain SQL that the columns allow but no face would write: none may stop
a batch from firing (README, "No single row stops firing").

Each test puts an odd schedule and an ordinary one due in the same claim (the odd one first,
by next_run_at) and fires once, as a worker would.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from scout_tasks import counters, firing
from scout_tasks.policy import MAX_CATCH_UP
from tests.integration.helpers import execute, row

INSERT = """
INSERT INTO scout_schedules (name, cron_expression, source, max_strategies, next_run_at)
VALUES (:name, '* * * * *', 'stratninja', 1, CAST(:next_run_at AS timestamptz))
"""


def _good_one_due(engine: Engine) -> None:
    execute(engine, INSERT, name="ordinary", next_run_at=datetime.now(UTC) - timedelta(seconds=5))


def _runs(engine: Engine, name: str) -> int:
    return int(
        row(
            engine,
            "SELECT count(*) AS n FROM scout_runs r JOIN scout_schedules s ON s.id = r.schedule_id"
            " WHERE s.name = :name",
            name=name,
        )["n"]
    )


@pytest.mark.timeout(120)
def test_catch_up_with_decades_of_grace_since_year_one_fires_its_batch_at_once(
    engine: Engine, publisher
) -> None:
    # "Never too late" as an int's worth of seconds, and "fire it now" as a next_run_at
    # long past: every minute since 1958 was on time, and the plan walked all 35
    # million of them (minutes of CPU, gigabytes) with the whole batch locked.
    execute(engine, INSERT, name="odd", next_run_at="0001-01-02 00:00:00+00")
    execute(
        engine,
        "UPDATE scout_schedules SET misfire_policy = 'catch_up',"
        " misfire_grace_seconds = 2147483647 WHERE name = 'odd'",
    )
    _good_one_due(engine)

    started = time.monotonic()
    report = firing.fire_due(engine, publisher)

    assert time.monotonic() - started < 30
    assert report.invalid == 0
    assert _runs(engine, "ordinary") == 1
    assert _runs(engine, "odd") == MAX_CATCH_UP
    assert row(engine, "SELECT next_run_at FROM scout_schedules WHERE name = 'odd'")[
        "next_run_at"
    ] > datetime.now(UTC) - timedelta(seconds=1)


def test_a_skipped_slot_count_at_the_end_of_bigint_does_not_fail_the_batch(
    engine: Engine, publisher
) -> None:
    # skip policy, three slots missed, the counter set by hand to bigint's maximum: adding
    # the skipped slots overflowed, and the whole batch's transaction failed on every claim.
    execute(
        engine,
        INSERT,
        name="odd",
        next_run_at=datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=3),
    )
    execute(
        engine,
        "UPDATE scout_schedules SET misfire_policy = 'skip',"
        " skipped_slots = 9223372036854775807 WHERE name = 'odd'",
    )
    _good_one_due(engine)

    report = firing.fire_due(engine, publisher)

    assert report.claimed == 2
    assert _runs(engine, "ordinary") == 1
    odd = row(engine, "SELECT skipped_slots, next_run_at FROM scout_schedules WHERE name = 'odd'")
    assert odd["skipped_slots"] == 9223372036854775807
    assert odd["next_run_at"] > datetime.now(UTC) - timedelta(seconds=1)


def test_a_counter_at_the_end_of_bigint_does_not_fail_every_batch(
    engine: Engine, publisher
) -> None:
    # scout_counters' rows set by hand to bigint's maximum (every shard, as a restore or a
    # hand "reset" might): adding a batch's runs overflowed, and every fire batch's
    # transaction failed, so no schedule fired at all.
    execute(
        engine,
        "INSERT INTO scout_counters (name, label, shard, value)"
        " SELECT :name, 'scheduled', s, 9223372036854775807 FROM generate_series(0, :n - 1) s"
        " ON CONFLICT (name, label, shard) DO UPDATE SET value = EXCLUDED.value",
        name=counters.RUNS_CREATED,
        n=counters.SHARDS,
    )
    _good_one_due(engine)

    report = firing.fire_due(engine, publisher)

    assert report.runs == 1
    assert _runs(engine, "ordinary") == 1
    with engine.connect() as conn:
        assert counters.totals(conn)[(counters.RUNS_CREATED, "scheduled")] == (
            counters.SHARDS * 9223372036854775807
        )
