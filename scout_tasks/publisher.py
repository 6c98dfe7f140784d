"""Publishing to the topic exchange with batched publisher confirms.

One confirm round trip per batch instead of one per message: publish every
message, then drain the connection until the broker has acked (or nacked) the
last delivery tag. Messages are ``mandatory``: one that no queue would receive
comes back as returned and counts as not delivered, so it stays in the outbox
until somebody binds a queue, rather than vanishing.

The broker's verdicts are bookkept per channel (:class:`ConfirmState`):
delivery tags number one channel's publishes from 1, so a verdict means
nothing on any other channel, and a reconnect starts from a clean slate.

A broker without confirms (the embedded default's kombu ``filesystem://``
transport) takes the other path: each message is written synchronously
before ``publish`` returns, and that is all the confirmation such a
transport can give (see :meth:`ConfirmingPublisher._publish_unconfirmed`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import kombu
from amqp.exceptions import AMQPError
from kombu import Exchange, Producer
from kombu.exceptions import KombuError

from scout_tasks.broker import broker_transport_options
from scout_tasks.confirms import ConfirmState, PublishResult
from scout_tasks.errors import PublishError
from scout_tasks.publish_frames import PublishFrames, write_batch
from scout_tasks.settings import get_settings, mask_url, missing_url_error

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    message_id: str
    routing_key: str
    body: bytes


@dataclass(slots=True)
class Sent:
    """A batch handed to the broker (:meth:`ConfirmingPublisher.send`), not yet settled."""

    messages: tuple[OutgoingMessage, ...]
    # Whether it went out on a connection kept from an earlier batch.
    reused: bool
    # Delivery tag -> message id, on the channel whose bookkeeping is ``confirm``.
    tags: dict[int, str] = field(default_factory=dict)
    confirm: ConfirmState | None = None
    # Known at once: without confirms (filesystem://) or for an empty batch.
    result: PublishResult | None = None
    error: PublishError | None = None


_T = TypeVar("_T")


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
        # The connected channel's confirm bookkeeping; None without confirms
        # (a kombu virtual transport) or without a connection. It is made with
        # the channel and dropped with it, never reset or carried over.
        self._confirm: ConfirmState | None = None
        # Its frame encoder, made with the channel like the bookkeeping (AMQP only).
        self._frames: PublishFrames | None = None

    # -- connection management -------------------------------------------------

    def _connect(self) -> None:
        # Empty for AMQP; the folders for a filesystem:// broker.
        options = broker_transport_options(self.url)
        connection = kombu.Connection(self.url, connect_timeout=5, transport_options=options)
        try:
            connection.connect()
            channel = connection.channel()
            confirm = frames = None
            if connection.transport.driver_type == "amqp":
                confirm = ConfirmState.attach(channel)
                frames = PublishFrames(
                    channel.channel_id, self.exchange_name, connection.connection.frame_max
                )
            # Also what makes a kombu virtual transport route to the topic
            # exchange's bindings: without this declaration in this process it
            # would drop every message silently.
            exchange = declare_exchange(channel, self.exchange_name)
        except Exception:
            connection.release()
            raise
        self._connection = connection
        self._channel = channel
        self._confirm = confirm
        self._frames = frames
        self._producer = Producer(channel, exchange=exchange, auto_declare=False)
        log.info(
            "publisher connected",
            extra={"action": "publisher.connect", "broker": mask_url(self.url)},
        )

    def close(self) -> None:
        connection, self._connection = self._connection, None
        self._channel = self._producer = self._confirm = self._frames = None
        if connection is not None:
            try:
                connection.release()
            except Exception:
                log.debug("publisher close failed", exc_info=True)

    # -- publishing ------------------------------------------------------------

    def connect(self) -> None:
        """Connect now instead of at the first publish; raises :class:`PublishError`."""
        if self._connection is None:
            self._guarded(lambda _sent: self._connect(), Sent((), reused=False))

    def publish(self, messages: Sequence[OutgoingMessage]) -> PublishResult:
        """Publish ``messages`` and wait for the broker's verdict on each.

        Raises :class:`PublishError` when the connection fails or the broker
        does not answer in time; then nothing is known to be delivered.
        """
        return self.settle(self.send(messages))

    def send(self, messages: Sequence[OutgoingMessage]) -> Sent:
        """Hand ``messages`` to the broker without waiting for its verdicts.

        The caller may do other work (the next batch's SQL) while the broker
        stores them, then :meth:`settle` the batch. One batch at a time: the
        verdicts are only collected by ``settle``. A failure is kept for
        ``settle`` to report, so both steps fail in one place.
        """
        sent = Sent(tuple(messages), reused=self._connection is not None)
        if not messages:
            sent.result = PublishResult()
            return sent
        try:
            self._guarded(self._send, sent)
        except PublishError as exc:
            sent.error = exc
        return sent

    def settle(self, sent: Sent) -> PublishResult:
        """The broker's verdict on every message of ``sent``; raises :class:`PublishError`."""
        try:
            if sent.error is not None:
                raise sent.error
            if sent.result is not None:
                return sent.result
            if sent.confirm is not self._confirm:
                # Its channel was dropped since (a failure, close()): nothing is known
                # of it. Raised outside _guarded, which would also close the connection
                # open now, a later one that may carry another batch (found by
                # tests/integration/test_attack_confirms.py).
                raise PublishError("the channel these messages were sent on was closed")
            return self._guarded(self._wait, sent)
        except PublishError:
            if not sent.reused:
                raise
        # A connection kept open between calls may have been closed by the broker
        # meanwhile (a restart, an idle timeout); one attempt on a fresh connection
        # tells that apart from an outage. A message the broker did get before the
        # failure goes out twice with the same message_id, which consumers dedupe.
        log.info("publisher reconnecting", extra={"action": "publisher.reconnect"})
        retry = Sent(sent.messages, reused=False)
        self._guarded(self._send, retry)
        return retry.result if retry.result is not None else self._guarded(self._wait, retry)

    def _guarded(self, step: Callable[[Sent], _T], sent: Sent) -> _T:
        try:
            return step(sent)
        except PublishError:
            self.close()
            raise
        except (OSError, AMQPError, KombuError) as exc:
            self.close()
            raise PublishError(f"broker unavailable: {exc!r}") from exc
        except BaseException:
            # Anything else half way through a batch (an interrupt, a bug) leaves
            # the channel's tag count unsure: the next batch gets a new channel.
            self.close()
            raise

    def _send(self, sent: Sent) -> None:
        if self._connection is None:
            self._connect()
        assert self._producer is not None and self._connection is not None
        confirm = self._confirm
        if confirm is None:
            sent.result = self._publish_unconfirmed(sent.messages)
            return
        sent.confirm = confirm
        write_batch(self._connection.connection, self._encode(confirm, sent.messages, sent.tags))

    def _wait(self, sent: Sent) -> PublishResult:
        confirm = sent.confirm
        if confirm is not self._confirm or confirm is None or self._connection is None:
            # The channel it went out on is gone (closed since): nothing is known.
            raise PublishError("the channel these messages were sent on was closed")
        order = list(sent.tags)
        waiting = 0
        deadline = time.monotonic() + self.confirm_timeout
        while waiting < len(order):
            if confirm.settled(order[waiting]):
                waiting += 1
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                # The caller closes the connection, and this channel's state goes with it.
                raise PublishError(f"no confirm from the broker within {self.confirm_timeout}s")
            try:
                self._connection.drain_events(timeout=min(remaining, 1.0))
            except TimeoutError:
                continue
        return confirm.collect(sent.tags)

    def _encode(
        self, confirm: ConfirmState, messages: Sequence[OutgoingMessage], tags: dict[int, str]
    ) -> Iterator[list[bytes]]:
        """Each message's frames, its delivery tag recorded as it is handed over."""
        assert self._frames is not None
        encode = self._frames.message
        for message in messages:
            frames = encode(message.routing_key, message.message_id, message.body)
            # Recorded first: the broker numbers it on receipt, and a failure
            # while sending abandons the channel and this record with it.
            tags[confirm.published(message.message_id)] = message.message_id
            yield frames

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

# Guards the per-process publisher against the early connect's thread.
_process_lock = threading.Lock()
# Bumped when the process publisher is closed: an early connect that finishes
# after that is thrown away, not installed.
_generation = 0


def process_publisher() -> ConfirmingPublisher:
    """This process's confirming publisher (one per pool child, made after fork)."""
    global _process_publisher
    with _process_lock:
        if _process_publisher is None or _process_publisher[0] != os.getpid():
            _process_publisher = (os.getpid(), _new_process_publisher())
        return _process_publisher[1]


def _new_process_publisher() -> ConfirmingPublisher:
    settings = get_settings()
    return ConfirmingPublisher(settings.broker_url_value(), settings.exchange)


def connect_process_publisher_soon(before: Sequence[Callable[[], None]] = ()) -> None:
    """Connect a publisher on a background thread and make it this process's, ``before`` first.

    A pool child does this as it starts, so the first burst it is handed does
    not wait for connections. Nothing ever waits for the thread: if a task
    needs the publisher first, it makes its own and the early one is closed.
    Failures are only logged: the first publish connects again.
    """
    generation = _generation

    def connect() -> None:
        for step in before:
            try:
                step()
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - early is optional
                log.debug("early connect failed: %s", exc, extra={"action": "publisher.early"})
        global _process_publisher
        try:
            early = _new_process_publisher()
            early.connect()
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - early is optional
            log.debug("early connect failed: %s", exc, extra={"action": "publisher.early"})
            return
        with _process_lock:
            if _process_publisher is None and _generation == generation:
                _process_publisher = (os.getpid(), early)
                return
        early.close()  # a task made its own meanwhile, or the process is closing

    threading.Thread(target=connect, name="scout-connect", daemon=True).start()


def close_process_publisher() -> None:
    """Close this process's publisher (a forked child only forgets the parent's)."""
    global _process_publisher, _generation
    with _process_lock:
        current, _process_publisher = _process_publisher, None
        _generation += 1
    if current is not None and current[0] == os.getpid():
        current[1].close()
