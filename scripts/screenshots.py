"""Screenshots of the operator console for the README: ``python scripts/screenshots.py``.

Makes a scratch database on the PostgreSQL of ``SCOUT_TEST_ADMIN_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``), fills it with a plausible
week of schedules and runs, serves the console from the real app on a loopback
port, and photographs the pages in headless Chromium (``/usr/bin/chromium``)
at 1280 px and at a phone's 390 px, into ``docs/screenshots/``. The database
is dropped afterwards.

Schedules are created and paused through :mod:`scout_tasks.service` (so the
history is real); the runs' past times and the agents' events are written with
SQL, standing in for a week of firing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import psycopg2
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scout_tasks import heartbeat, migrate, service  # noqa: E402
from scout_tasks.api import create_app  # noqa: E402
from scout_tasks.db import make_engine  # noqa: E402
from scout_tasks.horizon import LEADER_LOCK  # noqa: E402
from scout_tasks.settings import Settings  # noqa: E402
from tests.cdp import Browser  # noqa: E402
from tests.integration.live import serve  # noqa: E402

ADMIN_URL = os.environ.get("SCOUT_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
OUT = ROOT / "docs" / "screenshots"

SCHEDULES = [
    (
        "Daily Scout Run",
        "0 9 * * MON-FRI",
        "stratninja",
        10,
        "Europe/Berlin",
        "Weekday morning sweep of new strategies.",
    ),
    ("Hourly quick scan", "5 * * * *", "stratninja", 3, "UTC", ""),
    ("Asia open", "30 8 * * MON-FRI", "quantbase", 25, "Asia/Tokyo", "Before the Tokyo open."),
    ("Crypto overnight", "*/30 0-6 * * *", "cryptolab", 5, "UTC", ""),
    ("London close", "45 16 * * 1-5", "quantbase", 15, "Europe/London", ""),
    (
        "Month-end rebalance",
        "0 6 1 * *",
        "stratninja",
        100,
        "America/New_York",
        "First of the month, before the US open.",
    ),
    ("New York open", "25 9 * * MON-FRI", "quantbase", 20, "America/New_York", ""),
    (
        "Nightly vendor sync",
        "15 2 * * *",
        "vendor-feed",
        50,
        "UTC",
        "Pulls the vendor's full catalogue.",
    ),
    ("Sydney morning", "0 10 * * MON-FRI", "quantbase", 10, "Australia/Sydney", ""),
    ("Weekend deep scan", "0 3 * * SAT,SUN", "stratninja", 250, "UTC", ""),
    ("Weekly digest", "@weekly", "reports", 1, "UTC", ""),
]
PAUSED = {
    "Nightly vendor sync": ("maria", "Vendor API outage, ticket VND-2231; resume when green"),
    "Weekend deep scan": ("ops-bot", "Cluster maintenance window"),
}
FAILED_LAST = {"Crypto overnight"}


def _admin(statement: str) -> None:
    conn = psycopg2.connect(ADMIN_URL)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


@contextmanager
def scratch_database() -> Iterator[str]:
    name = f"scout_screens_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{name}"')
    url = (
        make_url(ADMIN_URL)
        .set(drivername="postgresql+psycopg2", database=name)
        .render_as_string(hide_password=False)
    )
    try:
        migrate.upgrade(url)
        yield url
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _past_run(conn, schedule, status: str, ago: timedelta, rng: random.Random) -> uuid.UUID:  # type: ignore[no-untyped-def]
    run_id = uuid.uuid4()
    took = timedelta(seconds=rng.randint(40, 900))
    conn.execute(
        text(
            """
            INSERT INTO scout_runs (id, trigger_type, triggered_by, source, max_strategies, status,
                                    error_message, metrics, created_at, started_at, completed_at,
                                    schedule_id, scheduled_for, updated_at)
            VALUES (:id, 'scheduled', :name, :source, :max, :status, :error,
                    CASE WHEN :status = 'completed' THEN CAST(:metrics AS jsonb) END,
                    now() - :ago, now() - :ago + interval '2 seconds',
                    CASE WHEN :status IN ('completed', 'failed') THEN now() - :ago + :took END,
                    :sid, date_trunc('minute', now() - :ago), now() - :ago)
            """
        ),
        {
            "id": run_id,
            "name": schedule["name"],
            "source": schedule["source"],
            "max": schedule["max_strategies"],
            "status": status,
            "error": "stage validate: upstream returned 502 Bad Gateway"
            if status == "failed"
            else None,
            "ago": ago,
            "took": took,
            "sid": schedule["id"],
            "metrics": json.dumps(
                {
                    "total_fetched": (fetched := rng.randint(40, 400)),
                    "validated": (valid := fetched - rng.randint(0, 30)),
                    "validation_failed": fetched - valid,
                    "duplicates_removed": rng.randint(0, 12),
                    "submitted": min(valid, schedule["max_strategies"]),
                }
            ),
        },
    )
    events = ["scout.started", "scout.progress", "scout.progress"]
    events += {"completed": ["scout.completed"], "failed": ["scout.failed"]}.get(status, [])
    for index, kind in enumerate(events):
        conn.execute(
            text(
                "INSERT INTO scout_run_events (event_id, run_id, event_type, received_at) "
                "VALUES (:e, :r, :k, now() - :ago + :at)"
            ),
            {
                "e": uuid.uuid4(),
                "r": run_id,
                "k": kind,
                "ago": ago,
                "at": took * (index / max(len(events) - 1, 1)) + timedelta(seconds=2),
            },
        )
    return run_id


def seed(engine: Engine) -> uuid.UUID:
    """A week of plausible history; returns the schedule to photograph."""
    rng = random.Random(11)
    created = {}
    for name, expr, source, most, zone, description in SCHEDULES:
        created[name] = service.create_schedule(
            engine,
            {
                "name": name,
                "cron_expression": expr,
                "source": source,
                "max_strategies": most,
                "timezone": zone,
                "description": description,
            },
            actor="alex",
        )
    service.update_schedule(
        engine, created["Daily Scout Run"]["id"], {"max_strategies": 12}, actor="maria"
    )
    with engine.begin() as conn:
        # A plain-SQL edit, recorded by the history trigger like any other.
        conn.execute(
            text("UPDATE scout_schedules SET description = :d WHERE name = 'Daily Scout Run'"),
            {"d": "Weekday morning sweep of new strategies for the research desk."},
        )
        for index, (name, row) in enumerate(created.items()):
            statuses = ["completed"] * 6
            if name in FAILED_LAST:
                statuses[-1] = "failed"
            if name == "Daily Scout Run":
                statuses[2] = "failed"
                statuses.append("running")
            last = None
            for step, status in enumerate(statuses):
                ago = timedelta(
                    hours=(len(statuses) - step) * 20 + index, minutes=rng.randint(0, 59)
                )
                if status == "running":
                    ago = timedelta(minutes=4)
                last = _past_run(conn, row, status, ago, rng)
            conn.execute(
                text(
                    "UPDATE scout_schedules SET last_run_id = :r, "
                    "last_run_at = (SELECT created_at FROM scout_runs WHERE id = :r) WHERE id = :s"
                ),
                {"r": last, "s": row["id"]},
            )
    for name, (who, reason) in PAUSED.items():
        service.pause(engine, created[name]["id"], reason=reason, actor=who)
    service.run_now(engine, created["Daily Scout Run"]["id"], actor="maria")
    with engine.begin() as conn:
        # No broker here: the demo's events are not waiting for one.
        conn.execute(text("DELETE FROM scout_outbox"))
    return created["Daily Scout Run"]["id"]


def shoot(base: str, schedule_id: uuid.UUID, out: Path) -> list[Path]:
    shots: list[Path] = []
    with Browser(width=1280, height=900) as browser:
        pages = [
            ("schedules", "/ui"),
            ("schedule", f"/ui/schedules/{schedule_id}"),
            ("runs", "/ui/runs"),
        ]
        for name, path in pages:
            browser.goto(base + path)
            if name == "schedule":
                # One run's lifecycle opened, as an operator would.
                browser.click("table.runs tbody tr:nth-child(3) details summary", navigates=False)
            # The runs page is long: its first screen says enough.
            shots.append(browser.screenshot(out / f"{name}.png", full_page=name != "runs"))
        browser.goto(f"{base}/ui/schedules/{schedule_id}")
        # A finished run with its events: the third row (after "run now" and the running one).
        run_link = browser.js(
            "document.querySelectorAll('table.runs tbody tr')[3].querySelector('a').href"
        )
        browser.goto(run_link)
        shots.append(browser.screenshot(out / "run.png"))
        browser.color_scheme("dark")
        browser.goto(base + "/ui")
        shots.append(browser.screenshot(out / "schedules-dark.png"))
        browser.color_scheme("light")
        browser.viewport(390, 844, mobile=True, scale=2)
        for name, path in pages[:2]:
            browser.goto(base + path)
            shots.append(browser.screenshot(out / f"{name}-phone.png", full_page=False))
    return shots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    with scratch_database() as url:
        engine = make_engine(url)
        schedule_id = seed(engine)
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, database_url=url, broker_url="amqp://guest:guest@127.0.0.1:5672//"
        )
        # Stands in for a running beat, so the header shows one leading.
        leader = psycopg2.connect(
            make_url(url).set(drivername="postgresql").render_as_string(False)
        )
        leader.autocommit = True
        with leader.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (LEADER_LOCK,))
            heartbeat.record_tick(cur, "beat@demo", 30)
        try:
            with serve(create_app(settings)) as base:
                for shot in shoot(base, schedule_id, args.out):
                    print(shot.relative_to(ROOT) if shot.is_relative_to(ROOT) else shot)
        finally:
            leader.close()
            engine.dispose()


if __name__ == "__main__":
    main()
