"""A batch of ``basic.publish`` frames, encoded once per batch shape and written in one go.

py-amqp encodes each message's method, header and body frames from scratch and
sends them with their own system call: in a burst that is the largest cost of
a fire, larger than the run's SQL. In a batch only the routing key, the
message id and the body vary. So py-amqp itself encodes the parts that do
not (the method frame per routing key, the properties up to the message id)
once, and each message's frames are those parts joined with its id and body.
The bytes are py-amqp's own for the same message (a test holds them equal);
the batch then reaches the socket in as few writes as its size allows.

The broker's answers (acks, nacks, returns) still arrive through py-amqp's
channel, which is where the confirm bookkeeping listens.
"""

from __future__ import annotations

from collections.abc import Iterable
from struct import pack
from typing import Any

import amqp
from amqp.serialization import dumps

# basic.publish: class 60, method 40.
_BASIC, _PUBLISH = 60, 40
_METHOD, _HEADER, _BODY = 1, 2, 3
_FRAME_END = b"\xce"
# A frame's type, channel and size before its payload, and the end octet after it.
_FRAME_OVERHEAD = 8
# Written to the socket when this many bytes are waiting, so a batch of large
# messages never holds more than about this much at once.
WRITE_AT = 1 << 20

# The properties every event carries; the message id follows them.
PROPERTIES: dict[str, Any] = {
    "content_type": "application/json",
    "content_encoding": "utf-8",
    "delivery_mode": 2,
}


def _properties(message_id: str) -> bytes:
    # The same arguments kombu's prepare_message gives amqp.Message.
    message = amqp.Message(
        b"",
        priority=None,
        application_headers=None,
        message_id=message_id,
        **PROPERTIES,
    )
    return bytes(message._serialize_properties())


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return pack(">BHI", kind, channel, len(payload)) + payload + _FRAME_END


class PublishFrames:
    """Encodes ``basic.publish`` frames for one channel of one connection."""

    def __init__(self, channel_id: int, exchange: str, frame_max: int) -> None:
        self.channel_id = channel_id
        self.exchange = exchange
        self.chunk = frame_max - _FRAME_OVERHEAD
        self._methods: dict[str, bytes] = {}
        # The message id is the last property written, a short string: the
        # properties are this prefix, then its length octet and its bytes.
        empty = _properties("")
        self._prefix = empty[:-1]
        if _properties("x") != self._prefix + b"\x01x":  # pragma: no cover - py-amqp changed
            raise RuntimeError("py-amqp no longer writes the message id last")

    def _method(self, routing_key: str) -> bytes:
        frame = self._methods.get(routing_key)
        if frame is None:
            args = dumps("Bssbb", (0, self.exchange, routing_key, True, False))
            payload = pack(">HH", _BASIC, _PUBLISH) + args
            frame = self._methods[routing_key] = _frame(_METHOD, self.channel_id, payload)
        return frame

    def message(self, routing_key: str, message_id: str, body: bytes) -> list[bytes]:
        """The frames of one mandatory, persistent message, as py-amqp writes them."""
        mid = message_id.encode()
        if len(mid) > 255:
            raise ValueError(f"message id longer than 255 bytes: {message_id[:40]!r}...")
        header = pack(">HHQ", _BASIC, 0, len(body)) + self._prefix + bytes((len(mid),)) + mid
        frames = [self._method(routing_key), _frame(_HEADER, self.channel_id, header)]
        for start in range(0, len(body), self.chunk):
            frames.append(_frame(_BODY, self.channel_id, body[start : start + self.chunk]))
        return frames


def write_batch(connection: Any, frames: Iterable[list[bytes]]) -> None:
    """Write every message's frames to ``connection``'s socket, in order, in few writes.

    ``connection`` is the py-amqp connection (``kombu.Connection().connection``).
    """
    held: list[bytes] = []
    size = 0
    sent = 0
    for message in frames:
        held.extend(message)
        size += sum(len(f) for f in message)
        sent += len(message)
        if size >= WRITE_AT:
            connection.transport.write(b"".join(held))
            held, size = [], 0
    if held:
        connection.transport.write(b"".join(held))
    # py-amqp's heartbeats count frames sent; these count like its own.
    connection.bytes_sent += sent
