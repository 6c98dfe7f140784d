"""service.preview_fire_times: the ``/next`` preview, pure, with ``now`` an argument.

Europe/Riga leaves EET (+02:00) for EEST (+03:00) at 03:00 on 2025-03-30, so
noon slots around that day show both offsets.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from scout_tasks import policy
from scout_tasks.errors import InvalidCronExpression
from scout_tasks.service import preview_fire_times

NOW = datetime.fromisoformat("2025-03-28T12:00:00+00:00")


def schedule(
    *, enabled: bool = True, next_run_at: str | None = None, expr: str = "0 12 * * *"
) -> dict[str, Any]:
    return {
        "cron_expression": expr,
        "timezone": "Europe/Riga",
        "enabled": enabled,
        "next_run_at": None if next_run_at is None else datetime.fromisoformat(next_run_at),
    }


def iso(times: list[datetime]) -> list[str]:
    return [t.isoformat() for t in times]


def test_disabled_previews_from_now_across_the_dst_change() -> None:
    times = preview_fire_times(
        schedule(enabled=False, next_run_at="2030-01-01T00:00:00+00:00"), NOW, 3
    )
    assert iso(times) == [
        "2025-03-29T12:00:00+02:00",
        "2025-03-30T12:00:00+03:00",
        "2025-03-31T12:00:00+03:00",
    ]


def test_enabled_starts_from_an_off_grid_next_run_at() -> None:
    times = preview_fire_times(schedule(next_run_at="2025-03-29T07:15:00+00:00"), NOW, 3)
    assert iso(times) == [
        "2025-03-29T09:15:00+02:00",
        "2025-03-29T12:00:00+02:00",
        "2025-03-30T12:00:00+03:00",
    ]
    assert iso(preview_fire_times(schedule(next_run_at="2025-03-29T07:15:00+00:00"), NOW, 1)) == [
        "2025-03-29T09:15:00+02:00"
    ]


def test_enabled_but_not_yet_planned_previews_from_now() -> None:
    assert iso(preview_fire_times(schedule(), NOW, 1)) == ["2025-03-29T12:00:00+02:00"]


def test_a_bad_expression_written_by_sql_is_refused_by_name() -> None:
    with pytest.raises(InvalidCronExpression):
        preview_fire_times(schedule(enabled=False, expr="61 * * * *"), NOW, 2)


def overdue(policy: str, grace: int = 60) -> dict[str, Any]:
    """Hourly at :15, planned for 09:15 Riga (07:15 UTC) but not fired: NOW is 12:00 UTC."""
    return {
        **schedule(next_run_at="2025-03-28T07:15:00+00:00", expr="15 * * * *"),
        "misfire_policy": policy,
        "misfire_grace_seconds": grace,
    }


def test_an_overdue_coalesced_schedule_shows_the_one_run_it_makes_then_slots_after_now() -> None:
    # Five slots were missed (07:15 .. 11:15 UTC); coalesce runs the latest
    # one once, then goes on from now: the four before it are never "next".
    assert iso(preview_fire_times(overdue("coalesce"), NOW, 3)) == [
        "2025-03-28T13:15:00+02:00",
        "2025-03-28T14:15:00+02:00",
        "2025-03-28T15:15:00+02:00",
    ]


def test_an_overdue_schedule_with_skip_past_its_grace_shows_only_slots_after_now() -> None:
    assert iso(preview_fire_times(overdue("skip"), NOW, 2)) == [
        "2025-03-28T14:15:00+02:00",
        "2025-03-28T15:15:00+02:00",
    ]


def test_an_overdue_catch_up_schedule_shows_each_slot_in_its_grace() -> None:
    # A grace of 3 hours keeps the slots of 09:15, 10:15 and 11:15 UTC.
    assert iso(preview_fire_times(overdue("catch_up", grace=3 * 3600), NOW, 5)) == [
        "2025-03-28T11:15:00+02:00",
        "2025-03-28T12:15:00+02:00",
        "2025-03-28T13:15:00+02:00",
        "2025-03-28T14:15:00+02:00",
        "2025-03-28T15:15:00+02:00",
    ]


def test_a_preview_never_walks_the_slots_it_would_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    # Counting the skipped slots walks up to 10,000 of them per schedule (a page of
    # 50 every-minute schedules a month overdue took 5.5 s); a preview shows slots only.
    def walked(*_args: object) -> int:
        raise AssertionError("the preview counted skipped slots")

    monkeypatch.setattr(policy, "_count_between", walked)
    month_late = {
        **schedule(next_run_at="2025-02-26T12:00:00+00:00", expr="* * * * *"),
        "misfire_policy": "skip",
        "misfire_grace_seconds": 60,
    }
    # The slot at NOW itself is on time, so it runs; then the next minute.
    assert iso(preview_fire_times(month_late, NOW, 2)) == [
        "2025-03-28T14:00:00+02:00",
        "2025-03-28T14:01:00+02:00",
    ]
