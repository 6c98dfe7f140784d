"""The lifecycle consumer records events in batches: every guarantee holds inside a batch.

Events are published while the consumer is stopped, so that it receives them
all at once; a long quiet period (``idle``) keeps them in one batch, which
each test checks (``largest_batch``) before it checks anything else.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any

import amqp
import pytest
from sqlalchemy import Engine, event, make_url, text

from scout_tasks import counters
from scout_tasks.db import make_engine
from scout_tasks.lifecycle import LifecycleConsumer
from scout_tasks.lifecycle_queues import DELIVERY_LIMIT
from scout_tasks.publisher import ConfirmingPublisher
from scout_tasks.recorder import Outcome
from tests.integration.helpers import execute, rows, scalar
from tests.integration.test_lifecycle import (
    COUNTERS,
    Harness,
    RaisingConsumer,
    get_run,
    new_run,
    publish,
    publish_raw,
    wait_until,
)
from tests.integration.test_lifecycle import (
    event as agent_event,
)
from tests.tcp_proxy import TcpProxy

# Everything published before the consumer starts goes into one batch.
ONE_BATCH: dict[str, Any] = {"idle": 0.5, "linger": 2.0}


def stopped_harness(broker_url: str, exchange_name: str, engine: Engine, **options: Any) -> Harness:
    """A harness whose queues exist but whose consumer is not running yet."""
    harness = Harness(broker_url, exchange_name, engine, **{**ONE_BATCH, **options})
    harness.stop()
    return harness


def ledger(engine: Engine) -> int:
    return int(scalar(engine, "SELECT count(*) FROM scout_run_events"))


def test_one_malformed_message_is_set_aside_alone_and_its_batch_recorded(
    engine: Engine, broker_url: str, exchange_name: str, publisher: ConfirmingPublisher
) -> None:
    harness = stopped_harness(broker_url, exchange_name, engine)
    try:
        run_ids = [new_run(engine) for _ in range(5)]
        publish(publisher, *(agent_event("scout.started", r) for r in run_ids[:2]))
        publish_raw(broker_url, exchange_name, "scout.started", b'{"run_id": ', message_id="bad")
        publish(publisher, *(agent_event("scout.started", r) for r in run_ids[2:]))
        harness.start()
        harness.expect(6)
        assert harness.consumer is not None
        assert harness.consumer.largest_batch == 6
        assert harness.consumer.settled == {"acked": 5, "rejected": 1}
        assert {get_run(engine, r)["status"] for r in run_ids} == {"running"}
        harness.stop()
        assert harness.depth(harness.queue) == 0
        [dead] = harness.take_all(harness.dead_queue)
        assert dead.properties["message_id"] == "bad"
        assert dead.headers["x-death"][0]["reason"] == "rejected"
        assert ledger(engine) == 5
    finally:
        harness.close()


def test_duplicates_within_one_batch_count_once(
    engine: Engine, broker_url: str, exchange_name: str, publisher: ConfirmingPublisher
) -> None:
    harness = stopped_harness(broker_url, exchange_name, engine)
    try:
        run_id = new_run(engine)
        started = agent_event("scout.started", run_id)
        completed_id = uuid.uuid4()
        completed = agent_event("scout.completed", run_id, event_id=completed_id, **COUNTERS)
        # The same failed twice, and a failed reusing the completed event's id.
        failed = agent_event("scout.failed", run_id, error_message="late")
        reused = agent_event("scout.failed", run_id, event_id=completed_id, error_message="x")
        publish(publisher, started, started, completed, reused, failed, failed)
        harness.start()
        harness.expect(6)
        assert harness.consumer is not None
        assert harness.consumer.largest_batch == 6
        assert harness.consumer.settled == {"acked": 6}
        run = get_run(engine, run_id)
        assert run["status"] == "completed"
        assert run["error_message"] is None
        assert run["metrics"] == COUNTERS
        recorded = {
            r["event_id"]: r["event_type"] for r in rows(engine, "SELECT * FROM scout_run_events")
        }
        assert recorded == {
            uuid.UUID(started["event_id"]): "scout.started",
            completed_id: "scout.completed",
            uuid.UUID(failed["event_id"]): "scout.failed",
        }
    finally:
        harness.close()


def test_completed_and_started_of_one_run_in_one_batch_complete_it_with_started_at(
    engine: Engine, broker_url: str, exchange_name: str, publisher: ConfirmingPublisher
) -> None:
    harness = stopped_harness(broker_url, exchange_name, engine)
    try:
        first, second, cancelled = new_run(engine), new_run(engine), new_run(engine)
        execute(engine, "UPDATE scout_runs SET status = 'cancelled' WHERE id = :id", id=cancelled)
        frozen = get_run(engine, cancelled)
        publish(
            publisher,
            # Arrived the wrong way round, and a failed after the completed.
            agent_event("scout.completed", first, **COUNTERS),
            agent_event("scout.started", first),
            agent_event("scout.failed", first, error_message="too late"),
            agent_event("scout.started", second),
            agent_event("scout.progress", second, stage="fetch", progress=20),
            agent_event("scout.failed", second, error_message="boom", stage="fetch"),
            agent_event("scout.started", cancelled),
            agent_event("scout.completed", cancelled, **COUNTERS),
        )
        harness.start()
        harness.expect(8)
        assert harness.consumer is not None
        assert harness.consumer.largest_batch == 8

        done = get_run(engine, first)
        assert done["status"] == "completed"
        assert done["started_at"] is not None
        assert done["started_at"] <= done["completed_at"]
        assert done["error_message"] is None
        assert done["metrics"] == COUNTERS

        failed = get_run(engine, second)
        assert failed["status"] == "failed"
        assert failed["started_at"] is not None
        assert failed["error_message"] == "boom"
        assert failed["metrics"]["stage"] == "fetch"
        assert failed["metrics"]["progress"]["stage"] == "fetch"

        # A terminal run never changes, in a batch or not.
        assert get_run(engine, cancelled) == frozen
        assert ledger(engine) == 8
        # The batch ended two runs: counted once each, in its transaction.
        with engine.connect() as conn:
            totals = counters.totals(conn)
        finished = {k[1]: v for k, v in totals.items() if k[0] == counters.RUNS_FINISHED}
        assert finished == {"completed": 1, "failed": 1}
    finally:
        harness.close()


def test_progress_in_one_batch_keeps_the_latest_by_timestamp_and_distrusts_the_future(
    engine: Engine, broker_url: str, exchange_name: str, publisher: ConfirmingPublisher
) -> None:
    from datetime import UTC, datetime, timedelta

    harness = stopped_harness(broker_url, exchange_name, engine)
    try:
        run_id, forged_run = new_run(engine), new_run(engine)
        now = datetime.now(UTC)
        publish(
            publisher,
            agent_event("scout.progress", run_id, timestamp=now, stage="submit", progress=90),
            agent_event(
                "scout.progress",
                run_id,
                timestamp=now - timedelta(minutes=1),
                stage="fetch",
                progress=10,
            ),
            # A forged far-future timestamp counts as received now: the later
            # real one, a few seconds ahead, still wins.
            agent_event(
                "scout.progress",
                forged_run,
                timestamp=datetime(9999, 1, 1, tzinfo=UTC),
                stage="forged",
                progress=1,
            ),
            agent_event(
                "scout.progress",
                forged_run,
                timestamp=now + timedelta(seconds=30),
                stage="real",
                progress=50,
            ),
        )
        harness.start()
        harness.expect(4)
        assert harness.consumer is not None
        assert harness.consumer.largest_batch == 4
        assert get_run(engine, run_id)["metrics"]["progress"]["stage"] == "submit"
        assert get_run(engine, forged_run)["metrics"]["progress"]["stage"] == "real"
    finally:
        harness.close()


def test_a_batch_the_database_refuses_is_split_and_only_the_culprit_set_aside(
    engine: Engine, broker_url: str, exchange_name: str, publisher: ConfirmingPublisher
) -> None:
    refused, fine = new_run(engine), new_run(engine)
    # An operator's trigger, written with plain SQL, refuses one run's completion.
    execute(
        engine,
        f"""
        CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.id = '{refused}' AND NEW.status = 'completed' THEN
                RAISE EXCEPTION 'not this one' USING ERRCODE = 'check_violation';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_one BEFORE UPDATE ON scout_runs
            FOR EACH ROW EXECUTE FUNCTION refuse_one();
        """,
    )
    harness = stopped_harness(broker_url, exchange_name, engine)
    try:
        culprit = agent_event("scout.completed", refused, **COUNTERS)
        publish(
            publisher,
            agent_event("scout.started", refused),
            agent_event("scout.started", fine),
            culprit,
            agent_event("scout.completed", fine, **COUNTERS),
        )
        harness.start()
        harness.expect(4)
        assert harness.consumer is not None
        assert harness.consumer.largest_batch == 4
        assert harness.consumer.settled == {"acked": 3, "rejected": 1}
        assert get_run(engine, refused)["status"] == "running"
        assert get_run(engine, fine)["status"] == "completed"
        harness.stop()
        [dead] = harness.take_all(harness.dead_queue)
        assert dead.properties["message_id"] == culprit["event_id"]
        assert ledger(engine) == 3
    finally:
        harness.close()


def test_a_handler_raising_on_a_batch_records_the_others_and_the_limit_ends_the_culprit(
    engine: Engine, broker_url: str, exchange_name: str, publisher: ConfirmingPublisher
) -> None:
    RaisingConsumer.deliveries = 0
    harness = stopped_harness(
        broker_url, exchange_name, engine, consumer_class=RaisingConsumer, idle=0.05
    )
    try:
        run_ids = [new_run(engine) for _ in range(3)]
        publish(publisher, agent_event("scout.started", run_ids[0]))
        publish_raw(
            broker_url,
            exchange_name,
            "scout.started",
            json.dumps(agent_event("scout.started", run_ids[1])).encode(),
            message_id="boom",
        )
        publish(publisher, *(agent_event("scout.started", r) for r in run_ids[1:]))
        harness.start()
        harness.expect(3 + DELIVERY_LIMIT + 1, timeout=30)
        assert harness.consumer is not None
        assert harness.consumer.settled == {"acked": 3, "returned": DELIVERY_LIMIT + 1}
        assert RaisingConsumer.deliveries == DELIVERY_LIMIT + 1
        assert {get_run(engine, r)["status"] for r in run_ids} == {"running"}
        [dead] = harness.take_all(harness.dead_queue)
        assert dead.properties["message_id"] == "boom"
        assert dead.headers["x-death"][0]["reason"] == "delivery_limit"
    finally:
        harness.close()


def test_the_database_lost_mid_batch_acks_nothing_then_applies_everything(
    engine: Engine,
    db_url: str,
    broker_url: str,
    exchange_name: str,
    publisher: ConfirmingPublisher,
) -> None:
    proxy = TcpProxy(target_port=make_url(db_url).port or 5432)
    proxied = make_engine(
        make_url(db_url).set(port=proxy.port).render_as_string(hide_password=False)
    )
    armed = threading.Event()

    @event.listens_for(proxied, "after_cursor_execute")
    def _cut_after_the_ledger(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        # The ledger rows are written, the run updates are not: the connection goes.
        if armed.is_set() and "INSERT INTO scout_run_events" in statement:
            armed.clear()
            proxy.cut()

    harness = stopped_harness(broker_url, exchange_name, proxied)
    try:
        run_ids = [new_run(engine) for _ in range(10)]
        publish(publisher, *(agent_event("scout.started", r) for r in run_ids))
        publish(publisher, *(agent_event("scout.completed", r, **COUNTERS) for r in run_ids))
        armed.set()
        harness.start()
        consumer = harness.consumer
        assert consumer is not None
        wait_until(lambda: consumer.db_failures >= 3, "three failed attempts")
        assert not armed.is_set()
        assert consumer.settled == {}
        assert consumer.largest_batch == 20
        # Held unacknowledged: not ready in the queue, not dead-lettered, nothing written.
        assert harness.depth(harness.queue) == 0
        assert harness.depth(harness.dead_queue) == 0
        assert ledger(engine) == 0
        assert {get_run(engine, r)["status"] for r in run_ids} == {"pending"}

        proxy.restore()
        harness.expect(20)
        assert consumer.settled == {"acked": 20}
        assert {get_run(engine, r)["status"] for r in run_ids} == {"completed"}
        assert ledger(engine) == 20
        harness.stop()
        assert harness.depth(harness.queue) == 0
        assert harness.depth(harness.dead_queue) == 0
    finally:
        harness.close()
        proxied.dispose()
        proxy.close()


def test_a_flood_is_recorded_in_large_batches_and_every_message_acknowledged(
    engine: Engine, broker_url: str, exchange_name: str, publisher: ConfirmingPublisher
) -> None:
    # The consumer's own defaults: batches of what arrived, up to 500.
    harness = Harness(broker_url, exchange_name, engine)
    harness.stop()
    try:
        with engine.begin() as conn:
            run_ids = list(
                conn.execute(
                    text(
                        "INSERT INTO scout_runs (trigger_type, source, max_strategies)"
                        " SELECT 'manual', 's', 1 FROM generate_series(1, 400) RETURNING id"
                    )
                ).scalars()
            )
        publish(publisher, *(agent_event("scout.started", r) for r in run_ids))
        publish(publisher, *(agent_event("scout.completed", r, **COUNTERS) for r in run_ids))
        harness.start()
        harness.expect(800, timeout=60)
        consumer = harness.consumer
        assert consumer is not None
        assert consumer.settled == {"acked": 800}
        assert consumer.largest_batch > 50
        assert consumer.batches < 800 / 10
        harness.stop()
        # Every message was acknowledged (a lost multiple ack would bring them back).
        assert harness.depth(harness.queue) == 0
        assert scalar(engine, "SELECT count(*) FROM scout_runs WHERE status = 'completed'") == 400
        assert ledger(engine) == 800
    finally:
        harness.close()


def test_on_rabbitmq_a_delivery_is_py_amqps_message_and_compression_is_ignored(
    engine: Engine, broker_url: str, exchange_name: str, publisher: ConfirmingPublisher
) -> None:
    # No kombu Message is built per delivery: py-amqp's goes to the batch as it
    # is, and a compression header (which kombu's would honour) inflates nothing.
    seen: list[type] = []

    class Watching(LifecycleConsumer):
        def handle_batch(self, messages: list[Any]) -> list[Outcome]:
            seen.extend(type(m) for m in messages)
            return super().handle_batch(messages)

    harness = stopped_harness(broker_url, exchange_name, engine, consumer_class=Watching)
    try:
        run_id = new_run(engine)
        publish(publisher, agent_event("scout.started", run_id))
        publish_raw(
            broker_url,
            exchange_name,
            "scout.completed",
            json.dumps(agent_event("scout.completed", run_id, **COUNTERS)).encode(),
            headers={"compression": "application/x-bz2"},
        )
        harness.start()
        harness.expect(2)
        assert seen == [amqp.Message, amqp.Message]
        assert get_run(engine, run_id)["status"] == "completed"
        assert harness.consumer is not None and harness.consumer.settled == {"acked": 2}
    finally:
        harness.close()


def test_a_single_event_is_recorded_promptly(
    engine: Engine, broker_url: str, exchange_name: str, publisher: ConfirmingPublisher
) -> None:
    # The consumer's own defaults: it waits for more only while messages keep arriving.
    harness = Harness(broker_url, exchange_name, engine)
    try:
        elapsed = []
        for _ in range(3):
            run_id = new_run(engine)
            start = time.monotonic()
            publish(publisher, agent_event("scout.started", run_id))
            wait_until(
                lambda r=run_id: get_run(engine, r)["status"] == "running",  # type: ignore[misc]
                "recorded",
                5,
            )
            elapsed.append(time.monotonic() - start)
        # The best of three, so that one stall of a busy machine does not decide.
        assert min(elapsed) < 0.2, elapsed
        assert harness.consumer is not None
        assert harness.consumer.batches == 3
    finally:
        harness.close()


def test_two_consumers_on_one_queue_share_overlapping_batches_and_lose_nothing(
    engine: Engine,
    broker_url: str,
    exchange_name: str,
    publisher: ConfirmingPublisher,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="scout_tasks.lifecycle")
    # Two workers on one queue: a run's events land in both consumers' batches,
    # applied at the same moment, each batch's runs locked in id order. Nothing
    # fails (a deadlock would show as a failed attempt), nothing is lost.
    first = Harness(broker_url, exchange_name, engine, batch_size=50)
    second = Harness(broker_url, exchange_name, engine, task_queue=first.task_queue, batch_size=50)
    try:
        with engine.begin() as conn:
            run_ids = list(
                conn.execute(
                    text(
                        "INSERT INTO scout_runs (trigger_type, source, max_strategies)"
                        " SELECT 'manual', 's', 1 FROM generate_series(1, 300) RETURNING id"
                    )
                ).scalars()
            )
        # Each run's events, in an order that mixes runs across batches.
        payloads = []
        for i, run_id in enumerate(run_ids):
            payloads.append(agent_event("scout.started", run_id))
            payloads.append(agent_event("scout.progress", run_ids[-i - 1], stage="s", progress=1))
            payloads.append(agent_event("scout.completed", run_ids[(i * 7) % 300], **COUNTERS))
        publish(publisher, *payloads)
        wait_until(lambda: first.settled + second.settled >= 900, "900 settled", 60)
        assert first.consumer is not None and second.consumer is not None
        assert first.settled and second.settled, "both consumers took a share"
        failed = [r for r in caplog.records if getattr(r, "action", "") == "lifecycle.db_error"]
        assert failed == []
        assert {**first.consumer.settled} == {"acked": first.settled}
        assert {**second.consumer.settled} == {"acked": second.settled}
        completed = "SELECT count(*) FROM scout_runs WHERE status = 'completed'"
        assert scalar(engine, completed) == 300
        assert ledger(engine) == 900
    finally:
        second.stop()
        first.close()
        second.connection.release()


def test_a_kept_connection_the_server_dropped_costs_one_retry_and_nothing_else(
    engine: Engine,
    broker_url: str,
    exchange_name: str,
    publisher: ConfirmingPublisher,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="scout_tasks.lifecycle")
    harness = Harness(broker_url, exchange_name, engine)
    try:
        consumer = harness.consumer
        assert consumer is not None
        # The connection stays checked out between batches however long it idles.
        consumer._db.IDLE_RECHECK = 60.0
        first, second = new_run(engine), new_run(engine)
        publish(publisher, agent_event("scout.started", first))
        harness.expect(1)
        # The server drops every other connection to this database (a restart,
        # an idle timeout): the consumer's kept connection among them.
        dropped = scalar(
            engine,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        assert dropped >= 1
        publish(publisher, agent_event("scout.started", second))
        harness.expect(2)
        assert consumer.settled == {"acked": 2}
        assert get_run(engine, second)["status"] == "running"
        failed = [r for r in caplog.records if getattr(r, "action", "") == "lifecycle.db_error"]
        assert len(failed) == 1
        assert ledger(engine) == 2
    finally:
        harness.close()
