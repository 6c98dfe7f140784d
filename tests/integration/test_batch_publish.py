"""A batch's frames leave in one socket write, and the real broker reads every message whole."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from scout_tasks import publisher as publisher_module
from scout_tasks.publisher import ConfirmingPublisher, OutgoingMessage
from scout_tasks.settings import get_settings
from tests.conftest import EventQueue


def _count_socket_writes(pub: ConfirmingPublisher) -> list[int]:
    """Wrap the live transport's write; returns the sizes written, as they happen."""
    pub._connect()
    amqp_connection: Any = pub._connection.connection  # type: ignore[union-attr]
    transport = amqp_connection.transport
    real_write = transport.write
    sizes: list[int] = []

    def write(data: Any) -> None:
        sizes.append(len(data))
        real_write(data)

    transport.write = write
    return sizes


def test_a_batch_is_one_write_and_every_message_arrives_intact(
    publisher: ConfirmingPublisher, event_queue: EventQueue
) -> None:
    sizes = _count_socket_writes(publisher)
    # Bodies of different sizes, one bigger than a frame, so frames of every kind are held.
    messages = [
        OutgoingMessage(f"m-{i}", "scout.trigger", (b'{"n":%d,"pad":"%s"}' % (i, b"x" * (i * 3))))
        for i in range(300)
    ] + [OutgoingMessage("big", "scout.trigger", b'{"pad":"' + b"y" * 200_000 + b'"}')]

    result = publisher.publish(messages)

    assert result.confirmed == {m.message_id for m in messages}
    assert result.rejected == {}
    # 301 messages in one write (and nothing else sent while they were held).
    assert len(sizes) == 1
    received = event_queue.get(timeout=10, count=len(messages))
    assert {r.properties["message_id"]: _bytes(r.raw) for r in received} == {
        m.message_id: m.body for m in messages
    }


def test_py_amqps_own_frames_between_batches_keep_the_channel_in_step(
    publisher: ConfirmingPublisher, event_queue: EventQueue, exchange_name: str
) -> None:
    sizes = _count_socket_writes(publisher)
    first = [OutgoingMessage(f"a-{i}", "scout.trigger", b"{}") for i in range(50)]
    assert publisher.publish(first).confirmed == {m.message_id for m in first}
    # A method py-amqp writes itself, on the same channel, answered by the broker.
    publisher._channel.exchange_declare(exchange_name, "topic", durable=True, passive=True)
    # A heartbeat, from py-amqp's own frame writer.
    publisher._connection.connection.send_heartbeat()  # type: ignore[union-attr]
    second = [OutgoingMessage(f"b-{i}", "scout.trigger", b"{}") for i in range(50)]
    # Delivery tags continue from 51: every verdict still lands on its own message.
    assert publisher.publish(second).confirmed == {m.message_id for m in second}
    assert len(sizes) == 2
    assert len(event_queue.get(timeout=10, count=100)) == 100


def _bytes(raw: bytes | str) -> bytes:
    # kombu hands back a text body as str.
    return raw if isinstance(raw, bytes) else raw.encode()


@pytest.fixture
def fresh_process_publisher(
    monkeypatch: pytest.MonkeyPatch, broker_url: str, exchange_name: str
) -> Iterator[None]:
    monkeypatch.setenv("SCOUT_BROKER_URL", broker_url)
    monkeypatch.setenv("SCOUT_EXCHANGE", exchange_name)
    # Not used here, but settings need one.
    monkeypatch.setenv("SCOUT_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    get_settings.cache_clear()
    publisher_module.close_process_publisher()
    yield
    publisher_module.close_process_publisher()
    get_settings.cache_clear()


def test_a_pool_process_connects_early_and_the_first_publish_uses_that_connection(
    fresh_process_publisher: None, event_queue: EventQueue
) -> None:
    calls: list[str] = []
    publisher_module.connect_process_publisher_soon(before=lambda: calls.append("database"))
    pub = publisher_module.process_publisher()  # waits for the early connect
    assert calls == ["database"]
    connection = pub._connection
    assert connection is not None

    assert pub.publish([OutgoingMessage("early", "scout.trigger", b"{}")]).confirmed == {"early"}
    assert pub._connection is connection
    assert len(event_queue.get(timeout=10)) == 1


def test_an_early_connect_that_fails_only_leaves_the_connecting_to_the_first_publish(
    fresh_process_publisher: None, monkeypatch: pytest.MonkeyPatch, event_queue: EventQueue
) -> None:
    def database_away() -> None:
        raise OSError("database away")

    publisher_module.connect_process_publisher_soon(before=database_away)
    pub = publisher_module.process_publisher()
    # The broker part still connected; the database's failure was only logged.
    assert pub._connection is not None
    assert pub.publish([OutgoingMessage("a", "scout.trigger", b"{}")]).confirmed == {"a"}
