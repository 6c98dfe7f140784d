"""The lifecycle consumer's hold: deliveries waiting, unacknowledged, while the database is away.

When recording answers RETRY (the database is down, or refuses like an
outage), the batch is held here, not returned to the queue: an outage then
spends none of the messages' deliveries (the queue's delivery limit would
dead-letter good events), and nothing is lost, since an unacknowledged
message goes back to the queue if the connection drops. The held batch is
tried again after a growing delay (one attempt per delay, not one per
message), together with what arrived meanwhile.

A message that keeps failing while the database answers other queries is
the message's fault: after :data:`ATTEMPTS_BEFORE_BLAME` attempts it is
returned as if the handler had raised, so its delivery count decides (a
held batch is first tried one message at a time, to find which).

:class:`HoldingConsumer` is the consumer's side of it, as
:class:`scout_tasks.reconnect.ReconnectingConsumer` is for the broker: the
consumer provides recording and settling, this module when to try again and
whom to blame.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine

from scout_tasks.deliveries import Received
from scout_tasks.recorder import Outcome, database_answers

# Backoff while the database is unavailable, and between broker reconnects
# (after the quick ones, :mod:`scout_tasks.reconnect`), in seconds.
RETRY_FIRST_DELAY = 1.0
RETRY_MAX_DELAY = 30.0
# Failed attempts of one held message, while the database answers, before it is blamed.
ATTEMPTS_BEFORE_BLAME = 3


@dataclass(slots=True)
class Held:
    """A delivery waiting for the database, still unacknowledged."""

    message: Received
    dead_lettering: bool
    attempts: int


class HoldingConsumer:
    """Holds what the database could not take, and tries it again with backoff.

    Subclasses implement :meth:`_record` (a batch, settling each delivery and
    calling :meth:`_hold` with those that must wait), :meth:`_deliver` (one
    message alone) and :meth:`_return_or_set_aside`, and take
    :meth:`_arrivals` (what arrived while the hold was waiting).
    """

    engine: Callable[[], Engine]
    first_delay: float
    max_delay: float
    db_failures: int
    should_stop: bool
    _held: list[Held]
    _next_try: float
    _wake: threading.Event

    def _record(self, items: list[Held]) -> None:
        raise NotImplementedError

    def _deliver(self, message: Received, *, dead_lettering: bool, attempts: int = 0) -> Outcome:
        raise NotImplementedError

    def _return_or_set_aside(self, message: Received, reason: str, dead_lettering: bool) -> None:
        raise NotImplementedError

    def _arrivals(self) -> list[Held]:
        raise NotImplementedError

    def _backoff(self, failures: int) -> float:
        return float(min(self.max_delay, self.first_delay * 2 ** (failures - 1)))

    def _hold(self, items: list[Held]) -> None:
        self.db_failures += 1
        self._held.extend(items)
        self._held.sort(key=lambda h: h.message.delivery_tag)
        self._next_try = time.monotonic() + self._backoff(self.db_failures)

    def _await_database(self) -> None:
        """Before consuming again after a lost connection: wait while the database is away.

        The broker took back what was held, and a quorum queue counts each such
        return as a delivery. Consuming again at once, only to hold it all again,
        made every reconnect during one outage spend a delivery of every held
        message: six (a flapping network) dead-lettered good events. Waiting for
        the database first spends at most one per outage; meanwhile the messages
        are ready in the queue for any worker whose database answers.
        """
        if not self._held:
            return
        failures = 0
        while not self.should_stop and not database_answers(self.engine()):
            failures += 1
            self._wake.wait(self._backoff(failures))

    def _retry_held(self) -> None:
        """Once the delay is over: the held batch again, with what arrived meanwhile."""
        if not self._held or time.monotonic() < self._next_try:
            return
        items = self._held + self._arrivals()
        self._held = []
        self._record(items)
        if not any(h.attempts >= ATTEMPTS_BEFORE_BLAME for h in self._held):
            return
        if not database_answers(self.engine()):
            return
        # Other queries work: what fails is in the held messages. A message
        # that fails alone is to blame: let its delivery count decide rather
        # than hold everything behind it. Several: each is tried alone first.
        suspects, self._held = self._held, []
        if len(suspects) > 1:
            for held in suspects:
                self._deliver(
                    held.message, dead_lettering=held.dead_lettering, attempts=held.attempts
                )
            suspects, self._held = self._held, []
        for held in suspects:
            self._return_or_set_aside(
                held.message, "the database keeps refusing it", held.dead_lettering
            )
        self._next_try = 0.0
