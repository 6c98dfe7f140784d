"""Jitter: d in [0, J), fixed per schedule, and planned so it is never a misfire."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from scout_tasks import jitter
from scout_tasks.policy import plan
from scout_tasks.schedules import DueSchedule

T = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def test_d_is_within_the_window_and_stable_per_id() -> None:
    ids = [uuid.UUID(int=i) for i in range(2000)] + [uuid.uuid4() for _ in range(2000)]

    offsets = [jitter.offset_ms(i, 60) for i in ids]

    assert all(0 <= d < 60_000 for d in offsets)
    assert offsets == [jitter.offset_ms(i, 60) for i in ids]
    # Sequential ids spread too (MD5 mixes): no second of the minute is empty.
    assert len({d // 1000 for d in offsets[:2000]}) == 60
    assert jitter.offset_ms(ids[0], 0) == 0
    assert jitter.offset(ids[5], 1) < timedelta(seconds=1)


def test_known_values_match_the_documented_formula() -> None:
    # d_ms = ((last 32 bits) * 40503 mod 2**32) mod (J * 1000)
    sid = uuid.UUID("12345678-9abc-def0-1234-56789abcdef0")
    assert jitter.offset_ms(sid, 60) == (0x9ABCDEF0 * 40503 % 2**32) % 60_000
    assert jitter.offset_ms(uuid.UUID(int=1), 3600) == 40503
    assert jitter.offset_ms(uuid.UUID(int=2**32), 60) == 0  # only the last 32 bits count


def _due(
    jitter_ms: int, policy: str = "skip", grace: int = 60, expr: str = "* * * * *"
) -> DueSchedule:
    return DueSchedule(
        id=uuid.uuid4(),
        name="j",
        cron_expression=expr,
        timezone="UTC",
        source="s",
        max_strategies=1,
        next_run_at=T,
        misfire_policy=policy,
        misfire_grace_seconds=grace,
        overlap_policy="allow",
        last_run_status=None,
        jitter_ms=jitter_ms,
    )


def test_a_slot_fired_at_slot_plus_d_is_on_time_even_when_d_exceeds_the_grace() -> None:
    d = 3_000_000  # 50 minutes, grace 60 s
    now = T + timedelta(milliseconds=d, seconds=1)

    p = plan(_due(d, "skip", grace=60), now)

    assert p.slots == (T,)
    assert p.skipped == 0
    # The next slot is the one after the schedule's own clock (now - d), not after now.
    assert p.next_run_at == T + timedelta(minutes=1)


def test_lateness_is_measured_from_slot_plus_d() -> None:
    d = 30_000
    late = T + timedelta(milliseconds=d, seconds=61)

    p = plan(_due(d, "skip", grace=60, expr="0 * * * *"), late)

    assert p.slots == ()
    assert p.skipped == 1


def test_a_following_slot_whose_own_instant_has_not_come_is_left_for_later() -> None:
    d = 50_000
    # 09:01:20: the 09:01 slot has passed, but its instant is 09:01:50.
    now = T + timedelta(minutes=1, seconds=20)

    p = plan(_due(d, "coalesce"), now)

    assert p.slots == (T,)
    assert p.next_run_at == T + timedelta(minutes=1)
