"""Backfill on the real servers: slots, dry run, once only, the cap, and racing a fire batch."""

from __future__ import annotations

import subprocess
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from starlette.exceptions import StarletteDeprecationWarning

from scout_tasks import backfill, firing, runs, service
from scout_tasks.api import create_app
from scout_tasks.errors import InvalidInput
from scout_tasks.publisher import ConfirmingPublisher
from scout_tasks.settings import Settings
from tests.conftest import EventQueue
from tests.integration.helpers import count, counts, execute, row, rows, run_cli

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient


def _schedule(engine: Engine, name: str = "hourly", cron: str = "0 * * * *") -> dict[str, Any]:
    return service.create_schedule(
        engine,
        {"name": name, "cron_expression": cron, "source": "stratninja", "max_strategies": 7},
    )


def _hours_ago(n: int) -> datetime:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return now - timedelta(hours=n)


def test_backfill_creates_one_run_per_missing_slot_and_nothing_the_second_time(
    engine: Engine, publisher: ConfirmingPublisher, event_queue: EventQueue
) -> None:
    schedule = _schedule(engine)
    start, end = _hours_ago(5), _hours_ago(1)
    # One slot already has its run (fired back then).
    firing_run = backfill.backfill(engine, schedule["id"], _hours_ago(3), _hours_ago(2))
    assert len(firing_run.created) == 1
    next_run_at = row(engine, "SELECT next_run_at FROM scout_schedules")["next_run_at"]

    dry = backfill.backfill(engine, schedule["id"], start, end, dry_run=True)
    assert [s for s, _ in dry.created] == [_hours_ago(5), _hours_ago(4), _hours_ago(2)]
    assert dry.existing == [_hours_ago(3)]
    assert count(engine, "scout_runs") == 1

    done = backfill.backfill(engine, schedule["id"], start, end, publisher=publisher)

    assert [s for s, _ in done.created] == [_hours_ago(5), _hours_ago(4), _hours_ago(2)]
    assert done.delivered
    made = rows(
        engine,
        "SELECT trigger_type, scheduled_for, source, max_strategies, triggered_by, status"
        " FROM scout_runs ORDER BY scheduled_for",
    )
    assert [r["scheduled_for"] for r in made] == [_hours_ago(n) for n in (5, 4, 3, 2)]
    assert {
        (r["trigger_type"], r["source"], r["max_strategies"], r["triggered_by"]) for r in made
    } == {("scheduled", "stratninja", 7, "hourly")}
    events = event_queue.get(count=3)
    assert sorted(e.body["scheduled_for"] for e in events) == sorted(
        s.isoformat().replace("+00:00", "Z") for s, _ in done.created
    )
    assert {e.body["trigger_type"] for e in events} == {"scheduled"}
    # Only the first backfill's event (made without a publisher) waits for the relay.
    assert count(engine, "scout_outbox") == 1
    # The schedule is as it was.
    assert row(engine, "SELECT next_run_at FROM scout_schedules")["next_run_at"] == next_run_at

    # Listed newest first, and the runs one backfill made in one instant by slot.
    with engine.connect() as conn:
        listed, _total = runs.list_runs(conn, runs.RunFilter(schedule_id=schedule["id"]))
    assert [r["scheduled_for"] for r in listed] == [_hours_ago(n) for n in (2, 4, 5, 3)]

    again = backfill.backfill(engine, schedule["id"], start, end, publisher=publisher)
    assert again.created == []
    assert len(again.existing) == 4
    assert count(engine, "scout_runs") == 4
    assert event_queue.drain(quiet=0.5) == []


def test_refusals_name_to_and_write_nothing(engine: Engine) -> None:
    schedule = _schedule(engine, "minutely", "* * * * *")
    before = counts(engine)
    now = datetime.now(UTC)
    cases = [
        (now - timedelta(hours=20), now - timedelta(hours=2), "to", "1000"),
        (now - timedelta(hours=1), now - timedelta(hours=1), "to", "after from"),
        (now - timedelta(minutes=5), now + timedelta(minutes=5), "to", "still to come"),
        ("not a time", now, "from", "ISO 8601"),
    ]
    for start, end, field, words in cases:
        with pytest.raises(InvalidInput) as caught:
            backfill.backfill(engine, schedule["id"], start, end)
        assert caught.value.field == field
        assert words in str(caught.value)
    assert counts(engine) == before


def test_backfill_racing_a_fire_batch_on_the_slot_due_now_makes_one_run_and_one_event(
    engine: Engine, broker_url: str, exchange_name: str, event_queue: EventQueue
) -> None:
    if datetime.now(UTC).second > 45:
        time.sleep(61 - datetime.now(UTC).second)  # keep the race inside one minute
    n = 20
    execute(
        engine,
        """
        INSERT INTO scout_schedules (name, cron_expression, source, max_strategies, next_run_at)
        SELECT 'race-' || g, '* * * * *', 'stratninja', 3, date_trunc('minute', now())
        FROM generate_series(1, :n) AS g
        """,
        n=n,
    )
    ids = [r["id"] for r in rows(engine, "SELECT id FROM scout_schedules")]
    slot = row(engine, "SELECT date_trunc('minute', now()) AS s")["s"]
    go = threading.Barrier(n + 1)

    def fire() -> int:
        pub = ConfirmingPublisher(broker_url, exchange_name)
        try:
            go.wait()
            return firing.fire_due(engine, pub, batch_size=3).runs
        finally:
            pub.close()

    def fill(schedule_id: Any) -> int:
        pub = ConfirmingPublisher(broker_url, exchange_name)
        try:
            go.wait()
            result = backfill.backfill(
                engine, schedule_id, slot, slot + timedelta(seconds=1), publisher=pub
            )
            return len(result.created)
        finally:
            pub.close()

    with ThreadPoolExecutor(n + 1) as pool:
        fired = pool.submit(fire)
        filled = list(pool.map(fill, ids))
        fired_runs = fired.result()

    assert fired_runs + sum(filled) == n
    per_slot = rows(
        engine,
        "SELECT schedule_id, count(*) AS n FROM scout_runs WHERE scheduled_for = :slot"
        " GROUP BY schedule_id",
        slot=slot,
    )
    assert len(per_slot) == n and {r["n"] for r in per_slot} == {1}
    events = event_queue.get(count=n, timeout=15)
    events += event_queue.drain(quiet=1.0)
    assert len(events) == n
    assert len({e.body["run_id"] for e in events}) == n
    # A schedule a backfill held locked was skipped by the claim; the next pass
    # (the beat's next fire or tick) advances it without another run.
    assert firing.fire_due(engine, None).runs == 0
    assert {r["next_run_at"] for r in rows(engine, "SELECT next_run_at FROM scout_schedules")} == {
        slot + timedelta(minutes=1)
    }


def test_cli_and_http_backfill(
    engine: Engine,
    db_url: str,
    broker_url: str,
    exchange_name: str,
    tmp_path: Path,
    event_queue: EventQueue,
) -> None:
    schedule = _schedule(engine)
    env = {
        "SCOUT_DATABASE_URL": db_url,
        "SCOUT_BROKER_URL": broker_url,
        "SCOUT_EXCHANGE": exchange_name,
    }
    start = _hours_ago(3).replace(tzinfo=None).isoformat()  # no offset: UTC
    end = _hours_ago(1).isoformat()

    dry: subprocess.CompletedProcess[str] = run_cli(
        "schedules",
        "backfill",
        "hourly",
        "--from",
        start,
        "--to",
        end,
        "--dry-run",
        env=env,
        cwd=tmp_path,
    )
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[:2] == [
        f"+ {_hours_ago(3).isoformat()}",
        f"+ {_hours_ago(2).isoformat()}",
    ]
    assert count(engine, "scout_runs") == 0

    done = run_cli(
        "schedules", "backfill", "hourly", "--from", start, "--to", end, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "2 run(s) created" in done.stdout
    assert len(event_queue.get(count=2)) == 2

    too_many = run_cli(
        "schedules",
        "backfill",
        "hourly",
        "--from",
        _hours_ago(2000).isoformat(),
        "--to",
        end,
        env=env,
        cwd=tmp_path,
    )
    assert too_many.returncode == 2
    assert too_many.stderr.strip().startswith("scout-tasks: error: to: ")
    assert len(too_many.stderr.strip().splitlines()) == 1

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=db_url, broker_url=broker_url, exchange=exchange_name
    )
    url = f"/api/scout/schedules/{schedule['id']}/backfill"
    with TestClient(create_app(settings)) as client:
        body = {"from": _hours_ago(4).isoformat(), "to": end}
        dry_http = client.post(url, json={**body, "dry_run": True})
        assert dry_http.status_code == 200, dry_http.text
        assert [s["status"] for s in dry_http.json()["slots"]] == [
            "would_create",
            "exists",
            "exists",
        ]
        made = client.post(url, json=body)
        assert made.json()["created"] == 1
        assert client.post(url, json=body).json()["created"] == 0
        refused = client.post(url, json={"from": end, "to": end})
        assert (refused.status_code, refused.json()["field"]) == (422, "to")
        big = client.post(url, json={"from": _hours_ago(1002).isoformat(), "to": end})
        assert (big.status_code, big.json()["field"]) == (422, "to")
        missing = client.post(url, json={"from": end})
        assert (missing.status_code, missing.json()["field"]) == (422, "to")
        unknown = client.post(
            "/api/scout/schedules/00000000-0000-0000-0000-000000000000/backfill", json=body
        )
        assert unknown.status_code == 404
    assert count(engine, "scout_runs") == 3
