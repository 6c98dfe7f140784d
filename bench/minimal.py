"""The minimal loop: the practical floor for firing on this machine.

Per batch of 1,000 due schedules, one transaction holding one statement: claim
them with ``FOR UPDATE SKIP LOCKED``, set their ``next_run_at`` to a constant
and insert their runs (``ON CONFLICT DO NOTHING RETURNING``); commit; then
publish the batch's ``scout.trigger`` events with the channel's own
``basic_publish`` on a channel in confirm mode and wait until the last delivery
tag is acked. No cron, no outbox, no Celery, one process. Unlike ``baseline.py``
it computes no next fire time and builds no per-schedule Python objects beyond
the message bodies, so it is what any scheduler doing the same durable work
(run row committed, event confirmed) could hope to reach.

``python bench/minimal.py --count 10000`` fires that many due schedules on a
scratch database and prints the rate.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from datetime import UTC, datetime

import amqp
import common
import kombu
import psycopg2.extensions
from kombu import Exchange

# Where a fired schedule's next_run_at goes: far enough that it never comes due
# again during a run, and the same for every row (no cron).
NEVER = datetime(2999, 1, 1, tzinfo=UTC)

_FIRE_BATCH = """
    WITH due AS (
        SELECT id, name, source, max_strategies, next_run_at
        FROM scout_schedules
        WHERE enabled AND next_run_at <= now()
        ORDER BY next_run_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ), advanced AS (
        UPDATE scout_schedules AS s SET next_run_at = %(never)s
        FROM due WHERE s.id = due.id
    )
    INSERT INTO scout_runs (trigger_type, triggered_by, source, max_strategies, status,
                            schedule_id, scheduled_for)
    SELECT 'scheduled', name, source, max_strategies, 'pending', id, next_run_at FROM due
    ON CONFLICT (schedule_id, scheduled_for) DO NOTHING
    RETURNING id, triggered_by, source, max_strategies, schedule_id, scheduled_for, now(),
              (SELECT count(*) FROM due)
"""


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().removesuffix("+00:00") + "Z"


class BatchConfirms:
    """A channel in confirm mode: publish a batch with ``basic_publish``, then wait for its acks."""

    def __init__(self, broker_url: str, exchange: str) -> None:
        self.connection = kombu.Connection(broker_url)
        self.connection.connect()
        self.channel = self.connection.channel()
        Exchange(exchange, type="topic", durable=True)(self.channel).declare()
        self.exchange = exchange
        self.channel.confirm_select()
        self.channel.events["basic_ack"].add(self._on_ack)
        self.channel.events["basic_nack"].add(self._on_nack)
        self.channel.events["basic_return"].add(self._on_return)
        self.published = 0
        self.acked_upto = 0
        self.acked: set[int] = set()
        self.failed = 0

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self.acked_upto = max(self.acked_upto, delivery_tag)
        else:
            self.acked.add(delivery_tag)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self.failed += 1
        self._on_ack(delivery_tag, multiple)

    def _on_return(self, *_args: object) -> None:
        self.failed += 1

    def publish(
        self, messages: list[tuple[str, bytes]], routing_key: str, timeout: float = 30.0
    ) -> None:
        """Publish (message_id, body) pairs persistently, then drain until all are confirmed."""
        for message_id, body in messages:
            self.channel.basic_publish(
                amqp.Message(
                    body,
                    content_type="application/json",
                    content_encoding="utf-8",
                    delivery_mode=2,
                    message_id=message_id,
                ),
                exchange=self.exchange,
                routing_key=routing_key,
                mandatory=True,
            )
        first, self.published = self.published + 1, self.published + len(messages)
        deadline = time.monotonic() + timeout
        for tag in range(first, self.published + 1):
            while tag > self.acked_upto and tag not in self.acked:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no confirm for delivery tag {tag}")
                self.connection.drain_events(timeout=timeout)
        self.acked.clear()
        if self.failed:
            raise RuntimeError(f"{self.failed} message(s) nacked or returned")

    def close(self) -> None:
        self.connection.release()


def fire_due(
    db_url: str,
    exchange: str,
    *,
    broker_url: str = common.BROKER_URL,
    batch_size: int = 1000,
    start_at: float | None = None,
    cpu: dict[str, float] | None = None,
) -> float:
    """Fire every due schedule of ``db_url``; returns the elapsed seconds.

    The same interface as ``baseline.fire_due``: connections first, then wait
    for ``start_at`` (a ``time.time()`` value) when given; ``cpu`` receives the
    CPU seconds of this process (``client``) and of its PostgreSQL backend (``db``).
    """
    conn = common.connect(db_url)
    backend = conn.get_backend_pid()
    publisher = BatchConfirms(broker_url, exchange)
    try:
        if start_at is not None:
            common.sleep_until(start_at)
            start = time.monotonic() - max(0.0, time.time() - start_at)
        else:
            start = time.monotonic()
        cpu_start = time.process_time(), common.cpu_seconds(backend)
        while True:
            with conn, conn.cursor() as cur:
                cur.execute(_FIRE_BATCH, {"limit": batch_size, "never": NEVER})
                rows = cur.fetchall()
            messages = []
            for run_id, name, source, max_strategies, sid, slot, now, _claimed in rows:
                event_id = str(uuid.uuid4())
                body = {
                    "event_id": event_id,
                    "event_type": "scout.trigger",
                    "timestamp": _iso(now),
                    "run_id": str(run_id),
                    "source": source,
                    "max_strategies": max_strategies,
                    "trigger_type": "scheduled",
                    "triggered_by": name,
                    "schedule_id": str(sid),
                    "scheduled_for": _iso(slot),
                }
                messages.append((event_id, json.dumps(body, separators=(",", ":")).encode()))
            if messages:
                publisher.publish(messages, "scout.trigger")
            if rows:
                if rows[0][7] < batch_size:
                    break
            # A batch whose every insert lost to a conflict returns no rows, so
            # an empty answer alone does not mean nothing is due.
            elif not _due_left(conn):
                break
        elapsed = time.monotonic() - start
        if cpu is not None:
            cpu["client"] = time.process_time() - cpu_start[0]
            cpu["db"] = common.cpu_seconds(backend) - cpu_start[1]
        return elapsed
    finally:
        publisher.close()
        conn.close()


def _due_left(conn: psycopg2.extensions.connection) -> bool:
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT EXISTS (SELECT 1 FROM scout_schedules WHERE enabled AND next_run_at <= now())"
        )
        return bool(cur.fetchone()[0])  # type: ignore[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="due schedules to fire")
    args = parser.parse_args()
    exchange = f"bench-minimal-{uuid.uuid4().hex[:8]}"
    try:
        with common.scratch_database() as db_url, common.counting_queue(exchange) as queue:
            common.insert_schedules(db_url, args.count, common.db_now(db_url))
            elapsed = fire_due(db_url, exchange)
            stats = common.run_stats(db_url)
            print(
                f"minimal loop: {stats.runs:,} runs in {elapsed:.2f} s = "
                f"{stats.runs / elapsed:,.0f} fires/s; queue holds {queue.depth():,}"
            )
    finally:
        common.drop_template()


if __name__ == "__main__":
    main()
