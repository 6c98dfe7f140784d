"""Jitter: 100,000 schedules on one slot with jitter_seconds = 60, fired by a real beat and worker.

Every schedule has ``next_run_at = T`` (one slot, a yearly expression so it
fires once) and ``jitter_seconds = 60``, so schedule i is due at T + d_i with
d_i in [0, 60 s) derived from its id. A real ``celery -A scout_tasks beat``
and ``worker -c 2`` are started (and ready) before the schedules are inserted.
The figure is each run's lag beyond its own d: ``created_at - scheduled_for -
d`` (``created_at`` is the start of the transaction that made the run), read
from the runs with d computed by the same SQL the claim uses. Each repetition
uses a fresh database; medians over the repetitions are printed.

    python bench/jitter.py --count 100000 --jitter 60 --repeat 1
"""

from __future__ import annotations

import argparse
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import common

from scout_tasks import jitter


@dataclass
class Result:
    runs: int
    depth: int
    p50: float
    p99: float
    worst: float
    over_1s: int
    early: int
    spread: float


def _insert(db_url: str, count: int, slot: datetime, jitter_seconds: int) -> float:
    start = time.monotonic()
    conn = common.connect(db_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                """
                INSERT INTO scout_schedules (name, cron_expression, source, max_strategies,
                                             jitter_seconds, next_run_at)
                SELECT 'jitter-' || g, %(expr)s, 'bench', 10, %(j)s, %(slot)s
                FROM generate_series(1, %(n)s) AS g
                """,
                {"expr": common.YEARLY, "j": jitter_seconds, "slot": slot, "n": count},
            )
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE scout_schedules")
    finally:
        conn.close()
    return time.monotonic() - start


def _lags(db_url: str) -> tuple[list[float], int]:
    conn = common.connect(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"""
                SELECT extract(epoch FROM r.created_at - r.scheduled_for
                                           - {jitter.sql_interval("s")})::float8,
                       {jitter.sql_ms("s")} / 1000.0
                FROM scout_runs r JOIN scout_schedules s ON s.id = r.schedule_id
                """  # noqa: S608 - a constant SQL fragment
            )
            found = cur.fetchall()
            lags = [row[0] for row in found]
            # Where in the window the lag happened: p99 per tenth of the window.
            tenth = max(float(row[1]) for row in found) / 10 if found else 1.0
            parts = [
                [lag for lag, d in found if i * tenth <= float(d) < (i + 1) * tenth + (i == 9)]
                for i in range(10)
            ]
            common.log(
                "  lag p99 per tenth of the window, ms: "
                + " ".join(f"{common.percentile(p, 99) * 1000:.0f}" for p in parts)
            )
            cur.execute("SELECT count(*) FROM scout_runs")
            runs = int(cur.fetchone()[0])  # type: ignore[index]
    finally:
        conn.close()
    return lags, runs


def measure(count: int, jitter_seconds: int, lead: float, loglevel: str) -> Result:
    exchange = f"bench-jitter-{uuid.uuid4().hex[:8]}"
    with (
        common.scratch_database() as db_url,
        common.counting_queue(exchange) as queue,
        common.celery_stack(db_url, exchange, loglevel=loglevel),
    ):
        t = time.time() + lead
        took = _insert(db_url, count, datetime.fromtimestamp(t, UTC), jitter_seconds)
        common.log(f"  inserted {count:,} in {took:.1f} s")
        if time.time() > t - 0.2:
            common.log("WARNING: the insert ended after the slot; the figures are suspect")
        common.sleep_until(t + jitter_seconds)
        deadline = time.time() + 180
        while queue.depth() < count:
            if time.time() > deadline:
                raise RuntimeError(f"only {queue.depth()} of {count} events after T + J + 180 s")
            time.sleep(0.2)
        common.wait_until(lambda: common.run_stats(db_url).outbox == 0, 30, 0.2)
        lags, runs = _lags(db_url)
        first, last = common.run_stats(db_url).first_created, common.run_stats(db_url).last_created
        spread = (last - first).total_seconds() if first and last else float("nan")
        return Result(
            runs,
            queue.depth(),
            common.percentile(lags, 50),
            common.percentile(lags, 99),
            max(lags),
            sum(1 for lag in lags if lag > 1.0),
            sum(1 for lag in lags if lag < 0),
            spread,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--jitter", type=int, default=60, help="jitter_seconds of every schedule")
    parser.add_argument("--lead", type=float, default=25.0, help="seconds from insert to slot")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--loglevel", default="warning", help="celery -l for beat and worker")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M")
    results: list[Result] = []
    try:
        for rep in range(args.repeat):
            common.log(f"repeat {rep + 1}/{args.repeat}: {args.count:,} schedules, J={args.jitter}")
            r = measure(args.count, args.jitter, args.lead, args.loglevel)
            results.append(r)
            common.log(
                f"  runs {r.runs:,}, queue {r.depth:,}, lag beyond d: p50 {r.p50 * 1000:.0f} ms,"
                f" p99 {r.p99 * 1000:.0f} ms, max {r.worst * 1000:.0f} ms,"
                f" over 1 s: {r.over_1s}, early: {r.early}, runs spread over {r.spread:.1f} s"
            )
            if r.runs != args.count or r.depth != args.count:
                common.log(f"  WARNING: expected {args.count:,} runs and messages")
    finally:
        common.drop_template()

    print(
        f"\njitter: {args.count:,} schedules on one slot, jitter_seconds {args.jitter} "
        f"({started}, {common.machine()}, median of {args.repeat})\n"
    )

    def cell(values: list[float]) -> str:
        return f"{common.median(values) * 1000:.0f}"

    def each(values: list[float]) -> str:
        return " ".join(f"{v * 1000:.0f}" for v in values)

    print(
        common.table(
            ["lag beyond d", "median ms", "each repeat ms"],
            [
                ["p50", cell([r.p50 for r in results]), each([r.p50 for r in results])],
                ["p99", cell([r.p99 for r in results]), each([r.p99 for r in results])],
                ["max", cell([r.worst for r in results]), each([r.worst for r in results])],
                [
                    "runs later than d + 1 s",
                    f"{common.median([r.over_1s for r in results]):.0f}",
                    " ".join(str(r.over_1s) for r in results),
                ],
                [
                    "runs before slot + d",
                    f"{common.median([r.early for r in results]):.0f}",
                    " ".join(str(r.early) for r in results),
                ],
                [
                    "first to last run, s",
                    f"{common.median([r.spread for r in results]):.1f}",
                    " ".join(f"{r.spread:.1f}" for r in results),
                ],
            ],
        )
    )


if __name__ == "__main__":
    main()
