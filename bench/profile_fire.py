"""Where a burst's CPU goes: in-process ``fire_due`` beside the two loops, part by part.

Fires N due schedules in this process (no Celery), on a fresh scratch database
each time, and reads ``time.process_time()`` around the main functions, and the
CPU of the database's backends around the whole call. The variants alternate
and the median of the repeats is printed:

- ``current``: scout-tasks' ``firing.fire_due`` as it is;
- ``baseline``: the hand-written loop of ``baseline.py``;
- ``minimal``: the minimal loop of ``minimal.py``.

    python bench/profile_fire.py --count 20000 --repeat 3
"""

from __future__ import annotations

import argparse
import collections
import functools
import time
import uuid
from typing import Any

import baseline
import common
import minimal

from scout_tasks import firing, outbox, policy, runs, schedules
from scout_tasks import publisher as publisher_module
from scout_tasks.db import make_engine
from scout_tasks.publisher import ConfirmingPublisher

VARIANTS = ["current", "baseline", "minimal"]


class Timers:
    """CPU seconds per wrapped function, reset per measurement."""

    def __init__(self) -> None:
        self.seconds: collections.Counter[str] = collections.Counter()

    def wrap(self, owner: Any, name: str, label: str) -> None:
        inner = getattr(owner, name)

        @functools.wraps(inner)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[label] += time.process_time() - start

        setattr(owner, name, timed)


TIMERS = Timers()
PARTS = [
    (firing, "_fire_batch", "firing._fire_batch (claim, plan, write: one transaction)"),
    (schedules, "claim_due", "schedules.claim_due"),
    (policy, "plan", "policy.plan"),
    (runs, "insert_scheduled_runs", "runs.insert_scheduled_runs"),
    # Wrapped where they are called from: these modules imported the names.
    (firing, "trigger_body", "events.trigger_body"),
    (outbox, "add_messages", "outbox.add_messages"),
    (schedules, "advance", "schedules.advance"),
    (outbox, "send", "outbox.send (lock, encode, write)"),
    (publisher_module, "write_batch", "publish_frames.write_batch"),
    (outbox, "settle", "outbox.settle (confirms, delete)"),
]
for _owner, _name, _label in PARTS:
    TIMERS.wrap(_owner, _name, _label)


def measure(variant: str, count: int) -> tuple[float, float, dict[str, float]]:
    """CPU µs per run of this process and of the database's backends, and per part."""
    exchange = f"bench-profile-{uuid.uuid4().hex[:8]}"
    with common.scratch_database() as db_url, common.counting_queue(exchange) as queue:
        common.insert_schedules(db_url, count, common.db_now(db_url))
        TIMERS.seconds.clear()
        if variant in ("baseline", "minimal"):
            cpu: dict[str, float] = {}
            loop = baseline.fire_due if variant == "baseline" else minimal.fire_due
            loop(db_url, exchange, cpu=cpu)
            used, db_used = cpu["client"], cpu["db"]
        else:
            engine = make_engine(db_url)
            publisher = ConfirmingPublisher(common.BROKER_URL, exchange)
            try:
                with engine.begin():
                    pass  # connect before the clock starts, as a warm worker has
                publisher._connect()
                db_before = common.cpu_of(common.backends(db_url))
                start = time.process_time()
                firing.fire_due(engine, publisher)
                used = time.process_time() - start
                db_used = common.cpu_used(db_before, common.cpu_of(common.backends(db_url)))
            finally:
                publisher.close()
                engine.dispose()
        fired = common.run_stats(db_url).runs
        if queue.depth() != fired:
            raise RuntimeError(f"{variant}: {fired} runs but {queue.depth()} messages")
        per_run = {k: 1e6 * v / fired for k, v in TIMERS.seconds.items()}
        return 1e6 * used / fired, 1e6 * db_used / fired, per_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    variants = args.variants.split(",")
    started = time.strftime("%Y-%m-%d %H:%M")
    totals: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    parts: list[dict[str, float]] = []
    try:
        for rep in range(args.repeat):
            for variant in variants if rep % 2 == 0 else variants[::-1]:
                client, db, per_part = measure(variant, args.count)
                totals[variant].append((client, db))
                if variant == "current":
                    parts.append(per_part)
                common.log(
                    f"repeat {rep + 1}/{args.repeat}: {variant} {client:.0f} µs/run "
                    f"+ PostgreSQL {db:.0f}"
                )
    finally:
        common.drop_template()

    print(
        f"\nin-process fire of {args.count:,} due schedules, CPU µs per run "
        f"({started}, {common.machine()}, median of {args.repeat})\n"
    )
    print(
        common.table(
            ["variant", "CPU µs/run", "PostgreSQL µs/run", "each repeat (CPU)"],
            [
                [
                    v,
                    f"{common.median([c for c, _ in totals[v]]):.0f}",
                    f"{common.median([d for _, d in totals[v]]):.0f}",
                    " ".join(f"{c:.0f}" for c, _ in totals[v]),
                ]
                for v in variants
            ],
        )
    )
    if parts:
        print()
        print(
            common.table(
                ["part of `current` (nested parts overlap)", "CPU µs/run"],
                [
                    [label, f"{common.median([p.get(label, 0.0) for p in parts]):.1f}"]
                    for _o, _n, label in PARTS
                ],
            )
        )


if __name__ == "__main__":
    main()
