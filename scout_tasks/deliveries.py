"""One lifecycle delivery: its contents, read safely, and settling it (with a bounded copy).

On RabbitMQ (py-amqp) a delivery is the ``amqp.Message`` py-amqp parsed from
its frames, handed on as it is (:class:`RawConsumer`): a kombu ``Message``
for each would cost more than its frames' parsing and buy nothing here (it
honours a ``compression`` header, which must never happen, see
:func:`without_compression`). On kombu's virtual transports (``filesystem://``)
and for ``basic_get`` it is a kombu ``Message``. Everything here reads and
settles both the same way: ``body``, ``properties``, ``delivery_info``,
``channel`` and ``delivery_tag`` are on both, and settling goes through the
channel (``basic_ack``, ``basic_reject``), which is all kombu's ``ack()`` does.
"""

from __future__ import annotations

from typing import Any

import amqp
from kombu import Consumer, Producer

from scout_tasks.inbound import MAX_BODY_BYTES, MAX_NAME_CHARS
from scout_tasks.recorder import MAX_REASON, Outcome, OutcomeKind

# Headers on a copy set aside by the consumer (brokers without dead-lettering,
# and the old classic queue): why, where the message was first published, and
# how big its body was (a body over the size limit is not copied).
DEAD_REASON_HEADER = "x-scout-dead-reason"
DEAD_ROUTING_KEY_HEADER = "x-scout-routing-key"
DEAD_EXCHANGE_HEADER = "x-scout-exchange"
DEAD_BODY_BYTES_HEADER = "x-scout-body-bytes"


# A delivery: an ``amqp.Message`` or a kombu ``Message`` (see the module's docstring).
Received = Any


def content_property(message: Received, name: str) -> Any:
    """``content_type`` or ``content_encoding``, or None.

    An attribute on a kombu Message; on an amqp.Message, a property that
    raises AttributeError when the publisher did not set it.
    """
    return getattr(message, name, None)


def raw_body(message: Received) -> bytes:
    """The body's bytes as published.

    py-amqp decodes a body whose ``content_encoding`` it knows into ``str``;
    encoding it back with the same codec restores the exact bytes.
    """
    body = message.body
    if isinstance(body, str):
        encoding = content_property(message, "content_encoding") or "utf-8"
        return body.encode(encoding, errors="surrogateescape")
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
    """A kombu Consumer that never inflates a body (see :func:`without_compression`).

    py-amqp's message goes to ``on_message`` as it is: no kombu Message is
    built, so no header can make anything inflate it.
    """

    def _receive_callback(self, message: Any) -> Any:
        if type(message) is amqp.Message:
            return self.on_message(message)  # type: ignore[misc]
        return super()._receive_callback(without_compression(message))


def ack(message: Received, *, multiple: bool = False) -> None:
    """``basic.ack`` of the delivery (with ``multiple``, of every earlier one on its channel)."""
    message.channel.basic_ack(message.delivery_tag, multiple=multiple)


def reject(message: Received, *, requeue: bool) -> None:
    """``basic.reject``: dead-lettered by the broker, or (``requeue``) a delivery spent."""
    message.channel.basic_reject(message.delivery_tag, requeue=requeue)


def publish_copy(message: Received, dead_queue: str, reason: str, exchange: str) -> None:
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
        content_type=short(content_property(message, "content_type")) or "application/octet-stream",
        content_encoding=short(content_property(message, "content_encoding")) or "binary",
        delivery_mode=2,
        retry=False,
        **properties,
    )


# --- settling ----------------------------------------------------------------------
#
# Each function returns the verb the consumer counts: acked, rejected (the
# broker dead-letters it), returned (a delivery spent) or set_aside (copied).


def settle(
    message: Received, outcome: Outcome, dead_lettering: bool, *, dead_queue: str, exchange: str
) -> str:
    """Acknowledge ``message``, or set it aside when ``outcome`` says it is malformed."""
    if outcome.kind is not OutcomeKind.MALFORMED:
        ack(message)
        return "acked"
    if dead_lettering:
        # The broker dead-letters it: nothing is published from here.
        reject(message, requeue=False)
        return "rejected"
    publish_copy(message, dead_queue, outcome.reason or "malformed", exchange)
    ack(message)
    return "set_aside"


def return_or_set_aside(
    message: Received, reason: str, dead_lettering: bool, *, dead_queue: str, exchange: str
) -> str:
    """Give ``message`` back for another delivery (the limit ends a loop), or set it aside."""
    if dead_lettering:
        # basic.reject with requeue: a delivery spent, so the limit ends a loop.
        reject(message, requeue=True)
        return "returned"
    # Nothing would count deliveries here: set it aside at once.
    publish_copy(message, dead_queue, reason, exchange)
    ack(message)
    return "set_aside"


def ack_all(messages: list[Received], outstanding: list[Received]) -> int:
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
        ack(last, multiple=True)
    else:
        for message in messages:
            ack(message)
    return len(messages)
