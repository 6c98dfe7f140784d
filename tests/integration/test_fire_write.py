"""The fire batch's write (runs and events in one statement, then the advance), and the
WHEN clause that lets the advance skip the BEFORE UPDATE trigger.

Migration 0008 runs ``scout_schedules_before_update()`` only when it would
change something. These tests hold that to the letter: any hand-written update
ends exactly as with the trigger unconditional, and a fire still moves
``updated_at`` and clears ``last_error`` as the trigger did for it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text

from scout_tasks import firing
from tests.integration.helpers import count, execute, row, rows, scalar

UNCONDITIONAL = """
DROP TRIGGER scout_schedules_before_update ON scout_schedules;
CREATE TRIGGER scout_schedules_before_update BEFORE UPDATE ON scout_schedules
    FOR EACH ROW EXECUTE FUNCTION scout_schedules_before_update();
"""

# Starting states: (enabled, paused_reason, last_error, next_run_at).
STATES = [
    (True, None, None, "2099-01-01 12:00+00"),
    (True, None, "bad cron", "2099-01-01 12:00+00"),
    (False, "maintenance", None, None),
    (False, None, "bad zone", None),
]

# Hand-written updates, each run alone and after another update in the same
# transaction (when updated_at already reads now()).
UPDATES = [
    "SET description = 'x'",
    "SET next_run_at = '2098-05-05 05:05+00'",
    "SET next_run_at = '2098-05-05 05:05+00', updated_at = now()",
    "SET cron_expression = '5 4 * * *'",
    "SET cron_expression = '5 4 * * *', updated_at = now()",
    "SET timezone = 'Europe/Paris', updated_at = now()",
    "SET enabled = true",
    "SET enabled = true, updated_at = now()",
    "SET enabled = false",
    "SET paused_reason = 'why', updated_at = now()",
    "SET paused_reason = NULL, updated_at = now()",
    "SET last_error = 'set by hand', next_run_at = '2098-01-01 00:00+00', updated_at = now()",
    "SET last_error = NULL",
    "SET updated_at = now()",
    "SET updated_at = '2001-01-01 00:00+00'",
]

COMPARED = """
SELECT enabled, paused_reason, paused_at IS NOT NULL AS paused_at_set, paused_by, last_error,
       next_run_at, cron_expression, timezone, description,
       updated_at = now() AS updated_now, updated_at
FROM scout_schedules WHERE name = 'probe'
"""


def _outcome(conn: Connection, state: tuple[Any, ...], update: str, twice: bool) -> dict[str, Any]:
    enabled, reason, error, next_run_at = state
    conn.execute(
        text(
            "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies, "
            "enabled, paused_reason, paused_at, paused_by, last_error, next_run_at, updated_at) "
            "VALUES ('probe', '0 * * * *', 's', 1, :enabled, :reason, "
            "CASE WHEN :reason IS NULL THEN NULL ELSE now() END, NULL, :error, "
            "CAST(:next AS timestamptz), '2000-01-01 00:00+00')"
        ),
        {"enabled": enabled, "reason": reason, "error": error, "next": next_run_at},
    )
    if twice:
        conn.execute(text("UPDATE scout_schedules SET max_strategies = 2 WHERE name = 'probe'"))
    conn.execute(text(f"UPDATE scout_schedules {update} WHERE name = 'probe'"))
    result = dict(conn.execute(text(COMPARED)).one()._mapping)
    if result["updated_now"]:
        del result["updated_at"]  # now() differs between the two transactions
    return result


@pytest.mark.parametrize("twice", [False, True])
@pytest.mark.parametrize("state", STATES)
def test_a_hand_written_update_ends_as_with_the_trigger_unconditional(
    engine: Engine, state: tuple[Any, ...], twice: bool
) -> None:
    for update in UPDATES:
        with engine.connect() as conn:
            with conn.begin() as tx:
                with_when = _outcome(conn, state, update, twice)
                tx.rollback()
            with conn.begin() as tx:
                conn.execute(text(UNCONDITIONAL))
                without = _outcome(conn, state, update, twice)
                tx.rollback()
        assert with_when == without, update


def test_a_hand_written_update_still_moves_updated_at_and_clears_a_fixed_error(
    engine: Engine,
) -> None:
    execute(
        engine,
        "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies, "
        "last_error, updated_at) VALUES ('s', '0 * * * *', 'x', 1, 'broken', '2000-01-01')",
    )
    execute(engine, "UPDATE scout_schedules SET next_run_at = '2099-01-01' WHERE name = 's'")
    after = row(engine, "SELECT updated_at, last_error FROM scout_schedules WHERE name = 's'")
    assert after["updated_at"] > datetime(2000, 1, 2, tzinfo=UTC)
    assert after["last_error"] is None


def test_a_fire_moves_updated_at_clears_last_error_and_records_no_change(
    engine: Engine, publisher
) -> None:
    # A due schedule with an error: written in one statement, so the trigger keeps it.
    execute(
        engine,
        "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies, "
        "next_run_at, updated_at) VALUES ('s', '0 0 1 1 *', 'x', 1, "
        "date_trunc('year', now()), '2000-01-01')",
    )
    execute(engine, "UPDATE scout_schedules SET last_error = 'old news' WHERE name = 's'")
    changes_before = count(engine, "scout_schedule_changes")
    db_before = scalar(engine, "SELECT now()")

    report = firing.fire_due(engine, publisher)

    assert report.runs == 1
    after = row(engine, "SELECT * FROM scout_schedules WHERE name = 's'")
    assert after["updated_at"] >= db_before
    assert after["last_error"] is None
    assert after["last_run_at"] == after["updated_at"]  # the same transaction's now()
    assert count(engine, "scout_schedule_changes") == changes_before


def test_a_slot_that_already_has_a_run_gets_no_run_no_event_and_is_not_the_last_run(
    engine: Engine, publisher, event_queue
) -> None:
    execute(
        engine,
        "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies, "
        "next_run_at) VALUES ('taken', '0 0 1 1 *', 'x', 1, date_trunc('year', now())), "
        "('free', '0 0 1 1 *', 'x', 1, date_trunc('year', now()))",
    )
    # Another writer (a backfill) made the slot's run first.
    execute(
        engine,
        "INSERT INTO scout_runs (trigger_type, triggered_by, source, max_strategies, status, "
        "schedule_id, scheduled_for) SELECT 'scheduled', name, source, max_strategies, "
        "'pending', id, next_run_at FROM scout_schedules WHERE name = 'taken'",
    )
    earlier = row(engine, "SELECT id FROM scout_runs")["id"]
    execute(engine, "UPDATE scout_schedules SET last_run_id = :id WHERE name = 'taken'", id=earlier)

    report = firing.fire_due(engine, publisher)

    assert (report.claimed, report.runs, report.published) == (2, 1, 1)
    by_name = {r["name"]: r for r in rows(engine, "SELECT * FROM scout_schedules")}
    assert by_name["taken"]["last_run_id"] == earlier
    assert by_name["taken"]["next_run_at"] > datetime.now(UTC)
    made = row(engine, "SELECT id FROM scout_runs WHERE id <> :id", id=earlier)["id"]
    assert by_name["free"]["last_run_id"] == made
    events = event_queue.get(timeout=10, count=1)
    assert [e.body["run_id"] for e in events] == [str(made)]
    assert event_queue.get(timeout=0.5) == []
    assert count(engine, "scout_outbox") == 0


def test_catch_up_makes_every_missed_slot_and_the_latest_is_the_last_run(
    engine: Engine, publisher, event_queue
) -> None:
    execute(
        engine,
        "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies, "
        "misfire_policy, misfire_grace_seconds, next_run_at) "
        "VALUES ('hourly', '0 * * * *', 'x', 1, 'catch_up', 86400, "
        "date_trunc('hour', now()) - interval '3 hours')",
    )

    report = firing.fire_due(engine, publisher)

    made = rows(engine, "SELECT id, scheduled_for FROM scout_runs ORDER BY scheduled_for")
    assert report.runs == len(made) >= 4
    schedule = row(engine, "SELECT last_run_id FROM scout_schedules")
    assert schedule["last_run_id"] == made[-1]["id"]
    events = event_queue.get(timeout=10, count=len(made))
    assert sorted(e.body["run_id"] for e in events) == sorted(str(r["id"]) for r in made)
    assert count(engine, "scout_outbox") == 0
