"""The lifecycle consumer on the real servers: agents' events in RabbitMQ, runs in PostgreSQL.

Events are published to the test's exchange and consumed by the real
``LifecycleConsumer`` on a thread of its own, as the worker runs it, on this
test's queues (a fresh task queue name per test); once inside an in-process
Celery worker. The sweep runs with a pinned ``now``.
"""

from __future__ import annotations

import bz2
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import kombu
import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from kombu import Producer
from kombu.message import Message
from sqlalchemy import Engine, text

from scout_tasks import lifecycle_queues, runs, sweep
from scout_tasks.db import make_engine
from scout_tasks.deliveries import (
    DEAD_BODY_BYTES_HEADER,
    DEAD_EXCHANGE_HEADER,
    DEAD_REASON_HEADER,
    DEAD_ROUTING_KEY_HEADER,
    raw_body,
)
from scout_tasks.inbound import MAX_BODY_BYTES
from scout_tasks.lifecycle import RETRY_FIRST_DELAY, RETRY_MAX_DELAY, LifecycleConsumer
from scout_tasks.lifecycle_hold import ATTEMPTS_BEFORE_BLAME
from scout_tasks.lifecycle_queues import DELIVERY_LIMIT, LifecycleQueues
from scout_tasks.lifecycle_step import LifecycleStep
from scout_tasks.publisher import ConfirmingPublisher, OutgoingMessage
from scout_tasks.recorder import Outcome, OutcomeKind, handle_message
from tests.integration.helpers import execute, row, rows, scalar
from tests.tcp_proxy import TcpProxy

# PostgreSQL's port with nothing listening: the database is "down".
DB_DOWN_URL = "postgresql+psycopg2://postgres@127.0.0.1:1/scout"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# Headers that just fit RabbitMQ's default frame_max (131,072 bytes) when
# published: any copy with a few more headers does not (issue #10).
PAD = 130_950
COUNTERS = {
    "total_fetched": 40,
    "validated": 30,
    "validation_failed": 10,
    "duplicates_removed": 5,
    "submitted": 25,
}


# --- harness --------------------------------------------------------------------


class Harness:
    """The real consumer on a thread with its own connection, consuming this test's queues."""

    def __init__(
        self,
        broker_url: str,
        exchange: str,
        engine: Engine,
        *,
        consumer_class: type[LifecycleConsumer] = LifecycleConsumer,
        task_queue: str | None = None,
        start: bool = True,
        **options: Any,
    ) -> None:
        self.broker_url = broker_url
        self.task_queue = task_queue or f"scout-test-{uuid.uuid4().hex[:8]}"
        self.names = LifecycleQueues.for_task_queue(self.task_queue)
        self.queue, self.dead_queue = self.names.queue, self.names.dead_queue
        self.exchange = exchange
        self.engine = engine
        self.consumer_class = consumer_class
        # More LifecycleConsumer arguments (batch_size, idle, linger, ...).
        self.options = options
        self.connection = kombu.Connection(broker_url)
        self.connection.connect()
        self.consumer: LifecycleConsumer | None = None
        self.thread: threading.Thread | None = None
        if start:
            self.start()

    def start(self) -> None:
        self.consumer = self.consumer_class(
            kombu.Connection(self.broker_url),
            exchange=self.exchange,
            names=self.names,
            engine=lambda: self.engine,
            first_delay=0.2,
            max_delay=0.4,
            safety_interval=0.05,
            **self.options,
        )
        self.thread = threading.Thread(target=self.consumer.run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.consumer is not None and self.consumer.sessions >= 1, "ready")

    def stop(self) -> None:
        """Stop the consumer and close its connection: anything unacked goes back."""
        if self.consumer is not None and self.thread is not None:
            self.consumer.stop()
            self.thread.join(10)
            assert not self.thread.is_alive()
            self.thread = None

    @property
    def settled(self) -> int:
        assert self.consumer is not None
        return sum(self.consumer.settled.values())

    def expect(self, n: int, timeout: float = 20.0) -> None:
        """Wait until ``n`` deliveries in all were settled, and no more arrive for a moment."""
        wait_until(lambda: self.settled >= n, f"{n} deliveries settled", timeout)
        time.sleep(0.2)
        assert self.settled == n, self.consumer.settled if self.consumer else None

    def depth(self, queue: str) -> int:
        """Messages ready in ``queue`` (unacknowledged ones are not counted)."""
        with self.connection.channel() as channel:
            return channel.queue_declare(queue=queue, passive=True).message_count

    def take_all(self, queue: str) -> list[Message]:
        """Every message in ``queue``, as kombu Messages (raw bytes bodies)."""
        out = []
        with self.connection.channel() as channel:
            bound = kombu.Queue(queue, no_declare=True)(channel)
            while (message := bound.get(no_ack=True)) is not None:
                out.append(message)
        return out

    def close(self) -> None:
        try:
            self.stop()
            delete_names(self.connection, self.names)
        finally:
            self.connection.release()


def delete_names(connection: kombu.Connection, names: LifecycleQueues) -> None:
    for name in names.all_names():
        with contextlib.suppress(Exception), connection.channel() as channel:
            channel.queue_delete(queue=name)
    if names.dead_exchange:
        with contextlib.suppress(Exception), connection.channel() as channel:
            channel.exchange_delete(names.dead_exchange)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        time.sleep(0.02)


@pytest.fixture
def harness(broker_url: str, exchange_name: str, engine: Engine) -> Iterator[Harness]:
    h = Harness(broker_url, exchange_name, engine)
    yield h
    h.close()


@pytest.fixture
def lifecycle_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="scout_tasks.lifecycle")
    return caplog


def actions(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [getattr(r, "action", "") for r in caplog.records if r.name == "scout_tasks.lifecycle"]


def new_run(engine: Engine) -> uuid.UUID:
    with engine.begin() as conn:
        run = runs.insert_manual_run(conn, source="stratninja", max_strategies=10, triggered_by="t")
    return run["id"]


def get_run(engine: Engine, run_id: uuid.UUID) -> dict[str, Any]:
    return row(engine, "SELECT * FROM scout_runs WHERE id = :id", id=run_id)


def event(
    event_type: str,
    run_id: uuid.UUID | str,
    *,
    event_id: uuid.UUID | None = None,
    timestamp: datetime | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """An agent's event as the contract writes it."""
    return {
        "event_id": str(event_id or uuid.uuid4()),
        "event_type": event_type,
        "timestamp": (timestamp or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
        "run_id": str(run_id),
        **fields,
    }


def publish(publisher: ConfirmingPublisher, *payloads: dict[str, Any]) -> None:
    """Publish as an agent would: persistent JSON, message_id = event_id, confirmed."""
    messages = [
        OutgoingMessage(p["event_id"], p["event_type"], json.dumps(p).encode()) for p in payloads
    ]
    result = publisher.publish(messages)
    assert result.confirmed == {m.message_id for m in messages}, result.rejected


class BeyondDatetime(datetime):
    """A timestamp header py-amqp sends as about 8.6e16 seconds (a billion years on).

    py-amqp writes a datetime header from its ``utctimetuple()`` with
    ``calendar.timegm``, which counts the days field as it is given; no
    datetime can hold the value the other side decodes, as a client in
    another language could send it.
    """

    def utctimetuple(self) -> time.struct_time:
        return time.struct_time((1970, 1, 10**12, 0, 0, 0, 0, 0, 0))


def publish_raw(
    broker_url: str, exchange: str, routing_key: str, body: bytes, **properties: Any
) -> None:
    with kombu.Connection(broker_url) as conn:
        Producer(conn.default_channel).publish(
            body,
            exchange=exchange,
            routing_key=routing_key,
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,
            **properties,
        )


# --- the lifecycle of a run -----------------------------------------------------


def test_started_progress_completed_are_recorded_on_the_run(
    engine: Engine, harness: Harness, publisher: ConfirmingPublisher
) -> None:
    run_id = new_run(engine)
    created = get_run(engine, run_id)

    publish(publisher, event("scout.started", run_id, source="stratninja"))
    harness.expect(1)
    run = get_run(engine, run_id)
    assert run["status"] == "running"
    assert run["started_at"] is not None and run["started_at"] >= created["created_at"]
    assert run["completed_at"] is None
    assert run["updated_at"] >= run["started_at"]

    stamp = datetime(2026, 3, 1, 12, 5, tzinfo=UTC)
    publish(
        publisher,
        event(
            "scout.progress",
            run_id,
            timestamp=stamp,
            stage="validate",
            progress=40,
            message="validating 40 strategies",
            stage_metrics={"checked": 12},
            extra_key="tolerated",
        ),
    )
    harness.expect(2)
    run = get_run(engine, run_id)
    assert run["status"] == "running"
    assert type(run["metrics"]["progress"]["progress"]) is int
    assert run["metrics"] == {
        "progress": {
            "stage": "validate",
            "progress": 40,
            "message": "validating 40 strategies",
            "stage_metrics": {"checked": 12},
            "at": "2026-03-01T12:05:00+00:00",
        }
    }

    publish(publisher, event("scout.completed", run_id, **COUNTERS))
    harness.expect(3)
    done = get_run(engine, run_id)
    assert done["status"] == "completed"
    assert done["completed_at"] is not None and done["completed_at"] >= run["started_at"]
    assert done["started_at"] == run["started_at"]
    assert done["metrics"] == {**COUNTERS, "progress": run["metrics"]["progress"]}
    assert done["error_message"] is None
    assert done["updated_at"] >= run["updated_at"]
    ledger = rows(engine, "SELECT * FROM scout_run_events ORDER BY received_at")
    assert [r["event_type"] for r in ledger] == [
        "scout.started",
        "scout.progress",
        "scout.completed",
    ]
    assert {r["run_id"] for r in ledger} == {run_id}
    assert harness.depth(harness.queue) == 0
    assert harness.depth(harness.dead_queue) == 0


def test_completed_before_started_completes_the_run(
    engine: Engine, harness: Harness, publisher: ConfirmingPublisher
) -> None:
    run_id = new_run(engine)
    publish(publisher, event("scout.completed", run_id, **COUNTERS))
    harness.expect(1)
    publish(publisher, event("scout.started", run_id, source="stratninja"))
    harness.expect(2)

    run = get_run(engine, run_id)
    assert run["status"] == "completed"
    assert run["started_at"] is not None
    assert run["completed_at"] is not None
    assert run["started_at"] <= run["completed_at"]
    assert run["metrics"] == COUNTERS


def test_a_progress_before_started_makes_the_run_running(engine: Engine) -> None:
    run_id = new_run(engine)
    body = json.dumps(event("scout.progress", run_id, stage="fetch", progress=5, message="m"))
    outcome = handle_message(engine, body.encode(), "scout.progress", None)
    assert outcome.kind is OutcomeKind.APPLIED
    run = get_run(engine, run_id)
    assert run["status"] == "running"
    assert run["started_at"] is not None


def test_an_older_progress_arriving_late_does_not_overwrite_a_newer_one(engine: Engine) -> None:
    run_id = new_run(engine)
    newer = event("scout.progress", run_id, timestamp=NOW, stage="submit", progress=90)
    older = event(
        "scout.progress", run_id, timestamp=NOW - timedelta(minutes=5), stage="fetch", progress=10
    )
    for payload in (newer, older):
        outcome = handle_message(engine, json.dumps(payload).encode(), "scout.progress", None)
        assert outcome.kind is OutcomeKind.APPLIED
    progress = get_run(engine, run_id)["metrics"]["progress"]
    assert (progress["stage"], progress["progress"]) == ("submit", 90)


def test_the_same_event_id_twice_changes_nothing(
    engine: Engine, harness: Harness, publisher: ConfirmingPublisher
) -> None:
    run_id = new_run(engine)
    started = event("scout.started", run_id, source="stratninja")
    publish(publisher, started)
    harness.expect(1)
    first = get_run(engine, run_id)

    # A redelivery of the very same event.
    publish(publisher, started)
    harness.expect(2)
    assert get_run(engine, run_id) == first

    completed_id = uuid.uuid4()
    publish(publisher, event("scout.completed", run_id, event_id=completed_id, **COUNTERS))
    harness.expect(3)
    completed = get_run(engine, run_id)
    assert completed["status"] == "completed"

    # A failed carrying the completed event's id is a duplicate: nothing changes.
    publish(
        publisher,
        event("scout.failed", run_id, event_id=completed_id, error_message="boom", stage="x"),
    )
    harness.expect(4)
    assert get_run(engine, run_id) == completed

    # A new failed after the run ended is recorded but ignored.
    late = event("scout.failed", run_id, error_message="late boom")
    publish(publisher, late)
    harness.expect(5)
    assert get_run(engine, run_id) == completed

    ledger = {r["event_id"]: r for r in rows(engine, "SELECT * FROM scout_run_events")}
    assert len(ledger) == 3
    assert ledger[completed_id]["event_type"] == "scout.completed"
    assert ledger[uuid.UUID(late["event_id"])]["run_id"] == run_id
    assert harness.depth(harness.queue) == 0
    assert harness.depth(harness.dead_queue) == 0


def test_handle_message_reports_duplicates_and_ended_runs(engine: Engine) -> None:
    run_id = new_run(engine)
    body = json.dumps(event("scout.failed", run_id, error_message="boom")).encode()
    assert handle_message(engine, body, "scout.failed", None).kind is OutcomeKind.APPLIED
    assert handle_message(engine, body, "scout.failed", None).kind is OutcomeKind.DUPLICATE
    again = json.dumps(event("scout.started", run_id)).encode()
    assert handle_message(engine, again, "scout.started", None).kind is OutcomeKind.IGNORED


def test_failed_sets_the_error_message_and_the_stage(
    engine: Engine, harness: Harness, publisher: ConfirmingPublisher
) -> None:
    run_id = new_run(engine)
    publish(publisher, event("scout.started", run_id, source="stratninja"))
    publish(
        publisher,
        event("scout.failed", run_id, error_message="stratninja returned 503", stage="fetch"),
    )
    harness.expect(2)
    run = get_run(engine, run_id)
    assert run["status"] == "failed"
    assert run["error_message"] == "stratninja returned 503"
    assert run["completed_at"] is not None
    assert run["metrics"] == {"stage": "fetch"}


def test_a_cancelled_run_stays_cancelled(
    engine: Engine, harness: Harness, publisher: ConfirmingPublisher
) -> None:
    run_id = new_run(engine)
    with engine.begin() as conn:
        runs.cancel_run(conn, run_id)
    cancelled = get_run(engine, run_id)

    publish(
        publisher,
        event("scout.started", run_id, source="stratninja"),
        event("scout.progress", run_id, stage="fetch", progress=10, message="m"),
        event("scout.completed", run_id, **COUNTERS),
        event("scout.failed", run_id, error_message="boom"),
    )
    harness.expect(4)
    assert get_run(engine, run_id) == cancelled
    assert cancelled["status"] == "cancelled"
    assert scalar(engine, "SELECT count(*) FROM scout_run_events") == 4
    assert harness.depth(harness.queue) == 0
    assert harness.depth(harness.dead_queue) == 0


def test_an_unknown_run_is_logged_and_acknowledged(
    engine: Engine,
    harness: Harness,
    publisher: ConfirmingPublisher,
    lifecycle_logs: pytest.LogCaptureFixture,
) -> None:
    unknown = uuid.uuid4()
    payload = event("scout.completed", unknown, **COUNTERS)
    publish(publisher, payload)
    harness.expect(1)

    [record] = [
        r for r in lifecycle_logs.records if getattr(r, "action", "") == "lifecycle.unknown_run"
    ]
    assert record.run_id == str(unknown)  # type: ignore[attr-defined]
    assert record.event_id == payload["event_id"]  # type: ignore[attr-defined]
    assert record.levelno == logging.WARNING
    assert harness.consumer is not None and harness.consumer.settled == {"acked": 1}
    harness.stop()
    assert harness.depth(harness.queue) == 0
    assert harness.depth(harness.dead_queue) == 0
    assert scalar(engine, "SELECT count(*) FROM scout_runs") == 0


# --- malformed messages -----------------------------------------------------------


def test_poison_messages_are_dead_lettered_exactly_once(
    engine: Engine,
    harness: Harness,
    broker_url: str,
    exchange_name: str,
    lifecycle_logs: pytest.LogCaptureFixture,
) -> None:
    run_id = new_run(engine)
    before = get_run(engine, run_id)
    good = event("scout.progress", run_id, stage="fetch", progress=10, message="m")
    poison: dict[str, tuple[str, bytes]] = {
        "bad json": ("scout.started", b'{"run_id": '),
        "not an object": ("scout.started", b'["scout.started"]'),
        "missing run_id": (
            "scout.started",
            json.dumps(
                {k: v for k, v in event("scout.started", run_id).items() if k != "run_id"}
            ).encode(),
        ),
        "run_id not a uuid": ("scout.started", json.dumps(event("scout.started", "r-1")).encode()),
        "progress 150": ("scout.progress", json.dumps({**good, "progress": 150}).encode()),
        "progress as a string": ("scout.progress", json.dumps({**good, "progress": "50"}).encode()),
        "negative counter": (
            "scout.completed",
            json.dumps(event("scout.completed", run_id, **{**COUNTERS, "submitted": -1})).encode(),
        ),
        "counter as a string": (
            "scout.completed",
            json.dumps(event("scout.completed", run_id, **{**COUNTERS, "validated": "3"})).encode(),
        ),
        "missing error_message": (
            "scout.failed",
            json.dumps(event("scout.failed", run_id)).encode(),
        ),
        "event_type mismatch": (
            "scout.completed",
            json.dumps({**event("scout.failed", run_id, error_message="x"), **COUNTERS}).encode(),
        ),
        "NUL character": (
            "scout.failed",
            json.dumps(event("scout.failed", run_id, error_message="a\x00b")).encode(),
        ),
        "NaN": ("scout.progress", json.dumps({**good, "progress": float("nan")}).encode()),
    }
    for name, (routing_key, body) in poison.items():
        publish_raw(broker_url, exchange_name, routing_key, body, message_id=name)
    # An unknown routing key can only arrive by being sent straight to the queue.
    publish_raw(
        broker_url,
        "",
        harness.queue,
        json.dumps(event("scout.started", run_id)).encode(),
        message_id="unknown routing key",
    )
    harness.expect(len(poison) + 1)
    harness.stop()

    assert harness.depth(harness.queue) == 0
    dead = harness.take_all(harness.dead_queue)
    assert sorted(m.properties["message_id"] for m in dead) == sorted(
        [*poison, "unknown routing key"]
    )
    by_id = {m.properties["message_id"]: m for m in dead}
    for name, (routing_key, body) in poison.items():
        message = by_id[name]
        # The broker's dead letter: the message as published, and where it came from.
        assert raw_body(message) == body
        [death] = message.headers["x-death"]
        assert (death["reason"], death["count"], death["queue"]) == ("rejected", 1, harness.queue)
        assert death["exchange"] == exchange_name
        assert death["routing-keys"] == [routing_key]
        assert message.properties["delivery_mode"] == 2
        assert not any(key.startswith("x-scout-") for key in message.headers)
    # The reason is in the log line, under the message's id.
    reasons = {
        r.event_id: r.reason  # type: ignore[attr-defined]
        for r in lifecycle_logs.records
        if getattr(r, "action", "") == "lifecycle.malformed"
    }
    assert "not JSON" in reasons["bad json"]
    assert "not an object" in reasons["not an object"]
    assert "run_id" in reasons["missing run_id"]
    assert "progress" in reasons["progress 150"]
    assert "does not match" in reasons["event_type mismatch"]
    assert "NUL" in reasons["NUL character"]
    assert "unknown routing key" in reasons["unknown routing key"]
    assert harness.consumer is not None
    assert harness.consumer.settled == {"rejected": len(poison) + 1}
    assert harness.consumer.sessions == 1

    assert actions(lifecycle_logs).count("lifecycle.malformed") == len(poison) + 1
    assert get_run(engine, run_id) == before
    assert scalar(engine, "SELECT count(*) FROM scout_run_events") == 0


# --- whatever one message carries -----------------------------------------------------


def test_a_message_with_130_kb_of_headers_is_dead_lettered_once_and_costs_no_connection(
    engine: Engine,
    harness: Harness,
    broker_url: str,
    exchange_name: str,
    publisher: ConfirmingPublisher,
) -> None:
    # On main, the consumer republished it with more headers: over frame_max, the
    # broker closed the connection before the ack, and the message came back forever.
    publish_raw(
        broker_url,
        exchange_name,
        "scout.progress",
        b"not json",
        message_id="padded",
        headers={"x-pad": "p" * PAD},
    )
    run_id = new_run(engine)
    publish(publisher, event("scout.started", run_id, source="stratninja"))
    harness.expect(2)
    assert get_run(engine, run_id)["status"] == "running"
    assert harness.consumer is not None
    assert harness.consumer.settled == {"rejected": 1, "acked": 1}
    assert harness.consumer.sessions == 1
    [dead] = harness.take_all(harness.dead_queue)
    assert dead.properties["message_id"] == "padded"
    assert dead.headers["x-death"][0]["count"] == 1
    assert len(dead.headers["x-pad"]) == PAD


def test_a_5_mb_progress_is_set_aside_unparsed_and_not_stored(
    engine: Engine,
    harness: Harness,
    broker_url: str,
    exchange_name: str,
    lifecycle_logs: pytest.LogCaptureFixture,
) -> None:
    run_id = new_run(engine)
    before = get_run(engine, run_id)
    huge = event("scout.progress", run_id, stage="fetch", progress=1, message="m" * 5_000_000)
    body = json.dumps(huge).encode()
    publish_raw(broker_url, exchange_name, "scout.progress", body, message_id="huge")
    harness.expect(1)

    assert get_run(engine, run_id) == before
    assert scalar(engine, "SELECT count(*) FROM scout_run_events") == 0
    [record] = [
        r for r in lifecycle_logs.records if getattr(r, "action", "") == "lifecycle.malformed"
    ]
    assert f"over the {MAX_BODY_BYTES}-byte limit" in record.reason  # type: ignore[attr-defined]
    assert record.body_bytes == len(body)  # type: ignore[attr-defined]
    [dead] = harness.take_all(harness.dead_queue)
    assert raw_body(dead) == body


def test_a_compressed_body_is_never_inflated(
    engine: Engine,
    harness: Harness,
    broker_url: str,
    exchange_name: str,
    lifecycle_logs: pytest.LogCaptureFixture,
) -> None:
    # kombu inflates a body with a `compression` header before anyone sees it; a
    # few hundred bytes of bzip2 can be gigabytes. Here: a valid event padded to
    # 50 MB, 60 bytes or so compressed. Inflated, it would be applied (main did).
    run_id = new_run(engine)
    payload = json.dumps(event("scout.started", run_id, source="stratninja"))
    bomb = bz2.compress(payload.encode() + b" " * 50_000_000)
    assert len(bomb) < 1000
    publish_raw(
        broker_url,
        exchange_name,
        "scout.started",
        bomb,
        message_id="bomb",
        headers={"compression": "application/x-bz2"},
    )
    harness.expect(1)
    assert get_run(engine, run_id)["status"] == "pending"
    [record] = [
        r for r in lifecycle_logs.records if getattr(r, "action", "") == "lifecycle.malformed"
    ]
    assert "not JSON" in record.reason  # type: ignore[attr-defined]
    assert harness.depth(harness.dead_queue) == 1


class RaisingConsumer(LifecycleConsumer):
    """A handler with a bug that one message triggers (message_id "boom")."""

    deliveries = 0

    def handle_batch(self, messages: list[Message]) -> list[Outcome]:
        # The batch fails as a whole; the consumer then tries each message alone.
        if any(m.properties.get("message_id") == "boom" for m in messages):
            raise RuntimeError("a bug this message triggers")
        return super().handle_batch(messages)

    def handle(self, message: Message) -> Outcome:
        if message.properties.get("message_id") == "boom":
            type(self).deliveries += 1
            raise RuntimeError("a bug this message triggers")
        return super().handle(message)


def test_a_message_that_makes_the_handler_raise_stops_after_the_delivery_limit(
    engine: Engine,
    broker_url: str,
    exchange_name: str,
    publisher: ConfirmingPublisher,
) -> None:
    RaisingConsumer.deliveries = 0
    harness = Harness(broker_url, exchange_name, engine, consumer_class=RaisingConsumer)
    try:
        run_id = new_run(engine)
        publish_raw(
            broker_url,
            exchange_name,
            "scout.started",
            json.dumps(event("scout.started", run_id)).encode(),
            message_id="boom",
        )
        # The first delivery, then DELIVERY_LIMIT more: the broker dead-letters it.
        harness.expect(DELIVERY_LIMIT + 1)
        assert RaisingConsumer.deliveries == DELIVERY_LIMIT + 1
        assert harness.consumer is not None
        assert harness.consumer.settled == {"returned": DELIVERY_LIMIT + 1}
        [dead] = harness.take_all(harness.dead_queue)
        assert dead.properties["message_id"] == "boom"
        assert dead.headers["x-death"][0]["reason"] == "delivery_limit"
        assert harness.depth(harness.queue) == 0

        # Other events go on being applied.
        publish(publisher, event("scout.completed", run_id, **COUNTERS))
        harness.expect(DELIVERY_LIMIT + 2)
        assert get_run(engine, run_id)["status"] == "completed"
        assert harness.consumer.sessions == 1
    finally:
        harness.close()


def test_the_consumer_reconnects_with_backoff_and_loses_nothing(
    engine: Engine,
    broker_url: str,
    exchange_name: str,
    publisher: ConfirmingPublisher,
    lifecycle_logs: pytest.LogCaptureFixture,
) -> None:
    proxy = TcpProxy()
    proxied = broker_url.replace("127.0.0.1:5672", f"127.0.0.1:{proxy.port}")
    assert proxied != broker_url
    harness = Harness(broker_url, exchange_name, engine, start=False)
    harness.broker_url = proxied
    try:
        harness.start()
        consumer = harness.consumer
        assert consumer is not None
        proxy.cut()
        run_id = new_run(engine)
        # Published while the consumer is away: it waits in the queue.
        publish(publisher, event("scout.started", run_id, source="stratninja"))
        time.sleep(1.5)
        # 0.2 s, then 0.4 s between attempts: a few, not a storm.
        assert 2 <= actions(lifecycle_logs).count("lifecycle.reconnect") <= 6
        assert get_run(engine, run_id)["status"] == "pending"
        proxy.restore()
        harness.expect(1)
        assert get_run(engine, run_id)["status"] == "running"
        assert consumer.sessions == 2
    finally:
        harness.close()
        proxy.close()


def test_a_frame_the_consumer_cannot_decode_costs_seconds_not_minutes(
    engine: Engine,
    broker_url: str,
    exchange_name: str,
    publisher: ConfirmingPublisher,
    lifecycle_logs: pytest.LogCaptureFixture,
) -> None:
    # The production delays: the fault was the backoff climbing 1, 2, 4, 8, 16 s
    # while the broker redelivered one message py-amqp cannot decode.
    harness = Harness(broker_url, exchange_name, engine, start=False)
    consumer = LifecycleConsumer(
        kombu.Connection(broker_url),
        exchange=exchange_name,
        names=harness.names,
        engine=lambda: engine,
        first_delay=RETRY_FIRST_DELAY,
        max_delay=RETRY_MAX_DELAY,
    )
    harness.consumer = consumer
    harness.thread = threading.Thread(target=consumer.run, daemon=True)
    harness.thread.start()
    try:
        wait_until(lambda: consumer.sessions >= 1, "ready")
        run_id = new_run(engine)
        # A timestamp header beyond what a datetime holds (AMQP allows any 64-bit
        # count of seconds): the consumer's py-amqp raises OSError(EOVERFLOW)
        # decoding the frame, every delivery.
        publish_raw(
            broker_url,
            exchange_name,
            "scout.started",
            b"{}",
            headers={"when": BeyondDatetime(2026, 1, 1)},
            message_id="poison",
        )
        started = time.monotonic()
        publish(publisher, event("scout.started", run_id, source="stratninja"))

        wait_until(lambda: get_run(engine, run_id)["status"] == "running", "the valid event", 10.0)
        assert time.monotonic() - started < 10.0
        wait_until(lambda: harness.depth(harness.dead_queue) == 1, "poison dead-lettered", 10.0)
        assert harness.depth(harness.queue) == 0
        assert consumer.sessions >= DELIVERY_LIMIT
        assert any(
            getattr(r, "reason", "").startswith("undecodable frame") for r in lifecycle_logs.records
        )
    finally:
        harness.close()


def test_a_queue_deleted_under_the_consumer_is_declared_again(
    engine: Engine, harness: Harness, publisher: ConfirmingPublisher
) -> None:
    with harness.connection.channel() as channel:
        channel.queue_delete(queue=harness.queue)
    wait_until(lambda: harness.consumer is not None and harness.consumer.sessions == 2, "back")
    run_id = new_run(engine)
    publish(publisher, event("scout.started", run_id, source="stratninja"))
    harness.expect(1)
    assert get_run(engine, run_id)["status"] == "running"


class StickyConsumer(LifecycleConsumer):
    """One message (message_id "sticky") fails like an outage while the database answers."""

    attempts = 0

    def handle_batch(self, messages: list[Message]) -> list[Outcome]:
        others = [m for m in messages if m.properties.get("message_id") != "sticky"]
        recorded = iter(super().handle_batch(others) if others else [])
        return [self._sticky() if m not in others else next(recorded) for m in messages]

    def handle(self, message: Message) -> Outcome:
        if message.properties.get("message_id") == "sticky":
            return self._sticky()
        return super().handle(message)

    def _sticky(self) -> Outcome:
        type(self).attempts += 1
        return Outcome(OutcomeKind.RETRY, reason="looks like an outage, is not one")


def test_a_message_that_keeps_failing_while_the_database_answers_is_not_held_forever(
    engine: Engine, broker_url: str, exchange_name: str, publisher: ConfirmingPublisher
) -> None:
    StickyConsumer.attempts = 0
    harness = Harness(broker_url, exchange_name, engine, consumer_class=StickyConsumer)
    try:
        run_id = new_run(engine)
        publish_raw(
            broker_url,
            exchange_name,
            "scout.started",
            json.dumps(event("scout.started", run_id)).encode(),
            message_id="sticky",
        )
        publish(publisher, event("scout.completed", run_id, **COUNTERS))
        # Blamed after ATTEMPTS_BEFORE_BLAME tries per delivery, returned (a delivery
        # spent), and dead-lettered by the broker after the limit; the other event
        # is applied meanwhile.
        harness.expect(DELIVERY_LIMIT + 2, timeout=40)
        assert harness.consumer is not None
        assert harness.consumer.settled == {"returned": DELIVERY_LIMIT + 1, "acked": 1}
        assert StickyConsumer.attempts == ATTEMPTS_BEFORE_BLAME * (DELIVERY_LIMIT + 1)
        assert get_run(engine, run_id)["status"] == "completed"
        [dead] = harness.take_all(harness.dead_queue)
        assert dead.properties["message_id"] == "sticky"
        assert dead.headers["x-death"][0]["reason"] == "delivery_limit"
    finally:
        harness.close()


# --- the database is down ---------------------------------------------------------


def test_while_the_database_is_down_events_are_held_then_applied(
    engine: Engine,
    broker_url: str,
    exchange_name: str,
    publisher: ConfirmingPublisher,
) -> None:
    down = make_engine(DB_DOWN_URL)
    harness = Harness(broker_url, exchange_name, down)
    try:
        run_id = new_run(engine)
        started = event("scout.started", run_id, source="stratninja")
        progress = event("scout.progress", run_id, stage="fetch", progress=5)
        publish(publisher, started, progress)
        time.sleep(3.0)
        consumer = harness.consumer
        assert consumer is not None
        # Backing off (0.2 s, then every 0.4 s), one attempt per delay, not one per
        # message: a handful of attempts in 3 s.
        assert 4 <= consumer.db_failures <= 10, consumer.db_failures
        assert consumer.settled == {}
        assert get_run(engine, run_id)["status"] == "pending"
        # Held unacknowledged, not returned: more attempts than the delivery limit
        # allows deliveries, and still nothing is dead-lettered.
        assert consumer.db_failures > DELIVERY_LIMIT + 1
        assert harness.depth(harness.queue) == 0
        assert harness.depth(harness.dead_queue) == 0

        # The database is back: both are applied on the next attempt.
        harness.engine = engine
        harness.expect(2)
        assert consumer.settled == {"acked": 2}
        run = get_run(engine, run_id)
        assert run["status"] == "running"
        assert run["metrics"]["progress"]["stage"] == "fetch"
        assert harness.depth(harness.dead_queue) == 0
    finally:
        harness.close()
        down.dispose()


def test_a_run_an_operator_holds_locked_delays_only_its_own_events(
    engine: Engine,
    broker_url: str,
    exchange_name: str,
    publisher: ConfirmingPublisher,
    harness: Harness,
) -> None:
    # An operator's open transaction on one run (a console editing it) must not
    # stop the recording of every other run's events: those runs would go
    # silent, and the stale-run sweep fail them while their agents still work.
    locked, other = new_run(engine), new_run(engine)
    with engine.connect() as operator:
        operator.execute(text("SELECT 1 FROM scout_runs WHERE id = :id FOR UPDATE"), {"id": locked})
        publish(publisher, event("scout.started", locked, source="stratninja"))
        time.sleep(0.3)
        publish(publisher, event("scout.started", other, source="stratninja"))
        wait_until(
            lambda: get_run(engine, other)["status"] == "running", "the other run recorded", 15
        )
        # Held, for as long as the lock lasts: neither returned nor dead-lettered.
        time.sleep(8)
        assert harness.depth(harness.dead_queue) == 0
        operator.rollback()
    wait_until(lambda: get_run(engine, locked)["status"] == "running", "the locked run", 45)
    harness.expect(2, timeout=10)
    assert harness.depth(harness.dead_queue) == 0
    assert harness.depth(harness.queue) == 0


def test_a_stopped_consumer_returns_what_it_held(
    engine: Engine, broker_url: str, exchange_name: str, publisher: ConfirmingPublisher
) -> None:
    down = make_engine(DB_DOWN_URL)
    harness = Harness(broker_url, exchange_name, down)
    try:
        run_id = new_run(engine)
        publish(publisher, event("scout.started", run_id, source="stratninja"))
        wait_until(lambda: harness.consumer is not None and harness.consumer.db_failures >= 2, "")
        harness.stop()
        # The broker puts an unacked message back when the consumer's channel is
        # gone, a moment after the stop returns.
        wait_until(lambda: harness.depth(harness.queue) == 1, "the held event requeued", 10)
        harness.engine = engine
        harness.start()
        harness.expect(1)
        assert get_run(engine, run_id)["status"] == "running"
    finally:
        harness.close()
        down.dispose()


def test_handle_message_says_retry_when_the_database_is_down(
    lifecycle_logs: pytest.LogCaptureFixture,
) -> None:
    down = make_engine(DB_DOWN_URL)
    try:
        body = json.dumps(event("scout.started", uuid.uuid4())).encode()
        outcome = handle_message(down, body, "scout.started", None)
    finally:
        down.dispose()
    assert outcome.kind is OutcomeKind.RETRY
    assert not outcome.settled
    assert "lifecycle.db_error" in actions(lifecycle_logs)


# --- forged timestamps ------------------------------------------------------------------


FAR_FUTURE = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)


def test_a_far_future_timestamp_does_not_freeze_the_progress(engine: Engine) -> None:
    run_id = new_run(engine)
    forged = event("scout.progress", run_id, timestamp=FAR_FUTURE, stage="forged", progress=1)
    assert handle_message(engine, json.dumps(forged).encode(), "scout.progress", None).kind is (
        OutcomeKind.APPLIED
    )
    stored = get_run(engine, run_id)["metrics"]["progress"]
    assert stored["stage"] == "forged"
    # Counted as received now, not in 9999.
    db_now = scalar(engine, "SELECT now()")
    assert abs(datetime.fromisoformat(stored["at"]) - db_now) < timedelta(minutes=1)

    real = event("scout.progress", run_id, stage="validate", progress=50)
    handle_message(engine, json.dumps(real).encode(), "scout.progress", None)
    assert get_run(engine, run_id)["metrics"]["progress"]["stage"] == "validate"


def test_a_far_future_at_already_stored_no_longer_outranks_anything(engine: Engine) -> None:
    run_id = new_run(engine)
    # Written before the rule existed (or by hand).
    execute(
        engine,
        "UPDATE scout_runs SET status = 'running', metrics = CAST(:m AS jsonb) WHERE id = :id",
        id=run_id,
        m=json.dumps({"progress": {"stage": "forged", "at": "9999-12-31T00:00:00+00:00"}}),
    )
    real = event("scout.progress", run_id, stage="validate", progress=50)
    handle_message(engine, json.dumps(real).encode(), "scout.progress", None)
    assert get_run(engine, run_id)["metrics"]["progress"]["stage"] == "validate"


def test_a_timestamp_a_little_ahead_still_orders_progress(engine: Engine) -> None:
    # Agents' clocks drift: within the allowance, the agent's order stands.
    run_id = new_run(engine)
    db_now = scalar(engine, "SELECT now()")
    ahead = event(
        "scout.progress", run_id, timestamp=db_now + timedelta(minutes=2), stage="b", progress=2
    )
    older = event("scout.progress", run_id, timestamp=db_now, stage="a", progress=1)
    for payload in (ahead, older):
        handle_message(engine, json.dumps(payload).encode(), "scout.progress", None)
    assert get_run(engine, run_id)["metrics"]["progress"]["stage"] == "b"


def test_a_far_future_progress_does_not_keep_a_run_from_the_stale_sweep(engine: Engine) -> None:
    run_id = new_run(engine)
    forged = event("scout.progress", run_id, timestamp=FAR_FUTURE, stage="forged", progress=1)
    handle_message(engine, json.dumps(forged).encode(), "scout.progress", None)
    assert get_run(engine, run_id)["status"] == "running"
    db_now = scalar(engine, "SELECT now()")
    assert sweep.sweep_stale_runs(engine, db_now + timedelta(seconds=59), 3600, 60) == 0
    assert sweep.sweep_stale_runs(engine, db_now + timedelta(seconds=61), 3600, 60) == 1
    run = get_run(engine, run_id)
    assert (run["status"], run["error_message"]) == ("failed", "no event for 60s")


# --- bounded fields -----------------------------------------------------------------------


def test_long_text_is_cut_and_bulky_stage_metrics_dropped_with_a_note(engine: Engine) -> None:
    run_id = new_run(engine)
    progress = event(
        "scout.progress",
        run_id,
        stage="s" * 1000,
        progress=3,
        message="m" * 10_000,
        stage_metrics={"blob": "x" * 20_000},
    )
    handle_message(engine, json.dumps(progress).encode(), "scout.progress", None)
    stored = get_run(engine, run_id)["metrics"]["progress"]
    assert len(stored["stage"]) == 200 and stored["stage"].endswith("…")
    assert len(stored["message"]) == 4000
    assert stored["stage_metrics"] is None
    assert "over the 16384-byte limit" in stored["note"]

    failed = event("scout.failed", run_id, error_message="e" * 100_000, stage="x" * 300)
    handle_message(engine, json.dumps(failed).encode(), "scout.failed", None)
    run = get_run(engine, run_id)
    assert len(run["error_message"]) == 4000
    assert len(run["metrics"]["stage"]) == 200


# --- moving off the classic queue of earlier versions ---------------------------------------


def _declares_as(broker_url: str, queue: str, arguments: dict[str, Any]) -> bool:
    """Whether ``queue`` exists with exactly these arguments (the broker refuses others)."""
    with kombu.Connection(broker_url) as conn:
        try:
            with conn.channel() as channel:
                channel.queue_declare(
                    queue=queue, durable=True, auto_delete=False, arguments=arguments
                )
        except conn.channel_errors:
            return False
    return True


def test_the_old_classic_queue_is_drained_into_the_run_then_deleted(
    engine: Engine, broker_url: str, exchange_name: str, lifecycle_logs: pytest.LogCaptureFixture
) -> None:
    task_queue = f"scout-test-{uuid.uuid4().hex[:8]}"
    names = LifecycleQueues.for_task_queue(task_queue)
    run_id = new_run(engine)
    # What an earlier version left: the classic queue, bound, holding events,
    # one of them poison (non-JSON with 130 KB of headers), and an empty DLQ.
    with kombu.Connection(broker_url) as conn:
        channel = conn.channel()
        exchange = kombu.Exchange(exchange_name, type="topic", durable=True)
        exchange(channel).declare()
        for name in (names.legacy_queue, names.legacy_dead_queue):
            channel.queue_declare(queue=name, durable=True, auto_delete=False)
        for key in ("scout.started", "scout.progress", "scout.completed", "scout.failed"):
            channel.queue_bind(names.legacy_queue, exchange_name, key)
    publish_raw(
        broker_url,
        exchange_name,
        "scout.started",
        json.dumps(event("scout.started", run_id)).encode(),
        message_id="old started",
    )
    publish_raw(
        broker_url,
        exchange_name,
        "scout.progress",
        b"not json",
        message_id="old poison",
        headers={"x-pad": "p" * PAD},
    )
    harness = Harness(broker_url, exchange_name, engine, task_queue=task_queue)
    try:
        harness.expect(2)
        assert harness.consumer is not None
        assert harness.consumer.settled == {"acked": 1, "set_aside": 1}
        assert get_run(engine, run_id)["status"] == "running"
        assert scalar(engine, "SELECT count(*) FROM scout_run_events") == 1
        gone = lambda: lifecycle_queues.legacy_message_count(harness.connection, names.legacy_queue)  # noqa: E731
        wait_until(lambda: gone() is None, "the old queue deleted", timeout=15)
        assert (
            lifecycle_queues.legacy_message_count(harness.connection, names.legacy_dead_queue)
            is None
        )
        quorum = lifecycle_queues.main_queue_arguments(names)
        assert quorum["x-queue-type"] == "quorum"
        assert _declares_as(broker_url, names.queue, quorum)
        assert not _declares_as(broker_url, names.queue, {**quorum, "x-queue-type": "classic"})
        # The old poison, set aside by a bounded copy (its headers left out).
        dead = {m.properties["message_id"]: m for m in harness.take_all(names.dead_queue)}
        copy = dead["old poison"]
        assert raw_body(copy) == b"not json"
        assert "x-pad" not in copy.headers
        assert "not JSON" in copy.headers[DEAD_REASON_HEADER]
        assert copy.headers[DEAD_ROUTING_KEY_HEADER] == "scout.progress"
        assert copy.headers[DEAD_EXCHANGE_HEADER] == exchange_name
        assert len(dead) == 1
        assert "lifecycle.legacy_deleted" in actions(lifecycle_logs)
    finally:
        harness.close()


def test_an_old_dead_letter_queue_with_messages_is_left_for_an_operator(
    engine: Engine, broker_url: str, exchange_name: str
) -> None:
    task_queue = f"scout-test-{uuid.uuid4().hex[:8]}"
    names = LifecycleQueues.for_task_queue(task_queue)
    with kombu.Connection(broker_url) as conn:
        conn.channel().queue_declare(queue=names.legacy_dead_queue, durable=True, auto_delete=False)
    publish_raw(broker_url, "", names.legacy_dead_queue, b"set aside long ago")
    harness = Harness(broker_url, exchange_name, engine, task_queue=task_queue)
    try:
        time.sleep(0.5)
        assert harness.depth(names.legacy_dead_queue) == 1
    finally:
        harness.close()


# --- the embedded default's filesystem:// broker -------------------------------------------


def test_on_the_filesystem_broker_a_malformed_message_is_set_aside_by_copy(
    engine: Engine, tmp_path: Any
) -> None:
    from scout_tasks.broker import broker_transport_options

    url = f"filesystem://localhost{tmp_path}/broker"
    options = broker_transport_options(url)
    names = LifecycleQueues.for_task_queue("scout-tasks", dead_lettering=False)
    assert (names.queue, names.dead_queue) == (
        "scout-tasks.lifecycle",
        "scout-tasks.lifecycle.dead",
    )
    consumer = LifecycleConsumer(
        kombu.Connection(url, transport_options=options),
        exchange="scout",
        names=names,
        engine=lambda: engine,
        safety_interval=0.05,
    )
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: consumer.sessions >= 1, "ready")
        run_id = new_run(engine)
        with kombu.Connection(url, transport_options=options) as conn:
            producer = Producer(conn.default_channel)
            for routing_key, body, message_id in (
                ("scout.progress", b"not json", "poison"),
                ("scout.started", json.dumps(event("scout.started", run_id)).encode(), "ok"),
            ):
                producer.publish(
                    body,
                    exchange="scout",
                    routing_key=routing_key,
                    content_type="application/json",
                    content_encoding="utf-8",
                    message_id=message_id,
                    headers={"x-pad": "p" * 1000},
                )
        wait_until(lambda: sum(consumer.settled.values()) >= 2, "both settled")
        assert consumer.settled == {"set_aside": 1, "acked": 1}
        assert get_run(engine, run_id)["status"] == "running"
        with kombu.Connection(url, transport_options=options) as conn:
            copy = kombu.Queue(names.dead_queue, no_declare=True)(conn.default_channel).get()
            assert copy is not None
            assert copy.properties["message_id"] == "poison"
            assert raw_body(copy) == b"not json"
            assert "not JSON" in copy.headers[DEAD_REASON_HEADER]
            assert copy.headers[DEAD_BODY_BYTES_HEADER] == len(b"not json")
            assert "x-pad" not in copy.headers
    finally:
        consumer.stop()
        thread.join(10)
    assert not thread.is_alive()


# --- inside a real Celery worker ------------------------------------------------------


def test_the_bootstep_runs_inside_a_celery_worker_on_its_own_connection(
    engine: Engine, broker_url: str, exchange_name: str, publisher: ConfirmingPublisher
) -> None:
    suffix = uuid.uuid4().hex[:8]
    task_queue = f"scout-test-{suffix}"
    steps: list[LifecycleStep] = []

    class WorkerLifecycleStep(LifecycleStep):
        def get_engine(self) -> Engine:
            return engine

        def exchange_name(self) -> str:
            return exchange_name

        def task_queue(self) -> str:
            return task_queue

        def start(self, worker: Any) -> None:
            steps.append(self)
            super().start(worker)

    app = Celery(f"scout-lifecycle-test-{suffix}", set_as_current=False)
    app.conf.update(
        broker_url=broker_url,
        task_default_queue=f"scout-test-tasks-{suffix}",
        result_backend=None,
        worker_hijack_root_logger=False,
    )
    app.steps["worker"].add(WorkerLifecycleStep)
    run_id = new_run(engine)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=20) as w:
            [step] = steps
            assert step.consumer is not None and step.thread is not None
            wait_until(lambda: step.consumer is not None and step.consumer.sessions == 1, "ready")
            # Not the worker's task connection: a connection of its own.
            assert step.consumer.connection is not w.consumer.connection
            publish(publisher, event("scout.started", run_id, source="stratninja"))
            wait_until(lambda: get_run(engine, run_id)["status"] == "running", "recorded")
            thread = step.thread
        # The worker stopped: so did the consumer's thread.
        assert not thread.is_alive()
    finally:
        with kombu.Connection(broker_url) as conn:
            delete_names(conn, LifecycleQueues.for_task_queue(task_queue))
            with contextlib.suppress(Exception), conn.channel() as channel:
                channel.queue_delete(queue=f"scout-test-tasks-{suffix}")
        app.close()


# --- stale runs -------------------------------------------------------------------


def _run_at(
    engine: Engine, status: str, *, created: timedelta, updated: timedelta | None = None
) -> uuid.UUID:
    """A run with ``created_at``/``updated_at`` that long before NOW."""
    run_id = new_run(engine)
    execute(
        engine,
        "UPDATE scout_runs SET status = :status, created_at = :created, updated_at = :updated,"
        " started_at = CASE WHEN :status = 'pending' THEN NULL ELSE CAST(:created AS timestamptz)"
        " END WHERE id = :id",
        id=run_id,
        status=status,
        created=NOW - created,
        updated=NOW - (updated if updated is not None else created),
    )
    return run_id


def test_the_sweep_fails_runs_that_never_started_or_went_quiet(engine: Engine) -> None:
    hour = timedelta(hours=1)
    stale_pending = _run_at(engine, "pending", created=hour + timedelta(seconds=1))
    fresh_pending = _run_at(engine, "pending", created=hour - timedelta(seconds=1))
    stale_running = _run_at(
        engine, "running", created=10 * hour, updated=6 * hour + timedelta(seconds=1)
    )
    fresh_running = _run_at(engine, "running", created=10 * hour, updated=5 * hour)
    ended = {
        status: _run_at(engine, status, created=30 * hour)
        for status in ("completed", "failed", "cancelled")
    }
    before = {run_id: get_run(engine, run_id) for run_id in [fresh_pending, fresh_running]}
    before.update({run_id: get_run(engine, run_id) for run_id in ended.values()})

    swept = sweep.sweep_stale_runs(engine, NOW, 3600, 21600)

    assert swept == 2
    pending = get_run(engine, stale_pending)
    assert pending["status"] == "failed"
    assert pending["error_message"] == "no scout.started within 3600s"
    assert pending["completed_at"] == NOW
    running = get_run(engine, stale_running)
    assert running["status"] == "failed"
    assert running["error_message"] == "no event for 21600s"
    assert running["completed_at"] == NOW
    for run_id, was in before.items():
        assert get_run(engine, run_id) == was
    # Idempotent: nothing is left to sweep.
    assert sweep.sweep_stale_runs(engine, NOW, 3600, 21600) == 0


def test_the_sweep_skips_a_stale_run_another_transaction_holds_and_never_waits(
    engine: Engine,
) -> None:
    hour = timedelta(hours=1)
    held = _run_at(engine, "pending", created=2 * hour)
    other = _run_at(engine, "pending", created=2 * hour)
    with engine.connect() as operator:
        # An operator's open transaction on the row (a console editing it).
        operator.execute(text("SELECT 1 FROM scout_runs WHERE id = :id FOR UPDATE"), {"id": held})
        done: list[int] = []
        sweeper = threading.Thread(
            target=lambda: done.append(sweep.sweep_stale_runs(engine, NOW, 3600, 21600)),
            daemon=True,
        )
        sweeper.start()
        sweeper.join(20)
        assert done == [1], "the sweep waited for a locked run"
        operator.rollback()
    assert get_run(engine, other)["status"] == "failed"
    assert get_run(engine, held)["status"] == "pending"
    # Released: the next sweep takes it.
    assert sweep.sweep_stale_runs(engine, NOW, 3600, 21600) == 1
    assert get_run(engine, held)["status"] == "failed"


def test_the_sweep_uses_the_database_clock_by_default(engine: Engine) -> None:
    fresh = new_run(engine)
    execute(
        engine,
        "UPDATE scout_runs SET created_at = now() - interval '2 hours' WHERE id = :id",
        id=new_run(engine),
    )
    assert sweep.sweep_stale_runs(engine, None, 3600, 21600) == 1
    assert get_run(engine, fresh)["status"] == "pending"


def test_the_sweep_can_use_the_partial_index_of_active_runs(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = conn.execute(
            text("EXPLAIN " + runs._FAIL_STALE.text),
            {
                "now": NOW,
                "pending_timeout": 3600,
                "run_timeout": 21600,
                "pending_message": "p",
                "running_message": "r",
            },
        ).scalars()
        assert "ix_scout_runs_active" in "\n".join(plan)


def test_a_naive_now_is_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        sweep.sweep_stale_runs(engine, datetime(2026, 3, 1, 12), 3600, 21600)
