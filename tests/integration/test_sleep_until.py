"""``db.sleep_until``: a fire task sent ahead waits for its slot by the database's clock."""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import Engine

from scout_tasks import db
from tests.integration.helpers import scalar


def test_it_returns_once_the_database_clock_has_passed_the_instant(engine: Engine) -> None:
    instant = scalar(engine, "SELECT clock_timestamp()") + timedelta(seconds=0.3)
    started = time.monotonic()
    db.sleep_until(engine, instant, longest=5)
    assert time.monotonic() - started >= 0.25
    # What a claim's transaction would read as now() is past the instant.
    assert scalar(engine, "SELECT now()") > instant


def test_a_past_instant_does_not_wait(engine: Engine) -> None:
    instant = scalar(engine, "SELECT now()") - timedelta(seconds=10)
    started = time.monotonic()
    db.sleep_until(engine, instant, longest=5)
    assert time.monotonic() - started < 0.5


def test_it_waits_no_longer_than_it_is_allowed(engine: Engine) -> None:
    instant = scalar(engine, "SELECT now()") + timedelta(hours=1)
    started = time.monotonic()
    db.sleep_until(engine, instant, longest=0.2)
    assert time.monotonic() - started < 2
