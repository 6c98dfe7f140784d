"""Where the agents' lifecycle events wait: queue names, arguments, and the move off the old queue.

On RabbitMQ the broker itself sets poison messages aside, so no copy is ever
published by scout-tasks (a copy of a message with ~130 KB of headers would
exceed ``frame_max`` and cost the connection):

- ``<task queue>.lifecycle.v2``: a quorum queue bound to the four lifecycle
  routing keys, with ``x-delivery-limit`` :data:`DELIVERY_LIMIT` and the
  dead-letter exchange below. A message the consumer rejects is dead-lettered
  at once; one that keeps coming back (the consumer crashed on it, or raised)
  is dead-lettered after ``DELIVERY_LIMIT`` redeliveries.
- ``<task queue>.lifecycle.v2.dlx``: the dead-letter exchange (fanout).
- ``<task queue>.lifecycle.v2.dead``: the dead-letter queue bound to it, a
  classic queue bounded to :data:`DEAD_MAX_LENGTH` messages and
  :data:`DEAD_MAX_BYTES` bytes; when full the oldest are dropped
  (``drop-head``). The broker adds ``x-death`` (the reason ``rejected`` or
  ``delivery_limit``, the queue, the original routing key); the worker's log
  line ``lifecycle.malformed`` says why, with the message's ``message_id`` and
  the SHA-256 of its body.

Queue arguments cannot change in place, so the quorum queue has a new name.
The classic ``<task queue>.lifecycle`` of earlier versions is retired by the
consumer itself: it is unbound from the exchange (it stops receiving), what it
still holds is consumed like any other event (malformed ones set aside by
copy, as below, with their original headers left out), and it is deleted once
it is empty and unused (``if-empty`` and ``if-unused``, checked by the broker,
so nothing in it, or held by an older worker still running, is lost). The old
``<task queue>.lifecycle.dead`` is deleted the same way when empty, and left
for an operator otherwise.

Brokers that cannot dead-letter (kombu's ``filesystem://`` transport of the
embedded default) keep the unchanged classic names, and a malformed message
is set aside by publishing a bounded copy to the dead queue before it is
acknowledged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import kombu
from kombu import Exchange, Queue, binding

from scout_tasks.events import LIFECYCLE_EVENTS
from scout_tasks.publisher import declare_exchange

log = logging.getLogger("scout_tasks.lifecycle")

# Deliveries after the first before the broker gives up on a message.
DELIVERY_LIMIT = 5
DEAD_MAX_LENGTH = 10_000
DEAD_MAX_BYTES = 64 * 1024 * 1024


def broker_dead_letters(connection: kombu.Connection) -> bool:
    """Whether the broker has dead-letter exchanges and quorum queues (RabbitMQ over AMQP)."""
    return connection.transport.driver_type == "amqp"


@dataclass(frozen=True, slots=True)
class LifecycleQueues:
    """The names for one deployment; they derive from its task queue (default ``scout-tasks``).

    Two deployments or test runs sharing a vhost, which already use different
    task queues, so never consume each other's events.
    """

    queue: str
    dead_queue: str
    # Empty when the broker cannot dead-letter.
    dead_exchange: str
    # The classic queues of earlier versions, retired on RabbitMQ; empty otherwise.
    legacy_queue: str
    legacy_dead_queue: str

    @classmethod
    def for_task_queue(cls, task_queue: str, *, dead_lettering: bool = True) -> LifecycleQueues:
        classic, classic_dead = f"{task_queue}.lifecycle", f"{task_queue}.lifecycle.dead"
        if not dead_lettering:
            return cls(classic, classic_dead, "", "", "")
        queue = f"{task_queue}.lifecycle.v2"
        return cls(queue, f"{queue}.dead", f"{queue}.dlx", classic, classic_dead)

    @property
    def dead_lettering(self) -> bool:
        return bool(self.dead_exchange)

    def all_names(self) -> tuple[str, ...]:
        """Every queue these names cover (for an operator's or a test's cleanup)."""
        return tuple(n for n in (self.queue, self.dead_queue, *self.legacy()) if n)

    def legacy(self) -> tuple[str, ...]:
        return tuple(n for n in (self.legacy_queue, self.legacy_dead_queue) if n)


def main_queue_arguments(names: LifecycleQueues) -> dict[str, Any]:
    if not names.dead_lettering:
        return {}
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": names.dead_exchange,
    }


def dead_queue_arguments(names: LifecycleQueues) -> dict[str, Any]:
    if not names.dead_lettering:
        return {}
    return {
        "x-max-length": DEAD_MAX_LENGTH,
        "x-max-length-bytes": DEAD_MAX_BYTES,
        "x-overflow": "drop-head",
    }


def declare_queues(channel: Any, exchange: str, names: LifecycleQueues) -> Queue:
    """Declare the events exchange, the dead-letter side, and the bound lifecycle queue."""
    events = declare_exchange(channel, exchange)
    dead_exchange = None
    if names.dead_lettering:
        dead_exchange = Exchange(names.dead_exchange, type="fanout", durable=True)
    dead = Queue(
        names.dead_queue,
        exchange=dead_exchange,
        durable=True,
        auto_delete=False,
        queue_arguments=dead_queue_arguments(names),
    )
    # The dead-letter side first: a message rejected the moment the main queue
    # exists must find somewhere to go.
    dead(channel).declare()
    main = Queue(
        names.queue,
        bindings=[binding(events, routing_key=key) for key in LIFECYCLE_EVENTS],
        durable=True,
        auto_delete=False,
        queue_arguments=main_queue_arguments(names),
    )
    main(channel).declare()
    return main


def legacy_message_count(connection: kombu.Connection, queue: str) -> int | None:
    """Messages ready in ``queue``, or None when there is no such queue."""
    with connection.channel() as channel:
        try:
            return int(channel.queue_declare(queue=queue, passive=True).message_count)
        except connection.channel_errors:
            return None


def retire_legacy_queue(connection: kombu.Connection, exchange: str, queue: str) -> bool:
    """Stop ``queue`` receiving, and delete it if empty and unused; True once it is gone.

    Each step runs on a channel of its own: a refusal (404, 406) closes only it.
    """
    if legacy_message_count(connection, queue) is None:
        return True
    with connection.channel() as channel:
        for key in LIFECYCLE_EVENTS:
            channel.queue_unbind(queue=queue, exchange=exchange, routing_key=key)
    with connection.channel() as channel:
        try:
            channel.queue_delete(queue=queue, if_unused=True, if_empty=True)
        except connection.channel_errors as exc:
            # Not empty yet, or an older worker still consumes it: next time.
            log.debug(
                "old lifecycle queue %s kept for now: %s",
                queue,
                exc,
                extra={"action": "lifecycle.legacy_kept", "queue": queue},
            )
            return False
    log.info(
        "old lifecycle queue %s deleted",
        queue,
        extra={"action": "lifecycle.legacy_deleted", "queue": queue},
    )
    return True


def delete_if_empty(connection: kombu.Connection, queue: str) -> bool:
    """Delete ``queue`` if it exists, is empty and unused; True when it is gone."""
    if legacy_message_count(connection, queue) is None:
        return True
    with connection.channel() as channel:
        try:
            channel.queue_delete(queue=queue, if_unused=True, if_empty=True)
        except connection.channel_errors:
            return False
    return True
