"""Publishing to the topic exchange with batched publisher confirms.

One confirm round trip per batch instead of one per message: publish every
message, then drain the connection until the broker has acked (or nacked) the
last delivery tag. Messages are ``mandatory``: one that no queue would receive
comes back as returned and counts as not delivered, so it stays in the outbox
until somebody binds a queue, rather than vanishing.

A broker without confirms (the embedded default's kombu ``filesystem://``
transport) takes the other path: each message is written synchronously
before ``publish`` returns, and that is all the confirmation such a
transport can give (see :meth:`ConfirmingPublisher._publish_unconfirmed`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import kombu
from amqp.exceptions import AMQPError
from kombu import Exchange, Producer
from kombu.exceptions import KombuError

from scout_tasks.broker import broker_transport_options
from scout_tasks.errors import PublishError
from scout_tasks.settings import get_settings, mask_url, missing_url_error

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    message_id: str
    routing_key: str
    body: bytes


@dataclass(slots=True)
class PublishResult:
    confirmed: set[str] = field(default_factory=set)
    # Nacked by the broker or returned as unroutable: try again later.
    rejected: dict[str, str] = field(default_factory=dict)


def declare_exchange(channel: Any, name: str) -> Exchange:
    """Declare the events exchange exactly as the contract pins it."""
    exchange = Exchange(name, type="topic", durable=True, auto_delete=False)
    exchange(channel).declare()
    return exchange


class ConfirmingPublisher:
    """A lazily (re)connected channel in confirm mode. Not thread-safe."""

    def __init__(self, url: str | None, exchange: str, *, confirm_timeout: float = 15.0) -> None:
        if not url:
            # No SCOUT_BROKER_URL and no `scout-tasks dev` here: say so before a
            # caller writes a run whose event could go nowhere.
            raise missing_url_error(["SCOUT_BROKER_URL"])
        self.url = url
        self.exchange_name = exchange
        self.confirm_timeout = confirm_timeout
        self._connection: kombu.Connection | None = None
        self._channel: Any = None
        self._producer: Producer | None = None
        self._next_tag = 1
        self._acked: set[int] = set()
        self._nacked: set[int] = set()
        self._acked_upto = 0
        self._nacked_upto = 0
        self._returned: dict[str, str] = {}
        # Whether the connected broker speaks AMQP 0-9-1 with publisher confirms.
        self._confirms = True

    # -- connection management -------------------------------------------------

    def _connect(self) -> None:
        # Empty for AMQP; the folders for a filesystem:// broker.
        options = broker_transport_options(self.url)
        connection = kombu.Connection(self.url, connect_timeout=5, transport_options=options)
        try:
            connection.connect()
            channel = connection.channel()
            confirms = connection.transport.driver_type == "amqp"
            if confirms:
                channel.confirm_select()
                channel.events["basic_ack"].add(self._on_ack)
                channel.events["basic_nack"].add(self._on_nack)
                channel.events["basic_return"].add(self._on_return)
            # Also what makes a kombu virtual transport route to the topic
            # exchange's bindings: without this declaration in this process it
            # would drop every message silently.
            exchange = declare_exchange(channel, self.exchange_name)
        except Exception:
            connection.release()
            raise
        self._connection = connection
        self._channel = channel
        self._confirms = confirms
        self._producer = Producer(channel, exchange=exchange, auto_declare=False)
        self._next_tag = 1
        log.info(
            "publisher connected",
            extra={"action": "publisher.connect", "broker": mask_url(self.url)},
        )

    def close(self) -> None:
        connection, self._connection = self._connection, None
        self._channel = self._producer = None
        if connection is not None:
            try:
                connection.release()
            except Exception:
                log.debug("publisher close failed", exc_info=True)

    # -- confirm bookkeeping ---------------------------------------------------

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._acked_upto = max(self._acked_upto, delivery_tag)
        else:
            self._acked.add(delivery_tag)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._nacked_upto = max(self._nacked_upto, delivery_tag)
        else:
            self._nacked.add(delivery_tag)

    def _on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        message_id = message.properties.get("message_id")
        if message_id:
            self._returned[str(message_id)] = f"returned by the broker: {exc}"

    def _resolved(self, tag: int) -> bool:
        return (
            tag <= self._acked_upto
            or tag in self._acked
            or tag <= self._nacked_upto
            or tag in self._nacked
        )

    def _nacked_tag(self, tag: int) -> bool:
        return tag in self._nacked or (tag <= self._nacked_upto and tag not in self._acked)

    # -- publishing ------------------------------------------------------------

    def publish(self, messages: Sequence[OutgoingMessage]) -> PublishResult:
        """Publish ``messages`` and wait for the broker's verdict on each.

        Raises :class:`PublishError` when the connection fails or the broker
        does not answer in time; then nothing is known to be delivered.
        """
        if not messages:
            return PublishResult()
        reused = self._connection is not None
        try:
            return self._attempt(messages)
        except PublishError:
            if not reused:
                raise
        # A connection kept open between calls may have been closed by the broker
        # meanwhile (a restart, an idle timeout); one attempt on a fresh connection
        # tells that apart from an outage. A message the broker did get before the
        # failure goes out twice with the same message_id, which consumers dedupe.
        log.info("publisher reconnecting", extra={"action": "publisher.reconnect"})
        return self._attempt(messages)

    def _attempt(self, messages: Sequence[OutgoingMessage]) -> PublishResult:
        try:
            return self._publish(messages)
        except PublishError:
            self.close()
            raise
        except (OSError, AMQPError, KombuError) as exc:
            self.close()
            raise PublishError(f"broker unavailable: {exc!r}") from exc

    def _publish(self, messages: Sequence[OutgoingMessage]) -> PublishResult:
        if self._connection is None:
            self._connect()
        assert self._producer is not None and self._connection is not None
        if not self._confirms:
            return self._publish_unconfirmed(messages)
        self._acked.clear()
        self._nacked.clear()
        self._returned.clear()
        tags: dict[int, str] = {}
        channel = self._channel
        for message in messages:
            # The kombu channel's own basic_publish: Producer.publish would add
            # ~80 us a message of retry and serializer plumbing a burst does not need.
            wire = channel.prepare_message(
                message.body,
                content_type="application/json",
                content_encoding="utf-8",
                properties={"delivery_mode": 2, "message_id": message.message_id},
            )
            channel.basic_publish(
                wire,
                exchange=self.exchange_name,
                routing_key=message.routing_key,
                mandatory=True,
            )
            tags[self._next_tag] = message.message_id
            self._next_tag += 1
        order = list(tags)
        waiting = 0
        deadline = time.monotonic() + self.confirm_timeout
        while waiting < len(order):
            if self._resolved(order[waiting]):
                waiting += 1
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PublishError(f"no confirm from the broker within {self.confirm_timeout}s")
            try:
                self._connection.drain_events(timeout=min(remaining, 1.0))
            except TimeoutError:
                continue
        result = PublishResult()
        for tag, message_id in tags.items():
            if message_id in self._returned:
                result.rejected[message_id] = self._returned[message_id]
            elif self._nacked_tag(tag):
                result.rejected[message_id] = "nacked by the broker"
            else:
                result.confirmed.add(message_id)
        return result

    def _publish_unconfirmed(self, messages: Sequence[OutgoingMessage]) -> PublishResult:
        """Publish to a broker without confirms or returns; every message published counts.

        kombu's virtual transports (the filesystem one in particular) have no
        publisher confirms and no ``mandatory`` returns: ``publish`` writes the
        message for each bound queue before it returns, and drops one that no
        queue would receive. A publish that returns is therefore as delivered
        as such a broker can make it (the filesystem transport does not fsync).
        An error raises, via :meth:`_attempt`, :class:`PublishError`: the whole
        batch stays in the outbox and messages written before the error go out
        again with the same ``message_id``, which consumers dedupe.
        """
        assert self._producer is not None
        for message in messages:
            self._producer.publish(
                message.body,
                routing_key=message.routing_key,
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
                message_id=message.message_id,
                retry=False,
            )
        log.debug(
            "published %d message(s) without confirms",
            len(messages),
            extra={"action": "publisher.published_unconfirmed", "count": len(messages)},
        )
        return PublishResult(confirmed={message.message_id for message in messages})


# --- the per-process publisher (tasks in a worker's pool children) ---------------------

_process_publisher: tuple[int, ConfirmingPublisher] | None = None


def process_publisher() -> ConfirmingPublisher:
    """This process's confirming publisher (one per pool child, made after fork)."""
    global _process_publisher
    if _process_publisher is None or _process_publisher[0] != os.getpid():
        settings = get_settings()
        _process_publisher = (
            os.getpid(),
            ConfirmingPublisher(settings.broker_url, settings.exchange),
        )
    return _process_publisher[1]


def close_process_publisher() -> None:
    """Close this process's publisher (a forked child only forgets the parent's)."""
    global _process_publisher
    if _process_publisher is not None and _process_publisher[0] == os.getpid():
        _process_publisher[1].close()
    _process_publisher = None
