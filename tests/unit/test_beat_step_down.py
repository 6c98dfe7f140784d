"""A leading beat whose sends all fail lets the leader lock go, so a standby can send.

The database is replaced by a scripted listener and the broker by a send_task that
fails or succeeds on demand: what is tested is ScoutScheduler._pass and _send.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from scout_tasks import beat
from scout_tasks.horizon import Horizon

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TICK = 30.0


@dataclass
class _Listener:
    leads: list[bool] = field(default_factory=list)
    stepped_down: int = 0
    waits: list[float] = field(default_factory=list)

    def try_lead(self) -> bool:
        return self.leads.pop(0) if self.leads else True

    def step_down(self) -> None:
        self.stepped_down += 1

    def horizon(self) -> Horizon:
        return Horizon(NOW, None, False)

    def record_tick(self, leader: str, tick_seconds: float) -> None:
        pass

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        return False


@dataclass
class _Beat:
    scheduler: beat.ScoutScheduler
    listener: _Listener
    clock: list[float]
    broker_up: list[bool]

    def run(self, at: float) -> None:
        self.clock[0] = at
        self.scheduler._pass()


@pytest.fixture
def the_beat(monkeypatch: pytest.MonkeyPatch) -> _Beat:
    clock = [1000.0]
    monkeypatch.setattr(beat, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    scheduler = object.__new__(beat.ScoutScheduler)
    listener = _Listener()
    broker_up = [True]

    def send_task(*_: Any, **__: Any) -> None:
        if not broker_up[0]:
            raise ConnectionRefusedError("broker unreachable")

    scheduler.__dict__.update(
        _settings=SimpleNamespace(tick_seconds=TICK, fire_batch_size=10),
        _listener=listener,
        _leader=True,
        _next_tick=0.0,
        _last_fire=None,
        _last_fire_sent=0.0,
        _early=False,
        _notified=False,
        _failing_since=None,
        _rest_until=0.0,
        _name="test",
        app=SimpleNamespace(send_task=send_task),
    )
    return _Beat(scheduler, listener, clock, broker_up)


def test_a_leader_whose_sends_all_fail_steps_down_and_rests(the_beat: _Beat) -> None:
    the_beat.broker_up[0] = False
    the_beat.run(1000.0)  # the tick fails: the count starts
    the_beat.run(1000.0 + beat.step_down_after(TICK) - 1)
    assert the_beat.listener.stepped_down == 0
    the_beat.run(1000.0 + beat.step_down_after(TICK))
    assert the_beat.listener.stepped_down == 1
    assert the_beat.scheduler._leader is False
    # While it rests it does not ask for the lock, so a standby gets it.
    the_beat.listener.leads = [True]
    the_beat.run(1000.0 + beat.step_down_after(TICK) + 1)
    assert the_beat.scheduler._leader is False
    assert the_beat.listener.leads == [True]
    # Rested, it asks again: the only beat left leads again and counts afresh.
    rested = 1000.0 + beat.step_down_after(TICK) + beat.STEP_DOWN_REST
    the_beat.run(rested)
    assert the_beat.scheduler._leader is True
    assert the_beat.scheduler._failing_since == rested


def test_one_send_that_goes_out_resets_the_count(the_beat: _Beat) -> None:
    the_beat.broker_up[0] = False
    the_beat.run(1000.0)
    the_beat.broker_up[0] = True
    the_beat.scheduler._next_tick = 0.0
    the_beat.run(1000.0 + TICK)
    the_beat.run(1000.0 + beat.step_down_after(TICK) + 1)
    assert the_beat.listener.stepped_down == 0
    assert the_beat.scheduler._leader is True


def test_an_hour_long_tick_period_still_hands_over_within_a_minute(the_beat: _Beat) -> None:
    # SCOUT_TICK_SECONDS may be 3600. The leader waited a whole tick period between
    # queries, so the server could end its session only after an hour and a half
    # minute idle (a frozen leader kept the lock, and nothing fired, that long), and
    # a leader cut off from RabbitMQ stepped down only after two hours of failing.
    hour = 3600.0
    the_beat.scheduler._settings.tick_seconds = hour
    the_beat.run(1000.0)
    assert the_beat.listener.waits[-1] <= beat.LEADER_PERIOD_MAX
    assert beat.idle_session_timeout(hour) == beat.LEADER_PERIOD_MAX + beat.IDLE_SESSION_MARGIN
    the_beat.broker_up[0] = False
    the_beat.scheduler._next_tick = 0.0
    the_beat.run(1001.0)  # the tick fails: the count starts
    the_beat.run(1001.0 + 2 * beat.LEADER_PERIOD_MAX)
    assert the_beat.listener.stepped_down == 1
