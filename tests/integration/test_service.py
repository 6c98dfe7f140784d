"""What operators do (scout_tasks.service), against the real database and broker."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from scout_tasks import cron, firing, service
from scout_tasks.errors import (
    DuplicateScheduleName,
    InvalidInput,
    RunAlreadyTerminal,
    RunNotFound,
    ScheduleNotFound,
)
from tests.integration.helpers import (
    TRIGGER_KEYS,
    count,
    counts,
    execute,
    insert_due_schedules,
    row,
    rows,
)


def _spec(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "Daily Scout Run",
        "cron_expression": "0 2 * * *",
        "source": "stratninja",
        "max_strategies": 10,
        **overrides,
    }


def _db_row(engine: Engine, schedule_id: uuid.UUID) -> dict[str, Any]:
    return row(engine, "SELECT * FROM scout_schedules WHERE id = :id", id=schedule_id)


# --- create ---------------------------------------------------------------------------


def test_create_schedule_sets_the_first_slot(engine: Engine) -> None:
    before = datetime.now(UTC)
    created = service.create_schedule(engine, _spec(timezone="Europe/Riga"))

    stored = _db_row(engine, created["id"])
    assert stored == created
    assert created["enabled"] is True
    assert created["timezone"] == "Europe/Riga"
    assert created["next_run_at"] > before
    assert created["next_run_at"] == cron.next_after("0 2 * * *", "Europe/Riga", before)
    local = created["next_run_at"].astimezone(cron.get_zone("Europe/Riga"))
    assert (local.hour, local.minute) == (2, 0)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"cron_expression": "61 * * * *"}, "cron_expression"),
        ({"cron_expression": "0 0 30 2 *"}, "cron_expression"),
        ({"cron_expression": "* * * *"}, "cron_expression"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"max_strategies": 0}, "max_strategies"),
        ({"max_strategies": 1001}, "max_strategies"),
        ({"max_strategies": "ten"}, "max_strategies"),
        ({"name": ""}, "name"),
        ({"name": "x" * 256}, "name"),
        ({"source": ""}, "source"),
        ({"source": "s" * 51}, "source"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_invalid_schedules_are_refused_and_write_nothing(
    engine: Engine, overrides: dict[str, Any], field: str
) -> None:
    service.create_schedule(engine, _spec(name="existing"))
    before = counts(engine)

    with pytest.raises(InvalidInput) as caught:
        service.create_schedule(engine, _spec(**overrides))

    assert caught.value.field == field
    assert field in str(caught.value)
    assert counts(engine) == before


def test_boundary_values_are_accepted(engine: Engine) -> None:
    service.create_schedule(engine, _spec(name="one", max_strategies=1))
    service.create_schedule(engine, _spec(name="n" * 255, max_strategies=1000, source="s" * 50))
    assert count(engine, "scout_schedules") == 2


def test_duplicate_name_is_refused(engine: Engine) -> None:
    service.create_schedule(engine, _spec())
    before = counts(engine)

    with pytest.raises(DuplicateScheduleName) as caught:
        service.create_schedule(engine, _spec(cron_expression="5 * * * *"))

    assert caught.value.field == "name"
    assert counts(engine) == before


def test_renaming_onto_an_existing_name_is_refused(engine: Engine) -> None:
    service.create_schedule(engine, _spec(name="a"))
    b = service.create_schedule(engine, _spec(name="b"))

    with pytest.raises(DuplicateScheduleName):
        service.update_schedule(engine, b["id"], {"name": "a"})

    assert _db_row(engine, b["id"]) == b


# --- update, enable, disable -------------------------------------------------------------


def test_disabled_schedules_have_no_next_run_and_enabling_sets_one(engine: Engine) -> None:
    created = service.create_schedule(engine, _spec(enabled=False))
    assert created["enabled"] is False
    assert created["next_run_at"] is None

    before = datetime.now(UTC)
    enabled = service.set_enabled(engine, created["id"], True)

    assert enabled["enabled"] is True
    assert enabled["next_run_at"] > before
    assert enabled["next_run_at"] == cron.next_after("0 2 * * *", "UTC", before)
    assert _db_row(engine, created["id"])["next_run_at"] == enabled["next_run_at"]

    disabled = service.set_enabled(engine, created["id"], False)

    assert disabled["enabled"] is False
    assert disabled["next_run_at"] is None
    assert _db_row(engine, created["id"])["next_run_at"] is None


def test_changing_the_cron_recomputes_next_run_at(engine: Engine) -> None:
    created = service.create_schedule(engine, _spec(cron_expression="0 2 * * *"))
    before = datetime.now(UTC)

    updated = service.update_schedule(
        engine, created["id"], {"cron_expression": "45 13 * * *", "timezone": "Asia/Tokyo"}
    )

    assert updated["cron_expression"] == "45 13 * * *"
    assert updated["next_run_at"] == cron.next_after("45 13 * * *", "Asia/Tokyo", before)
    local = updated["next_run_at"].astimezone(cron.get_zone("Asia/Tokyo"))
    assert (local.hour, local.minute) == (13, 45)
    assert _db_row(engine, created["id"]) == updated


def test_an_equivalent_cron_keeps_its_next_run_at(engine: Engine) -> None:
    """The trigger clears next_run_at when only the expression text changes; the service
    must still leave the schedule with a slot."""
    created = service.create_schedule(engine, _spec(cron_expression="0 2 * * *"))

    updated = service.update_schedule(engine, created["id"], {"cron_expression": "0 2 */1 * *"})

    assert updated["cron_expression"] == "0 2 */1 * *"
    assert updated["next_run_at"] == created["next_run_at"]
    assert _db_row(engine, created["id"])["next_run_at"] == created["next_run_at"]


def test_an_invalid_update_changes_nothing(engine: Engine) -> None:
    created = service.create_schedule(engine, _spec())

    for bad in (
        {"cron_expression": "not cron"},
        {"max_strategies": 0},
        {"timezone": "Nowhere/Special"},
        {"name": None},
    ):
        with pytest.raises(InvalidInput):
            service.update_schedule(engine, created["id"], bad)

    assert _db_row(engine, created["id"]) == created


def test_update_of_an_unknown_schedule(engine: Engine) -> None:
    with pytest.raises(ScheduleNotFound):
        service.update_schedule(engine, uuid.uuid4(), {"max_strategies": 5})
    with pytest.raises(ScheduleNotFound):
        service.delete_schedule(engine, uuid.uuid4())


def test_delete_keeps_the_runs(engine: Engine) -> None:
    insert_due_schedules(engine, 1, cron="0 0 1 1 *")
    firing.fire_due(engine, None)
    run_before = row(engine, "SELECT * FROM scout_runs")
    schedule_id = run_before["schedule_id"]

    service.delete_schedule(engine, schedule_id)

    assert count(engine, "scout_schedules") == 0
    run_after = row(engine, "SELECT * FROM scout_runs")
    assert run_after["id"] == run_before["id"]
    assert run_after["schedule_id"] is None


# --- trigger and cancel -------------------------------------------------------------------


def test_trigger_run_creates_a_manual_run_and_publishes_it(
    engine: Engine, publisher, event_queue
) -> None:
    run, delivered = service.trigger_run(
        engine, {"source": "stratninja", "max_strategies": 7}, publisher
    )

    assert delivered is True
    stored = row(engine, "SELECT * FROM scout_runs")
    assert stored == run
    assert run["trigger_type"] == "manual"
    assert run["status"] == "pending"
    assert run["schedule_id"] is None
    assert run["scheduled_for"] is None
    assert run["triggered_by"]
    assert count(engine, "scout_outbox") == 0

    events = event_queue.get(timeout=10)
    assert len(events) == 1
    event = events[0]
    assert event.routing_key == "scout.trigger"
    assert event.properties["message_id"] == event.body["event_id"]
    assert event.properties["content_type"] == "application/json"
    assert event.body.keys() >= TRIGGER_KEYS
    assert event.body["run_id"] == str(run["id"])
    assert event.body["trigger_type"] == "manual"
    assert event.body["max_strategies"] == 7
    assert event.body["source"] == "stratninja"
    assert event.body["schedule_id"] is None
    assert event.body["scheduled_for"] is None


def test_trigger_run_keeps_the_callers_name(engine: Engine, publisher, event_queue) -> None:
    run, _ = service.trigger_run(
        engine,
        {"source": "stratninja", "max_strategies": 1, "triggered_by": "ops@example"},
        publisher,
    )
    assert run["triggered_by"] == "ops@example"
    assert event_queue.get(timeout=10)[0].body["triggered_by"] == "ops@example"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"source": "stratninja", "max_strategies": 0}, "max_strategies"),
        ({"source": "stratninja", "max_strategies": 1001}, "max_strategies"),
        ({"source": "", "max_strategies": 5}, "source"),
        ({"max_strategies": 5}, "source"),
    ],
)
def test_an_invalid_trigger_writes_and_publishes_nothing(
    engine: Engine, publisher, event_queue, data: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        service.trigger_run(engine, data, publisher)

    assert caught.value.field == field
    assert counts(engine) == {"scout_schedules": 0, "scout_runs": 0, "scout_outbox": 0}
    assert event_queue.get(timeout=0.3) == []


def test_cancel_run_publishes_cancelled_once(engine: Engine, publisher, event_queue) -> None:
    run, _ = service.trigger_run(engine, {"source": "stratninja", "max_strategies": 3}, publisher)
    assert len(event_queue.get(timeout=10)) == 1

    cancelled, delivered = service.cancel_run(engine, run["id"], publisher)

    assert delivered is True
    assert cancelled["status"] == "cancelled"
    assert cancelled["completed_at"] is not None
    assert row(engine, "SELECT status FROM scout_runs") == {"status": "cancelled"}
    events = event_queue.get(timeout=10)
    assert len(events) == 1
    assert events[0].routing_key == "scout.cancelled"
    assert events[0].body["event_type"] == "scout.cancelled"
    assert events[0].body["run_id"] == str(run["id"])
    assert events[0].properties["message_id"] == events[0].body["event_id"]

    with pytest.raises(RunAlreadyTerminal):
        service.cancel_run(engine, run["id"], publisher)

    assert count(engine, "scout_outbox") == 0
    assert event_queue.get(timeout=0.5) == []


@pytest.mark.parametrize("status", ["completed", "failed"])
def test_a_terminal_run_cannot_be_cancelled(engine: Engine, publisher, status: str) -> None:
    run, _ = service.trigger_run(engine, {"source": "stratninja", "max_strategies": 3}, None)
    execute(engine, "UPDATE scout_runs SET status = :s", s=status)

    with pytest.raises(RunAlreadyTerminal):
        service.cancel_run(engine, run["id"], publisher)

    assert row(engine, "SELECT status FROM scout_runs") == {"status": status}


def test_cancel_an_unknown_run(engine: Engine, publisher) -> None:
    with pytest.raises(RunNotFound):
        service.cancel_run(engine, uuid.uuid4(), publisher)
    assert count(engine, "scout_outbox") == 0


def test_a_fired_run_can_be_cancelled(engine: Engine, publisher, event_queue) -> None:
    insert_due_schedules(engine, 1, cron="0 0 1 1 *")
    assert firing.fire_due(engine, publisher).runs == 1
    (run_id,) = [r["id"] for r in rows(engine, "SELECT id FROM scout_runs")]

    cancelled, _ = service.cancel_run(engine, run_id, publisher)

    assert cancelled["status"] == "cancelled"
    assert cancelled["scheduled_for"] is not None
    keys = [e.routing_key for e in event_queue.get(timeout=10, count=2)]
    assert keys == ["scout.trigger", "scout.cancelled"]
    assert cancelled["completed_at"] - cancelled["created_at"] < timedelta(minutes=5)
