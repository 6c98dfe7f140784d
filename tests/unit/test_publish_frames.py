"""The batch encoder writes exactly the bytes py-amqp writes for the same messages."""

from __future__ import annotations

from typing import Any

import amqp
import pytest
from amqp import spec
from amqp.method_framing import frame_writer
from amqp.serialization import dumps
from hypothesis import given
from hypothesis import strategies as st

from scout_tasks import publish_frames
from scout_tasks.publish_frames import PublishFrames, write_batch


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))


class FakeConnection:
    def __init__(self, frame_max: int) -> None:
        self.frame_max = frame_max
        self.bytes_sent = 0
        self.transport = RecordingTransport()


def _py_amqp_bytes(
    channel_id: int, exchange: str, routing_key: str, message_id: str, body: bytes, frame_max: int
) -> bytes:
    """What kombu's prepare_message + py-amqp's basic_publish put on the socket."""
    connection = FakeConnection(frame_max)
    write_frame = frame_writer(connection, connection.transport)
    message = amqp.Message(
        body,
        priority=None,
        content_type="application/json",
        content_encoding="utf-8",
        application_headers=None,
        delivery_mode=2,
        message_id=message_id,
    )
    args = dumps("Bssbb", (0, exchange, routing_key, True, False))
    write_frame(1, channel_id, spec.Basic.Publish, args, message)
    return b"".join(connection.transport.writes)


@given(
    channel_id=st.integers(min_value=1, max_value=2047),
    exchange=st.text(max_size=60),
    routing_key=st.text(max_size=60),
    message_id=st.text(max_size=60),
    body=st.binary(max_size=3000),
    frame_max=st.sampled_from([4096, 131072]),
)
def test_the_bytes_are_py_amqps(
    channel_id: int, exchange: str, routing_key: str, message_id: str, body: bytes, frame_max: int
) -> None:
    frames = PublishFrames(channel_id, exchange, frame_max)
    ours = b"".join(frames.message(routing_key, message_id, body))
    assert ours == _py_amqp_bytes(channel_id, exchange, routing_key, message_id, body, frame_max)


def test_a_body_larger_than_a_frame_is_split_like_py_amqp_splits_it() -> None:
    body = bytes(range(256)) * 100  # 25,600 bytes over 4,088-byte frames
    frames = PublishFrames(1, "scout", 4096).message("scout.trigger", "m", body)
    assert len(frames) == 2 + 7
    assert b"".join(frames) == _py_amqp_bytes(1, "scout", "scout.trigger", "m", body, 4096)


def test_an_empty_body_has_no_body_frame() -> None:
    frames = PublishFrames(1, "scout", 4096).message("scout.trigger", "m", b"")
    assert len(frames) == 2
    assert b"".join(frames) == _py_amqp_bytes(1, "scout", "scout.trigger", "m", b"", 4096)


def test_a_message_id_longer_than_a_short_string_is_refused() -> None:
    with pytest.raises(ValueError, match="255 bytes"):
        PublishFrames(1, "scout", 4096).message("scout.trigger", "é" * 128, b"{}")


def test_a_batch_is_one_write_until_it_is_large(monkeypatch: pytest.MonkeyPatch) -> None:
    frames = PublishFrames(1, "scout", 131072)
    connection = FakeConnection(131072)
    batch = [frames.message("scout.trigger", f"m-{i}", b"x" * 100) for i in range(50)]

    write_batch(connection, iter(batch))

    assert connection.transport.writes == [b"".join(b"".join(m) for m in batch)]
    assert connection.bytes_sent == 150  # method, header and body frame per message

    monkeypatch.setattr(publish_frames, "WRITE_AT", 1000)
    connection = FakeConnection(131072)
    write_batch(connection, iter(batch))
    assert 1 < len(connection.transport.writes) < 50
    assert b"".join(connection.transport.writes) == b"".join(b"".join(m) for m in batch)
