"""Confirms after a reconnect: the broker's verdicts on one connection say nothing about the next.

RabbitMQ numbers a channel's publishes from 1 and, after a burst, confirms
many at once with one ``basic.ack(multiple=True)``. A publisher that carried
those verdicts over to its next connection would take that connection's
messages as confirmed before the broker said anything, and the outbox would
delete events no queue received. These tests burst (until the broker has
multiple-acked), take the queue away, drop the connection from the broker's
side, and publish again with the same publisher: every message must come back
as not delivered.

Each test runs in a vhost of its own so ``rabbitmqctl close_all_connections``
touches nobody else's connections.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from sqlalchemy import Engine

from scout_tasks import firing, service
from scout_tasks.publisher import ConfirmingPublisher, OutgoingMessage
from tests.conftest import AMQP_ROOT, EventQueue
from tests.integration.helpers import count, insert_due_schedules, row, rows

BURST = 500
CTL = shutil.which("rabbitmqctl")

pytestmark = pytest.mark.skipif(CTL is None, reason="needs rabbitmqctl to drop connections")


def _ctl(*args: str) -> None:
    assert CTL is not None
    subprocess.run([CTL, *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def vhost() -> Iterator[str]:
    """A vhost of this test's own, deleted afterwards."""
    name = f"scout-publisher-{uuid.uuid4().hex[:10]}"
    _ctl("add_vhost", name)
    try:
        _ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield name
    finally:
        _ctl("delete_vhost", name)


@pytest.fixture
def vhost_url(vhost: str) -> str:
    return f"{AMQP_ROOT}/{quote(vhost, safe='')}"


@pytest.fixture
def exchange() -> str:
    # The vhost is deleted afterwards, and the exchange with it.
    return f"scout-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def pub(vhost_url: str, exchange: str) -> Iterator[ConfirmingPublisher]:
    p = ConfirmingPublisher(vhost_url, exchange, confirm_timeout=10)
    yield p
    p.close()


def _messages(n: int, tag: str) -> list[OutgoingMessage]:
    return [
        OutgoingMessage(
            str(uuid.uuid4()),
            "scout.trigger",
            json.dumps({"event_id": f"{tag}-{i}", "event_type": "scout.trigger"}).encode(),
        )
        for i in range(n)
    ]


def _watch_multiple_acks(pub: ConfirmingPublisher) -> list[int]:
    """Record every multiple-ack the publisher's current channel receives.

    Only to prove the precondition (the broker did confirm several tags at
    once); the verdicts under test come from the publisher itself.
    """
    seen: list[int] = []
    channel = pub._channel  # the precondition needs the live channel

    def on_ack(delivery_tag: int, multiple: bool) -> None:
        if multiple:
            seen.append(delivery_tag)

    channel.events["basic_ack"].add(on_ack)
    return seen


def _connect_and_watch(pub: ConfirmingPublisher) -> list[int]:
    """Connect ``pub`` with one confirmed message, then watch its channel's multiple-acks."""
    warm = _messages(1, "warm")
    assert pub.publish(warm).confirmed == {warm[0].message_id}
    return _watch_multiple_acks(pub)


def _burst_until_multiple_acked(pub: ConfirmingPublisher, multiple: list[int]) -> int:
    """Burst into the bound queue until the broker has multiple-acked; returns the count."""
    published = 0
    for attempt in range(5):
        if multiple:
            break
        burst = _messages(BURST, f"burst{attempt}")
        result = pub.publish(burst)
        assert result.rejected == {}
        assert result.confirmed == {m.message_id for m in burst}
        published += len(burst)
    assert multiple, "the broker never confirmed several messages with one ack"
    assert max(multiple) > 1
    return published


def _drop_connections(vhost: str) -> None:
    _ctl("close_all_connections", "-p", vhost, "scout-tasks test: drop the publisher")


def test_unroutable_messages_after_a_reconnect_are_not_delivered(
    vhost: str, vhost_url: str, exchange: str, pub: ConfirmingPublisher
) -> None:
    queue = EventQueue(vhost_url, exchange)
    multiple = _connect_and_watch(pub)
    published = 1 + _burst_until_multiple_acked(pub, multiple)
    assert len(queue.drain(quiet=0.5)) == published
    queue.close()
    _drop_connections(vhost)

    # Nothing is bound any more: RabbitMQ returns each message and then acks it.
    late = _messages(5, "late")
    result = pub.publish(late)

    assert result.confirmed == set()
    assert set(result.rejected) == {m.message_id for m in late}
    assert all("returned" in reason for reason in result.rejected.values())

    # The same publisher, on its new connection, still tells delivered from not.
    again = EventQueue(vhost_url, exchange)
    try:
        back = _messages(3, "back")
        result = pub.publish(back)
        assert result.confirmed == {m.message_id for m in back}
        assert result.rejected == {}
        got = {e.properties["message_id"] for e in again.get(timeout=10, count=3)}
        assert got == {m.message_id for m in back}
    finally:
        again.close()


def test_a_mix_after_a_reconnect_gets_one_verdict_per_message(
    vhost: str, vhost_url: str, exchange: str, pub: ConfirmingPublisher
) -> None:
    # A queue that only takes scout.trigger: scout.cancelled is unroutable.
    queue = EventQueue(vhost_url, exchange, binding="scout.trigger")
    try:
        _burst_until_multiple_acked(pub, _connect_and_watch(pub))
        queue.drain(quiet=0.5)
        _drop_connections(vhost)
        # The queue's own connection went too.
        queue.reconnect()

        mixed: list[OutgoingMessage] = []
        for i in range(40):
            key = "scout.cancelled" if i % 3 == 0 else "scout.trigger"
            mixed.append(OutgoingMessage(str(uuid.uuid4()), key, b'{"event_type": "x"}'))
        result = pub.publish(mixed)

        routable = {m.message_id for m in mixed if m.routing_key == "scout.trigger"}
        unroutable = {m.message_id for m in mixed if m.routing_key == "scout.cancelled"}
        assert result.confirmed == routable
        assert set(result.rejected) == unroutable
        got = {e.properties["message_id"] for e in queue.drain(quiet=0.5)}
        assert got == routable
    finally:
        queue.close()


def test_the_outbox_keeps_an_event_fired_after_a_reconnect(
    engine: Engine, vhost: str, vhost_url: str, exchange: str, pub: ConfirmingPublisher
) -> None:
    queue = EventQueue(vhost_url, exchange)
    insert_due_schedules(engine, BURST, cron="0 0 1 1 *")
    # Connected first, so the burst of fired events is watched from its first ack.
    multiple = _connect_and_watch(pub)

    report = firing.fire_due(engine, pub)

    assert report.runs == BURST
    assert report.published == BURST
    assert count(engine, "scout_outbox") == 0
    # Should the broker have confirmed the fired burst one by one, more bursts.
    extra = _burst_until_multiple_acked(pub, multiple)
    assert len(queue.drain(quiet=0.5)) == 1 + BURST + extra
    queue.close()
    _drop_connections(vhost)

    # A manual trigger through the service layer, and a fired schedule.
    run, delivered = service.trigger_run(engine, {"source": "stratninja", "max_strategies": 5}, pub)
    insert_due_schedules(engine, 1, cron="0 0 1 1 *", prefix="after")
    fired = firing.fire_due(engine, pub)

    assert delivered is False
    assert fired.runs == 1
    assert fired.published == 0
    kept = rows(engine, "SELECT run_id, attempts, last_error FROM scout_outbox ORDER BY run_id")
    after = row(
        engine,
        "SELECT r.id FROM scout_runs r JOIN scout_schedules s ON s.id = r.schedule_id"
        " WHERE s.name = 'after-1'",
    )
    assert {k["run_id"] for k in kept} == {run["id"], after["id"]}
    for k in kept:
        assert k["attempts"] == 1
        assert k["last_error"] and "return" in k["last_error"].lower()
