"""One lifecycle delivery: its contents, read safely, and settling it (with a bounded copy)."""

from __future__ import annotations

from typing import Any

from kombu import Consumer, Producer
from kombu.message import Message

from scout_tasks.inbound import MAX_BODY_BYTES, MAX_NAME_CHARS
from scout_tasks.recorder import MAX_REASON, Outcome, OutcomeKind

# Headers on a copy set aside by the consumer (brokers without dead-lettering,
# and the old classic queue): why, where the message was first published, and
# how big its body was (a body over the size limit is not copied).
DEAD_REASON_HEADER = "x-scout-dead-reason"
DEAD_ROUTING_KEY_HEADER = "x-scout-routing-key"
DEAD_EXCHANGE_HEADER = "x-scout-exchange"
DEAD_BODY_BYTES_HEADER = "x-scout-body-bytes"


def raw_body(message: Message) -> bytes:
    """The body's bytes as published.

    py-amqp decodes a body whose ``content_encoding`` it knows into ``str``;
    encoding it back with the same codec restores the exact bytes.
    """
    body = message.body
    if isinstance(body, str):
        return body.encode(message.content_encoding or "utf-8", errors="surrogateescape")
    return bytes(body)


def short(value: Any) -> str | None:
    """``value`` as text fit for a log line or a header (an attacker may send 100 KB)."""
    return None if value is None else str(value)[:MAX_NAME_CHARS]


def without_compression(raw: Any) -> Any:
    """Drop a ``compression`` header before kombu reads the message.

    kombu inflates a body whose ``compression`` header names a codec it knows
    before anyone sees it: a 256 KiB bzip2 bomb would be gigabytes. Agents
    never compress (bodies are JSON by contract), so the body stays as sent
    and is refused as not JSON.
    """
    if isinstance(raw, dict):  # kombu's virtual transports (filesystem://)
        headers = raw.get("headers")
    else:  # py-amqp
        headers = getattr(raw, "properties", {}).get("application_headers")
    if isinstance(headers, dict):
        headers.pop("compression", None)
    return raw


class RawConsumer(Consumer):
    """A kombu Consumer that never inflates a body (see :func:`without_compression`)."""

    def _receive_callback(self, message: Any) -> Any:
        return super()._receive_callback(without_compression(message))


def publish_copy(message: Message, dead_queue: str, reason: str, exchange: str) -> None:
    """Publish a bounded copy of ``message`` to ``dead_queue``, the reason in a header.

    The original headers are left out (they may be huge, and the copy must
    stay far below ``frame_max``), and so is a body over the size limit.
    """
    body = raw_body(message)
    headers: dict[str, Any] = {
        DEAD_REASON_HEADER: reason[:MAX_REASON],
        DEAD_ROUTING_KEY_HEADER: short(message.delivery_info.get("routing_key")) or "",
        DEAD_EXCHANGE_HEADER: short(message.delivery_info.get("exchange", exchange)) or "",
        DEAD_BODY_BYTES_HEADER: len(body),
    }
    properties: dict[str, Any] = {}
    message_id = short(message.properties.get("message_id"))
    if message_id is not None:
        properties["message_id"] = message_id
    Producer(message.channel, auto_declare=False).publish(
        body if len(body) <= MAX_BODY_BYTES else b"",
        exchange="",
        routing_key=dead_queue,
        headers=headers,
        content_type=short(message.content_type) or "application/octet-stream",
        content_encoding=short(message.content_encoding) or "binary",
        delivery_mode=2,
        retry=False,
        **properties,
    )


# --- settling ----------------------------------------------------------------------
#
# Each function returns the verb the consumer counts: acked, rejected (the
# broker dead-letters it), returned (a delivery spent) or set_aside (copied).


def settle(
    message: Message, outcome: Outcome, dead_lettering: bool, *, dead_queue: str, exchange: str
) -> str:
    """Acknowledge ``message``, or set it aside when ``outcome`` says it is malformed."""
    if outcome.kind is not OutcomeKind.MALFORMED:
        message.ack()
        return "acked"
    if dead_lettering:
        # The broker dead-letters it: nothing is published from here.
        message.reject(requeue=False)
        return "rejected"
    publish_copy(message, dead_queue, outcome.reason or "malformed", exchange)
    message.ack()
    return "set_aside"


def return_or_set_aside(
    message: Message, reason: str, dead_lettering: bool, *, dead_queue: str, exchange: str
) -> str:
    """Give ``message`` back for another delivery (the limit ends a loop), or set it aside."""
    if dead_lettering:
        # basic.reject with requeue: a delivery spent, so the limit ends a loop.
        message.reject(requeue=True)
        return "returned"
    # Nothing would count deliveries here: set it aside at once.
    publish_copy(message, dead_queue, reason, exchange)
    message.ack()
    return "set_aside"


def ack_all(messages: list[Message], outstanding: list[Message]) -> int:
    """Acknowledge ``messages``: one multiple ack when it is safe; returns how many.

    A multiple ack covers every delivery up to its tag on the channel, so it is
    used only when none of the ``outstanding`` deliveries (held or not yet
    recorded) is older on the same channel.
    """
    if not messages:
        return 0
    last = max(messages, key=lambda m: m.delivery_tag)
    if len(messages) > 1 and all(
        m.channel is not last.channel or m.delivery_tag > last.delivery_tag for m in outstanding
    ):
        last.ack(multiple=True)
    else:
        for message in messages:
            message.ack()
    return len(messages)
