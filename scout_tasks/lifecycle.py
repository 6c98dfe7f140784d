"""The consumer of the Scout agents' lifecycle events, on a connection and a thread of its own.

The agents report ``scout.started``, ``scout.progress``, ``scout.completed``
and ``scout.failed`` on the events exchange (CONTRACT.md, "Events");
:mod:`scout_tasks.recorder` decides what each one does to its run. This module
collects deliveries into batches (up to :data:`BATCH_SIZE` messages, or what
arrived until the connection was quiet for :data:`IDLE` seconds, and never
more than :data:`LINGER` seconds after the first, so a lone event is still
recorded at once), has each batch recorded in one transaction, and settles
every delivery by its own outcome:

- applied, duplicate, ignored or for an unknown run: acknowledged, after the
  transaction committed (one multiple ack for the batch when nothing older
  is outstanding);
- malformed: rejected without requeue, and the broker dead-letters it
  (:mod:`scout_tasks.lifecycle_queues`); on a broker that cannot, a bounded
  copy goes to the dead queue, then the message is acknowledged. Its batch
  is recorded without it;
- the handler raised: the batch is handled again one message at a time, and
  the message that raises is rejected with requeue (``basic.reject``, which
  counts as a delivery on every RabbitMQ version), so the queue's delivery
  limit ends it, as it ends a message that crashes the whole process;
- the database is down: the batch is held, unacknowledged, and retried
  with a growing delay (:mod:`scout_tasks.lifecycle_hold`, which also
  blames a message that keeps failing while the database answers).

On RabbitMQ a delivery is py-amqp's own message, not a kombu ``Message``
(:mod:`scout_tasks.deliveries`).

``lifecycle_step.LifecycleStep`` runs it in ``celery worker``: a worker bootstep
that starts a thread with its own broker connection, reconnecting with backoff.
Whatever one message does to that connection, the worker's task connection,
and with it tick and fire, never notices.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import amqp
import kombu
from kombu import Consumer
from sqlalchemy import Engine

from scout_tasks.deliveries import (
    RawConsumer,
    Received,
    ack_all,
    raw_body,
    return_or_set_aside,
    settle,
    short,
)
from scout_tasks.lifecycle_hold import (
    RETRY_FIRST_DELAY,
    RETRY_MAX_DELAY,
    Held,
    HoldingConsumer,
)
from scout_tasks.lifecycle_legacy import LegacyDrain
from scout_tasks.lifecycle_queues import LifecycleQueues, declare_queues
from scout_tasks.reconnect import ReconnectingConsumer
from scout_tasks.recorder import (
    MAX_REASON,
    Delivery,
    Outcome,
    OutcomeKind,
    Session,
    handle_batch,
    handle_message,
)

log = logging.getLogger(__name__)

# How many unacknowledged events one consumer holds (two batches: one being
# recorded while the next arrives); it also bounds how many wait out a
# database outage here.
PREFETCH = 1000
# A batch: at most this many messages, or bytes of bodies (a flood of
# 256 KiB bodies must not hold 250 MB in memory) ...
BATCH_SIZE = 500
BATCH_BYTES = 16 * 1024 * 1024
# ... or what arrived until the connection was quiet for IDLE seconds, and
# never later than LINGER seconds after its first message (a steady trickle).
IDLE = 0.002
LINGER = 0.05


class LifecycleConsumer(ReconnectingConsumer, HoldingConsumer):
    """Consumes the lifecycle queue on ``connection`` (a template: each session clones it).

    :meth:`run` blocks until :meth:`stop`; the counters say what it did, for
    logs and tests.
    """

    def __init__(
        self,
        connection: kombu.Connection,
        *,
        exchange: str,
        names: LifecycleQueues,
        engine: Callable[[], Engine],
        first_delay: float = RETRY_FIRST_DELAY,
        max_delay: float = RETRY_MAX_DELAY,
        safety_interval: float = 1.0,
        batch_size: int = BATCH_SIZE,
        linger: float = LINGER,
        idle: float = IDLE,
        prefetch: int = PREFETCH,
    ) -> None:
        self.connection = connection
        self.exchange = exchange
        self.names = names
        self.engine = engine
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.safety_interval = safety_interval
        self.batch_size = batch_size
        self.linger = linger
        self.idle = idle
        self.prefetch = prefetch
        self.should_stop = False
        self._wake = threading.Event()
        # What happened, by verb: acked, rejected (dead-lettered), returned, set_aside.
        self.settled: dict[str, int] = {}
        self.sessions = 0
        self.db_failures = 0
        # How many batches were recorded, and their sizes (for logs, tests and the bench).
        self.batches = 0
        self.largest_batch = 0
        self._pending: list[Received] = []
        self._pending_bytes = 0
        self._first_pending = 0.0
        self._held: list[Held] = []
        self._next_try = 0.0
        # The consumer thread's database connection, kept between batches.
        self._db = Session()
        self._session: kombu.Connection | None = None
        self._legacy = LegacyDrain(exchange, names, self._deliver_legacy)

    # --- running ------------------------------------------------------------------

    def run(self, _tokens: int = 1, **kwargs: Any) -> None:
        """Consume until :meth:`stop`, reconnecting (:mod:`scout_tasks.reconnect`); never raises."""
        try:
            self._run_sessions()
        finally:
            self._db.close()
        log.info("lifecycle consumer stopped", extra={"action": "lifecycle.stop"})

    def _consume_session(self) -> None:
        """One connection: ConsumerMixin.consume, waiting no longer than until a batch is due."""
        self._await_database()
        if self.should_stop:
            return
        with self.consumer_context() as (conn, _channel, _consumers):
            while not self.should_stop:
                self.on_iteration()
                try:
                    conn.drain_events(timeout=self._wait())
                except TimeoutError:  # socket.timeout
                    if self._pending and not self._held:
                        # Nothing more arrived: record what did.
                        self._flush()
                    conn.heartbeat_check()
                except OSError:
                    if not self.should_stop:
                        raise

    def _wait(self) -> float:
        """How long the next wait for a delivery may last: until a batch or a retry is due."""
        wait = self.safety_interval
        now = time.monotonic()
        if self._held:
            wait = min(wait, self._next_try - now)
        elif self._pending:
            wait = min(wait, self.idle, self._first_pending + self.linger - now)
        # Never 0: that would switch the socket to non-blocking.
        return max(wait, 0.001)

    def get_consumers(self, _consumer: Any, channel: Any) -> list[Consumer]:
        if isinstance(channel, amqp.Channel):
            # Bodies stay bytes: py-amqp would decode one that names its
            # encoding into str, and raw_body encode it back, for nothing.
            channel.auto_decode = False
        main = declare_queues(channel, self.exchange, self.names)
        # The broker returned whatever the previous connection held or had not recorded.
        self._held = []
        self._pending = []
        self._pending_bytes = 0
        self._legacy.reset()
        return [
            RawConsumer(
                channel,
                queues=[main],
                on_message=self.on_message,
                on_decode_error=self.on_decode_error,
                prefetch_count=self.prefetch,
                auto_declare=False,
                no_ack=False,
            )
        ]

    def on_consume_ready(
        self, connection: kombu.Connection, channel: Any, consumers: Any, **kwargs: Any
    ) -> None:
        self._session = connection
        self.sessions += 1
        self._consuming()
        log.info(
            "consuming lifecycle events from %s",
            self.names.queue,
            extra={
                "action": "lifecycle.start",
                "queue": self.names.queue,
                "exchange": self.exchange,
                "dead_lettering": self.names.dead_lettering,
            },
        )

    def on_consume_end(self, connection: kombu.Connection, channel: Any) -> None:
        self._legacy.close()
        self._session = None

    def on_iteration(self) -> None:
        self._retry_held()
        if self._pending and not self._held and self._batch_due():
            self._flush()
        if not self._held and self._session is not None:
            self._legacy.drain(self._session)

    # --- collecting a batch ---------------------------------------------------------

    def on_message(self, message: Received) -> None:
        if not self._pending:
            self._first_pending = time.monotonic()
        self._pending.append(message)
        self._pending_bytes += len(message.body or b"")
        # While the database is away, arrivals wait for the held batch's next attempt.
        if not self._held and self._batch_due():
            self._flush()

    def _batch_due(self) -> bool:
        return (
            len(self._pending) >= self.batch_size
            or self._pending_bytes >= BATCH_BYTES
            or time.monotonic() - self._first_pending >= self.linger
        )

    def _flush(self) -> None:
        self._record(self._arrivals())

    def _arrivals(self) -> list[Held]:
        """Take what arrived (and was not recorded yet), as deliveries tried 0 times."""
        dead_lettering = self.names.dead_lettering
        items = [Held(m, dead_lettering, 0) for m in self._pending]
        self._pending = []
        self._pending_bytes = 0
        return items

    def on_decode_error(self, message: Received, exc: Exception) -> None:
        reason = f"cannot decode the message: {exc!r}"[:MAX_REASON]
        log.warning(
            "undecodable lifecycle message set aside: %s",
            reason,
            extra={
                "action": "lifecycle.malformed",
                "routing_key": short(message.delivery_info.get("routing_key")),
                "event_id": short(message.properties.get("message_id")),
                "reason": reason,
            },
        )
        self._settle(
            message,
            Outcome(OutcomeKind.MALFORMED, reason=reason),
            dead_lettering=self.names.dead_lettering,
        )

    # --- recording --------------------------------------------------------------------

    def handle_batch(self, messages: list[Received]) -> list[Outcome]:
        """The outcome of each delivery, the valid ones recorded in one transaction."""
        return handle_batch(self.engine(), [_delivery(m) for m in messages], self._db)

    def handle(self, message: Received) -> Outcome:
        """The outcome for one delivery, recorded alone (a test may make it raise)."""
        d = _delivery(message)
        return handle_message(self.engine(), d.body, d.routing_key, d.message_id)

    def _record(self, items: list[Held]) -> None:
        """Record a batch and settle each delivery; a raising handler: one at a time."""
        try:
            outcomes = self.handle_batch([h.message for h in items])
        except Exception:  # a bug one message triggers: find which
            log.warning(
                "recording a batch of %d raised, recording it one message at a time",
                len(items),
                exc_info=True,
                extra={"action": "lifecycle.batch_split", "size": len(items)},
            )
            for item in items:
                self._deliver(
                    item.message, dead_lettering=item.dead_lettering, attempts=item.attempts
                )
            return
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(items))
        acks: list[Received] = []
        retry: list[Held] = []
        for item, outcome in zip(items, outcomes, strict=True):
            if outcome.kind is OutcomeKind.RETRY:
                attempts = item.attempts + (0 if outcome.contended else 1)
                retry.append(Held(item.message, item.dead_lettering, attempts))
            elif outcome.kind is OutcomeKind.MALFORMED or not item.dead_lettering:
                self._settle(item.message, outcome, dead_lettering=item.dead_lettering)
            else:
                acks.append(item.message)
        if retry:
            self._hold(retry)
        else:
            self.db_failures = 0
        self._ack(acks)

    def _ack(self, messages: list[Received]) -> None:
        if not messages:
            return
        outstanding = [h.message for h in self._held] + self._pending
        self._count("acked", ack_all(messages, outstanding))

    def _deliver(self, message: Received, *, dead_lettering: bool, attempts: int = 0) -> Outcome:
        try:
            outcome = self.handle(message)
        except Exception as exc:
            routing_key = short(message.delivery_info.get("routing_key"))
            log.exception(
                "unexpected error handling %s",
                routing_key,
                extra={
                    "action": "lifecycle.error",
                    "routing_key": routing_key,
                    "event_id": short(message.properties.get("message_id")),
                },
            )
            self._return_or_set_aside(message, f"unexpected error: {exc!r}", dead_lettering)
            return Outcome(OutcomeKind.MALFORMED, reason=repr(exc))
        if outcome.kind is OutcomeKind.RETRY:
            attempts += 0 if outcome.contended else 1
            self._hold([Held(message, dead_lettering, attempts)])
        else:
            self.db_failures = 0
            self._settle(message, outcome, dead_lettering=dead_lettering)
        return outcome

    def _deliver_legacy(self, message: Received) -> bool:
        # No dead-letter exchange on the old queue: set aside by copy.
        return self._deliver(message, dead_lettering=False).kind is not OutcomeKind.RETRY

    def _settle(self, message: Received, outcome: Outcome, *, dead_lettering: bool) -> None:
        where = {"dead_queue": self.names.dead_queue, "exchange": self.exchange}
        self._count(settle(message, outcome, dead_lettering, **where))

    def _return_or_set_aside(self, message: Received, reason: str, dead_lettering: bool) -> None:
        where = {"dead_queue": self.names.dead_queue, "exchange": self.exchange}
        self._count(return_or_set_aside(message, reason, dead_lettering, **where))

    def _count(self, verb: str, n: int = 1) -> None:
        self.settled[verb] = self.settled.get(verb, 0) + n


def _delivery(message: Received) -> Delivery:
    message_id = message.properties.get("message_id")
    return Delivery(
        raw_body(message),
        str(message.delivery_info.get("routing_key", "")),
        None if message_id is None else str(message_id),
    )
