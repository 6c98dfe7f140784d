"""The API's publisher: one :class:`~scout_tasks.publisher.ConfirmingPublisher` its threads share.

The API answers requests on a thread pool and keeps one broker connection for
all of them. Two things follow: the publishes take turns (a lock), and a broker
that is away must cost one request its connect timeout, not every request in
turn (a pause after a failure).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from scout_tasks.errors import PublishError
from scout_tasks.publisher import ConfirmingPublisher, OutgoingMessage, PublishResult, Sent

# After a publish found the broker unreachable, the API's publisher does not try
# again for this long. A try against a broker that is away costs the request
# seconds (the connect timeout) while it holds a database session and the
# publisher's lock, and every request queued on that lock would pay it again in
# turn: ten triggers in an outage would hold the database pool for a minute and
# starve the reads. Their events wait in the outbox meanwhile; the tick relays them.
UNREACHABLE_PAUSE_SECONDS = 5.0


class SharedPublisher(ConfirmingPublisher):
    """A :class:`ConfirmingPublisher` that the API's threadpool threads may share.

    The confirm bookkeeping lives on the instance, so two concurrent publishes
    would steal each other's acks; a lock makes them take turns. When a publish
    fails and takes the connection with it (the broker is unreachable or does
    not answer), the ones in the next ``unreachable_pause`` seconds fail at once
    without trying (see :data:`UNREACHABLE_PAUSE_SECONDS`).
    """

    def __init__(
        self,
        url: str | None,
        exchange: str,
        *,
        confirm_timeout: float = 10.0,
        unreachable_pause: float = UNREACHABLE_PAUSE_SECONDS,
    ) -> None:
        super().__init__(url, exchange, confirm_timeout=confirm_timeout)
        self._lock = threading.RLock()
        self.unreachable_pause = unreachable_pause
        self._unreachable_until = 0.0  # time.monotonic()

    def publish(self, messages: Sequence[OutgoingMessage]) -> PublishResult:
        with self._lock:
            return super().publish(messages)

    def send(self, messages: Sequence[OutgoingMessage]) -> Sent:
        # Shared: the whole round trip under the lock, so no other thread's frames
        # or verdicts come between (write_batch does not take py-amqp's frame lock);
        # ``settle`` then only reports. The base class's own steps, not publish():
        # that would come back here.
        with self._lock:
            paused = self._unreachable_until - time.monotonic()
            if paused > 0 and messages:
                sent = Sent(tuple(messages), reused=False)
                sent.error = PublishError(
                    f"broker unreachable moments ago; not tried again for {paused:.1f} s"
                )
                return sent
            sent = ConfirmingPublisher.send(self, messages)
            try:
                sent.result = ConfirmingPublisher.settle(self, sent)
            except PublishError as exc:
                sent.error = exc
                if self._connection is None:  # the connection failed, not a message
                    self._unreachable_until = time.monotonic() + self.unreachable_pause
        sent.reused = False  # settled already, retry included
        return sent

    def connect(self) -> None:
        with self._lock:
            super().connect()

    def close(self) -> None:
        with self._lock:
            super().close()
