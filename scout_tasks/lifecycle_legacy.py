"""Retiring the classic lifecycle queue of earlier versions, from inside the consumer.

:mod:`scout_tasks.lifecycle_queues` says what is retired and how; this is the
consumer's side of it, looked at every :data:`LEGACY_INTERVAL` seconds while
an old queue exists: the old dead queue is deleted once empty (and left for
an operator otherwise), the old queue is unbound and deleted once empty, and
what it still holds is handed, one message at a time, to the consumer's
``deliver`` (no dead-letter exchange there: a malformed one is set aside by
copy).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import kombu
from kombu.message import Message

from scout_tasks.deliveries import without_compression
from scout_tasks.lifecycle_queues import LifecycleQueues, delete_if_empty, retire_legacy_queue

log = logging.getLogger("scout_tasks.lifecycle")

# How often the old classic queue is looked at while it still exists.
LEGACY_INTERVAL = 5.0
_LEGACY_BATCH = 100


class LegacyDrain:
    """The old queues still to retire on one connection; ``deliver`` says False when one is held."""

    def __init__(
        self, exchange: str, names: LifecycleQueues, deliver: Callable[[Message], bool]
    ) -> None:
        self.exchange = exchange
        self.names = names
        self.deliver = deliver
        self._queues: list[str] = []
        self._channel: Any = None
        self._next = 0.0

    def reset(self) -> None:
        """A new connection: look at every old queue again, at once."""
        self._queues = list(self.names.legacy())
        self._next = 0.0

    def drain(self, conn: kombu.Connection) -> None:
        if not self._queues:
            return
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + LEGACY_INTERVAL
        for queue in list(self._queues):
            if queue == self.names.legacy_dead_queue:
                # Set-aside messages of an earlier version are an operator's to read.
                delete_if_empty(conn, queue)
                self._queues.remove(queue)
            elif retire_legacy_queue(conn, self.exchange, queue):
                self._queues.remove(queue)
            elif not self._get(conn, queue):
                return  # one is held: the database is away

    def _get(self, conn: kombu.Connection, queue: str) -> bool:
        """Handle up to a batch of the old queue's messages; False when one is held."""
        if self._channel is None:
            self._channel = conn.channel()
        channel = self._channel
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
            if not self.deliver(channel.message_to_python(without_compression(raw))):
                return False
        return True

    def close(self) -> None:
        if self._channel is not None:
            with contextlib.suppress(Exception):
                self._channel.close()
            self._channel = None
