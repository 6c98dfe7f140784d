"""The beat's decisions around a slot sent ahead (EARLY_LEAD), driven pass by pass.

The database and the broker are replaced by the horizons each pass reads and a
list of what the beat sends: what is tested is ScoutScheduler._pass's own logic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from scout_tasks import beat
from scout_tasks.horizon import Horizon

SLOT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@dataclass
class _Listener:
    """Hands out scripted horizons; each wait reports a scripted NOTIFY."""

    clock: list[float]
    horizons: list[Horizon] = field(default_factory=list)
    notify: list[bool] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)

    def horizon(self) -> Horizon:
        return self.horizons.pop(0)

    def record_tick(self, leader: str, tick_seconds: float) -> None:
        pass

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        return self.notify.pop(0) if self.notify else False


@dataclass
class _Beat:
    scheduler: beat.ScoutScheduler
    listener: _Listener
    clock: list[float]
    sent: list[dict[str, Any]]

    def run(self, at: float, seen: Horizon, *, notified: bool = False) -> list[dict[str, Any]]:
        """One pass at monotonic ``at`` reading ``seen``; what it sent."""
        self.clock[0] = at
        self.listener.horizons.append(seen)
        self.listener.notify.append(notified)
        before = len(self.sent)
        self.scheduler._pass()
        return self.sent[before:]


@pytest.fixture
def the_beat(monkeypatch: pytest.MonkeyPatch) -> _Beat:
    clock = [1000.0]
    monkeypatch.setattr(beat, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    scheduler = object.__new__(beat.ScoutScheduler)
    listener = _Listener(clock)
    sent: list[dict[str, Any]] = []

    def send(task: str, slot: datetime, copies: int = 1, *, early: bool = False) -> bool:
        sent.append({"task": task, "slot": slot, "copies": copies, "early": early})
        return True

    scheduler.__dict__.update(
        _settings=SimpleNamespace(tick_seconds=30.0, fire_batch_size=10),
        _listener=listener,
        _leader=True,
        _next_tick=float("inf"),
        _last_fire=None,
        _last_fire_sent=0.0,
        _early=False,
        _notified=False,
        _failing_since=None,
        _rest_until=0.0,
        _name="test",
        _send=send,
    )
    return _Beat(scheduler, listener, clock, sent)


def _at(seconds: float) -> datetime:
    return SLOT + timedelta(seconds=seconds)


def test_a_slot_is_sent_once_ahead_and_not_again_at_the_slot(the_beat: _Beat) -> None:
    # latest_due reads the latest next_run_at due by the earliest instant.
    ahead = Horizon(_at(-0.15), SLOT, False, latest_due=SLOT)
    assert [s["early"] for s in the_beat.run(1000.0, ahead)] == [True]
    at_slot = Horizon(_at(0.002), SLOT, False, latest_due=SLOT)
    assert the_beat.run(1000.152, at_slot) == []


def test_a_jittered_slot_sent_ahead_is_not_sent_again_at_its_instant(the_beat: _Beat) -> None:
    # next_run_at (the slot) passed; slot + d (5 s) is the instant it is due.
    instant = _at(5)
    ahead = Horizon(_at(4.85), instant, False, latest_due=SLOT)
    assert [(s["slot"], s["early"]) for s in the_beat.run(1000.0, ahead)] == [(instant, True)]
    at_instant = Horizon(_at(5.002), instant, False, latest_due=SLOT)
    # One fire task per instant, as for a slot without jitter: the one sent
    # ahead claims it. (Sent again at once, it doubled a jittered herd's tasks.)
    assert the_beat.run(1000.152, at_instant) == []
    # Still due half a second on, with no commit: sent again, unmarked.
    later = Horizon(_at(5.52), instant, False, latest_due=SLOT)
    assert [s["early"] for s in the_beat.run(1000.67, later)] == [False]


def test_a_notify_before_the_slot_does_not_delay_the_check_after_it(the_beat: _Beat) -> None:
    ahead = Horizon(_at(-0.15), SLOT, False, latest_due=SLOT)
    the_beat.run(1000.0, ahead)
    # Another schedule's change NOTIFYs the beat before the slot; the horizon stays.
    notified = Horizon(_at(-0.1), SLOT, False, latest_due=SLOT)
    assert the_beat.run(1000.05, notified, notified=True) == []
    assert the_beat.run(1000.152, Horizon(_at(0.002), SLOT, False, latest_due=SLOT)) == []
    # The task sent ahead was lost (or reached a worker that fired too soon):
    # sent again EARLY_CHECK after the slot, not RESEND_AFTER_NOTIFY.
    assert the_beat.listener.waits[-1] <= beat.EARLY_CHECK
    late = Horizon(_at(beat.EARLY_CHECK + 0.01), SLOT, False, latest_due=SLOT)
    assert [s["early"] for s in the_beat.run(1000.15 + beat.EARLY_CHECK + 0.01, late)] == [False]


def test_a_jittered_herd_is_sent_one_task_per_cadence_not_a_pair(the_beat: _Beat) -> None:
    # A bounded horizon: the herd's slot is a lower bound, and the due count
    # (read without jitter) counts the whole herd, not what has come due.
    herd = Horizon(_at(1), SLOT, False, bounded=True, latest_due=SLOT, due_count=1001)
    assert [s["copies"] for s in the_beat.run(1000.0, herd)] == [1]
    later = Horizon(_at(1.3), SLOT, False, bounded=True, latest_due=SLOT, due_count=1001)
    assert [s["copies"] for s in the_beat.run(1000.3, later)] == [1]


def test_a_burst_without_jitter_is_still_sent_as_a_pair(the_beat: _Beat) -> None:
    burst = Horizon(_at(0.002), SLOT, False, latest_due=SLOT, due_count=25)
    assert [s["copies"] for s in the_beat.run(1000.0, burst)] == [2]
