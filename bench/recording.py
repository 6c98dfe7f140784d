"""Recording: the agents' lifecycle events for N runs published at once, recorded by the worker.

For each repetition, on a fresh scratch database each time, N pending runs are
inserted and their ``scout.started`` and ``scout.completed`` events (2N, every
``started`` first, then every ``completed``, each with its own ``event_id``) are
published with confirms to the events exchange, routing key = event type, as
the agents would. Measured: from the first publish until all N runs are
``completed``; events/s = 2N / that time.

- scout-tasks: a real ``celery -A scout_tasks worker -c 2``, ready first (its
  lifecycle consumer has recorded a probe event). The events go to the
  exchange, not to a queue by name, so the bench does not depend on what the
  worker calls its lifecycle queue.
- minimal: a batched consumer in a child process on an identical database: its
  own durable queue bound to the two routing keys, prefetch 1,000, batches of up
  to 500 messages (what has arrived), per batch one transaction with the ledger
  insert (``ON CONFLICT (event_id) DO NOTHING RETURNING``), one UPDATE per event
  kind for the events that were new, then one multiple ack.

The two take turns (their order swaps every repetition) and the medians are
reported with the ratio ours / minimal.

    python bench/recording.py --runs 5000 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import common
import kombu
import minimal
import psycopg2.extensions
from kombu import Exchange, Queue, binding

STARTED, COMPLETED = "scout.started", "scout.completed"
TRIGGERED_BY = "bench-recording"
PROBE = "bench-recording-probe"
COUNTERS = {
    "total_fetched": 120,
    "validated": 100,
    "validation_failed": 20,
    "duplicates_removed": 5,
    "submitted": 95,
}
# The minimal consumer's knobs.
PREFETCH = 1000
BATCH = 500


@dataclass
class Result:
    elapsed: float
    events: int  # published
    completed: int  # runs completed at the end
    ledger: int  # scout_run_events rows for the bench runs
    client_cpu: float  # the consumer: worker + pool, or the minimal child
    db_cpu: float  # every PostgreSQL backend of the scratch database but the poller's

    @property
    def rate(self) -> float:
        return self.events / self.elapsed


# --- setup and events ---------------------------------------------------------------


def insert_runs(db_url: str, count: int, triggered_by: str = TRIGGERED_BY) -> list[str]:
    """``count`` pending manual runs; returns their ids."""
    conn = common.connect(db_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                """
                INSERT INTO scout_runs (trigger_type, triggered_by, source, max_strategies, status)
                SELECT 'manual', %s, 'bench', 10, 'pending' FROM generate_series(1, %s)
                RETURNING id
                """,
                (triggered_by, count),
            )
            ids = [str(row[0]) for row in cur.fetchall()]
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE scout_runs")
    finally:
        conn.close()
    return ids


def _iso_now() -> str:
    return datetime.now(UTC).isoformat().removesuffix("+00:00") + "Z"


def event(kind: str, run_id: str) -> tuple[str, bytes]:
    """(event_id, body) of one agent event for ``run_id``."""
    event_id = str(uuid.uuid4())
    body: dict[str, Any] = {
        "event_id": event_id,
        "event_type": kind,
        "timestamp": _iso_now(),
        "run_id": run_id,
    }
    if kind == STARTED:
        body["source"] = "bench"
    else:
        body.update(COUNTERS)
    return event_id, json.dumps(body, separators=(",", ":")).encode()


def publish_all(publisher: minimal.BatchConfirms, run_ids: list[str]) -> None:
    """Every run's ``scout.started``, then every run's ``scout.completed``, confirmed."""
    for kind in (STARTED, COMPLETED):
        publisher.publish([event(kind, run_id) for run_id in run_ids], kind)


class Poller:
    """How many bench runs are completed; the CPU of the database's other backends."""

    def __init__(self, db_url: str) -> None:
        self.conn = common.connect(db_url)
        self.conn.autocommit = True
        self.pid = self.conn.get_backend_pid()

    def completed(self, triggered_by: str = TRIGGERED_BY) -> int:
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM scout_runs WHERE triggered_by = %s AND status = 'completed'",
                (triggered_by,),
            )
            return int(cur.fetchone()[0])  # type: ignore[index]

    def ledger(self) -> int:
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM scout_run_events e JOIN scout_runs r ON r.id = e.run_id"
                " WHERE r.triggered_by = %s",
                (TRIGGERED_BY,),
            )
            return int(cur.fetchone()[0])  # type: ignore[index]

    def backends(self) -> list[int]:
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return [int(row[0]) for row in cur.fetchall()]

    def close(self) -> None:
        self.conn.close()


def _timed(
    db_url: str,
    exchange: str,
    run_ids: list[str],
    consumer_pids: Any,
    timeout: float,
) -> Result:
    """Publish every event, wait until every run is completed; CPU of ``consumer_pids()``."""
    poller = Poller(db_url)
    publisher = minimal.BatchConfirms(common.BROKER_URL, exchange)
    try:
        cpu_before = common.cpu_of(consumer_pids()), common.cpu_of(poller.backends())
        start = time.monotonic()
        publish_all(publisher, run_ids)
        deadline = start + timeout
        while (done := poller.completed()) < len(run_ids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{done:,} of {len(run_ids):,} runs completed after {timeout} s")
            time.sleep(0.01)
        elapsed = time.monotonic() - start
        client = common.cpu_used(cpu_before[0], common.cpu_of(consumer_pids()))
        db = common.cpu_used(cpu_before[1], common.cpu_of(poller.backends()))
        return Result(elapsed, 2 * len(run_ids), done, poller.ledger(), client, db)
    finally:
        publisher.close()
        poller.close()


# --- scout-tasks ----------------------------------------------------------------------


def wait_for_lifecycle(db_url: str, exchange: str, timeout: float = 90.0) -> None:
    """Until the worker records a probe run's ``scout.started``.

    Published as mandatory: while no queue is bound to the routing key yet the
    broker returns it, and the probe is sent again.
    """
    (probe,) = insert_runs(db_url, 1, PROBE)
    publisher = minimal.BatchConfirms(common.BROKER_URL, exchange)
    poller = Poller(db_url)
    deadline = time.monotonic() + timeout
    try:
        routed = False
        while not routed:
            try:
                publisher.publish([event(STARTED, probe)], STARTED)
                routed = True
            except RuntimeError:  # returned: no lifecycle queue bound yet
                publisher.failed = 0
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with poller.conn.cursor() as cur:
            while True:
                cur.execute("SELECT status FROM scout_runs WHERE id = %s", (probe,))
                if cur.fetchone()[0] == "running":  # type: ignore[index]
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError("the worker never recorded the probe's scout.started")
                time.sleep(0.05)
    finally:
        poller.close()
        publisher.close()


def measure_ours(count: int, loglevel: str, timeout: float) -> Result:
    exchange = f"bench-rec-{uuid.uuid4().hex[:8]}"
    task_queue = f"bench-tasks-{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="scout-bench-"))
    with common.scratch_database() as db_url:
        run_ids = insert_runs(db_url, count)
        env = common.scout_env(db_url, exchange, task_queue)
        worker = common.CeleryProcess("worker", env, workdir, concurrency=2, loglevel=loglevel)
        try:
            wait_for_lifecycle(db_url, exchange)
            return _timed(
                db_url, exchange, run_ids, lambda: common.process_tree(worker.pid), timeout
            )
        except Exception:
            common.log(worker.log()[-3000:])
            raise
        finally:
            worker.stop()
            common.delete_broker_objects(
                queues=common.worker_queues(task_queue), exchanges=[task_queue, exchange]
            )
            for path in workdir.iterdir():
                path.unlink()
            workdir.rmdir()


# --- the minimal batched consumer -------------------------------------------------------

_LEDGER = """
    INSERT INTO scout_run_events (event_id, run_id, event_type)
    SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::text[])
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
"""
_STARTED = """
    UPDATE scout_runs
    SET status = 'running', started_at = COALESCE(started_at, now()), updated_at = now()
    WHERE id = ANY(%s::uuid[]) AND status IN ('pending', 'running')
"""
_COMPLETED = """
    UPDATE scout_runs AS r
    SET status = 'completed',
        metrics = COALESCE(r.metrics, '{}'::jsonb) || u.counters,
        started_at = COALESCE(r.started_at, now()),
        completed_at = now(),
        updated_at = now()
    FROM unnest(%s::uuid[], %s::jsonb[]) AS u(id, counters)
    WHERE r.id = u.id AND r.status IN ('pending', 'running')
"""


def record_batch(conn: psycopg2.extensions.connection, messages: list[Any]) -> None:
    """One transaction for a batch: the ledger, then one UPDATE per event kind."""
    events = []
    for message in messages:
        body = json.loads(message.body)
        events.append(
            (body["event_id"], body["run_id"], message.delivery_info["routing_key"], body)
        )
    with conn, conn.cursor() as cur:
        cur.execute(
            _LEDGER,
            ([e[0] for e in events], [e[1] for e in events], [e[2] for e in events]),
        )
        new = {str(row[0]) for row in cur.fetchall()}
        started = [e[1] for e in events if e[0] in new and e[2] == STARTED]
        completed = [e for e in events if e[0] in new and e[2] == COMPLETED]
        if started:
            cur.execute(_STARTED, (started,))
        if completed:
            cur.execute(
                _COMPLETED,
                (
                    [e[1] for e in completed],
                    [json.dumps({k: e[3][k] for k in COUNTERS}) for e in completed],
                ),
            )


def consume(db_url: str, queue: str, ready: Any, stop: Any) -> None:
    """The minimal consumer's loop (a child process): batches of what has arrived."""
    conn = common.connect(db_url)
    broker = kombu.Connection(common.BROKER_URL)
    broker.connect()
    channel = broker.channel()
    channel.basic_qos(0, PREFETCH, False)
    arrived: list[Any] = []
    channel.basic_consume(queue, callback=arrived.append)
    ready.set()
    try:
        while not stop.is_set():
            try:
                broker.drain_events(timeout=0.2)
            except TimeoutError:
                continue
            # Take what is already on the socket, up to a batch.
            while len(arrived) < BATCH:
                try:
                    broker.drain_events(timeout=0.001)
                except TimeoutError:
                    break
            batch = arrived[:BATCH]
            del arrived[:BATCH]
            record_batch(conn, batch)
            channel.basic_ack(batch[-1].delivery_tag, multiple=True)
    finally:
        with contextlib.suppress(Exception):
            broker.release()
        conn.close()


def measure_minimal(count: int, timeout: float) -> Result:
    exchange = f"bench-rec-min-{uuid.uuid4().hex[:8]}"
    queue_name = f"bench-rec-min-{uuid.uuid4().hex[:8]}"
    events = Exchange(exchange, type="topic", durable=True)
    with common.scratch_database() as db_url:
        run_ids = insert_runs(db_url, count)
        with kombu.Connection(common.BROKER_URL) as conn:
            Queue(
                queue_name,
                bindings=[binding(events, routing_key=key) for key in (STARTED, COMPLETED)],
                durable=True,
                auto_delete=False,
            )(conn.default_channel).declare()
        ctx = multiprocessing.get_context("fork")
        ready, stop = ctx.Event(), ctx.Event()
        child = ctx.Process(target=consume, args=(db_url, queue_name, ready, stop), daemon=True)
        child.start()
        try:
            if not ready.wait(30):
                raise RuntimeError("the minimal consumer did not start")
            pid = child.pid
            assert pid is not None
            return _timed(db_url, exchange, run_ids, lambda: [pid], timeout)
        finally:
            stop.set()
            child.join(10)
            if child.is_alive():
                child.kill()
                child.join()
            common.delete_broker_objects(queues=[queue_name], exchanges=[exchange])


# --- report -------------------------------------------------------------------------------

CONTENDERS = ("ours", "minimal")
LABELS = {"ours": "scout-tasks", "minimal": "minimal consumer"}


def _row(label: str, results: list[Result]) -> list[str]:
    return [
        label,
        f"{common.median([r.elapsed for r in results]):.2f}",
        f"{common.median([r.rate for r in results]):,.0f}",
        f"{common.median([1e6 * r.client_cpu / r.events for r in results]):.0f}",
        f"{common.median([1e6 * r.db_cpu / r.events for r in results]):.0f}",
        " ".join(f"{r.rate:,.0f}" for r in results),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5000, help="runs (2 events each)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--loglevel", default="warning", help="celery -l for the worker")
    args = parser.parse_args()
    timeout = max(120.0, args.runs / 20)

    results: dict[str, list[Result]] = {who: [] for who in CONTENDERS}
    started = time.strftime("%Y-%m-%d %H:%M")
    try:
        for rep in range(args.repeat):
            k = rep % len(CONTENDERS)
            for who in CONTENDERS[k:] + CONTENDERS[:k]:
                common.log(f"repeat {rep + 1}/{args.repeat}: {LABELS[who]}, {args.runs:,} runs")
                if who == "ours":
                    r = measure_ours(args.runs, args.loglevel, timeout)
                else:
                    r = measure_minimal(args.runs, timeout)
                results[who].append(r)
                common.log(
                    f"  {r.elapsed:.2f} s, {r.rate:,.0f} events/s, completed {r.completed:,}, "
                    f"ledger {r.ledger:,}, CPU {r.client_cpu:.2f} s + PostgreSQL {r.db_cpu:.2f} s"
                )
                if r.completed != args.runs or r.ledger != r.events:
                    common.log(f"  WARNING: expected {args.runs:,} runs and {r.events:,} rows")
    finally:
        common.drop_template()

    print(
        f"\nrecording {args.runs:,} runs = {2 * args.runs:,} events "
        f"({started}, {common.machine()}, median of {args.repeat})\n"
    )
    headers = ["", "time s", "events/s", "CPU µs/event", "PG µs/event", "each run events/s"]
    print(common.table(headers, [_row(LABELS[w], results[w]) for w in CONTENDERS]))
    ours, mine = results["ours"], results["minimal"]
    ratio = common.median([r.rate for r in ours]) / common.median([r.rate for r in mine])
    each = " ".join(f"{o.rate / m.rate:.2f}" for o, m in zip(ours, mine, strict=True))
    print()
    print(
        common.table(["", "ours/minimal (events/s)", "each repeat"], [["", f"{ratio:.2f}x", each]])
    )


if __name__ == "__main__":
    main()
