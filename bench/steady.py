"""Steady: 10,000 one-off slots spread over a minute, fired by a real beat and worker.

Schedule i (0-based) gets ``next_run_at = T + i * 6 ms`` and a yearly cron
expression, so each fires exactly once during the run, about 167 slots a
second. A real ``celery -A scout_tasks beat`` and ``worker -c 2`` are started
(and ready) before the schedules are inserted. Fire lag is read from the runs:
``created_at - scheduled_for`` (``created_at`` is the start of the transaction
that made the run, so the lag covers beat wake-up, task dispatch and the claim).
Each repetition uses a fresh database; medians over the repetitions are printed.

    python bench/steady.py --count 10000 --spacing-ms 6 --repeat 3
"""

from __future__ import annotations

import argparse
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import common


@dataclass
class Result:
    runs: int
    depth: int
    p50: float
    p99: float
    worst: float
    over_1s: int


def measure(count: int, spacing: float, loglevel: str) -> Result:
    exchange = f"bench-steady-{uuid.uuid4().hex[:8]}"
    with (
        common.scratch_database() as db_url,
        common.counting_queue(exchange) as queue,
        common.celery_stack(db_url, exchange, loglevel=loglevel) as stack,
    ):
        t = time.time() + 3.0
        common.insert_schedules(
            db_url,
            count,
            datetime.fromtimestamp(t, UTC),
            spread=spacing,
            expressions=[common.YEARLY],
        )
        if time.time() > t - 0.2:
            common.log("WARNING: the insert ended after the first slot; the figures are suspect")
        last_slot = t + (count - 1) * spacing
        common.sleep_until(last_slot)
        deadline = time.time() + 120
        while queue.depth() < count:
            if time.time() > deadline:
                raise RuntimeError(
                    f"only {queue.depth()} of {count} events after the last slot + 120 s\n"
                    + stack.worker.log()[-3000:]
                )
            time.sleep(0.1)
        common.wait_until(lambda: common.run_stats(db_url).outbox == 0, 30, 0.2)
        stats = common.run_stats(db_url)
        conn = common.connect(db_url)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM scout_runs"
                    " WHERE created_at - scheduled_for > interval '1 second'"
                )
                over = int(cur.fetchone()[0])  # type: ignore[index]
        finally:
            conn.close()
        return Result(stats.runs, queue.depth(), stats.lag_p50, stats.lag_p99, stats.lag_max, over)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--spacing-ms", type=float, default=6.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--loglevel", default="warning", help="celery -l for beat and worker")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M")
    results: list[Result] = []
    try:
        for rep in range(args.repeat):
            common.log(f"repeat {rep + 1}/{args.repeat}: {args.count:,} slots")
            r = measure(args.count, args.spacing_ms / 1000, args.loglevel)
            results.append(r)
            common.log(
                f"  runs {r.runs:,}, queue {r.depth:,}, lag p50 {r.p50 * 1000:.0f} ms, "
                f"p99 {r.p99 * 1000:.0f} ms, max {r.worst * 1000:.0f} ms, over 1 s: {r.over_1s}"
            )
            if r.runs != args.count or r.depth != args.count:
                common.log(f"  WARNING: expected {args.count:,} runs and messages")
    finally:
        common.drop_template()

    span = (args.count - 1) * args.spacing_ms / 1000
    print(
        f"\nsteady: {args.count:,} slots {args.spacing_ms:g} ms apart over {span:.0f} s "
        f"({started}, {common.machine()}, median of {args.repeat})\n"
    )

    def cell(values: list[float]) -> str:
        return f"{common.median(values) * 1000:.0f}"

    def each(values: list[float]) -> str:
        return " ".join(f"{v * 1000:.0f}" for v in values)

    print(
        common.table(
            ["fire lag", "median ms", "each repeat ms"],
            [
                ["p50", cell([r.p50 for r in results]), each([r.p50 for r in results])],
                ["p99", cell([r.p99 for r in results]), each([r.p99 for r in results])],
                ["max", cell([r.worst for r in results]), each([r.worst for r in results])],
                [
                    "runs later than 1 s",
                    f"{common.median([r.over_1s for r in results]):.0f}",
                    " ".join(str(r.over_1s) for r in results),
                ],
            ],
        )
    )


if __name__ == "__main__":
    main()
