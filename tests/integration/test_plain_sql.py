"""Plain SQL is a first-class way to change a schedule (docs/contract.md, "Database").

An INSERT naming only the original columns works, the trigger keeps next_run_at
honest on UPDATE, and the scheduler computes what SQL left NULL.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from scout_tasks import cron, firing
from tests.integration.helpers import count, execute, row

SEED_INSERT = """
INSERT INTO scout_schedules (id, name, cron_expression, source, max_strategies, enabled,
                             created_at, updated_at)
VALUES (gen_random_uuid(), :name, :cron, 'stratninja', 10, :enabled, now(), now())
"""


def _schedule(engine: Engine, name: str) -> dict[str, Any]:
    return row(engine, "SELECT * FROM scout_schedules WHERE name = :name", name=name)


def _seed(engine: Engine, name: str, cron_expression: str = "0 * * * *", enabled: bool = True):
    execute(engine, SEED_INSERT, name=name, cron=cron_expression, enabled=enabled)
    return _schedule(engine, name)


def _set_next(engine: Engine, name: str, value: datetime) -> None:
    execute(
        engine, "UPDATE scout_schedules SET next_run_at = :v WHERE name = :name", v=value, name=name
    )


FUTURE = datetime(2099, 1, 1, 12, 0, tzinfo=UTC)


# --- INSERT --------------------------------------------------------------------------


def test_insert_naming_only_the_seed_columns(engine: Engine) -> None:
    schedule = _seed(engine, "Daily Scout Run", "0 2 * * *")

    assert schedule["timezone"] == "UTC"
    assert schedule["next_run_at"] is None
    assert schedule["last_error"] is None
    assert schedule["enabled"] is True
    assert schedule["misfire_policy"] == "coalesce"


def test_insert_naming_only_the_required_columns(engine: Engine) -> None:
    execute(
        engine,
        "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies) "
        "VALUES ('minimal', '*/5 * * * *', 'stratninja', 3)",
    )
    schedule = _schedule(engine, "minimal")

    assert schedule["id"] is not None
    assert schedule["timezone"] == "UTC"
    assert schedule["enabled"] is True
    assert schedule["created_at"] is not None
    assert schedule["updated_at"] is not None
    assert schedule["created_at"].utcoffset() == timedelta(0)


def test_the_database_refuses_max_strategies_out_of_range(engine: Engine) -> None:
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError):
        execute(
            engine,
            "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies) "
            "VALUES ('too many', '0 * * * *', 'stratninja', 1001)",
        )
    assert count(engine, "scout_schedules") == 0


# --- the UPDATE trigger -------------------------------------------------------------------


@pytest.mark.parametrize(
    "assignment",
    [
        "cron_expression = '15 * * * *'",
        "timezone = 'Europe/Riga'",
    ],
)
def test_changing_the_timing_clears_next_run_at(engine: Engine, assignment: str) -> None:
    _seed(engine, "s")
    _set_next(engine, "s", FUTURE)
    assert _schedule(engine, "s")["next_run_at"] == FUTURE

    execute(engine, f"UPDATE scout_schedules SET {assignment} WHERE name = 's'")

    assert _schedule(engine, "s")["next_run_at"] is None


def test_reenabling_clears_next_run_at(engine: Engine) -> None:
    _seed(engine, "s")
    _set_next(engine, "s", FUTURE)
    execute(engine, "UPDATE scout_schedules SET enabled = false WHERE name = 's'")
    # Disabling alone keeps it (nothing fires a disabled schedule anyway).
    assert _schedule(engine, "s")["next_run_at"] == FUTURE

    execute(engine, "UPDATE scout_schedules SET enabled = true WHERE name = 's'")

    assert _schedule(engine, "s")["next_run_at"] is None


def test_setting_next_run_at_explicitly_keeps_it(engine: Engine) -> None:
    _seed(engine, "s")
    _set_next(engine, "s", FUTURE)
    explicit = datetime(2098, 6, 1, 3, 17, 29, tzinfo=UTC)

    execute(
        engine,
        "UPDATE scout_schedules SET cron_expression = '17 3 * * *', timezone = 'Asia/Tokyo', "
        "next_run_at = :v WHERE name = 's'",
        v=explicit,
    )

    schedule = _schedule(engine, "s")
    assert schedule["cron_expression"] == "17 3 * * *"
    assert schedule["next_run_at"] == explicit


def test_other_changes_keep_next_run_at(engine: Engine) -> None:
    _seed(engine, "s")
    _set_next(engine, "s", FUTURE)

    execute(
        engine, "UPDATE scout_schedules SET source = 'other', max_strategies = 7 WHERE name = 's'"
    )

    assert _schedule(engine, "s")["next_run_at"] == FUTURE


def test_updated_at_moves(engine: Engine) -> None:
    before = _seed(engine, "s")["updated_at"]
    time.sleep(0.01)

    execute(engine, "UPDATE scout_schedules SET source = 'other' WHERE name = 's'")

    assert _schedule(engine, "s")["updated_at"] > before


# --- the scheduler picks up what SQL left NULL ------------------------------------------------


def test_fire_due_computes_next_run_at_without_creating_runs(engine: Engine, publisher) -> None:
    _seed(engine, "hourly", "0 * * * *")
    _seed(engine, "riga", "30 2 * * *")
    execute(engine, "UPDATE scout_schedules SET timezone = 'Europe/Riga' WHERE name = 'riga'")
    _seed(engine, "off", "0 * * * *", enabled=False)
    before = datetime.now(UTC)

    report = firing.fire_due(engine, publisher)

    after = datetime.now(UTC)
    assert report.initialised == 2
    assert report.runs == 0
    assert count(engine, "scout_runs") == 0
    assert count(engine, "scout_outbox") == 0
    hourly = _schedule(engine, "hourly")["next_run_at"]
    riga = _schedule(engine, "riga")["next_run_at"]
    assert before < hourly <= after + timedelta(hours=1)
    assert hourly.minute == 0 and hourly.second == 0
    assert hourly == cron.next_after("0 * * * *", "UTC", hourly - timedelta(hours=1))
    # 02:30 in Riga, whatever the season.
    local = riga.astimezone(cron.get_zone("Europe/Riga"))
    assert (local.hour, local.minute) == (2, 30)
    assert before < riga <= after + timedelta(days=1, hours=1)
    assert _schedule(engine, "off")["next_run_at"] is None


def test_invalid_cron_gets_last_error_and_is_not_retried(engine: Engine, publisher) -> None:
    _seed(engine, "broken", "61 * * * *")
    _seed(engine, "never", "0 0 30 2 *")

    first = firing.fire_due(engine, publisher)

    assert first.invalid == 2
    broken = _schedule(engine, "broken")
    assert broken["next_run_at"] is None
    assert broken["last_error"]
    assert _schedule(engine, "never")["last_error"]
    assert count(engine, "scout_runs") == 0

    second = firing.fire_due(engine, publisher)

    assert second.invalid == 0
    assert second.initialised == 0
    # Not touched at all: the trigger would have moved updated_at.
    assert _schedule(engine, "broken")["updated_at"] == broken["updated_at"]

    # Fixing the expression with SQL clears the error; the next pass schedules it.
    execute(
        engine, "UPDATE scout_schedules SET cron_expression = '5 * * * *' WHERE name = 'broken'"
    )
    fixed = _schedule(engine, "broken")
    assert fixed["last_error"] is None
    assert fixed["next_run_at"] is None

    third = firing.fire_due(engine, publisher)

    assert third.initialised == 1
    fixed = _schedule(engine, "broken")
    assert fixed["last_error"] is None
    assert fixed["next_run_at"] > datetime.now(UTC)
    assert fixed["next_run_at"].minute == 5
    assert count(engine, "scout_runs") == 0


def test_invalid_timezone_gets_last_error(engine: Engine, publisher) -> None:
    _seed(engine, "lost", "0 * * * *")
    execute(engine, "UPDATE scout_schedules SET timezone = 'Mars/Olympus' WHERE name = 'lost'")

    firing.fire_due(engine, publisher)

    lost = _schedule(engine, "lost")
    assert lost["next_run_at"] is None
    assert "timezone" in lost["last_error"] or "Mars/Olympus" in lost["last_error"]

    execute(engine, "UPDATE scout_schedules SET timezone = 'UTC' WHERE name = 'lost'")
    firing.fire_due(engine, publisher)

    lost = _schedule(engine, "lost")
    assert lost["last_error"] is None
    assert lost["next_run_at"] is not None


def test_invalid_cron_that_is_already_due_keeps_its_error(engine: Engine, publisher) -> None:
    """A broken schedule written by SQL with a due next_run_at is reported after one pass.

    (The same as one whose next_run_at is NULL: the error must not vanish.)
    """
    _seed(engine, "broken-due", "0 25 * * *")
    _set_next(engine, "broken-due", datetime.now(UTC) - timedelta(minutes=5))

    firing.fire_due(engine, publisher)

    broken = _schedule(engine, "broken-due")
    assert count(engine, "scout_runs") == 0
    assert broken["next_run_at"] is None
    assert broken["last_error"], "the schedule's error was not recorded after the pass"


@pytest.mark.parametrize("stored", ["0001-01-01 00:00:00+00 BC", "-infinity", "12000-01-01"])
def test_the_schema_refuses_a_next_run_at_python_cannot_hold(engine: Engine, stored: str) -> None:
    _seed(engine, "ancient", "* * * * *")
    with pytest.raises(IntegrityError, match="ck_scout_schedules_next_run_at_range"):
        execute(
            engine,
            "UPDATE scout_schedules SET next_run_at = CAST(:v AS timestamptz) "
            "WHERE name = 'ancient'",
            v=stored,
        )


@pytest.mark.parametrize("stored", ["0001-01-01 00:00:00+00 BC", "-infinity"])
def test_a_next_run_at_python_cannot_hold_is_set_aside_alone(
    engine: Engine, publisher, stored: str
) -> None:
    """A timestamp before year 1 would fail the fetch of the whole batch; only its row fails.

    The CHECK constraint keeps such values out; a row written before it existed (or
    with it dropped) must still not stop the batch, so the test drops it first.
    """
    _seed(engine, "good", "* * * * *")
    _set_next(engine, "good", datetime.now(UTC) - timedelta(seconds=5))
    _seed(engine, "ancient", "* * * * *")
    execute(
        engine,
        "ALTER TABLE scout_schedules DROP CONSTRAINT ck_scout_schedules_next_run_at_range",
    )
    execute(
        engine,
        "UPDATE scout_schedules SET next_run_at = CAST(:v AS timestamptz) WHERE name = 'ancient'",
        v=stored,
    )

    report = firing.fire_due(engine, publisher)

    assert report.runs == 1
    assert report.invalid == 1
    assert count(engine, "scout_runs") == 1
    ancient = _schedule(engine, "ancient")
    assert ancient["next_run_at"] is None
    assert "out of range" in ancient["last_error"]
    assert _schedule(engine, "good")["next_run_at"] > datetime.now(UTC)
