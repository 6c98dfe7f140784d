"""The lifecycle consumer's connection loop: one session after another, with a reconnect backoff.

A session that got as far as consuming proves the broker reachable: the
backoff starts over there, not after a minute of health. Otherwise one
message whose frame py-amqp cannot decode (a header it cannot convert, say),
which drops the connection on each of its deliveries until the queue's
delivery limit dead-letters it, would climb the backoff to its maximum and
stall every other event behind it. From the start, each reconnect waits
``quick_delay`` (bounded, well under a second) for the first
``quick_attempts`` failures in a row, then doubles from ``first_delay`` to
``max_delay`` while the broker stays away.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import threading
from collections.abc import Iterator

import kombu
from kombu.mixins import ConsumerMixin

log = logging.getLogger("scout_tasks.lifecycle")

# A reconnect right after a session that was consuming: short, so a poison
# frame costs one short wait per delivery it is allowed.
QUICK_DELAY = 0.5
QUICK_ATTEMPTS = 3


def reconnect_delay(
    failures: int,
    *,
    first_delay: float,
    max_delay: float,
    quick_delay: float = QUICK_DELAY,
    quick_attempts: int = QUICK_ATTEMPTS,
) -> float:
    """The wait before reconnect attempt number ``failures`` (1 based) of a row of failures."""
    if failures <= quick_attempts:
        return float(min(quick_delay, max_delay))
    return float(min(max_delay, first_delay * 2 ** (failures - quick_attempts - 1)))


def describe_failure(exc: BaseException, *, consuming: bool) -> str:
    """What a lost session most likely was, for the log line.

    py-amqp raises while decoding a frame, before any message object exists,
    so neither the delivery tag nor the message id is known: an error of
    that kind while consuming is named as such.
    """
    if consuming and (
        getattr(exc, "errno", None) == errno.EOVERFLOW
        or isinstance(exc, (ValueError, OverflowError, UnicodeDecodeError))
    ):
        return "undecodable frame (delivery tag and message id unknown)"
    return "connection lost"


class ReconnectingConsumer(ConsumerMixin):
    """A ConsumerMixin whose :meth:`run` never raises: each lost session is followed by another.

    Subclasses implement :meth:`_consume_session` (one connection) and call
    :meth:`_consuming` once that connection consumes.
    """

    connection: kombu.Connection
    first_delay: float
    max_delay: float
    should_stop: bool
    _wake: threading.Event

    def stop(self) -> None:
        self.should_stop = True
        self._wake.set()

    def _consume_session(self) -> None:
        raise NotImplementedError

    def _consuming(self) -> None:
        """The session consumes: the broker is back, and the backoff starts over."""
        self._failures = 0
        self._session_consuming = True

    def _run_sessions(self) -> None:
        self._failures = 0
        while not self.should_stop:
            self._session_consuming = False
            try:
                self._consume_session()
            except Exception as exc:  # noqa: BLE001 - a lost connection, or anything: never die
                if self.should_stop:
                    break
                self._failures += 1
                delay = reconnect_delay(
                    self._failures, first_delay=self.first_delay, max_delay=self.max_delay
                )
                what = describe_failure(exc, consuming=self._session_consuming)
                log.warning(
                    "lifecycle consumer lost its broker connection (%s), reconnecting in %.1fs: %r",
                    what,
                    delay,
                    exc,
                    extra={"action": "lifecycle.reconnect", "delay": delay, "reason": what},
                )
                self._wake.wait(delay)

    @contextlib.contextmanager
    def establish_connection(self) -> Iterator[kombu.Connection]:
        # One attempt: the session loop owns the backoff, and can be stopped while it waits.
        with self.create_connection() as conn:
            # max_retries=0: no retry (and no 2 s sleep) inside kombu.
            conn.ensure_connection(max_retries=0)
            yield conn
