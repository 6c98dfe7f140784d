"""The console's schedules page with a million schedules: p50/p99 of ``/ui`` over HTTP.

    python bench/console.py [--rows 1000000] [--requests 60]

Loads ``--rows`` schedules into a scratch database with one INSERT ... SELECT
over ``generate_series`` (through the real triggers: history, search copy),
1% of them paused with a reason and 200,000 with a last run (2% failed), runs
ANALYZE as autovacuum would, then starts ``scout-tasks api`` (its own process,
as in production) on a loopback port and times sequential GETs of the pages an
operator opens:

- the first page of ``/ui``;
- a late page (keyset cursor near the end of the alphabet);
- a narrow search (one schedule's name fragment) and a broad one (a source);
- the paused filter and the last-run-failed filter;
- a schedule's own page.

Each timing is the whole HTTP round trip (query, fire-time previews, template).
The database is dropped afterwards; ``--db-url`` measures one already loaded.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    connect,
    log,
    machine,
    median,
    percentile,
    scratch_database,
    table,
)

SOURCES = ["stratninja", "quantbase", "cryptolab", "vendor-feed", "reports", "alpha", "beta"]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney"]
EXPRESSIONS = ["0 9 * * MON-FRI", "*/15 * * * *", "5 * * * *", "0 6 1 * *", "@daily"]

LOAD = """
INSERT INTO scout_schedules (name, cron_expression, source, max_strategies, timezone,
                             enabled, next_run_at, paused_reason, paused_at, paused_by)
SELECT 'scout-' || lpad(g::text, 7, '0') || '-' || substr(md5(g::text), 1, 8),
       (%(expressions)s::text[])[1 + g %% 5],
       (%(sources)s::text[])[1 + g %% 7],
       1 + g %% 100,
       (%(zones)s::text[])[1 + g %% 5],
       g %% 100 <> 0,
       CASE WHEN g %% 100 <> 0 THEN now() + (g %% 86400) * interval '1 second' END,
       CASE WHEN g %% 100 = 0 THEN 'vendor outage, ticket ' || g END,
       CASE WHEN g %% 100 = 0 THEN now() - interval '2 hours' END,
       CASE WHEN g %% 100 = 0 THEN 'bench' END
FROM generate_series(1, %(rows)s) g
"""

RUNS = """
WITH picked AS (
    SELECT id, source, max_strategies, name,
           row_number() OVER (ORDER BY name) AS n
    FROM scout_schedules
    ORDER BY name
    LIMIT %(runs)s
), inserted AS (
    INSERT INTO scout_runs (trigger_type, triggered_by, source, max_strategies, status,
                            schedule_id, scheduled_for, created_at, completed_at)
    SELECT 'scheduled', name, source, max_strategies,
           CASE WHEN n %% 50 = 0 THEN 'failed' ELSE 'completed' END,
           id, date_trunc('minute', now()) - n * interval '1 minute',
           now() - interval '1 hour', now() - interval '50 minutes'
    FROM picked
    RETURNING id, schedule_id
)
UPDATE scout_schedules s
SET last_run_id = i.id, last_run_at = now() - interval '1 hour'
FROM inserted i WHERE s.id = i.schedule_id
"""


def load(db_url: str, rows: int, runs: int) -> dict[str, str]:
    """Fill the database; returns names the requests use."""
    conn = connect(db_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            started = time.monotonic()
            cur.execute(
                LOAD,
                {"rows": rows, "sources": SOURCES, "zones": ZONES, "expressions": EXPRESSIONS},
            )
            log(f"{rows:,} schedules loaded in {time.monotonic() - started:.1f} s")
            started = time.monotonic()
            cur.execute(RUNS, {"runs": min(runs, rows)})
            log(f"{min(runs, rows):,} last runs in {time.monotonic() - started:.1f} s")
            started = time.monotonic()
            cur.execute("VACUUM ANALYZE")
            log(f"VACUUM ANALYZE in {time.monotonic() - started:.1f} s")
    finally:
        conn.close()
    return probes(db_url, rows)


def probes(db_url: str, rows: int) -> dict[str, str]:
    """A late page's cursor, a schedule in the middle, and a fragment of its name."""
    conn = connect(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT name FROM scout_schedules ORDER BY name DESC OFFSET 120 LIMIT 1")
            late = cur.fetchone()[0]
            cur.execute(
                "SELECT id::text, name FROM scout_schedules WHERE enabled ORDER BY name "
                "OFFSET %(o)s LIMIT 1",
                {"o": rows // 2},
            )
            middle_id, middle_name = cur.fetchone()
    finally:
        conn.close()
    return {"late": late, "middle_id": middle_id, "fragment": middle_name[-8:]}


@contextmanager
def loaded_database(args: argparse.Namespace) -> Iterator[tuple[str, dict[str, str]]]:
    if args.db_url:
        # A database an earlier run loaded (left to the caller to drop).
        yield args.db_url, probes(args.db_url, args.rows)
        return
    with scratch_database("scout_bench_console") as db_url:
        yield db_url, load(db_url, args.rows, args.runs)


def measure(base: str, path: str, params: dict[str, str], count: int) -> list[float]:
    timings: list[float] = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for index in range(count + 3):
            started = time.perf_counter()
            response = client.get(path, params=params)
            elapsed = (time.perf_counter() - started) * 1000
            response.raise_for_status()
            if index >= 3:  # the first requests warm caches and the pool
                timings.append(elapsed)
    return timings


@contextmanager
def api_process(db_url: str) -> Iterator[str]:
    """``scout-tasks api`` on a free loopback port; yields its base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOUT_")}
    env.update(SCOUT_DATABASE_URL=db_url, SCOUT_BROKER_URL="amqp://guest:guest@127.0.0.1:5672//")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("scout-tasks")), "api", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/ui", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument(
        "--db-url", help="measure an already loaded database instead of loading a scratch one"
    )
    args = parser.parse_args()

    with loaded_database(args) as (db_url, names):
        cases = [
            ("first page", "/ui", {}),
            ("late page (keyset)", "/ui", {"after": names["late"]}),
            ("search, one match", "/ui", {"q": names["fragment"]}),
            ("search, broad (a source)", "/ui", {"q": "quantbase"}),
            ("search, 2 letters (prefix)", "/ui", {"q": "sc"}),
            ("paused filter", "/ui", {"state": "paused"}),
            ("last run failed filter", "/ui", {"failed": "1"}),
            ("schedule page", f"/ui/schedules/{names['middle_id']}", {}),
        ]
        results = []
        with api_process(db_url) as base:
            for label, path, params in cases:
                timings = measure(base, path, params, args.requests)
                results.append(
                    [
                        label,
                        f"{median(timings):.1f}",
                        f"{percentile(timings, 99):.1f}",
                        f"{max(timings):.1f}",
                    ]
                )
                log(f"{label}: p50 {results[-1][1]} ms, p99 {results[-1][2]} ms")
    print(f"\n{args.rows:,} schedules, {args.requests} requests per case, {machine()}\n")
    print(table(["page", "p50 ms", "p99 ms", "max ms"], results))


if __name__ == "__main__":
    main()
