"""policy.plan: which slots of a due schedule get a run, with time as an argument.

``next_run_at`` is the first missed slot (possibly off the cron grid), ``now``
is the database's clock at the tick. Expectations are ISO strings in UTC, as
the database stores them.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

import pytest

from scout_tasks.policy import MAX_CATCH_UP, Plan, plan
from scout_tasks.schedules import DueSchedule

POLICIES = ["coalesce", "skip", "catch_up"]


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def due(
    expr: str,
    next_run_at: str,
    *,
    zone: str = "UTC",
    policy: str = "coalesce",
    grace: int = 60,
    overlap: str = "allow",
    last_run_status: str | None = None,
) -> DueSchedule:
    return DueSchedule(
        id=uuid.UUID("6f1c2b9e-0d4e-4a57-9a55-2b8f3c7d1e01"),
        name="Daily Scout Run",
        cron_expression=expr,
        timezone=zone,
        source="stratninja",
        max_strategies=10,
        next_run_at=at(next_run_at),
        misfire_policy=policy,
        misfire_grace_seconds=grace,
        overlap_policy=overlap,
        last_run_status=last_run_status,
    )


def summary(p: Plan) -> dict[str, Any]:
    return {
        "slots": [s.isoformat() for s in p.slots],
        "next_run_at": p.next_run_at.isoformat(),
        "skipped": p.skipped,
        "reason": p.reason,
    }


# --- the common case: one slot, on time ------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_single_slot_on_time(policy: str) -> None:
    p = plan(
        due("*/5 * * * *", "2025-01-01T10:05:00+00:00", policy=policy),
        at("2025-01-01T10:05:02+00:00"),
    )
    assert summary(p) == {
        "slots": ["2025-01-01T10:05:00+00:00"],
        "next_run_at": "2025-01-01T10:10:00+00:00",
        "skipped": 0,
        "reason": None,
    }


@pytest.mark.parametrize("policy", POLICIES)
def test_tick_exactly_at_the_slot(policy: str) -> None:
    p = plan(
        due("0 12 * * *", "2025-01-01T12:00:00+00:00", policy=policy),
        at("2025-01-01T12:00:00+00:00"),
    )
    assert summary(p)["slots"] == ["2025-01-01T12:00:00+00:00"]
    assert summary(p)["next_run_at"] == "2025-01-02T12:00:00+00:00"


# --- misfire policies: beat was down from 03:00 to 10:20 -------------------------------
# An hourly schedule whose next_run_at is 03:00; slots 03:00 .. 10:00 (8 of them)
# were missed. With a 60 s grace, none of them is on time at 10:20.

OUTAGE = ("0 * * * *", "2025-01-01T03:00:00+00:00")


def test_coalesce_runs_the_latest_missed_slot_however_old() -> None:
    p = plan(due(*OUTAGE, policy="coalesce"), at("2025-01-01T10:20:00+00:00"))
    assert summary(p) == {
        "slots": ["2025-01-01T10:00:00+00:00"],
        "next_run_at": "2025-01-01T11:00:00+00:00",
        "skipped": 0,
        "reason": None,
    }


def test_skip_runs_nothing_when_every_slot_is_stale() -> None:
    p = plan(due(*OUTAGE, policy="skip"), at("2025-01-01T10:20:00+00:00"))
    assert summary(p) == {
        "slots": [],
        "next_run_at": "2025-01-01T11:00:00+00:00",
        "skipped": 8,
        "reason": "misfire",
    }


def test_skip_runs_the_on_time_slot_and_counts_the_stale_ones() -> None:
    p = plan(due(*OUTAGE, policy="skip"), at("2025-01-01T10:00:30+00:00"))
    assert summary(p) == {
        "slots": ["2025-01-01T10:00:00+00:00"],
        "next_run_at": "2025-01-01T11:00:00+00:00",
        "skipped": 7,
        "reason": "misfire",
    }


def test_skip_a_single_stale_slot() -> None:
    p = plan(
        due("0 12 * * *", "2025-01-01T12:00:00+00:00", policy="skip", grace=60),
        at("2025-01-01T12:05:00+00:00"),
    )
    assert summary(p) == {
        "slots": [],
        "next_run_at": "2025-01-02T12:00:00+00:00",
        "skipped": 1,
        "reason": "misfire",
    }


def test_catch_up_runs_nothing_when_every_slot_is_stale() -> None:
    p = plan(due(*OUTAGE, policy="catch_up"), at("2025-01-01T10:20:00+00:00"))
    assert summary(p) == {
        "slots": [],
        "next_run_at": "2025-01-01T11:00:00+00:00",
        "skipped": 8,
        "reason": "misfire",
    }


def test_catch_up_runs_every_slot_within_the_grace() -> None:
    # Every 10 minutes from 10:00, now 10:55:30, grace 25 minutes: the window
    # starts at 10:30:30, so 10:40 and 10:50 run; 10:00..10:30 are skipped.
    p = plan(
        due("*/10 * * * *", "2025-01-01T10:00:00+00:00", policy="catch_up", grace=1500),
        at("2025-01-01T10:55:30+00:00"),
    )
    assert summary(p) == {
        "slots": ["2025-01-01T10:40:00+00:00", "2025-01-01T10:50:00+00:00"],
        "next_run_at": "2025-01-01T11:00:00+00:00",
        "skipped": 4,
        "reason": "misfire",
    }


def test_catch_up_runs_them_all_when_all_are_within_the_grace() -> None:
    p = plan(
        due("*/10 * * * *", "2025-01-01T10:00:00+00:00", policy="catch_up", grace=3600),
        at("2025-01-01T10:30:00+00:00"),
    )
    assert summary(p) == {
        "slots": [
            "2025-01-01T10:00:00+00:00",
            "2025-01-01T10:10:00+00:00",
            "2025-01-01T10:20:00+00:00",
            "2025-01-01T10:30:00+00:00",
        ],
        "next_run_at": "2025-01-01T10:40:00+00:00",
        "skipped": 0,
        "reason": None,
    }


def test_catch_up_is_capped() -> None:
    # Every minute for ten hours, all within a one-day grace: 601 slots, of
    # which only the latest MAX_CATCH_UP get a run.
    p = plan(
        due("* * * * *", "2025-01-01T00:00:00+00:00", policy="catch_up", grace=86400),
        at("2025-01-01T10:00:30+00:00"),
    )
    assert MAX_CATCH_UP == 100
    assert len(p.slots) == MAX_CATCH_UP
    assert p.slots[0].isoformat() == "2025-01-01T08:21:00+00:00"
    assert p.slots[-1].isoformat() == "2025-01-01T10:00:00+00:00"
    assert list(p.slots) == sorted(set(p.slots))
    assert p.skipped == 601 - MAX_CATCH_UP
    assert p.next_run_at.isoformat() == "2025-01-01T10:01:00+00:00"


def test_catch_up_with_a_grace_of_decades_walks_only_its_latest_slots() -> None:
    # Written with plain SQL: an int's worth of grace (68 years) and a
    # next_run_at in year 1. Every minute since 1958 is on time, but only the
    # latest MAX_CATCH_UP get a run: walking all 35 million took minutes of
    # CPU and gigabytes while the claim held the whole batch locked.
    started = time.monotonic()
    p = plan(
        due("* * * * *", "0001-01-02T00:00:00+00:00", policy="catch_up", grace=2**31 - 1),
        at("2025-01-01T10:00:30+00:00"),
    )
    assert time.monotonic() - started < 5
    assert len(p.slots) == MAX_CATCH_UP
    assert p.slots[0].isoformat() == "2025-01-01T08:21:00+00:00"
    assert p.slots[-1].isoformat() == "2025-01-01T10:00:00+00:00"
    assert p.next_run_at.isoformat() == "2025-01-01T10:01:00+00:00"


def test_catch_up_of_a_sparse_schedule_still_reaches_back_to_its_first_slot() -> None:
    # Daily, three days missed, a week's grace: the window widens until it
    # reaches next_run_at, which is on time and runs with the rest.
    p = plan(
        due("0 4 * * *", "2025-01-01T04:00:00+00:00", policy="catch_up", grace=7 * 86400),
        at("2025-01-04T05:00:00+00:00"),
    )
    assert [s.isoformat() for s in p.slots] == [
        "2025-01-01T04:00:00+00:00",
        "2025-01-02T04:00:00+00:00",
        "2025-01-03T04:00:00+00:00",
        "2025-01-04T04:00:00+00:00",
    ]
    assert p.skipped == 0


@pytest.mark.parametrize("policy", ["skip", "catch_up"])
def test_a_slot_exactly_grace_seconds_old_is_on_time(policy: str) -> None:
    # Every 10 minutes from 10:00; at 10:21 with a 60 s grace, 10:20 is
    # exactly 60 s old: "no older than misfire_grace_seconds", so on time.
    # 10:00 and 10:10 are stale. skip and catch_up must agree on 10:20.
    p = plan(
        due("*/10 * * * *", "2025-01-01T10:00:00+00:00", policy=policy, grace=60),
        at("2025-01-01T10:21:00+00:00"),
    )
    assert summary(p) == {
        "slots": ["2025-01-01T10:20:00+00:00"],
        "next_run_at": "2025-01-01T10:30:00+00:00",
        "skipped": 2,
        "reason": "misfire",
    }


# --- next_run_at set off the cron grid by an operator ---------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_off_grid_next_run_at_is_the_slot(policy: str) -> None:
    p = plan(
        due("0 * * * *", "2025-01-01T10:07:13+00:00", policy=policy),
        at("2025-01-01T10:07:14+00:00"),
    )
    assert summary(p) == {
        "slots": ["2025-01-01T10:07:13+00:00"],
        "next_run_at": "2025-01-01T11:00:00+00:00",
        "skipped": 0,
        "reason": None,
    }


def test_off_grid_in_the_schedule_zone_returns_to_local_slots() -> None:
    # 09:30 in Kolkata (+05:30) is 04:00Z.
    p = plan(
        due("30 9 * * *", "2025-06-01T12:34:56+00:00", zone="Asia/Kolkata"),
        at("2025-06-01T12:35:00+00:00"),
    )
    assert summary(p) == {
        "slots": ["2025-06-01T12:34:56+00:00"],
        "next_run_at": "2025-06-02T04:00:00+00:00",
        "skipped": 0,
        "reason": None,
    }


def test_off_grid_then_missed_grid_slots_coalesce() -> None:
    p = plan(due("0 * * * *", "2025-01-01T10:07:00+00:00"), at("2025-01-01T12:30:00+00:00"))
    assert summary(p)["slots"] == ["2025-01-01T12:00:00+00:00"]
    assert summary(p)["next_run_at"] == "2025-01-01T13:00:00+00:00"


def test_off_grid_then_missed_grid_slots_catch_up() -> None:
    p = plan(
        due("0 * * * *", "2025-01-01T10:07:00+00:00", policy="catch_up", grace=7200),
        at("2025-01-01T11:00:30+00:00"),
    )
    assert summary(p) == {
        "slots": ["2025-01-01T10:07:00+00:00", "2025-01-01T11:00:00+00:00"],
        "next_run_at": "2025-01-01T12:00:00+00:00",
        "skipped": 0,
        "reason": None,
    }


# --- overlap ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["pending", "running"])
def test_overlap_skip_while_the_previous_run_is_live(status: str) -> None:
    p = plan(
        due("*/5 * * * *", "2025-01-01T10:05:00+00:00", overlap="skip", last_run_status=status),
        at("2025-01-01T10:05:02+00:00"),
    )
    assert summary(p) == {
        "slots": [],
        "next_run_at": "2025-01-01T10:10:00+00:00",
        "skipped": 1,
        "reason": "overlap",
    }


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled", None])
def test_overlap_skip_runs_when_the_previous_run_has_ended(status: str | None) -> None:
    p = plan(
        due("*/5 * * * *", "2025-01-01T10:05:00+00:00", overlap="skip", last_run_status=status),
        at("2025-01-01T10:05:02+00:00"),
    )
    assert summary(p)["slots"] == ["2025-01-01T10:05:00+00:00"]
    assert p.reason is None


@pytest.mark.parametrize("status", ["pending", "running"])
def test_overlap_allow_runs_alongside_a_live_run(status: str) -> None:
    p = plan(
        due("*/5 * * * *", "2025-01-01T10:05:00+00:00", overlap="allow", last_run_status=status),
        at("2025-01-01T10:05:02+00:00"),
    )
    assert summary(p)["slots"] == ["2025-01-01T10:05:00+00:00"]


def test_overlap_skip_counts_the_misfires_too() -> None:
    p = plan(
        due(
            "*/10 * * * *",
            "2025-01-01T10:00:00+00:00",
            policy="catch_up",
            grace=1500,
            overlap="skip",
            last_run_status="running",
        ),
        at("2025-01-01T10:55:30+00:00"),
    )
    assert summary(p) == {
        "slots": [],
        "next_run_at": "2025-01-01T11:00:00+00:00",
        "skipped": 6,
        "reason": "overlap",
    }


# --- DST -------------------------------------------------------------------------------
# America/New_York, 2024-11-03: 02:00 EDT (-04:00) goes back to 01:00 EST
# (-05:00), so 01:30 happens at 05:30Z and again at 06:30Z.
# 2024-03-10: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist.


@pytest.mark.parametrize(
    "now",
    [
        "2024-11-03T05:30:02+00:00",  # on time
        "2024-11-03T06:30:00+00:00",  # late, at the second 01:30
        "2024-11-03T06:45:00+00:00",  # late, after the second 01:30
    ],
)
@pytest.mark.parametrize("policy", POLICIES)
def test_fixed_time_job_on_the_fall_back_night(now: str, policy: str) -> None:
    p = plan(
        due(
            "30 1 * * *",
            "2024-11-03T05:30:00+00:00",
            zone="America/New_York",
            policy=policy,
            grace=7200,
        ),
        at(now),
    )
    assert summary(p) == {
        "slots": ["2024-11-03T05:30:00+00:00"],
        # The next day's 01:30 EST, not the second 01:30 of this night.
        "next_run_at": "2024-11-04T06:30:00+00:00",
        "skipped": 0,
        "reason": None,
    }


def test_hourly_job_on_the_fall_back_night_fires_in_both_passes() -> None:
    p = plan(
        due("0 * * * *", "2024-11-03T05:00:00+00:00", zone="America/New_York"),
        at("2024-11-03T05:00:01+00:00"),
    )
    assert summary(p)["next_run_at"] == "2024-11-03T06:00:00+00:00"


def test_fixed_time_job_in_the_spring_forward_gap() -> None:
    # 02:30 does not exist on 2024-03-10: the slot is 03:00 EDT (07:00Z) and the
    # next is 02:30 EDT the day after (06:30Z).
    p = plan(
        due("30 2 * * *", "2024-03-10T07:00:00+00:00", zone="America/New_York"),
        at("2024-03-10T07:00:01+00:00"),
    )
    assert summary(p) == {
        "slots": ["2024-03-10T07:00:00+00:00"],
        "next_run_at": "2024-03-11T06:30:00+00:00",
        "skipped": 0,
        "reason": None,
    }


def test_coalesce_across_the_fall_back_night() -> None:
    # Beat down from 00:00 EDT to 01:40 EST (06:40Z): the hourly slots 01:00
    # EDT (05:00Z) and 01:00 EST (06:00Z) were both missed; the latest runs.
    p = plan(
        due("0 * * * *", "2024-11-03T04:00:00+00:00", zone="America/New_York"),
        at("2024-11-03T06:40:00+00:00"),
    )
    assert summary(p)["slots"] == ["2024-11-03T06:00:00+00:00"]
    assert summary(p)["next_run_at"] == "2024-11-03T07:00:00+00:00"


def test_catch_up_with_a_huge_grace_walks_only_the_recent_slots() -> None:
    """Plain SQL may set any grace (the CHECK is only >= 0) and any next_run_at: an
    every-minute schedule last due in year 1 with a 68-year grace must not walk 35
    million slots (minutes of CPU, its fire batch held) to keep the last 100."""
    import time

    started = time.monotonic()
    p = plan(
        due("* * * * *", "0001-01-02T00:00:00+00:00", policy="catch_up", grace=2**31 - 1),
        at("2026-12-01T08:00:30+00:00"),
    )
    assert time.monotonic() - started < 2
    assert len(p.slots) == MAX_CATCH_UP
    assert p.slots[0].isoformat() == "2026-12-01T06:21:00+00:00"
    assert p.slots[-1].isoformat() == "2026-12-01T08:00:00+00:00"
    assert p.next_run_at.isoformat() == "2026-12-01T08:01:00+00:00"
