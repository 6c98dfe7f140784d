"""Recording without Celery: the lifecycle consumer's own CPU per event beside the minimal one's.

For each repetition, on a fresh scratch database each time, N pending runs get
their ``scout.started`` and ``scout.completed`` events published (as in
``recording.py``) before any consumer runs; then one consumer drains the queue
on a thread of this process: ours (``scout_tasks.lifecycle.LifecycleConsumer``,
its default batching) or the minimal one (``recording.consume``). Measured:
the time until every run is completed, and the consuming thread's CPU
(``time.thread_time()``), so what a Celery worker around it costs is left out.
The two alternate; medians are printed, with the ratios ours / minimal (of
thread CPU per event, the steadier figure on a shared machine, and of
events/s) and each repeat's. Ours also logs how many batches it recorded.

    python bench/profile_recording.py --runs 5000 --repeat 3
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import common
import kombu
import minimal
import recording
from kombu import Exchange, Queue, binding

from scout_tasks.db import make_engine
from scout_tasks.lifecycle import LifecycleConsumer
from scout_tasks.lifecycle_queues import LifecycleQueues, declare_queues


def _drain(db_url: str, count: int, run: Callable[[], None], stop: Callable[[], None]) -> Any:
    """Run ``run`` on a thread until every run is completed; (seconds, thread CPU seconds)."""
    cpu: dict[str, float] = {}

    def target() -> None:
        start = time.thread_time()
        run()
        cpu["s"] = time.thread_time() - start

    thread = threading.Thread(target=target)
    poller = recording.Poller(db_url)
    try:
        start = time.monotonic()
        thread.start()
        while poller.completed() < count:
            time.sleep(0.01)
        elapsed = time.monotonic() - start
    finally:
        stop()
        thread.join(30)
        poller.close()
    return elapsed, cpu["s"]


def measure_ours(count: int) -> tuple[float, float]:
    exchange = f"bench-prof-rec-{uuid.uuid4().hex[:8]}"
    names = LifecycleQueues.for_task_queue(f"bench-prof-tasks-{uuid.uuid4().hex[:8]}")
    with common.scratch_database() as db_url:
        run_ids = recording.insert_runs(db_url, count)
        engine = make_engine(db_url)
        try:
            with kombu.Connection(common.BROKER_URL) as conn:
                declare_queues(conn.default_channel, exchange, names)
            publisher = minimal.BatchConfirms(common.BROKER_URL, exchange)
            recording.publish_all(publisher, run_ids)
            publisher.close()
            consumer = LifecycleConsumer(
                kombu.Connection(common.BROKER_URL),
                exchange=exchange,
                names=names,
                engine=lambda: engine,
            )
            result = _drain(db_url, count, consumer.run, consumer.stop)
            common.log(f"  {consumer.batches} batches, the largest {consumer.largest_batch}")
            return result  # type: ignore[no-any-return]
        finally:
            engine.dispose()
            common.delete_broker_objects(
                queues=list(names.all_names()), exchanges=[names.dead_exchange, exchange]
            )


def measure_minimal(count: int) -> tuple[float, float]:
    exchange = f"bench-prof-min-{uuid.uuid4().hex[:8]}"
    queue = f"bench-prof-min-{uuid.uuid4().hex[:8]}"
    events = Exchange(exchange, type="topic", durable=True)
    with common.scratch_database() as db_url:
        run_ids = recording.insert_runs(db_url, count)
        try:
            with kombu.Connection(common.BROKER_URL) as conn:
                Queue(
                    queue,
                    bindings=[
                        binding(events, routing_key=k)
                        for k in (recording.STARTED, recording.COMPLETED)
                    ],
                    durable=True,
                    auto_delete=False,
                )(conn.default_channel).declare()
            publisher = minimal.BatchConfirms(common.BROKER_URL, exchange)
            recording.publish_all(publisher, run_ids)
            publisher.close()
            ready, stop = threading.Event(), threading.Event()
            return _drain(  # type: ignore[no-any-return]
                db_url, count, lambda: recording.consume(db_url, queue, ready, stop), stop.set
            )
        finally:
            common.delete_broker_objects(queues=[queue], exchanges=[exchange])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5000, help="runs (2 events each)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    measures = {"scout-tasks consumer": measure_ours, "minimal consumer": measure_minimal}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in measures}
    started = time.strftime("%Y-%m-%d %H:%M")
    try:
        for rep in range(args.repeat):
            order = list(measures) if rep % 2 == 0 else list(reversed(measures))
            for name in order:
                elapsed, cpu = measures[name](args.runs)
                common.log(
                    f"repeat {rep + 1}/{args.repeat}: {name}: {elapsed:.2f} s, "
                    f"CPU {1e6 * cpu / (2 * args.runs):.0f} µs/event"
                )
                results[name].append((elapsed, cpu))
    finally:
        common.drop_template()
    events = 2 * args.runs
    print(
        f"\nrecording {args.runs:,} runs = {events:,} events already queued, in-process "
        f"({started}, {common.machine()}, median of {args.repeat})\n"
    )
    rows = [
        [
            name,
            f"{common.median([e for e, _ in rs]):.2f}",
            f"{common.median([events / e for e, _ in rs]):,.0f}",
            f"{common.median([1e6 * c / events for _, c in rs]):.0f}",
        ]
        for name, rs in results.items()
    ]
    print(common.table(["", "time s", "events/s", "thread CPU µs/event"], rows))
    ours, mine = results["scout-tasks consumer"], results["minimal consumer"]
    cpu = common.median([c for _, c in ours]) / common.median([c for _, c in mine])
    rate = common.median([e for e, _ in mine]) / common.median([e for e, _ in ours])
    pairs = list(zip(ours, mine, strict=True))
    print()
    print(
        common.table(
            ["ours / minimal", "median", "each repeat"],
            [
                [
                    "thread CPU per event",
                    f"{cpu:.2f}x",
                    " ".join(f"{o[1] / m[1]:.2f}" for o, m in pairs),
                ],
                ["events/s", f"{rate:.2f}x", " ".join(f"{m[0] / o[0]:.2f}" for o, m in pairs)],
            ],
        )
    )


if __name__ == "__main__":
    main()
