"""The outbox: a failed or refused publish loses nothing, and the relay delivers it once."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import Engine

from scout_tasks import firing, outbox, service
from scout_tasks.errors import PublishError
from scout_tasks.publisher import ConfirmingPublisher, OutgoingMessage
from tests.conftest import EventQueue
from tests.integration.helpers import (
    count,
    execute,
    insert_due_schedules,
    row,
    rows,
    scalar,
)
from tests.tcp_proxy import TcpProxy, through

NOWHERE = "amqp://guest:guest@127.0.0.1:1/"


def _make_available(engine: Engine) -> None:
    execute(engine, "UPDATE scout_outbox SET available_at = now()")


def test_a_failed_publish_keeps_the_event_and_the_relay_delivers_it_once(
    engine: Engine, exchange_name: str, publisher: ConfirmingPublisher, event_queue: EventQueue
) -> None:
    insert_due_schedules(engine, 1, cron="0 0 1 1 *")
    down = ConfirmingPublisher(NOWHERE, exchange_name, confirm_timeout=5)
    try:
        report = firing.fire_due(engine, down)
    finally:
        down.close()

    # The run is committed whatever the broker did.
    assert report.runs == 1
    assert report.published == 0
    assert report.publish_failed is True
    run = row(engine, "SELECT * FROM scout_runs")
    kept = row(engine, "SELECT * FROM scout_outbox")
    assert kept["run_id"] == run["id"]
    assert kept["routing_key"] == "scout.trigger"
    assert kept["payload"]["run_id"] == str(run["id"])
    assert kept["payload"]["event_id"] == str(kept["event_id"])
    assert kept["attempts"] == 1
    assert kept["last_error"]
    # The broker as a whole was away, which says nothing about this event: it
    # stays due, so the first relay after the broker returns sends it.
    assert scalar(engine, "SELECT available_at <= now() FROM scout_outbox") is True
    delivered = outbox.relay(engine, publisher)

    assert delivered.published == 1
    assert delivered.failed is False
    assert count(engine, "scout_outbox") == 0
    events = event_queue.get(timeout=10, count=1)
    assert len(events) == 1
    assert event_queue.get(timeout=0.5) == []
    event = events[0]
    assert event.body["event_id"] == str(kept["event_id"])
    assert event.properties["message_id"] == str(kept["event_id"])
    assert event.body == kept["payload"]
    assert event.routing_key == "scout.trigger"
    assert event.properties["delivery_mode"] == 2

    assert outbox.relay(engine, publisher).published == 0
    assert event_queue.get(timeout=0.5) == []


def test_an_unroutable_event_waits_until_a_queue_is_bound(
    engine: Engine, broker_url: str, exchange_name: str, publisher: ConfirmingPublisher
) -> None:
    # No queue is bound to this test's exchange yet: RabbitMQ returns the message.
    run, delivered = service.trigger_run(
        engine, {"source": "stratninja", "max_strategies": 5}, publisher
    )

    assert delivered is False
    kept = row(engine, "SELECT * FROM scout_outbox")
    assert kept["run_id"] == run["id"]
    assert kept["attempts"] == 1
    assert kept["last_error"] and "return" in kept["last_error"].lower()
    assert row(engine, "SELECT status FROM scout_runs") == {"status": "pending"}

    queue = EventQueue(broker_url, exchange_name)
    try:
        _make_available(engine)
        report = outbox.relay(engine, publisher)

        assert report.published == 1
        assert count(engine, "scout_outbox") == 0
        events = queue.get(timeout=10, count=1)
        events += queue.get(timeout=0.5)
        assert [e.body["event_id"] for e in events] == [str(kept["event_id"])]
        assert events[0].body["run_id"] == str(run["id"])
        assert events[0].body["trigger_type"] == "manual"
    finally:
        queue.close()


def test_a_second_unroutable_attempt_backs_off_further(
    engine: Engine, publisher: ConfirmingPublisher
) -> None:
    service.trigger_run(engine, {"source": "stratninja", "max_strategies": 5}, publisher)
    first = row(engine, "SELECT attempts, available_at - now() AS wait FROM scout_outbox")
    _make_available(engine)

    report = outbox.relay(engine, publisher)

    assert report.published == 0
    assert report.deferred == 1
    second = row(engine, "SELECT attempts, available_at - now() AS wait FROM scout_outbox")
    assert (first["attempts"], second["attempts"]) == (1, 2)
    assert second["wait"] > first["wait"]


# --- a connection cut under the publisher ------------------------------------------------


def _message(n: int) -> OutgoingMessage:
    body = json.dumps({"event_id": f"m{n}", "event_type": "scout.trigger"}).encode()
    return OutgoingMessage(str(uuid.uuid4()), "scout.trigger", body)


def test_the_publisher_reconnects_after_the_connection_is_cut(
    proxy: TcpProxy, broker_url: str, exchange_name: str, event_queue: EventQueue
) -> None:
    pub = ConfirmingPublisher(through(broker_url, proxy.port), exchange_name, confirm_timeout=5)
    try:
        first = _message(1)
        assert pub.publish([first]).confirmed == {first.message_id}
        assert proxy.connections == 1

        proxy.cut()
        with pytest.raises(PublishError):
            pub.publish([_message(2)])
        # Still cut: new connections are refused, and that is a PublishError too.
        with pytest.raises(PublishError):
            pub.publish([_message(3)])

        proxy.restore()
        fourth = _message(4)
        result = pub.publish([fourth])

        assert result.confirmed == {fourth.message_id}
        assert result.rejected == {}
        assert proxy.connections == 1
    finally:
        pub.close()

    got = {e.properties["message_id"] for e in event_queue.drain(quiet=0.5)}
    assert {first.message_id, fourth.message_id} <= got


def test_events_fired_while_the_broker_is_cut_off_are_relayed_later(
    engine: Engine,
    proxy: TcpProxy,
    broker_url: str,
    exchange_name: str,
    event_queue: EventQueue,
) -> None:
    pub = ConfirmingPublisher(through(broker_url, proxy.port), exchange_name, confirm_timeout=5)
    try:
        # Connected and working first, so the cut hits a live connection.
        assert pub.publish([_message(0)]).confirmed
        event_queue.get(timeout=5)
        insert_due_schedules(engine, 3, cron="0 0 1 1 *")
        proxy.cut()

        report = firing.fire_due(engine, pub)

        assert report.runs == 3
        assert report.publish_failed is True
        assert count(engine, "scout_runs") == 3
        stored = {str(r["event_id"]) for r in rows(engine, "SELECT event_id FROM scout_outbox")}
        assert len(stored) == 3

        proxy.restore()
        _make_available(engine)
        relayed = outbox.relay(engine, pub)
    finally:
        pub.close()

    assert relayed.published == 3
    assert count(engine, "scout_outbox") == 0
    events = event_queue.get(timeout=10, count=3)
    assert len(events) == 3
    assert event_queue.get(timeout=0.5) == []
    assert {e.body["event_id"] for e in events} == stored
    run_ids = {str(r["id"]) for r in rows(engine, "SELECT id FROM scout_runs")}
    assert {e.body["run_id"] for e in events} == run_ids
