"""The consumer of the Scout agents' lifecycle events, on a connection and a thread of its own.

The agents report ``scout.started``, ``scout.progress``, ``scout.completed``
and ``scout.failed`` on the events exchange (CONTRACT.md, "Events");
:mod:`scout_tasks.recorder` decides what each one does to its run. This module
settles the deliveries:

- applied, duplicate, ignored or for an unknown run: acknowledged, after the
  transaction committed;
- malformed: rejected without requeue, and the broker dead-letters it
  (:mod:`scout_tasks.lifecycle_queues`); on a broker that cannot, a bounded
  copy goes to the dead queue, then the message is acknowledged;
- the handler raised: rejected with requeue (``basic.reject``, which counts
  as a delivery on every RabbitMQ version), so the queue's delivery limit
  ends it, as it ends a message that crashes the whole process;
- the database is down: the message is held, unacknowledged, and retried by
  this consumer with a growing delay (one attempt per delay, not one per
  message). It is not returned to the queue meanwhile, so an outage spends
  none of its deliveries, and nothing is lost. One that keeps failing while
  the database answers other queries is the message's fault: it is returned
  as if the handler had raised.

``lifecycle_step.LifecycleStep`` runs it in ``celery worker``: a worker bootstep
that starts a thread with its own broker connection, reconnecting with backoff.
Whatever one message does to that connection, the worker's task connection,
and with it tick and fire, never notices.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import kombu
from kombu import Consumer
from kombu.message import Message
from kombu.mixins import ConsumerMixin
from sqlalchemy import Engine

from scout_tasks.deliveries import (
    RawConsumer,
    publish_copy,
    raw_body,
    short,
    without_compression,
)
from scout_tasks.lifecycle_queues import (
    LifecycleQueues,
    declare_queues,
    delete_if_empty,
    retire_legacy_queue,
)
from scout_tasks.recorder import (
    MAX_REASON,
    Outcome,
    OutcomeKind,
    database_answers,
    handle_message,
)

log = logging.getLogger(__name__)

# How many unacknowledged events one consumer holds; it also bounds how many
# messages wait out a database outage here.
PREFETCH = 10
# Backoff while the database is unavailable, and between broker reconnects, in seconds.
RETRY_FIRST_DELAY = 1.0
RETRY_MAX_DELAY = 30.0
# Failed attempts of one held message, while the database answers, before it is blamed.
ATTEMPTS_BEFORE_BLAME = 3
# A connection that lived this long was healthy: the reconnect backoff starts over.
HEALTHY_SESSION = 60.0
# How often the old classic queue is looked at while it still exists.
LEGACY_INTERVAL = 5.0
_LEGACY_BATCH = 100


@dataclass(slots=True)
class _Held:
    """A delivery waiting for the database, still unacknowledged."""

    message: Message
    dead_lettering: bool
    attempts: int


class LifecycleConsumer(ConsumerMixin):
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
    ) -> None:
        self.connection = connection
        self.exchange = exchange
        self.names = names
        self.engine = engine
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.safety_interval = safety_interval
        self.should_stop = False
        self._wake = threading.Event()
        # What happened, by verb: acked, rejected (dead-lettered), returned, set_aside.
        self.settled: dict[str, int] = {}
        self.sessions = 0
        self.db_failures = 0
        self._held: list[_Held] = []
        self._next_try = 0.0
        self._session: kombu.Connection | None = None
        self._legacy: list[str] = []
        self._legacy_channel: Any = None
        self._next_legacy = 0.0

    # --- running ------------------------------------------------------------------

    def stop(self) -> None:
        self.should_stop = True
        self._wake.set()

    def run(self, _tokens: int = 1, **kwargs: Any) -> None:
        """Consume until :meth:`stop`, reconnecting with a growing delay; never raises."""
        failures = 0
        while not self.should_stop:
            started = time.monotonic()
            try:
                for _ in self.consume(limit=None, safety_interval=self.safety_interval):
                    pass
            except Exception as exc:  # noqa: BLE001 - a lost connection, or anything: never die
                if self.should_stop:
                    break
                if time.monotonic() - started > HEALTHY_SESSION:
                    failures = 0
                failures += 1
                delay = self._backoff(failures)
                log.warning(
                    "lifecycle consumer lost its broker connection, reconnecting in %.1fs: %r",
                    delay,
                    exc,
                    extra={"action": "lifecycle.reconnect", "delay": delay},
                )
                self._wake.wait(delay)
        log.info("lifecycle consumer stopped", extra={"action": "lifecycle.stop"})

    def _backoff(self, failures: int) -> float:
        return float(min(self.max_delay, self.first_delay * 2 ** (failures - 1)))

    @contextlib.contextmanager
    def establish_connection(self) -> Iterator[kombu.Connection]:
        # One attempt: run() owns the backoff, and can be stopped while it waits.
        with self.create_connection() as conn:
            # max_retries=0: no retry (and no 2 s sleep) inside kombu.
            conn.ensure_connection(max_retries=0)
            yield conn

    def get_consumers(self, _consumer: Any, channel: Any) -> list[Consumer]:
        main = declare_queues(channel, self.exchange, self.names)
        # The broker returned whatever the previous connection held.
        self._held = []
        self._legacy = list(self.names.legacy())
        self._next_legacy = 0.0
        return [
            RawConsumer(
                channel,
                queues=[main],
                on_message=self.on_message,
                on_decode_error=self.on_decode_error,
                prefetch_count=PREFETCH,
                auto_declare=False,
                no_ack=False,
            )
        ]

    def on_consume_ready(
        self, connection: kombu.Connection, channel: Any, consumers: Any, **kwargs: Any
    ) -> None:
        self._session = connection
        self.sessions += 1
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
        self._close_legacy_channel()
        self._session = None

    def on_iteration(self) -> None:
        self._retry_held()
        self._drain_legacy()

    # --- one delivery -------------------------------------------------------------

    def on_message(self, message: Message) -> None:
        if self._held:
            # The database is away: wait with the others instead of knocking again.
            self._held.append(_Held(message, self.names.dead_lettering, 0))
            return
        self._deliver(message, dead_lettering=self.names.dead_lettering)

    def on_decode_error(self, message: Message, exc: Exception) -> None:
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

    def handle(self, message: Message) -> Outcome:
        """The outcome for one delivery (a test may make it raise)."""
        message_id = message.properties.get("message_id")
        return handle_message(
            self.engine(),
            raw_body(message),
            str(message.delivery_info.get("routing_key", "")),
            None if message_id is None else str(message_id),
        )

    def _deliver(self, message: Message, *, dead_lettering: bool, attempts: int = 0) -> Outcome:
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
            self._hold(message, dead_lettering, attempts + 1)
        else:
            self._settle(message, outcome, dead_lettering=dead_lettering)
        return outcome

    def _settle(self, message: Message, outcome: Outcome, *, dead_lettering: bool) -> None:
        self.db_failures = 0
        if outcome.kind is not OutcomeKind.MALFORMED:
            message.ack()
            self._count("acked")
        elif dead_lettering:
            # The broker dead-letters it: nothing is published from here.
            message.reject(requeue=False)
            self._count("rejected")
        else:
            publish_copy(
                message, self.names.dead_queue, outcome.reason or "malformed", self.exchange
            )
            message.ack()
            self._count("set_aside")

    def _return_or_set_aside(self, message: Message, reason: str, dead_lettering: bool) -> None:
        if dead_lettering:
            # basic.reject with requeue: a delivery spent, so the limit ends a loop.
            message.reject(requeue=True)
            self._count("returned")
        else:
            # Nothing would count deliveries here: set it aside at once.
            publish_copy(message, self.names.dead_queue, reason, self.exchange)
            message.ack()
            self._count("set_aside")

    def _count(self, verb: str) -> None:
        self.settled[verb] = self.settled.get(verb, 0) + 1

    # --- the database is away -------------------------------------------------------

    def _hold(self, message: Message, dead_lettering: bool, attempts: int) -> None:
        self.db_failures += 1
        self._held.insert(0, _Held(message, dead_lettering, attempts))
        self._next_try = time.monotonic() + self._backoff(self.db_failures)

    def _retry_held(self) -> None:
        while self._held and time.monotonic() >= self._next_try:
            held = self._held.pop(0)
            outcome = self._deliver(
                held.message, dead_lettering=held.dead_lettering, attempts=held.attempts
            )
            if outcome.kind is not OutcomeKind.RETRY:
                continue
            if held.attempts + 1 >= ATTEMPTS_BEFORE_BLAME and database_answers(self.engine()):
                # Other queries work: this message is what fails. Let its
                # delivery count decide rather than hold everything behind it.
                blamed = self._held.pop(0)
                self._return_or_set_aside(
                    blamed.message, "the database keeps refusing it", blamed.dead_lettering
                )
                self._next_try = 0.0
                continue
            return

    # --- the classic queue of earlier versions ----------------------------------------

    def _drain_legacy(self) -> None:
        if not self._legacy or self._held or self._session is None:
            return
        now = time.monotonic()
        if now < self._next_legacy:
            return
        self._next_legacy = now + LEGACY_INTERVAL
        conn = self._session
        for queue in list(self._legacy):
            if queue == self.names.legacy_dead_queue:
                # Set-aside messages of an earlier version are an operator's to read.
                delete_if_empty(conn, queue)
                self._legacy.remove(queue)
            elif retire_legacy_queue(conn, self.exchange, queue):
                self._legacy.remove(queue)
            elif not self._get_legacy(queue):
                return  # one is held: the database is away

    def _get_legacy(self, queue: str) -> bool:
        """Handle up to a batch of the old queue's messages; False when one is held."""
        assert self._session is not None
        if self._legacy_channel is None:
            self._legacy_channel = self._session.channel()
        channel = self._legacy_channel
        for handled in range(_LEGACY_BATCH):
            raw = channel.basic_get(queue=queue, no_ack=False)
            if raw is None:
                break
            if handled == 0:
                log.info(
                    "draining the old lifecycle queue %s",
                    queue,
                    extra={"action": "lifecycle.legacy_drain", "queue": queue},
                )
            message = channel.message_to_python(without_compression(raw))
            # No dead-letter exchange on the old queue: set aside by copy.
            if self._deliver(message, dead_lettering=False).kind is OutcomeKind.RETRY:
                return False
        return True

    def _close_legacy_channel(self) -> None:
        if self._legacy_channel is not None:
            with contextlib.suppress(Exception):
                self._legacy_channel.close()
            self._legacy_channel = None
