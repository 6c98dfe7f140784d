"""Where a burst's CPU goes: in-process ``fire_due`` beside the two loops, part by part.

Fires N due schedules in this process (no Celery), on a fresh scratch database
each time, and reads ``time.process_time()`` around the main functions, and the
CPU of the database's backends around the whole call. The variants alternate
and the median of the repeats is printed:

- ``current``: scout-tasks' ``firing.fire_due`` as it is;
- ``baseline``: the hand-written loop of ``baseline.py``;
- ``minimal``: the minimal loop of ``minimal.py``.

    python bench/profile_fire.py --count 20000 --repeat 3
    python bench/profile_fire.py --count 1000 --idle 1000000   # beside idle schedules
"""

from __future__ import annotations

import argparse
import collections
import functools
import re
import time
import uuid
from typing import Any

import baseline
import common
import minimal
from sqlalchemy import Engine, event

from scout_tasks import fire_write, firing, outbox, policy, schedules
from scout_tasks import publisher as publisher_module
from scout_tasks.db import make_engine
from scout_tasks.publisher import ConfirmingPublisher
from scout_tasks.settings import Settings

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
    # Wrapped where it is called from: firing imported the name.
    (firing, "trigger_body", "events.trigger_body"),
    (fire_write, "insert_runs_and_events", "fire_write.insert_runs_and_events"),
    (schedules, "advance", "schedules.advance"),
    (outbox, "send", "outbox.send (lock, encode, write)"),
    (publisher_module, "write_batch", "publish_frames.write_batch"),
    (outbox, "settle", "outbox.settle (confirms, delete)"),
]
for _owner, _name, _label in PARTS:
    TIMERS.wrap(_owner, _name, _label)


def _backend_ns(pid: int) -> int:
    """CPU nanoseconds a backend has run (``/proc/<pid>/schedstat``: exact, not in ticks)."""
    with open(f"/proc/{pid}/schedstat") as fh:
        return int(fh.read().split()[0])


class StatementCpu:
    """The database's CPU per statement kind: its backend's schedstat read around each one.

    A statement is named by its first words (``INSERT INTO scout_runs``); the
    commit of a transaction is what the backend spent between its last
    statement and the next transaction's first.
    """

    def __init__(self) -> None:
        self.ns: collections.Counter[str] = collections.Counter()

    def attach(self, engine: Engine) -> None:
        @event.listens_for(engine, "before_cursor_execute")
        def _before(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            pid = conn.connection.dbapi_connection.get_backend_pid()
            now = _backend_ns(pid)
            last = conn.info.pop("scout_profile_last", None)
            if last is not None:
                self.ns["between statements (commit, ...)"] += now - last
            conn.info["scout_profile_start"] = (now, _name(statement))

        @event.listens_for(engine, "after_cursor_execute")
        def _after(conn: Any, _cursor: Any, *_args: Any) -> None:
            pid = conn.connection.dbapi_connection.get_backend_pid()
            now = _backend_ns(pid)
            start, name = conn.info.pop("scout_profile_start")
            self.ns[name] += now - start
            conn.info["scout_profile_last"] = now


def _name(statement: str) -> str:
    words = re.sub(r"\s+", " ", statement).strip().split(" ")
    if words[0] == "WITH":
        return "WITH " + " ".join(w for w in words if w.startswith("scout_"))[:60]
    return " ".join(words[:4])[:60]


STATEMENTS = StatementCpu()


def measure(
    variant: str, count: int, batch_size: int
) -> tuple[float, float, dict[str, float], dict[str, float]]:
    """CPU µs per run of this process and of the database's backends, and per part."""
    exchange = f"bench-profile-{uuid.uuid4().hex[:8]}"
    with common.scratch_database() as db_url, common.counting_queue(exchange) as queue:
        common.insert_schedules(db_url, count, common.db_now(db_url))
        TIMERS.seconds.clear()
        STATEMENTS.ns.clear()
        if variant in ("baseline", "minimal"):
            cpu: dict[str, float] = {}
            loop = baseline.fire_due if variant == "baseline" else minimal.fire_due
            loop(db_url, exchange, cpu=cpu)
            used, db_used = cpu["client"], cpu["db"]
        else:
            engine = make_engine(db_url)
            STATEMENTS.attach(engine)
            publisher = ConfirmingPublisher(common.BROKER_URL, exchange)
            try:
                with engine.begin():
                    pass  # connect before the clock starts, as a warm worker has
                publisher._connect()
                db_before = common.cpu_of(common.backends(db_url))
                start = time.process_time()
                firing.fire_due(engine, publisher, batch_size=batch_size)
                used = time.process_time() - start
                db_used = common.cpu_used(db_before, common.cpu_of(common.backends(db_url)))
            finally:
                publisher.close()
                engine.dispose()
        fired = common.run_stats(db_url).runs
        if queue.depth() != fired:
            raise RuntimeError(f"{variant}: {fired} runs but {queue.depth()} messages")
        per_run = {k: 1e6 * v / fired for k, v in TIMERS.seconds.items()}
        per_statement = {k: 1e-3 * v / fired for k, v in STATEMENTS.ns.items()}
        return 1e6 * used / fired, 1e6 * db_used / fired, per_run, per_statement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=Settings.model_fields["fire_batch_size"].default,
        help="scout-tasks' fire batch (default: the worker's, SCOUT_FIRE_BATCH_SIZE's default)",
    )
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--idle",
        type=int,
        default=0,
        help="schedules in every database that are not due (the table's size beyond the count)",
    )
    args = parser.parse_args()
    common.use_idle_schedules(args.idle)
    variants = args.variants.split(",")
    started = time.strftime("%Y-%m-%d %H:%M")
    totals: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    parts: list[dict[str, float]] = []
    statements: list[dict[str, float]] = []
    try:
        for rep in range(args.repeat):
            for variant in variants if rep % 2 == 0 else variants[::-1]:
                client, db, per_part, per_statement = measure(variant, args.count, args.batch_size)
                totals[variant].append((client, db))
                if variant == "current":
                    parts.append(per_part)
                    statements.append(per_statement)
                common.log(
                    f"repeat {rep + 1}/{args.repeat}: {variant} {client:.0f} µs/run "
                    f"+ PostgreSQL {db:.0f}"
                )
    finally:
        common.drop_template()

    print(
        f"\nin-process fire of {args.count:,} due schedules, CPU µs per run "
        f"({started}, {common.machine()}, median of {args.repeat}; "
        f"scout-tasks' batches of {args.batch_size}"
        + (f", {args.idle:,} idle schedules beside them" if args.idle else "")
        + ")\n"
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

    if statements:
        names = sorted({n for s in statements for n in s}, key=lambda n: -statements[0].get(n, 0))
        print()
        print(
            common.table(
                ["PostgreSQL, per statement of `current` (backend schedstat)", "µs/run"],
                [[n, f"{common.median([s.get(n, 0.0) for s in statements]):.1f}"] for n in names],
            )
        )


if __name__ == "__main__":
    main()
