"""The hand-written baseline: the loop a careful engineer would write without scout-tasks.

Per batch of 1,000 due schedules, one transaction: claim them with
``FOR UPDATE SKIP LOCKED``, insert their runs (``execute_values``, ``ON CONFLICT
DO NOTHING RETURNING``), advance ``next_run_at`` (cronsim, cached per
(expression, zone)), commit; then publish the batch's ``scout.trigger`` events
through a kombu ``Producer`` on a channel in confirm mode and drain the
connection until the last delivery tag is acked. No outbox, no Celery, one
process.

``python bench/baseline.py --count 10000`` fires that many due schedules on a
scratch database and prints the rate.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import common
import kombu
from cronsim import CronSim
from kombu import Exchange, Producer
from psycopg2.extras import execute_values

_CLAIM = """
    SELECT id, name, cron_expression, timezone, source, max_strategies, next_run_at, now()
    FROM scout_schedules
    WHERE enabled AND next_run_at <= now()
    ORDER BY next_run_at
    LIMIT %s
    FOR UPDATE SKIP LOCKED
"""

_INSERT_RUNS = """
    INSERT INTO scout_runs (id, trigger_type, triggered_by, source, max_strategies, status,
                            schedule_id, scheduled_for)
    VALUES %s
    ON CONFLICT (schedule_id, scheduled_for) DO NOTHING
    RETURNING id
"""
_RUN_ROW = "(%s::uuid, 'scheduled', %s, %s, %s, 'pending', %s::uuid, %s::timestamptz)"

_ADVANCE = """
    UPDATE scout_schedules AS s
    SET next_run_at = u.next_run_at,
        last_run_id = COALESCE(u.run_id, s.last_run_id),
        last_run_at = CASE WHEN u.run_id IS NULL THEN s.last_run_at ELSE now() END
    FROM (VALUES %s) AS u(id, next_run_at, run_id)
    WHERE s.id = u.id
"""
_ADVANCE_ROW = "(%s::uuid, %s::timestamptz, %s::uuid)"


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().removesuffix("+00:00") + "Z"


class NextTimes:
    """Next fire times with cronsim, cached per (expression, zone).

    The cache holds, per (expression, zone), the last question's ``after`` and
    its answer; any ``after`` between the two has the same answer, so a burst
    of schedules sharing an expression costs one cronsim walk per batch.
    """

    def __init__(self) -> None:
        self._zones: dict[str, ZoneInfo] = {}
        self._cache: dict[tuple[str, str], tuple[datetime, datetime]] = {}

    def after(self, expr: str, zone: str, after: datetime) -> datetime:
        key = (expr, zone)
        hit = self._cache.get(key)
        if hit is not None and hit[0] <= after < hit[1]:
            return hit[1]
        tz = self._zones.get(zone)
        if tz is None:
            tz = self._zones[zone] = ZoneInfo(zone)
        result = after
        for fire in CronSim(expr, after.astimezone(tz)):
            result = fire.astimezone(UTC)
            if result > after:
                break
        self._cache[key] = (after, result)
        return result


class ConfirmingChannel:
    """A kombu channel in confirm mode with a basic_ack callback: batch publish, then wait."""

    def __init__(self, broker_url: str, exchange: str) -> None:
        self.connection = kombu.Connection(broker_url)
        self.connection.connect()
        self.channel = self.connection.channel()
        self.channel.confirm_select()
        self.channel.events["basic_ack"].add(self._on_ack)
        self.channel.events["basic_nack"].add(self._on_nack)
        self.channel.events["basic_return"].add(self._on_return)
        events = Exchange(exchange, type="topic", durable=True, auto_delete=False)
        events(self.channel).declare()
        self.producer = Producer(self.channel, exchange=events, auto_declare=False)
        self.published = 0
        self.acked_upto = 0
        self.acked: set[int] = set()
        self.nacked = 0
        self.returned = 0

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self.acked_upto = max(self.acked_upto, delivery_tag)
        else:
            self.acked.add(delivery_tag)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self.nacked += 1
        self._on_ack(delivery_tag, multiple)

    def _on_return(self, *_args: object) -> None:
        self.returned += 1

    def publish_confirmed(self, messages: list[tuple[str, bytes]], timeout: float = 30.0) -> None:
        """Publish (message_id, body) pairs, then drain until every tag is confirmed."""
        first = self.published + 1
        for message_id, body in messages:
            self.producer.publish(
                body,
                routing_key="scout.trigger",
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
                message_id=message_id,
                mandatory=True,
                retry=False,
            )
        self.published += len(messages)
        deadline = time.monotonic() + timeout
        tag = first
        while tag <= self.published:
            if tag <= self.acked_upto or tag in self.acked:
                tag += 1
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"no confirm for delivery tag {tag}")
            self.connection.drain_events(timeout=timeout)
        self.acked.clear()
        if self.nacked or self.returned:
            raise RuntimeError(f"{self.nacked} nacked, {self.returned} returned")

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

    Connections are opened first; with ``start_at`` (a ``time.time()`` value)
    the loop then waits for that instant and the clock starts there, otherwise
    it starts at once. A ``cpu`` dict receives the CPU seconds the loop used in
    this process (``client``) and in its PostgreSQL backend (``db``).
    """
    conn = common.connect(db_url)
    backend = conn.get_backend_pid()
    publisher = ConfirmingChannel(broker_url, exchange)
    nexts = NextTimes()
    try:
        if start_at is not None:
            common.sleep_until(start_at)
            start = time.monotonic() - max(0.0, time.time() - start_at)
        else:
            start = time.monotonic()
        cpu_start = time.process_time(), common.cpu_seconds(backend)
        while True:
            with conn, conn.cursor() as cur:
                cur.execute(_CLAIM, (batch_size,))
                claimed = cur.fetchall()
                if not claimed:
                    break
                now = claimed[0][7]
                run_rows = []
                payloads: dict[str, tuple[str, dict[str, object]]] = {}
                for sid, name, _expr, _zone, source, max_strategies, slot, _now in claimed:
                    run_id = str(uuid.uuid4())
                    run_rows.append((run_id, name, source, max_strategies, sid, slot))
                    payloads[run_id] = (
                        str(uuid.uuid4()),
                        {
                            "run_id": run_id,
                            "source": source,
                            "max_strategies": max_strategies,
                            "trigger_type": "scheduled",
                            "triggered_by": name,
                            "schedule_id": sid,
                            "scheduled_for": _iso(slot),
                        },
                    )
                inserted = {
                    row[0]
                    for row in execute_values(
                        cur,
                        _INSERT_RUNS,
                        run_rows,
                        template=_RUN_ROW,
                        page_size=batch_size,
                        fetch=True,
                    )
                }
                # A slot that already had a run (another claimer won) still advances.
                advance_rows = [
                    (
                        sid,
                        nexts.after(expr, zone, now),
                        run_id if run_id in inserted else None,
                    )
                    for (sid, _n, expr, zone, *_rest), (run_id, *_run) in zip(
                        claimed, run_rows, strict=True
                    )
                ]
                execute_values(
                    cur, _ADVANCE, advance_rows, template=_ADVANCE_ROW, page_size=batch_size
                )
            stamp = _iso(now)
            messages = []
            for run_id, (event_id, fields) in payloads.items():
                if run_id not in inserted:
                    continue
                body = {
                    "event_id": event_id,
                    "event_type": "scout.trigger",
                    "timestamp": stamp,
                    **fields,
                }
                messages.append((event_id, json.dumps(body, separators=(",", ":")).encode()))
            publisher.publish_confirmed(messages)
            if len(claimed) < batch_size:
                break
        elapsed = time.monotonic() - start
        if cpu is not None:
            cpu["client"] = time.process_time() - cpu_start[0]
            cpu["db"] = common.cpu_seconds(backend) - cpu_start[1]
        return elapsed
    finally:
        publisher.close()
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="due schedules to fire")
    args = parser.parse_args()
    exchange = f"bench-baseline-{uuid.uuid4().hex[:8]}"
    try:
        with common.scratch_database() as db_url, common.counting_queue(exchange) as queue:
            common.insert_schedules(db_url, args.count, common.db_now(db_url))
            elapsed = fire_due(db_url, exchange)
            stats = common.run_stats(db_url)
            print(
                f"baseline: {stats.runs:,} runs in {elapsed:.2f} s = "
                f"{stats.runs / elapsed:,.0f} fires/s; queue holds {queue.depth():,}"
            )
    finally:
        common.drop_template()


if __name__ == "__main__":
    main()
