"""Burst: N schedules due at the same instant, fired by real Celery processes and two baselines.

For each size N and each repetition, on a fresh scratch database each time:

- scout-tasks: a real ``celery -A scout_tasks worker -c 2`` and ``celery -A
  scout_tasks beat`` are started and ready first; then N schedules (mixed
  expressions and time zones) are inserted, all with ``next_run_at = T`` a few
  seconds ahead. Measured: from T until all N runs are committed, the outbox is
  empty and the counting queue (bound to ``scout.#``) holds N messages.
- baseline: the hand-written loop of ``baseline.py`` (cron, no outbox) on an
  identical database, started at its own T.
- minimal: the minimal loop of ``minimal.py`` (no cron, no outbox: the floor)
  on an identical database, started at its own T.

The three take turns (the order rotates every repetition) and the medians are
reported, with the ratios ours / baseline and ours / minimal. T is placed so
that no ``* * * * *`` schedule comes due a second time during the measurement
(a long burst starts on a minute boundary, as real bursts do), so exactly N
runs are expected.

    python bench/burst.py --sizes 1000,20000,100000 --repeat 3
"""

from __future__ import annotations

import argparse
import math
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import baseline
import common
import minimal


@dataclass
class Result:
    elapsed: float
    runs: int
    depth: int
    lag_p50: float
    lag_p99: float
    late_setup: float  # seconds the setup overran T (0 when it was ready in time)
    # CPU seconds from T to the end: the firing processes (scout-tasks: worker,
    # its pool and the beat; baseline: the loop) and their PostgreSQL backends.
    client_cpu: float
    db_cpu: float
    # Peak RSS of the largest worker pool process, kB (scout-tasks only).
    pool_hwm_kb: int = 0

    @property
    def rate(self) -> float:
        return self.runs / self.elapsed


def choose_instant(count: int, lead: float) -> float:
    """A wall-clock T at least ``lead`` seconds ahead, safe from a second minutely slot.

    The expected burst (at a pessimistic 1,000 fires/s) must end before the next
    minute boundary after T; otherwise T moves to the next boundary itself.
    """
    expected = count / 1000 + 1
    t = time.time() + lead
    into_minute = t % 60
    if into_minute + expected > 59:
        t += 60 - into_minute
    return t


def setup_lead(count: int) -> float:
    """Seconds to insert ``count`` schedules and VACUUM ANALYZE the table, with room to spare."""
    return 2.0 + count * 150e-6 + common.idle_schedules() * 10e-6


def _check_setup(t: float, label: str) -> float:
    late = time.time() - t
    if late > -0.2:
        common.log(f"WARNING: {label} setup ended {late:+.2f} s from T; the figure is suspect")
    return max(0.0, late)


def measure_ours(count: int, loglevel: str, timeout: float) -> Result:
    exchange = f"bench-burst-{uuid.uuid4().hex[:8]}"
    with (
        common.scratch_database() as db_url,
        common.counting_queue(exchange) as queue,
        common.celery_stack(db_url, exchange, concurrency=2, loglevel=loglevel) as stack,
    ):
        t = choose_instant(count, setup_lead(count))
        common.insert_schedules(db_url, count, datetime.fromtimestamp(t, UTC))
        late = _check_setup(t, "scout-tasks")

        def clients() -> list[int]:
            return [*common.process_tree(stack.worker.pid), stack.beat.pid]

        common.sleep_until(t - 0.1)
        cpu_before = common.cpu_of(clients()), common.cpu_of(common.backends(db_url))
        common.sleep_until(t)
        progress = common.Progress(db_url)
        try:
            deadline = t + timeout
            while True:
                # The instant of the reading that first shows everything done.
                polled = time.time()
                depth = queue.depth()
                if depth >= count:
                    runs, outbox = progress.counts()
                    if runs >= count and outbox == 0:
                        end = polled
                        client_cpu = common.cpu_used(cpu_before[0], common.cpu_of(clients()))
                        db_cpu = common.cpu_used(
                            cpu_before[1], common.cpu_of(common.backends(db_url))
                        )
                        break
                if time.time() > deadline:
                    raise RuntimeError(
                        f"scout-tasks: {depth} of {count} messages after {timeout:.0f} s\n"
                        + stack.worker.log()[-3000:]
                    )
                time.sleep(0.01)
        finally:
            progress.close()
        stats = common.run_stats(db_url)
        pool = common.children(stack.worker.pid)
        return Result(
            end - t,
            stats.runs,
            queue.depth(),
            stats.lag_p50,
            stats.lag_p99,
            late,
            client_cpu,
            db_cpu,
            max((common.status_kb(p, "VmHWM") for p in pool), default=0),
        )


def measure_loop(who: str, count: int) -> Result:
    """One of the in-process loops (``baseline`` or ``minimal``) on a fresh database."""
    fire_due = {"baseline": baseline.fire_due, "minimal": minimal.fire_due}[who]
    exchange = f"bench-{who}-{uuid.uuid4().hex[:8]}"
    with common.scratch_database() as db_url, common.counting_queue(exchange) as queue:
        t = choose_instant(count, setup_lead(count) + 0.5)
        common.insert_schedules(db_url, count, datetime.fromtimestamp(t, UTC))
        late = _check_setup(t, who)
        cpu: dict[str, float] = {}
        elapsed = fire_due(db_url, exchange, start_at=t, cpu=cpu)
        stats = common.run_stats(db_url)
        return Result(
            elapsed,
            stats.runs,
            queue.depth(),
            stats.lag_p50,
            stats.lag_p99,
            late,
            cpu["client"],
            cpu["db"],
        )


def _row(label: str, results: list[Result]) -> list[str]:
    return [
        label,
        f"{common.median([r.elapsed for r in results]):.2f}",
        f"{common.median([r.rate for r in results]):,.0f}",
        f"{common.median([r.lag_p50 for r in results]):.2f}",
        f"{common.median([r.lag_p99 for r in results]):.2f}",
        f"{common.median([1e6 * r.client_cpu / r.runs for r in results]):.0f}",
        f"{common.median([1e6 * r.db_cpu / r.runs for r in results]):.0f}",
        f"{common.median([r.pool_hwm_kb / 1024 for r in results]):.0f}"
        if results[0].pool_hwm_kb
        else "-",
        " ".join(f"{r.elapsed:.2f}" for r in results),
    ]


CONTENDERS = ("ours", "baseline", "minimal")
LABELS = {"ours": "scout-tasks", "baseline": "baseline", "minimal": "minimal loop"}


def measure(who: str, count: int, loglevel: str) -> Result:
    if who == "ours":
        return measure_ours(count, loglevel, timeout=max(120.0, count / 200))
    return measure_loop(who, count)


def ratio_rows(
    sizes: list[int], ours: dict[int, list[Result]], others: dict[str, dict[int, list[Result]]]
) -> list[list[str]]:
    """Per N: ours / each other contender in fires/s, the median and each repeat."""
    rows = []
    for n in sizes:
        row = [f"N={n:,}"]
        for results in others.values():
            med = common.median([r.rate for r in ours[n]]) / common.median(
                [r.rate for r in results[n]]
            )
            each = [o.rate / b.rate for o, b in zip(ours[n], results[n], strict=True)]
            row += [f"{med:.2f}x", " ".join(f"{x:.2f}" for x in each)]
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,20000,100000", help="comma-separated N")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--loglevel", default="warning", help="celery -l for beat and worker (celery's default)"
    )
    parser.add_argument(
        "--idle",
        type=int,
        default=0,
        help="schedules in every database that are not due (the table's size beyond N)",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    common.use_idle_schedules(args.idle)

    results: dict[str, dict[int, list[Result]]] = {
        who: {n: [] for n in sizes} for who in CONTENDERS
    }
    started = time.strftime("%Y-%m-%d %H:%M")
    try:
        for rep in range(args.repeat):
            for n in sizes:
                # Rotate, so each contender goes first, second and third in turn.
                k = rep % len(CONTENDERS)
                for who in CONTENDERS[k:] + CONTENDERS[:k]:
                    common.log(f"repeat {rep + 1}/{args.repeat}: {LABELS[who]}, N={n:,}")
                    r = measure(who, n, args.loglevel)
                    results[who][n].append(r)
                    common.log(
                        f"  {r.elapsed:.2f} s, {r.rate:,.0f} fires/s, runs {r.runs:,}, "
                        f"queue {r.depth:,}, lag p50 {r.lag_p50:.2f} s p99 {r.lag_p99:.2f} s, "
                        f"CPU {r.client_cpu:.2f} s + PostgreSQL {r.db_cpu:.2f} s"
                    )
                    if r.runs != n or r.depth != n:
                        common.log(f"  WARNING: expected {n:,} runs and messages")
    finally:
        common.drop_template()

    idle = f", {args.idle:,} idle schedules beside the N due" if args.idle else ""
    print(f"\nburst ({started}, {common.machine()}, median of {args.repeat}{idle})\n")
    headers = [
        "",
        "time s",
        "fires/s",
        "lag p50 s",
        "lag p99 s",
        "CPU µs/fire",
        "PG µs/fire",
        "pool RSS MiB",
        "each run s",
    ]
    rows = [_row(f"{LABELS[who]} N={n:,}", results[who][n]) for n in sizes for who in CONTENDERS]
    print(common.table(headers, rows))
    print()
    others = {who: results[who] for who in CONTENDERS if who != "ours"}
    print(
        common.table(
            [
                "",
                "ours/baseline (fires/s)",
                "each repeat",
                "ours/minimal (fires/s)",
                "each repeat",
            ],
            ratio_rows(sizes, results["ours"], others),
        )
    )
    every = [r for per_size in results.values() for rs in per_size.values() for r in rs]
    late = [r.late_setup for r in every if r.late_setup]
    if late:
        print(f"\n{len(late)} measurement(s) whose setup overran T (max {max(late):.2f} s)")
    if any(math.isnan(r.lag_p99) for rs in results["ours"].values() for r in rs):
        print("\nsome runs had no lag figures")


if __name__ == "__main__":
    main()
