"""policy.plan_batch: a claimed batch planned as a value, one bad schedule never stalling the rest.

Time is an argument; expectations are ISO strings in UTC, as the database stores them.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

from scout_tasks.policy import OUT_OF_RANGE, Advance, plan_batch
from scout_tasks.schedules import DueSchedule

NOW = datetime.fromisoformat("2025-01-01T10:05:02+00:00")


def due(name: str, expr: str = "*/5 * * * *", **changes: object) -> DueSchedule:
    base = DueSchedule(
        id=uuid.uuid5(uuid.NAMESPACE_URL, name),
        name=name,
        cron_expression=expr,
        timezone="UTC",
        source="stratninja",
        max_strategies=10,
        next_run_at=datetime.fromisoformat("2025-01-01T10:05:00+00:00"),
        misfire_policy="coalesce",
        misfire_grace_seconds=60,
        overlap_policy="allow",
        last_run_status=None,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_an_empty_batch_plans_nothing() -> None:
    batch = plan_batch([], NOW)

    assert (batch.runs, batch.advances, batch.invalid, batch.skipped) == ([], [], [], 0)


def test_runs_carry_the_schedule_and_slot() -> None:
    a, b = due("a"), due("b", source="other", max_strategies=3)

    batch = plan_batch([a, b], NOW)

    assert [(r.schedule_id, r.scheduled_for.isoformat(), r.source, r.max_strategies,
             r.triggered_by) for r in batch.runs] == [
        (a.id, "2025-01-01T10:05:00+00:00", "stratninja", 10, "a"),
        (b.id, "2025-01-01T10:05:00+00:00", "other", 3, "b"),
    ]  # fmt: skip
    assert batch.advances == [
        Advance(a.id, datetime(2025, 1, 1, 10, 10, tzinfo=UTC), 0, None, a.next_run_at),
        Advance(b.id, datetime(2025, 1, 1, 10, 10, tzinfo=UTC), 0, None, b.next_run_at),
    ]
    assert batch.invalid == []


def test_skipped_slots_are_summed_and_explained() -> None:
    late = due(
        "late",
        misfire_policy="skip",
        next_run_at=datetime.fromisoformat("2025-01-01T09:00:00+00:00"),
    )

    batch = plan_batch([late], NOW)

    assert [r.scheduled_for.isoformat() for r in batch.runs] == ["2025-01-01T10:05:00+00:00"]
    # 09:00 .. 10:00 is 13 slots, all older than the grace.
    assert batch.skipped == 13
    assert batch.advances[0].reason == "misfire"


def test_overlap_skip_plans_no_run_but_advances() -> None:
    busy = due("busy", overlap_policy="skip", last_run_status="running")

    batch = plan_batch([busy], NOW)

    assert batch.runs == []
    assert [(a.next_run_at.isoformat(), a.skipped, a.reason) for a in batch.advances] == [
        ("2025-01-01T10:10:00+00:00", 1, "overlap")
    ]


def test_each_unplannable_schedule_is_set_aside_with_its_reason() -> None:
    good_before, good_after = due("before"), due("after")
    bad_cron = due("bad cron", expr="61 * * * *")
    bad_zone = due("bad zone", timezone="Mars/Olympus_Mons")
    too_old = due("too old", next_run_at=None)
    # Year 1 in a zone west of UTC is before year 1 there; cron treats it as the
    # start of the calendar, so the schedule still plans.
    year_one = due(
        "year one",
        timezone="America/New_York",
        next_run_at=datetime(1, 1, 1, tzinfo=UTC),
    )

    batch = plan_batch([good_before, bad_cron, bad_zone, too_old, year_one, good_after], NOW)

    planned = [good_before.id, year_one.id, good_after.id]
    assert [r.schedule_id for r in batch.runs] == planned
    assert [a.schedule_id for a in batch.advances] == planned
    reasons = {i.schedule_id: i.error for i in batch.invalid}
    assert list(reasons) == [bad_cron.id, bad_zone.id, too_old.id]
    assert reasons[bad_cron.id].startswith("cannot evaluate '61 * * * *' in UTC: ")
    assert "Mars/Olympus_Mons" in reasons[bad_zone.id]
    assert reasons[too_old.id] == OUT_OF_RANGE


def test_the_end_of_time_sets_schedules_aside() -> None:
    # 9999-12-31 is as late as Python goes: there is no next slot to advance to.
    end = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
    last = due("last", next_run_at=datetime(9999, 12, 31, 23, 55, tzinfo=UTC))

    batch = plan_batch([last], end)

    assert batch.runs == [] and batch.advances == []
    assert [i.error for i in batch.invalid] == [
        "cannot evaluate '*/5 * * * *' in UTC: cron_expression: '*/5 * * * *' has no fire "
        "time after 9999-12-31T23:55:00+00:00 (the calendar ends in 9999)"
    ]


def test_a_slot_in_year_one_fires_now_and_counts_the_skips() -> None:
    first = due("first", next_run_at=datetime(1, 1, 1, tzinfo=UTC), misfire_policy="skip")

    batch = plan_batch([first], NOW)

    assert [r.scheduled_for.isoformat() for r in batch.runs] == ["2025-01-01T10:05:00+00:00"]
    # Counting walks at most 10,000 slots: a lower bound, not a hang.
    assert [(a.next_run_at.isoformat(), a.skipped) for a in batch.advances] == [
        ("2025-01-01T10:10:00+00:00", 9999)
    ]
