"""The lifecycle consumer on the real servers: agents' events in RabbitMQ, runs in PostgreSQL.

Events are published to the test's exchange and consumed by the real
``LifecycleConsumer`` bootstep, started on a plain kombu connection (the
worker's consumer blueprint reduced to the connection it hands the step) and
once inside an in-process Celery worker. The sweep runs with a pinned ``now``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import kombu
import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from kombu import Producer
from sqlalchemy import Engine, text

from scout_tasks import lifecycle, runs
from scout_tasks.db import make_engine
from scout_tasks.lifecycle import (
    DEAD_EXCHANGE_HEADER,
    DEAD_REASON_HEADER,
    DEAD_ROUTING_KEY_HEADER,
    LifecycleConsumer,
    OutcomeKind,
    handle_message,
    raw_body,
)
from scout_tasks.publisher import ConfirmingPublisher, OutgoingMessage
from tests.integration.helpers import execute, row, rows, scalar

# PostgreSQL's port with nothing listening: the database is "down".
DB_DOWN_URL = "postgresql+psycopg2://postgres@127.0.0.1:1/scout"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
COUNTERS = {
    "total_fetched": 40,
    "validated": 30,
    "validation_failed": 10,
    "duplicates_removed": 5,
    "submitted": 25,
}


# --- harness --------------------------------------------------------------------


class Harness:
    """The real bootstep on a real connection, consuming this test's queues.

    ``c`` stands in for Celery's consumer blueprint, which hands a step its
    broker connection (and, in a prefork worker, its event loop: none here,
    as in a solo-pool worker).
    """

    def __init__(self, broker_url: str, exchange: str, engine: Engine) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.queue = f"scout-test-lifecycle-{suffix}"
        self.dead_queue = f"{self.queue}.dead"
        self.exchange = exchange
        harness = self

        class TestLifecycleConsumer(LifecycleConsumer):
            retry_first_delay = 0.2
            retry_max_delay = 0.4

            def get_engine(self) -> Engine:
                return engine

            def exchange_name(self) -> str:
                return harness.exchange

            def queue_names(self) -> tuple[str, str]:
                return harness.queue, harness.dead_queue

        self.step_class = TestLifecycleConsumer
        self.connection = kombu.Connection(broker_url)
        self.connection.connect()
        self.c = SimpleNamespace(connection=self.connection, hub=None)
        self.step = TestLifecycleConsumer(self.c)
        self.running = False
        self.start()

    def start(self) -> None:
        self.step.start(self.c)
        self.running = True

    def stop(self) -> None:
        """Cancel the consumer and close its channel: anything unacked goes back."""
        if self.running:
            self.step.stop(self.c)
            self.running = False

    def drain_for(self, seconds: float) -> None:
        """Handle deliveries for ``seconds``, however many arrive."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                self.connection.drain_events(timeout=left)

    def drain(self, quiet: float = 0.5, limit: float = 20.0) -> None:
        """Handle deliveries until none has arrived for ``quiet`` seconds."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                self.connection.drain_events(timeout=quiet)
            except TimeoutError:
                return
        raise AssertionError("the consumer never went quiet")

    def depth(self, queue: str) -> int:
        """Messages ready in ``queue`` (unacknowledged ones are not counted)."""
        with self.connection.channel() as channel:
            return channel.queue_declare(queue=queue, passive=True).message_count

    def take_all(self, queue: str) -> list[kombu.Message]:
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
            with self.connection.channel() as channel:
                for name in (self.queue, self.dead_queue):
                    with contextlib.suppress(Exception):
                        channel.queue_delete(queue=name)
        finally:
            self.connection.release()


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
    harness.drain()
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
    harness.drain()
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
    harness.drain()
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
    harness.drain()
    publish(publisher, event("scout.started", run_id, source="stratninja"))
    harness.drain()

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
    harness.drain()
    first = get_run(engine, run_id)

    # A redelivery of the very same event.
    publish(publisher, started)
    harness.drain()
    assert get_run(engine, run_id) == first

    completed_id = uuid.uuid4()
    publish(publisher, event("scout.completed", run_id, event_id=completed_id, **COUNTERS))
    harness.drain()
    completed = get_run(engine, run_id)
    assert completed["status"] == "completed"

    # A failed carrying the completed event's id is a duplicate: nothing changes.
    publish(
        publisher,
        event("scout.failed", run_id, event_id=completed_id, error_message="boom", stage="x"),
    )
    harness.drain()
    assert get_run(engine, run_id) == completed

    # A new failed after the run ended is recorded but ignored.
    late = event("scout.failed", run_id, error_message="late boom")
    publish(publisher, late)
    harness.drain()
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
    harness.drain()
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
    harness.drain()
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
    harness.drain()

    [record] = [
        r for r in lifecycle_logs.records if getattr(r, "action", "") == "lifecycle.unknown_run"
    ]
    assert record.run_id == str(unknown)  # type: ignore[attr-defined]
    assert record.event_id == payload["event_id"]  # type: ignore[attr-defined]
    assert record.levelno == logging.WARNING
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
    harness.drain()
    harness.stop()

    assert harness.depth(harness.queue) == 0
    dead = harness.take_all(harness.dead_queue)
    assert sorted(m.properties["message_id"] for m in dead) == sorted(
        [*poison, "unknown routing key"]
    )
    by_id = {m.properties["message_id"]: m for m in dead}
    for name, (routing_key, body) in poison.items():
        message = by_id[name]
        assert raw_body(message) == body
        assert message.headers[DEAD_ROUTING_KEY_HEADER] == routing_key
        assert message.headers[DEAD_EXCHANGE_HEADER] == exchange_name
        assert message.headers[DEAD_REASON_HEADER]
        assert message.properties["delivery_mode"] == 2
    assert "not JSON" in by_id["bad json"].headers[DEAD_REASON_HEADER]
    assert "not an object" in by_id["not an object"].headers[DEAD_REASON_HEADER]
    assert "run_id" in by_id["missing run_id"].headers[DEAD_REASON_HEADER]
    assert "progress" in by_id["progress 150"].headers[DEAD_REASON_HEADER]
    assert "does not match" in by_id["event_type mismatch"].headers[DEAD_REASON_HEADER]
    assert "NUL" in by_id["NUL character"].headers[DEAD_REASON_HEADER]
    assert "unknown routing key" in by_id["unknown routing key"].headers[DEAD_REASON_HEADER]

    assert actions(lifecycle_logs).count("lifecycle.malformed") == len(poison) + 1
    assert get_run(engine, run_id) == before
    assert scalar(engine, "SELECT count(*) FROM scout_run_events") == 0


# --- the database is down ---------------------------------------------------------


def test_while_the_database_is_down_events_wait_in_the_queue(
    engine: Engine, broker_url: str, exchange_name: str, publisher: ConfirmingPublisher
) -> None:
    down = make_engine(DB_DOWN_URL)
    harness = Harness(broker_url, exchange_name, down)
    try:
        run_id = new_run(engine)
        publish(publisher, event("scout.started", run_id, source="stratninja"))
        harness.drain_for(2.0)
        listener = harness.step.listener
        assert listener is not None
        # Backing off (0.2 s, then every 0.4 s), not spinning: a handful of attempts.
        assert 3 <= listener.failures <= 7
        assert get_run(engine, run_id)["status"] == "pending"
        harness.stop()
        assert harness.depth(harness.queue) == 1
        assert harness.depth(harness.dead_queue) == 0

        # The database is back (another consumer, same queue): the event is applied.
        harness.step.get_engine = lambda: engine  # type: ignore[method-assign]
        harness.start()
        harness.drain()
        assert get_run(engine, run_id)["status"] == "running"
        harness.stop()
        assert harness.depth(harness.queue) == 0
    finally:
        harness.close()
        down.dispose()


class FakeHub:
    """The worker's event loop, reduced to its timer: records what was scheduled."""

    def __init__(self) -> None:
        self.scheduled: list[tuple[float, Any]] = []

    def call_later(self, delay: float, callback: Any) -> None:
        self.scheduled.append((delay, callback))


def test_with_an_event_loop_a_retry_waits_on_its_timer_not_in_a_sleep(
    engine: Engine, broker_url: str, exchange_name: str, publisher: ConfirmingPublisher
) -> None:
    down = make_engine(DB_DOWN_URL)
    harness = Harness(broker_url, exchange_name, down)
    try:
        hub = FakeHub()
        harness.stop()
        harness.c.hub = hub
        harness.start()
        publish(publisher, event("scout.started", new_run(engine), source="stratninja"))
        harness.drain()
        # Held, unacknowledged, until the timer fires: nothing is redelivered meanwhile.
        assert [delay for delay, _ in hub.scheduled] == [0.2]
        assert harness.depth(harness.queue) == 0
        hub.scheduled.pop()[1]()
        harness.drain()
        assert [delay for delay, _ in hub.scheduled] == [0.4]
        harness.stop()
        # The channel closed with the message unacknowledged: it is back in the queue,
        # and the pending timer finds its channel gone without raising.
        hub.scheduled.pop()[1]()
        assert harness.depth(harness.queue) == 1
        assert harness.depth(harness.dead_queue) == 0
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


# --- inside a real Celery worker ------------------------------------------------------


def test_the_bootstep_runs_inside_a_celery_worker(
    engine: Engine, broker_url: str, exchange_name: str, publisher: ConfirmingPublisher
) -> None:
    suffix = uuid.uuid4().hex[:8]
    queue = f"scout-test-lifecycle-{suffix}"

    class WorkerLifecycleConsumer(LifecycleConsumer):
        def get_engine(self) -> Engine:
            return engine

        def exchange_name(self) -> str:
            return exchange_name

        def queue_names(self) -> tuple[str, str]:
            return queue, f"{queue}.dead"

    app = Celery(f"scout-lifecycle-test-{suffix}", set_as_current=False)
    app.conf.update(
        broker_url=broker_url,
        task_default_queue=f"scout-test-tasks-{suffix}",
        result_backend=None,
        worker_hijack_root_logger=False,
    )
    app.steps["consumer"].add(WorkerLifecycleConsumer)
    run_id = new_run(engine)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=20):
            # The step declares its queue when the worker's consumer starts.
            deadline = time.monotonic() + 20
            while True:
                try:
                    publish(publisher, event("scout.started", run_id, source="stratninja"))
                    break
                except AssertionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            deadline = time.monotonic() + 20
            while get_run(engine, run_id)["status"] != "running":
                assert time.monotonic() < deadline, "the worker never recorded scout.started"
                time.sleep(0.1)
    finally:
        with kombu.Connection(broker_url) as conn, conn.channel() as channel:
            for name in (queue, f"{queue}.dead", f"scout-test-tasks-{suffix}"):
                with contextlib.suppress(Exception):
                    channel.queue_delete(queue=name)
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

    swept = lifecycle.sweep_stale_runs(engine, NOW, 3600, 21600)

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
    assert lifecycle.sweep_stale_runs(engine, NOW, 3600, 21600) == 0


def test_the_sweep_uses_the_database_clock_by_default(engine: Engine) -> None:
    fresh = new_run(engine)
    execute(
        engine,
        "UPDATE scout_runs SET created_at = now() - interval '2 hours' WHERE id = :id",
        id=new_run(engine),
    )
    assert lifecycle.sweep_stale_runs(engine, None, 3600, 21600) == 1
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
        lifecycle.sweep_stale_runs(engine, datetime(2026, 3, 1, 12), 3600, 21600)
