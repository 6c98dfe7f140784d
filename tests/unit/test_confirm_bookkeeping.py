"""Confirm bookkeeping: one channel's verdicts settle that channel's messages and no others.

The invariant, in RabbitMQ's terms: delivery tags count one channel's
publishes from 1; each tag is settled once, by an ack or a nack that may cover
every pending tag up to its own (``multiple``); a ``mandatory`` message no
queue takes comes back as ``basic.return`` just before its ack, and that
return, not the ack, is the verdict. The broker here is a small fake that keeps
those rules; tests/integration/test_publisher_reconnect.py checks the same
against the real RabbitMQ.
"""

from __future__ import annotations

import logging
import struct
from collections import defaultdict
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import amqp
import pytest
from amqp.exceptions import ConnectionForced
from amqp.serialization import loads

from scout_tasks import publisher as publisher_module
from scout_tasks.confirms import ConfirmState
from scout_tasks.errors import PublishError
from scout_tasks.publisher import ConfirmingPublisher, OutgoingMessage

# --- ConfirmState on its own ------------------------------------------------------


def _returned(message_id: str) -> SimpleNamespace:
    return SimpleNamespace(properties={"message_id": message_id})


def _publish(state: ConfirmState, *ids: str) -> dict[int, str]:
    return {state.published(message_id): message_id for message_id in ids}


def test_tags_count_from_one_on_every_new_state() -> None:
    old = ConfirmState()
    assert list(_publish(old, "a", "b", "c")) == [1, 2, 3]
    old.on_ack(3, True)

    new = ConfirmState()
    tags = _publish(new, "d")

    assert tags == {1: "d"}
    assert not new.settled(1)


def test_a_multiple_ack_covering_a_returned_message_rejects_only_that_one() -> None:
    state = ConfirmState()
    tags = _publish(state, "a", "b", "c", "d")
    # RabbitMQ's order for an unroutable mandatory message: return, then ack.
    state.on_return(Exception("NO_ROUTE"), "events", "scout.trigger", _returned("c"))
    state.on_ack(4, True)

    result = state.collect(tags)

    assert result.confirmed == {"a", "b", "d"}
    assert set(result.rejected) == {"c"}
    assert "returned by the broker" in result.rejected["c"]
    assert "NO_ROUTE" in result.rejected["c"]


def test_each_tag_takes_the_first_verdict_that_covers_it() -> None:
    state = ConfirmState()
    tags = _publish(state, "a", "b", "c", "d", "e")
    state.on_ack(2, False)
    state.on_nack(3, True)  # settles 1 and 3; 2 was acked already
    state.on_ack(5, True)  # settles 4 and 5; 1-3 were settled already
    state.on_nack(5, True)  # a repeated verdict changes nothing

    result = state.collect(tags)

    assert result.confirmed == {"b", "d", "e"}
    assert result.rejected == {"a": "nacked by the broker", "c": "nacked by the broker"}


def test_a_multiple_ack_settles_nothing_past_its_tag() -> None:
    state = ConfirmState()
    _publish(state, "a", "b", "c")
    state.on_ack(2, True)

    assert [state.settled(t) for t in (1, 2, 3)] == [True, True, False]


def test_a_verdict_for_a_tag_never_published_here_is_ignored() -> None:
    state = ConfirmState()
    _publish(state, "a")
    state.on_ack(7, False)
    state.on_nack(9, False)

    assert not state.settled(1)
    assert not state.settled(7)


def test_a_return_goes_to_the_oldest_unsettled_message_with_that_id() -> None:
    state = ConfirmState()
    tags = _publish(state, "x", "y")
    state.on_ack(1, False)
    more = _publish(state, "x")
    # Tag 1 ("x") is settled, so the return can only be tag 3's.
    state.on_return(Exception("NO_ROUTE"), "events", "k", _returned("x"))
    state.on_ack(3, True)

    assert state.collect(tags).confirmed == {"x", "y"}
    assert set(state.collect(more).rejected) == {"x"}


def test_a_return_for_no_pending_message_is_logged_not_misapplied(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = ConfirmState()
    tags = _publish(state, "a")
    with caplog.at_level(logging.WARNING, logger="scout_tasks.confirms"):
        state.on_return(Exception("NO_ROUTE"), "events", "k", _returned("zzz"))
    state.on_ack(1, False)

    assert state.collect(tags).confirmed == {"a"}
    assert [r.action for r in caplog.records] == ["publisher.unknown_return"]  # type: ignore[attr-defined]


# --- the publisher across reconnects, on a fake broker that keeps RabbitMQ's rules ----


class FakeBroker:
    """Routes by exact routing key; multiple-acks whatever each drain finds outstanding."""

    def __init__(self) -> None:
        self.bound: set[str] = {"scout.trigger"}
        self.connections: list[FakeConnection] = []
        self.answer = True
        self.before_deliver: Callable[[], None] | None = None

    def connection(self, url: str, **_: Any) -> FakeConnection:
        connection = FakeConnection(self)
        self.connections.append(connection)
        return connection


class FakeChannel:
    def __init__(self, broker: FakeBroker, channel_id: int) -> None:
        self.broker = broker
        self.channel_id = channel_id
        self.events: defaultdict[str, set[Callable[..., None]]] = defaultdict(set)
        self.confirming = False
        self.last_tag = 0
        self.frames: list[tuple[str, Any]] = []

    def confirm_select(self) -> None:
        self.confirming = True

    def exchange_declare(self, **_: Any) -> None:
        pass

    def basic_publish(
        self, properties: dict[str, Any], exchange: str, routing_key: str, mandatory: bool
    ) -> None:
        assert self.confirming and mandatory
        self.last_tag += 1
        if routing_key not in self.broker.bound:
            self.frames.append(("return", SimpleNamespace(properties=properties)))
        self.frames.append(("ack", self.last_tag))

    def deliver(self) -> None:
        """Every return in order, then one ack(multiple) for all the acks owed."""
        frames, self.frames = self.frames, []
        last_ack = 0
        for kind, value in frames:
            if kind == "return":
                for callback in list(self.events["basic_return"]):
                    callback(Exception("NO_ROUTE"), "events", "k", value)
            else:
                last_ack = value
        if last_ack:
            for callback in list(self.events["basic_ack"]):
                callback(last_ack, True)


class FakeSocket:
    """Reads the publisher's frames as the broker would: one publish per header frame."""

    def __init__(self, connection: FakeConnection) -> None:
        self.connection = connection
        self.frame_max = 131072
        self.bytes_sent = 0
        self.transport = self
        self._method: tuple[str, str, bool] | None = None

    def write(self, data: bytes) -> None:
        offset = 0
        while offset < len(data):
            kind, channel_id, size = struct.unpack_from(">BHI", data, offset)
            payload = data[offset + 7 : offset + 7 + size]
            assert data[offset + 7 + size] == 0xCE
            offset += 8 + size
            channel = self.connection.channels[channel_id - 1]
            if kind == 1:
                (_reserved, exchange, routing_key, mandatory, _immediate), _ = loads(
                    "Bssbb", payload, 4
                )
                self._method = (exchange, routing_key, mandatory)
            elif kind == 2:
                assert self._method is not None
                header = amqp.Message()
                header.inbound_header(payload)
                channel.basic_publish(dict(header.properties), *self._method)


class FakeConnection:
    transport = SimpleNamespace(driver_type="amqp")

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.channels: list[FakeChannel] = []
        self.forced_closed = False
        self.connection = FakeSocket(self)

    def connect(self) -> None:
        pass

    def channel(self) -> FakeChannel:
        channel = FakeChannel(self.broker, len(self.channels) + 1)
        self.channels.append(channel)
        return channel

    def drain_events(self, timeout: float) -> None:
        if self.forced_closed:
            raise ConnectionForced("closed via management plugin")
        if not self.broker.answer:
            raise TimeoutError
        if self.broker.before_deliver is not None:
            self.broker.before_deliver()
        for channel in self.channels:
            channel.deliver()

    def release(self) -> None:
        pass


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBroker]:
    fake = FakeBroker()
    monkeypatch.setattr(publisher_module.kombu, "Connection", fake.connection)
    yield fake


def _messages(n: int, key: str = "scout.trigger", tag: str = "m") -> list[OutgoingMessage]:
    return [OutgoingMessage(f"{tag}-{i}", key, b"{}") for i in range(n)]


def test_unroutable_messages_after_a_reconnect_are_not_delivered(broker: FakeBroker) -> None:
    pub = ConfirmingPublisher("amqp://fake//", "events", confirm_timeout=1)
    burst = _messages(500)
    assert pub.publish(burst).confirmed == {m.message_id for m in burst}
    broker.connections[-1].forced_closed = True

    late = _messages(5, key="scout.nowhere", tag="late")
    result = pub.publish(late)

    assert len(broker.connections) == 2
    assert result.confirmed == set()
    assert set(result.rejected) == {m.message_id for m in late}


def test_a_late_verdict_from_an_abandoned_channel_settles_nothing_new(broker: FakeBroker) -> None:
    pub = ConfirmingPublisher("amqp://fake//", "events", confirm_timeout=0.2)
    assert pub.publish(_messages(3)).confirmed
    old = broker.connections[-1].channels[-1]
    # No answer in time: the publisher gives up on this connection (and on the
    # fresh one it retries on).
    broker.answer = False
    with pytest.raises(PublishError):
        pub.publish(_messages(2, tag="slow"))
    broker.answer = True

    # The old channel's verdicts turn up while the new channel waits, covering
    # the tags it has just used.
    def late_verdicts() -> None:
        for callback in list(old.events["basic_ack"]):
            callback(1000, True)

    broker.before_deliver = late_verdicts
    pending = _messages(4, key="scout.nowhere", tag="new")
    result = pub.publish(pending)

    assert len(broker.connections) == 3
    assert result.confirmed == set()
    assert set(result.rejected) == {m.message_id for m in pending}


def test_an_error_half_way_through_a_batch_abandons_the_channel(broker: FakeBroker) -> None:
    pub = ConfirmingPublisher("amqp://fake//", "events", confirm_timeout=1)
    assert pub.publish(_messages(2)).confirmed
    first = broker.connections[-1].channels[-1]
    calls = 0
    original = first.basic_publish

    def fails_on_the_second(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ValueError("bug in the middle of a batch")
        original(*args, **kwargs)

    first.basic_publish = fails_on_the_second  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="bug"):
        pub.publish(_messages(3, tag="x"))

    # The record of tags on that channel is unsure now: the next batch uses a new one.
    mixed = [*_messages(2, tag="ok"), *_messages(1, key="scout.nowhere", tag="no")]
    result = pub.publish(mixed)

    assert len(broker.connections) == 2
    assert result.confirmed == {"ok-0", "ok-1"}
    assert set(result.rejected) == {"no-0"}
