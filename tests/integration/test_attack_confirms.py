"""Attacks on the hand-built publish frames and the confirm bookkeeping, on the real broker.

Each test makes RabbitMQ itself say something awkward (a return among acks, a
real nack, a channel closed under a batch, a body on a frame boundary) and
checks that no message is counted as delivered unless a queue really got it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import kombu
import pytest
from kombu import Exchange, Queue

from scout_tasks.errors import PublishError
from scout_tasks.publish_frames import WRITE_AT
from scout_tasks.publisher import ConfirmingPublisher, OutgoingMessage
from tests.conftest import EventQueue
from tests.tcp_proxy import TcpProxy, through


def _msg(routing_key: str, body: bytes = b"{}") -> OutgoingMessage:
    return OutgoingMessage(str(uuid.uuid4()), routing_key, body)


@pytest.fixture
def reject_queue(broker_url: str, exchange_name: str) -> Iterator[str]:
    """A queue bound to ``reject.full`` that refuses every publish: RabbitMQ nacks them."""
    name = f"scout-attack-full-{uuid.uuid4().hex[:8]}"
    with kombu.Connection(broker_url) as conn:
        exchange = Exchange(exchange_name, type="topic", durable=True)
        queue = Queue(
            name,
            exchange,
            routing_key="reject.full",
            auto_delete=False,
            queue_arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
        )
        queue(conn.default_channel).declare()
    yield name
    with kombu.Connection(broker_url) as conn:
        conn.default_channel.queue_delete(name)


def test_returns_nacks_and_acks_in_one_batch_each_get_their_own_verdict(
    publisher: ConfirmingPublisher, event_queue: EventQueue, reject_queue: str
) -> None:
    # event_queue takes scout.#; reject.full goes only to the refusing queue (a nack);
    # other.* reaches no queue (a basic.return, then an ack). Interleaved, with a
    # returned body spanning several frames, so multiple-acks straddle all three.
    big = b'{"pad":"' + b"r" * 300_000 + b'"}'
    batch: list[OutgoingMessage] = []
    kinds: dict[str, str] = {}
    for i in range(120):
        kind = ("ok", "nack", "return")[i % 3]
        key = {"ok": "scout.trigger", "nack": "reject.full", "return": "other.nowhere"}[kind]
        m = _msg(key, big if i == 5 else b'{"i":%d}' % i)
        batch.append(m)
        kinds[m.message_id] = kind

    result = publisher.publish(batch)

    assert result.confirmed == {k for k, v in kinds.items() if v == "ok"}
    assert set(result.rejected) == {k for k, v in kinds.items() if v != "ok"}
    for message_id, reason in result.rejected.items():
        expected = "nack" if kinds[message_id] == "nack" else "return"
        assert expected in reason, (kinds[message_id], reason)
    got = {r.properties["message_id"] for r in event_queue.get(timeout=10, count=40)}
    assert got == result.confirmed
    # The channel is still in step: the next batch is confirmed.
    after = _msg("scout.trigger")
    assert publisher.publish([after]).confirmed == {after.message_id}


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_bodies_on_frame_and_write_boundaries_arrive_byte_for_byte(
    publisher: ConfirmingPublisher, event_queue: EventQueue, delta: int
) -> None:
    publisher.connect()
    frame_max = publisher._connection.connection.frame_max  # type: ignore[union-attr]
    chunk = frame_max - 8
    sizes = [0, 1, chunk + delta, 2 * chunk + delta, 3 * chunk + delta, WRITE_AT + delta]
    # Distinct (ASCII: py-amqp decodes utf-8 bodies) bytes per position, so a
    # frame dropped, doubled or reordered shows.
    batch = [
        _msg("scout.trigger", bytes(33 + (i + j) % 94 for j in range(size)))
        for i, size in enumerate(sizes)
    ]

    result = publisher.publish(batch)

    assert result.confirmed == {m.message_id for m in batch}
    bound = event_queue.queue(event_queue.connection.default_channel)
    got: dict[str, bytes] = {}
    for _ in range(200):
        message = bound.get(no_ack=True)
        if message is None:
            if len(got) == len(batch):
                break
            time.sleep(0.05)
            continue
        body = message.body
        got[message.properties["message_id"]] = body.encode() if isinstance(body, str) else body
    assert got == {m.message_id: m.body for m in batch}


def test_an_exchange_deleted_under_a_kept_connection_counts_nothing_as_delivered(
    broker_url: str, publisher: ConfirmingPublisher, event_queue: EventQueue, exchange_name: str
) -> None:
    first = _msg("scout.trigger")
    assert publisher.publish([first]).confirmed == {first.message_id}
    with kombu.Connection(broker_url) as conn:
        conn.default_channel.exchange_delete(exchange_name)

    # The broker closes the channel (404) on the first frame; the kept connection's
    # one retry redeclares the exchange, which now has no binding: all returned.
    batch = [_msg("scout.trigger") for _ in range(50)]
    result = publisher.publish(batch)

    assert result.confirmed == set()
    assert set(result.rejected) == {m.message_id for m in batch}
    # Bound again, the same publisher delivers, on a channel that is in confirm mode.
    event_queue.queue(event_queue.connection.default_channel).declare()
    again = [_msg("scout.trigger") for _ in range(5)]
    assert publisher.publish(again).confirmed == {m.message_id for m in again}
    got = {r.properties["message_id"] for r in event_queue.get(timeout=10, count=6)}
    assert got == {first.message_id} | {m.message_id for m in again}


def test_a_connection_cut_between_send_and_settle_settles_nothing_on_the_next(
    proxy: TcpProxy, broker_url: str, exchange_name: str, event_queue: EventQueue
) -> None:
    pub = ConfirmingPublisher(through(broker_url, proxy.port), exchange_name, confirm_timeout=5)
    try:
        pub.connect()
        # Unroutable on the first connection: acked with a return, never delivered.
        stale = pub.send([_msg("other.nowhere") for _ in range(20)])
        proxy.cut()
        proxy.restore()
        # A new batch on a new connection, numbered from 1 again like the stale one.
        pub.close()
        fresh_batch = [_msg("other.nowhere") for _ in range(20)]
        fresh = pub.send(fresh_batch)

        # The stale batch's channel is gone: its one retry goes out on the new
        # connection, after the fresh batch, and neither may take the other's acks.
        late = pub.settle(stale)
        result = pub.settle(fresh)
    finally:
        pub.close()

    assert late.confirmed == set()
    assert set(late.rejected) == {m.message_id for m in stale.messages}
    assert result.confirmed == set()
    assert set(result.rejected) == {m.message_id for m in fresh_batch}
    assert event_queue.get(timeout=0.5) == []


def test_a_stalled_broker_fails_a_large_send_instead_of_hanging(
    proxy: TcpProxy, broker_url: str, exchange_name: str
) -> None:
    """A broker that stops reading (a memory alarm blocks publishers) must not hang a send.

    The write blocks once the sockets' buffers are full; py-amqp's TCP_USER_TIMEOUT
    is what ends it, so the batch stays in the outbox instead of holding a pool
    process (and its outbox locks) until the alarm clears.
    """
    pub = ConfirmingPublisher(through(broker_url, proxy.port), exchange_name, confirm_timeout=2)
    outcome: list[object] = []
    batch = [_msg("scout.trigger", b"x" * 1_000_000) for _ in range(64)]

    def send() -> None:
        outcome.append(pub.send(batch))

    thread = threading.Thread(target=send, daemon=True)
    try:
        pub.connect()
        proxy.stall()
        thread.start()
        thread.join(timeout=8)
        sent_in_time = bool(outcome)
    finally:
        # Cut, not resumed: the one retry's connect is refused at once.
        proxy.cut()
        thread.join(timeout=10)
    try:
        assert sent_in_time, "send still blocked 8 s into a stall"
        with pytest.raises(PublishError):
            pub.settle(outcome[0])  # type: ignore[arg-type]
    finally:
        pub.close()
