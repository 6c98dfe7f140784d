"""A schedule's history, pause/resume and run now (CONTRACT.md, "Operating schedules").

The history is written by a trigger, so plain SQL is recorded as well as the
service; the actor of a service call reaches the database in the same
transaction. Everything runs on the real PostgreSQL and RabbitMQ.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg2
import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from scout_tasks import cron, firing, schedules, service
from scout_tasks.errors import InvalidInput, ScheduleNotFound
from tests.integration.helpers import (
    TRIGGER_KEYS,
    count,
    counts,
    execute,
    insert_due_schedules,
    row,
    rows,
)

APP = "postgres (scout-tasks)"  # the fallback actor of the app's own engine
PSQL = "postgres (psql)"


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


def _history(engine: Engine, schedule_id: uuid.UUID) -> list[dict[str, Any]]:
    """Oldest first, read straight from the table."""
    return rows(
        engine,
        "SELECT actor, action, changes FROM scout_schedule_changes "
        "WHERE schedule_id = :id ORDER BY id",
        id=schedule_id,
    )


class Psql:
    """A client that is not scout-tasks: its own connection and application_name."""

    def __init__(self, db_url: str) -> None:
        url = make_url(db_url)
        self.conn = psycopg2.connect(
            host=url.host, port=url.port, user=url.username, password=url.password,
            dbname=url.database, application_name="psql",
        )  # fmt: skip
        self.conn.autocommit = True

    def __call__(self, statement: str, **params: Any) -> None:
        with self.conn.cursor() as cur:
            cur.execute(statement, params)


@pytest.fixture
def psql(db_url: str) -> Iterator[Psql]:
    client = Psql(db_url)
    yield client
    client.conn.close()


# --- plain SQL is recorded -------------------------------------------------------------


def test_plain_sql_edits_are_recorded_with_role_and_application_name(
    engine: Engine, psql: Psql
) -> None:
    psql(
        "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies) "
        "VALUES ('by hand', '0 * * * *', 'stratninja', 5)"
    )
    schedule = row(engine, "SELECT * FROM scout_schedules")
    psql("UPDATE scout_schedules SET cron_expression = '30 * * * *', max_strategies = 6")

    created, updated = _history(engine, schedule["id"])
    assert created["actor"] == PSQL
    assert created["action"] == "create"
    assert created["changes"]["name"] == [None, "by hand"]
    assert created["changes"]["cron_expression"] == [None, "0 * * * *"]
    assert created["changes"]["description"] == [None, ""]
    # Unset columns and the scheduler's own are not part of a create.
    assert "paused_reason" not in created["changes"]
    assert "next_run_at" not in created["changes"]
    assert updated == {
        "actor": PSQL,
        "action": "update",
        # The trigger cleared next_run_at too: bookkeeping, not listed.
        "changes": {"cron_expression": ["0 * * * *", "30 * * * *"], "max_strategies": [5, 6]},
    }


@pytest.fixture
def editor_role(db_url: str) -> Iterator[str]:
    """A login role that may edit schedules and nothing else (roles are cluster-wide:
    a unique name, dropped afterwards)."""
    name = f"scout_test_editor_{uuid.uuid4().hex[:8]}"
    admin = Psql(db_url)
    # A password too, in case the server does not trust local logins.
    admin(f"CREATE ROLE {name} LOGIN PASSWORD '{name}'")
    admin(f"GRANT SELECT, UPDATE ON scout_schedules TO {name}")
    try:
        yield name
    finally:
        admin(f"DROP OWNED BY {name}")
        admin(f"DROP ROLE {name}")
        admin.conn.close()


def test_the_actor_is_the_login_role_and_history_cannot_be_forged(
    engine: Engine, db_url: str, editor_role: str
) -> None:
    created = service.create_schedule(engine, _spec())
    editor = Psql(
        make_url(db_url)
        .set(username=editor_role, password=editor_role)
        .render_as_string(hide_password=False)
    )
    try:
        editor("UPDATE scout_schedules SET description = 'edited by a restricted role'")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            editor(
                "INSERT INTO scout_schedule_changes (schedule_id, actor, action, changes) "
                "VALUES (gen_random_uuid(), 'someone else', 'update', '{}')"
            )
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            editor("DELETE FROM scout_schedule_changes")
    finally:
        editor.conn.close()

    latest = _history(engine, created["id"])[-1]
    assert latest["actor"] == f"{editor_role} (psql)"
    assert latest["changes"] == {"description": ["", "edited by a restricted role"]}
    assert count(engine, "scout_schedule_changes") == 2


def test_an_actor_is_kept_verbatim(engine: Engine) -> None:
    actor = "Robert'); DROP TABLE scout_schedule_changes;-- 🚀"
    created = service.create_schedule(engine, _spec(), actor=actor)
    assert _history(engine, created["id"])[0]["actor"] == actor


def test_an_update_that_changes_nothing_is_not_recorded(engine: Engine, psql: Psql) -> None:
    created = service.create_schedule(engine, _spec())
    psql("UPDATE scout_schedules SET name = name, max_strategies = 10")
    assert [h["action"] for h in _history(engine, created["id"])] == ["create"]


def test_a_deleted_schedules_history_outlives_it(engine: Engine, psql: Psql) -> None:
    created = service.create_schedule(engine, _spec(), actor="alice")
    psql("DELETE FROM scout_schedules")

    items, total = service.history(engine, created["id"])

    assert total == 2
    assert [(i["action"], i["actor"]) for i in items] == [("delete", PSQL), ("create", "alice")]
    assert items[0]["changes"]["name"] == ["Daily Scout Run", None]
    # By its id as text too (the CLI's form); a name no longer resolves.
    assert service.history(engine, str(created["id"]))[1] == 2
    with pytest.raises(ScheduleNotFound):
        service.history(engine, "Daily Scout Run")
    with pytest.raises(ScheduleNotFound):
        service.history(engine, uuid.uuid4())


def test_odd_text_comes_back_from_the_history_as_it_was(engine: Engine) -> None:
    created = service.create_schedule(engine, _spec(description='é\n"quoted" \\ 🙂'))
    service.update_schedule(engine, created["id"], {"description": "", "jitter_seconds": 3600})

    latest = _history(engine, created["id"])[-1]
    assert latest["changes"] == {
        "description": ['é\n"quoted" \\ 🙂', ""],
        "jitter_seconds": [0, 3600],
    }


# --- the scheduler's bookkeeping is not a change -----------------------------------------


def test_firing_and_planning_write_no_history(engine: Engine, psql: Psql) -> None:
    insert_due_schedules(engine, 3, cron="* * * * *")
    psql(
        "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies) "
        "VALUES ('unplanned', '0 3 * * *', 'stratninja', 5), "
        "       ('broken', '0 3 * * *', 'stratninja', 5)"
    )
    # A bad zone written by SQL: planning records last_error, which is bookkeeping.
    psql("UPDATE scout_schedules SET timezone = 'Mars/Olympus' WHERE name = 'broken'")
    before = count(engine, "scout_schedule_changes")
    assert before == 6  # five creates and the hand-made update

    result = firing.fire_due(engine, None)

    assert result.runs == 3
    assert (
        row(engine, "SELECT count(*) AS n FROM scout_schedules WHERE last_run_id IS NOT NULL")["n"]
        == 3
    )
    assert row(engine, "SELECT last_error FROM scout_schedules WHERE name = 'broken'")["last_error"]
    assert row(engine, "SELECT next_run_at FROM scout_schedules WHERE name = 'unplanned'")[
        "next_run_at"
    ]
    # Bookkeeping written by hand is not a change either.
    psql(
        "UPDATE scout_schedules SET next_run_at = now() + interval '1 day', "
        "skipped_slots = skipped_slots + 1, last_run_at = now(), last_error = NULL"
    )
    assert count(engine, "scout_schedule_changes") == before


# --- the actor ---------------------------------------------------------------------------


def test_the_actor_of_every_service_write_is_recorded(engine: Engine) -> None:
    created = service.create_schedule(engine, _spec(), actor="alice")
    service.update_schedule(engine, created["id"], {"max_strategies": 11}, actor="bob")
    service.set_enabled(engine, created["id"], False, actor="carol")
    service.set_enabled(engine, created["id"], True, actor="carol")
    service.pause(engine, created["id"], reason="upstream outage", actor="dave")
    service.resume(engine, created["id"], actor="erin")
    service.update_schedule(engine, created["id"], {"description": "nightly"})
    service.delete_schedule(engine, created["id"], actor="frank")

    assert [(h["action"], h["actor"]) for h in _history(engine, created["id"])] == [
        ("create", "alice"),
        ("update", "bob"),
        ("disable", "carol"),
        ("enable", "carol"),
        ("pause", "dave"),
        ("resume", "erin"),
        ("update", APP),
        ("delete", "frank"),
    ]


def test_the_actor_does_not_outlive_its_transaction(engine: Engine) -> None:
    """set_config(..., true): a pooled connection must not lend alice's name to the next caller."""
    created = service.create_schedule(engine, _spec(), actor="alice")
    # One connection in the pool, so the next statement runs on alice's connection.
    assert engine.pool.checkedin() == 1  # type: ignore[attr-defined]
    execute(engine, "UPDATE scout_schedules SET source = 'other'")

    assert _history(engine, created["id"])[-1]["actor"] == APP


@pytest.mark.parametrize(
    ("actor", "field_message"),
    [("x" * 256, "at most 255"), ("line\nbreak", "control characters"), ("nul\x00", "control")],
)
def test_a_bad_actor_is_refused_and_writes_nothing(
    engine: Engine, actor: str, field_message: str
) -> None:
    created = service.create_schedule(engine, _spec())
    before = (counts(engine), count(engine, "scout_schedule_changes"))

    for write in (
        lambda: service.create_schedule(engine, _spec(name="other"), actor=actor),
        lambda: service.update_schedule(engine, created["id"], {"source": "x"}, actor=actor),
        lambda: service.pause(engine, created["id"], reason="r", actor=actor),
        lambda: service.delete_schedule(engine, created["id"], actor=actor),
    ):
        with pytest.raises(InvalidInput) as caught:
            write()
        assert caught.value.field == "actor"
        assert field_message in str(caught.value)

    assert (counts(engine), count(engine, "scout_schedule_changes")) == before


def test_a_blank_actor_means_none_given(engine: Engine) -> None:
    created = service.create_schedule(engine, _spec(), actor="  ")
    assert _history(engine, created["id"])[0]["actor"] == APP


# --- pause and resume ------------------------------------------------------------------


def test_pause_disables_with_reason_time_and_actor(engine: Engine) -> None:
    created = service.create_schedule(engine, _spec())
    before = datetime.now(UTC)

    paused = service.pause(engine, "Daily Scout Run", reason="upstream outage", actor="ops")

    assert paused == _db_row(engine, created["id"])
    assert paused["enabled"] is False
    assert paused["next_run_at"] is None
    assert paused["paused_reason"] == "upstream outage"
    assert paused["paused_by"] == "ops"
    assert before - (paused["paused_at"] - before) <= paused["paused_at"] <= datetime.now(UTC)
    latest = _history(engine, created["id"])[-1]
    assert latest["action"] == "pause"
    assert latest["actor"] == "ops"
    assert latest["changes"]["enabled"] == [True, False]
    assert latest["changes"]["paused_reason"] == [None, "upstream outage"]
    assert latest["changes"]["paused_by"] == [None, "ops"]


def test_pause_without_an_actor_names_the_database_role(engine: Engine) -> None:
    created = service.create_schedule(engine, _spec())
    assert service.pause(engine, created["id"], reason="r")["paused_by"] == APP


def test_pausing_again_replaces_the_reason(engine: Engine) -> None:
    created = service.create_schedule(engine, _spec())
    service.pause(engine, created["id"], reason="first", actor="a")
    again = service.pause(engine, created["id"], reason="second", actor="b")

    assert (again["paused_reason"], again["paused_by"], again["enabled"]) == ("second", "b", False)
    assert _history(engine, created["id"])[-1]["changes"]["paused_reason"] == ["first", "second"]


@pytest.mark.parametrize("reason", ["", "   ", "x" * 501, None, 5, ["a list"], "nul\x00"], ids=repr)
def test_a_bad_reason_is_refused_naming_reason(engine: Engine, reason: Any) -> None:
    created = service.create_schedule(engine, _spec())
    history_before = count(engine, "scout_schedule_changes")

    with pytest.raises(InvalidInput) as caught:
        service.pause(engine, created["id"], reason=reason, actor="ops")

    assert caught.value.field == "reason"
    assert _db_row(engine, created["id"]) == created
    assert count(engine, "scout_schedule_changes") == history_before


def test_the_longest_reason_is_accepted(engine: Engine) -> None:
    created = service.create_schedule(engine, _spec())
    assert service.pause(engine, created["id"], reason="r" * 500)["paused_reason"] == "r" * 500


def test_pause_and_resume_of_an_unknown_schedule(engine: Engine) -> None:
    for key in (uuid.uuid4(), "no such schedule"):
        with pytest.raises(ScheduleNotFound):
            service.pause(engine, key, reason="r")
        with pytest.raises(ScheduleNotFound):
            service.resume(engine, key)


def test_resume_fires_at_the_first_slot_after_now_without_catching_up(engine: Engine) -> None:
    insert_due_schedules(engine, 1, cron="* * * * *", ago="10 minutes")
    schedule = row(engine, "SELECT * FROM scout_schedules")
    service.pause(engine, schedule["id"], reason="maintenance", actor="ops")
    # Ten minutes of slots passed while it was paused (as if the pause had been long).
    execute(engine, "UPDATE scout_schedules SET paused_at = now() - interval '10 minutes'")

    before = datetime.now(UTC)
    resumed = service.resume(engine, schedule["name"], actor="ops")
    after = datetime.now(UTC)

    assert resumed["enabled"] is True
    assert (resumed["paused_reason"], resumed["paused_at"], resumed["paused_by"]) == (None,) * 3
    assert resumed["next_run_at"] > before
    assert (
        cron.next_after("* * * * *", "UTC", before)
        <= resumed["next_run_at"]
        <= cron.next_after("* * * * *", "UTC", after)
    )
    assert firing.fire_due(engine, None).runs == 0
    assert count(engine, "scout_runs") == 0
    latest = _history(engine, schedule["id"])[-1]
    assert (latest["action"], latest["actor"]) == ("resume", "ops")
    assert latest["changes"]["paused_reason"] == ["maintenance", None]


def test_resume_of_an_enabled_schedule_changes_nothing(engine: Engine) -> None:
    created = service.create_schedule(engine, _spec())
    assert service.resume(engine, created["id"]) == created
    assert len(_history(engine, created["id"])) == 1


def test_enabling_a_paused_schedule_through_update_resumes_it(engine: Engine) -> None:
    created = service.create_schedule(engine, _spec())
    service.pause(engine, created["id"], reason="r", actor="ops")

    enabled = service.set_enabled(engine, created["id"], True, actor="ops")

    assert enabled["enabled"] is True
    assert enabled["next_run_at"] is not None
    assert (enabled["paused_reason"], enabled["paused_at"], enabled["paused_by"]) == (None,) * 3
    assert _history(engine, created["id"])[-1]["action"] == "resume"


def test_pause_waits_for_a_firing_batch_and_is_not_undone_by_it(engine: Engine) -> None:
    """The beat holds the claimed row until it commits; the pause then applies on top."""
    insert_due_schedules(engine, 1, cron="* * * * *")
    schedule_id = row(engine, "SELECT id FROM scout_schedules")["id"]
    done: list[dict[str, Any]] = []
    with engine.connect() as beat:
        claim = beat.begin()
        assert [d.id for d in schedules.claim_due(beat, 10)] == [schedule_id]
        pauser = threading.Thread(
            target=lambda: done.append(service.pause(engine, schedule_id, reason="outage"))
        )
        pauser.start()
        pauser.join(0.5)
        assert pauser.is_alive()  # waiting for the beat's lock
        schedules.advance(beat, [schedule_id], [datetime(2099, 1, 1, tzinfo=UTC)], [None], [0])
        claim.commit()
    pauser.join(10)

    assert len(done) == 1
    final = _db_row(engine, schedule_id)
    assert (final["enabled"], final["next_run_at"], final["paused_reason"]) == (
        False,
        None,
        "outage",
    )
    assert [h["action"] for h in _history(engine, schedule_id)] == ["create", "pause"]


# --- pause by plain SQL -----------------------------------------------------------------


def test_plain_sql_pauses_and_resumes_in_one_statement(engine: Engine, psql: Psql) -> None:
    created = service.create_schedule(engine, _spec())

    psql("UPDATE scout_schedules SET paused_reason = 'db maintenance'")
    paused = _db_row(engine, created["id"])
    assert paused["enabled"] is False
    assert paused["paused_at"] is not None
    assert paused["paused_by"] == PSQL

    psql("UPDATE scout_schedules SET enabled = true")
    resumed = _db_row(engine, created["id"])
    assert (resumed["paused_reason"], resumed["paused_at"], resumed["paused_by"]) == (None,) * 3
    # Re-enabling by hand recomputes the next slot (the 0001 trigger still works).
    assert resumed["next_run_at"] is None
    assert [(h["action"], h["actor"]) for h in _history(engine, created["id"])][1:] == [
        ("pause", PSQL),
        ("resume", PSQL),
    ]


def test_plain_sql_disable_needs_no_reason(engine: Engine, psql: Psql) -> None:
    created = service.create_schedule(engine, _spec())
    psql("UPDATE scout_schedules SET enabled = false")
    disabled = _db_row(engine, created["id"])
    assert (disabled["enabled"], disabled["paused_reason"]) == (False, None)
    assert _history(engine, created["id"])[-1]["action"] == "disable"


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE scout_schedules SET paused_at = now()",
        "UPDATE scout_schedules SET paused_by = 'someone'",
        "UPDATE scout_schedules SET paused_reason = ''",
        "UPDATE scout_schedules SET paused_reason = repeat('x', 501)",
        "UPDATE scout_schedules SET jitter_seconds = 3601",
        "UPDATE scout_schedules SET jitter_seconds = -1",
        "UPDATE scout_schedules SET description = repeat('x', 2001)",
        "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies, "
        "paused_reason, paused_at) VALUES ('p', '0 * * * *', 's', 1, 'why', now())",
    ],
)
def test_the_database_refuses_inconsistent_pause_and_bounds(engine: Engine, statement: str) -> None:
    created = service.create_schedule(engine, _spec())
    with pytest.raises(IntegrityError):
        execute(engine, statement)
    assert _db_row(engine, created["id"]) == created


# --- run now ------------------------------------------------------------------------


def test_run_now_creates_a_linked_manual_run_and_publishes_it(
    engine: Engine, publisher, event_queue
) -> None:
    created = service.create_schedule(engine, _spec(source="kraken", max_strategies=42))
    history_before = _history(engine, created["id"])

    run, delivered = service.run_now(engine, "Daily Scout Run", actor="alice", publisher=publisher)

    assert delivered is True
    assert run == row(engine, "SELECT * FROM scout_runs")
    assert run["schedule_id"] == created["id"]
    assert run["trigger_type"] == "manual"
    assert run["scheduled_for"] is None
    assert (run["source"], run["max_strategies"]) == ("kraken", 42)
    assert run["triggered_by"] == "alice"
    assert run["status"] == "pending"
    after = _db_row(engine, created["id"])
    assert after["next_run_at"] == created["next_run_at"]
    assert after["last_run_id"] == run["id"]
    assert _history(engine, created["id"]) == history_before  # not a change of the schedule
    assert count(engine, "scout_outbox") == 0

    (event,) = event_queue.get(timeout=10)
    assert event.routing_key == "scout.trigger"
    assert event.body.keys() >= TRIGGER_KEYS
    assert event.properties["message_id"] == event.body["event_id"]
    assert event.body["run_id"] == str(run["id"])
    assert event.body["schedule_id"] == str(created["id"])
    assert event.body["scheduled_for"] is None
    assert event.body["trigger_type"] == "manual"
    assert (event.body["source"], event.body["max_strategies"]) == ("kraken", 42)
    assert event.body["triggered_by"] == "alice"


def test_run_now_without_a_broker_leaves_the_event_in_the_outbox(engine: Engine) -> None:
    created = service.create_schedule(engine, _spec())

    first, delivered = service.run_now(engine, created["id"], triggered_by="deploy hook")
    second, _ = service.run_now(engine, str(created["id"]))

    assert delivered is False
    assert first["triggered_by"] == "deploy hook"
    assert second["triggered_by"] == "Manual trigger"
    queued = rows(engine, "SELECT run_id, routing_key, payload FROM scout_outbox ORDER BY id")
    assert [q["run_id"] for q in queued] == [first["id"], second["id"]]
    assert {q["routing_key"] for q in queued} == {"scout.trigger"}
    assert queued[0]["payload"]["schedule_id"] == str(created["id"])
    assert queued[0]["payload"]["scheduled_for"] is None


def test_run_now_works_for_a_paused_schedule_and_keeps_it_paused(engine: Engine) -> None:
    created = service.create_schedule(engine, _spec())
    service.pause(engine, created["id"], reason="r")

    run, _ = service.run_now(engine, created["id"])

    assert run["schedule_id"] == created["id"]
    paused = _db_row(engine, created["id"])
    assert (paused["enabled"], paused["paused_reason"], paused["next_run_at"]) == (False, "r", None)


def test_run_now_refusals_write_nothing(engine: Engine) -> None:
    service.create_schedule(engine, _spec())
    before = counts(engine)

    with pytest.raises(ScheduleNotFound):
        service.run_now(engine, uuid.uuid4())
    with pytest.raises(ScheduleNotFound):
        service.run_now(engine, "nope")
    for bad in ("", "  ", "x" * 256):
        with pytest.raises(InvalidInput) as caught:
            service.run_now(engine, "Daily Scout Run", triggered_by=bad)
        assert caught.value.field == "triggered_by"

    assert counts(engine) == before


def test_a_fired_slot_after_run_now_still_gets_its_run(engine: Engine) -> None:
    """A manual run has no slot: it never takes the slot's place under the unique key."""
    insert_due_schedules(engine, 1, cron="* * * * *")
    schedule = row(engine, "SELECT * FROM scout_schedules")
    service.run_now(engine, schedule["id"])

    assert firing.fire_due(engine, None).runs == 1
    kinds = rows(engine, "SELECT trigger_type, scheduled_for FROM scout_runs ORDER BY created_at")
    assert [k["trigger_type"] for k in kinds] == ["manual", "scheduled"]
    assert kinds[1]["scheduled_for"] is not None


# --- history paging -----------------------------------------------------------------------


def test_history_is_paged_newest_first(engine: Engine) -> None:
    created = service.create_schedule(engine, _spec(), actor="a")
    for n in range(1, 6):
        service.update_schedule(engine, created["id"], {"max_strategies": n}, actor=f"u{n}")

    first, total = service.history(engine, created["id"], page=1, page_size=2)
    second, _ = service.history(engine, "Daily Scout Run", page=2, page_size=2)
    last, _ = service.history(engine, created["id"], page=3, page_size=2)
    beyond, _ = service.history(engine, created["id"], page=4, page_size=2)

    assert total == 6
    assert [i["actor"] for i in first + second + last] == ["u5", "u4", "u3", "u2", "u1", "a"]
    assert beyond == []
    assert first[0]["changes"] == {"max_strategies": [4, 5]}
    assert set(first[0]) == {"id", "schedule_id", "at", "actor", "action", "changes"}
    assert first[0]["at"] >= first[1]["at"]


@pytest.mark.parametrize(
    ("page", "page_size", "field"),
    [(0, 10, "page"), (1, 0, "page_size"), (1, 1001, "page_size"), ("1", 10, "page")],
)
def test_history_paging_bounds(engine: Engine, page: Any, page_size: Any, field: str) -> None:
    created = service.create_schedule(engine, _spec())
    with pytest.raises(InvalidInput) as caught:
        service.history(engine, created["id"], page=page, page_size=page_size)
    assert caught.value.field == field


# --- the new writable fields flow through create and update --------------------------------


def test_description_and_jitter_are_written_and_returned(engine: Engine) -> None:
    created = service.create_schedule(engine, _spec(description="nightly", jitter_seconds=60))
    assert (created["description"], created["jitter_seconds"]) == ("nightly", 60)
    assert created["managed_by"] is None

    updated = service.update_schedule(engine, created["id"], {"jitter_seconds": 0})
    assert updated == _db_row(engine, created["id"])
    assert (updated["description"], updated["jitter_seconds"]) == ("nightly", 0)
    # Jitter moves the due instant, not the slot: next_run_at stays.
    assert updated["next_run_at"] == created["next_run_at"]

    defaults = service.create_schedule(engine, _spec(name="plain"))
    assert (defaults["description"], defaults["jitter_seconds"]) == ("", 0)
