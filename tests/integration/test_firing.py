"""Firing due schedules against the real database and broker."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from scout_tasks import cron, firing, schedules
from scout_tasks.events import iso
from tests.integration.helpers import (
    TRIGGER_KEYS,
    count,
    execute,
    insert_due_schedules,
    row,
    rows,
    scalar,
    wait_for_depth,
)

# Yearly (or rarer) expressions: exactly one slot is missed whatever the wall
# clock says when the test runs, so scheduled_for is the old next_run_at.
DUE = [
    # (name, cron, timezone, next_run_at as SQL)
    ("Daily Scout Run", "0 0 1 1 *", "UTC", "date_trunc('year', now())"),
    ("tokyo off-grid", "30 6 1 JAN *", "Asia/Tokyo", "now() - interval '1 minute'"),
    ("leap day", "0 12 29 2 *", "America/New_York", "now() - interval '3 hours'"),
]


def _insert(engine: Engine, name: str, expr: str, zone: str, next_sql: str, n: int = 10) -> None:
    execute(
        engine,
        "INSERT INTO scout_schedules (name, cron_expression, timezone, source, max_strategies, "
        f"next_run_at) VALUES (:name, :expr, :zone, 'stratninja', :n, {next_sql})",
        name=name,
        expr=expr,
        zone=zone,
        n=n,
    )


def _schedules(engine: Engine) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in rows(engine, "SELECT * FROM scout_schedules")}


def test_fire_due_creates_one_run_and_one_event_per_schedule(
    engine: Engine, publisher, event_queue
) -> None:
    for i, (name, expr, zone, next_sql) in enumerate(DUE):
        _insert(engine, name, expr, zone, next_sql, n=i + 1)
    _insert(engine, "later", "0 0 1 1 *", "UTC", "now() + interval '1 hour'")
    before = _schedules(engine)
    db_before = scalar(engine, "SELECT now()")

    report = firing.fire_due(engine, publisher)

    db_after = scalar(engine, "SELECT now()")
    assert report.runs == 3
    assert report.published == 3
    assert report.publish_failed is False
    after = _schedules(engine)
    all_runs = rows(engine, "SELECT * FROM scout_runs")
    assert len(all_runs) == 3
    runs_by_schedule = {r["schedule_id"]: r for r in all_runs}
    for i, (name, expr, zone, _sql) in enumerate(DUE):
        old, new = before[name], after[name]
        run = runs_by_schedule[old["id"]]
        assert run["status"] == "pending"
        assert run["trigger_type"] == "scheduled"
        assert run["triggered_by"] == name
        assert run["source"] == "stratninja"
        assert run["max_strategies"] == i + 1
        assert run["scheduled_for"] == old["next_run_at"]
        # The next cron slot after now, in the schedule's own zone.
        assert new["next_run_at"] > db_after
        assert new["next_run_at"] == cron.next_after(expr, zone, db_before)
        assert new["last_run_id"] == run["id"]
        assert db_before <= new["last_run_at"] <= db_after
        assert new["last_error"] is None
    # Nothing fires before its next_run_at.
    assert after["later"]["next_run_at"] == before["later"]["next_run_at"]
    assert after["later"]["last_run_id"] is None
    assert count(engine, "scout_outbox") == 0

    events = event_queue.get(timeout=10, count=3)
    assert len(events) == 3
    assert event_queue.get(timeout=0.5) == []
    by_run = {e.body["run_id"]: e for e in events}
    assert by_run.keys() == {str(r["id"]) for r in all_runs}
    for run in all_runs:
        event = by_run[str(run["id"])]
        body = event.body
        assert event.routing_key == "scout.trigger"
        assert event.properties["content_type"] == "application/json"
        assert event.properties["delivery_mode"] == 2
        assert event.properties["message_id"] == body["event_id"]
        assert body.keys() >= TRIGGER_KEYS
        assert uuid.UUID(body["event_id"])
        assert body["event_type"] == "scout.trigger"
        assert body["trigger_type"] == "scheduled"
        assert body["triggered_by"] == run["triggered_by"]
        assert body["source"] == run["source"]
        assert body["max_strategies"] == run["max_strategies"]
        assert body["schedule_id"] == str(run["schedule_id"])
        assert body["scheduled_for"] == iso(run["scheduled_for"])
        assert datetime.fromisoformat(body["scheduled_for"]) == run["scheduled_for"]
        stamp = datetime.fromisoformat(body["timestamp"])
        assert stamp.utcoffset() == timedelta(0)
        assert db_before <= stamp <= db_after

    again = firing.fire_due(engine, publisher)

    assert again.runs == 0
    assert again.claimed == 0
    assert count(engine, "scout_runs") == 3
    assert _schedules(engine) == after
    assert event_queue.get(timeout=0.5) == []


def test_an_off_grid_next_run_at_returns_to_the_cron_slots(engine: Engine, publisher) -> None:
    _insert(engine, "off-grid", "0 0 1 1 *", "UTC", "now() - interval '17 seconds'")
    old = _schedules(engine)["off-grid"]["next_run_at"]
    assert old.second != 0 or old.microsecond != 0

    firing.fire_due(engine, publisher)

    run = row(engine, "SELECT * FROM scout_runs")
    assert run["scheduled_for"] == old
    next_run_at = _schedules(engine)["off-grid"]["next_run_at"]
    assert (next_run_at.month, next_run_at.day, next_run_at.hour, next_run_at.minute) == (
        1,
        1,
        0,
        0,
    )
    assert next_run_at.year == datetime.now(UTC).year + 1


def test_a_batch_larger_than_batch_size_fires_everything_once(
    engine: Engine, publisher, event_queue
) -> None:
    insert_due_schedules(engine, 2500, cron="0 0 1 1 *")
    assert count(engine, "scout_schedules") == 2500

    started = time.monotonic()
    report = firing.fire_due(engine, publisher, batch_size=1000)
    elapsed = time.monotonic() - started

    assert report.claimed == 2500
    assert report.runs == 2500
    assert report.published == 2500
    assert count(engine, "scout_runs") == 2500
    assert (
        scalar(
            engine,
            "SELECT count(*) FROM (SELECT DISTINCT schedule_id, scheduled_for FROM scout_runs) d",
        )
        == 2500
    )
    assert scalar(engine, "SELECT count(DISTINCT schedule_id) FROM scout_runs") == 2500
    assert scalar(engine, "SELECT count(*) FROM scout_schedules WHERE next_run_at <= now()") == 0
    assert (
        scalar(
            engine,
            "SELECT count(*) FROM scout_schedules s JOIN scout_runs r ON r.id = s.last_run_id "
            "WHERE r.schedule_id = s.id",
        )
        == 2500
    )
    assert count(engine, "scout_outbox") == 0
    assert wait_for_depth(event_queue, 2500) == 2500
    assert elapsed < 60, f"firing 2,500 schedules took {elapsed:.1f}s"

    assert firing.fire_due(engine, publisher, batch_size=1000).runs == 0
    assert count(engine, "scout_runs") == 2500


def test_a_burst_is_handed_on_once_as_soon_as_a_claim_comes_back_full(
    engine: Engine, publisher
) -> None:
    insert_due_schedules(engine, 25, cron="0 0 1 1 *")
    seen: list[tuple[int, int]] = []

    def fan_out() -> None:
        # Another connection sees no run yet: the hand-over comes before the first write.
        seen.append((count(engine, "scout_runs"), count(engine, "scout_outbox")))

    report = firing.fire_due(engine, publisher, batch_size=10, on_full_batch=fan_out)

    assert report.runs == 25
    assert seen == [(0, 0)]  # once, although two claims came back full


def test_one_of_a_pair_hands_on_only_after_its_second_full_claim(engine: Engine, publisher) -> None:
    # The beat sent two fire tasks for this burst: the first two batches are theirs.
    insert_due_schedules(engine, 25, cron="0 0 1 1 *")
    seen: list[int] = []

    report = firing.fire_due(
        engine,
        publisher,
        batch_size=10,
        on_full_batch=lambda: seen.append(count(engine, "scout_runs")),
        hand_over_on=2,
    )

    assert report.runs == 25
    # Called while the second claim is held: the first batch is committed, not the second.
    assert seen == [10]


def test_a_pair_that_shares_two_batches_hands_nothing_on(engine: Engine, publisher) -> None:
    insert_due_schedules(engine, 20, cron="0 0 1 1 *")
    calls: list[None] = []

    with engine.begin() as conn:
        # The pair's other task holds one batch (claimed, not yet written).
        other = schedules.claim_due(conn, 10)
        report = firing.fire_due(
            engine,
            publisher,
            batch_size=10,
            on_full_batch=lambda: calls.append(None),
            hand_over_on=2,
        )
    assert len(other) == 10
    assert report.runs == 10
    assert calls == []


def test_a_burst_smaller_than_a_batch_is_not_handed_on(engine: Engine, publisher) -> None:
    insert_due_schedules(engine, 9, cron="0 0 1 1 *")
    calls: list[None] = []

    report = firing.fire_due(
        engine, publisher, batch_size=10, on_full_batch=lambda: calls.append(None)
    )

    assert report.runs == 9
    assert calls == []


def test_missed_slots_are_coalesced_into_one_run(engine: Engine, publisher) -> None:
    _insert(engine, "every minute", "* * * * *", "UTC", "now() - interval '2 hours'")
    old = _schedules(engine)["every minute"]["next_run_at"]
    db_before = scalar(engine, "SELECT now()")

    report = firing.fire_due(engine, publisher)

    db_after = scalar(engine, "SELECT now()")
    assert report.runs == 1
    run = row(engine, "SELECT * FROM scout_runs")
    # The one run is for the latest missed slot, not the first.
    slot = run["scheduled_for"]
    assert slot > old
    assert slot.second == 0 and slot.microsecond == 0
    assert db_before - timedelta(minutes=1) < slot <= db_after
    schedule = _schedules(engine)["every minute"]
    assert schedule["next_run_at"] == slot + timedelta(minutes=1)
    assert schedule["next_run_at"] > db_before
    assert schedule["last_run_id"] == run["id"]


def test_disabled_schedules_do_not_fire(engine: Engine, publisher) -> None:
    _insert(engine, "off", "0 0 1 1 *", "UTC", "now() - interval '1 minute'")
    execute(engine, "UPDATE scout_schedules SET enabled = false")

    report = firing.fire_due(engine, publisher)

    assert report.runs == 0
    assert count(engine, "scout_runs") == 0
