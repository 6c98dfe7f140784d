"""A batch's frames leave in one socket write, and the real broker reads every message whole."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from scout_tasks import publisher as publisher_module
from scout_tasks.publisher import ConfirmingPublisher, OutgoingMessage
from scout_tasks.shared_publisher import SharedPublisher
from tests.conftest import EventQueue
from tests.integration.helpers import fresh_process_publisher_env


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
    with fresh_process_publisher_env(monkeypatch, broker_url, exchange_name):
        yield


def _installed(timeout: float = 10.0) -> ConfirmingPublisher | None:
    """The early connect's publisher, once its thread made it this process's."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = publisher_module._process_publisher
        if current is not None:
            return current[1]
        time.sleep(0.01)
    return None


def test_a_pool_process_connects_early_and_the_first_publish_uses_that_connection(
    fresh_process_publisher: None, event_queue: EventQueue
) -> None:
    calls: list[str] = []
    publisher_module.connect_process_publisher_soon(before=(lambda: calls.append("database"),))
    early = _installed()
    assert early is not None and early._connection is not None
    assert calls == ["database"]

    pub = publisher_module.process_publisher()
    assert pub is early
    connection = pub._connection
    assert pub.publish([OutgoingMessage("early", "scout.trigger", b"{}")]).confirmed == {"early"}
    assert pub._connection is connection
    assert len(event_queue.get(timeout=10)) == 1


def test_a_failing_step_before_does_not_stop_the_early_connect(
    fresh_process_publisher: None, event_queue: EventQueue
) -> None:
    def database_away() -> None:
        raise OSError("database away")

    publisher_module.connect_process_publisher_soon(before=(database_away,))
    early = _installed()
    assert early is not None and early._connection is not None
    assert early.publish([OutgoingMessage("a", "scout.trigger", b"{}")]).confirmed == {"a"}


def test_a_task_that_needs_the_publisher_first_never_waits_and_keeps_its_own(
    fresh_process_publisher: None, event_queue: EventQueue
) -> None:
    release = threading.Event()
    publisher_module.connect_process_publisher_soon(before=(lambda: release.wait(10),))

    started = time.monotonic()
    own = publisher_module.process_publisher()  # the early connect is still held up
    assert time.monotonic() - started < 1
    release.set()
    assert own.publish([OutgoingMessage("own", "scout.trigger", b"{}")]).confirmed == {"own"}
    time.sleep(0.5)  # the early thread finishes and must throw its publisher away
    assert publisher_module.process_publisher() is own


def test_the_api_publisher_shared_by_threads_delivers_every_event_once(
    broker_url: str, exchange_name: str, event_queue: EventQueue
) -> None:
    shared = SharedPublisher(broker_url, exchange_name)
    results: list[set[str]] = []

    def burst(tag: str) -> None:
        batch = [OutgoingMessage(f"{tag}-{i}", "scout.trigger", b"{}") for i in range(200)]
        results.append(shared.settle(shared.send(batch)).confirmed)

    try:
        threads = [threading.Thread(target=burst, args=(f"t{n}",)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        shared.close()
    assert sorted(len(r) for r in results) == [200] * 4
    received = event_queue.get(timeout=10, count=800)
    assert len({r.properties["message_id"] for r in received}) == 800
