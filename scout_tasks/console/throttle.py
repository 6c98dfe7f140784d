"""Failed sign-ins per client address: after too many in a window, refuse for a while.

``FailureLimit`` keeps, per key (a client address, see :func:`client_key`), the
times of its last ``limit`` failures. A key is blocked while ``limit`` of them
fall inside the last ``window`` seconds, and is free again when the oldest
leaves the window, so "5 per minute" means at most 5 guesses in any 60 seconds,
however they are spread. Successes are not counted, and one forgets the key's
failures: an operator who mistyped twice starts afresh once signed in.

Memory is bounded twice: a key holds at most ``limit`` timestamps, and at most
``max_keys`` keys are kept. Keys are ordered by their last failure, so the ones
whose failures have all left the window are dropped from the front on every
call; when the table is still full, the key that failed least recently goes.
A flood of distinct addresses therefore costs at most ``max_keys`` entries
(under 3 MB at 10,000), and evicting an address early only gives it back the
guesses each of those 10,000 addresses had anyway.

The limit lives in one process: several API processes each count their own.
Time is an argument (``now``, monotonic seconds), so tests pin it.
"""

from __future__ import annotations

import ipaddress
import math
import threading
from collections import OrderedDict

# The defaults an operator expects of a sign-in form: 5 wrong tokens a minute.
LIMIT = 5
WINDOW_SECONDS = 60.0
MAX_KEYS = 10_000


class FailureLimit:
    """At most ``limit`` failures per key in any ``window`` seconds; see the module's text."""

    def __init__(
        self, limit: int = LIMIT, window: float = WINDOW_SECONDS, max_keys: int = MAX_KEYS
    ) -> None:
        if limit < 1 or window <= 0 or max_keys < 1:
            raise ValueError("limit and max_keys must be at least 1, window above 0")
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        # A tuple per key (a few dozen bytes), its last ``limit`` failure times, oldest first.
        self._failures: OrderedDict[str, tuple[float, ...]] = OrderedDict()
        # The console's handlers run on the event loop, but nothing stops a
        # caller from a thread pool: the table is changed under one lock.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again; 0 when it may try now."""
        with self._lock:
            self._forget_expired(now)
            return self._wait(key, now)

    def failed(self, key: str, now: float) -> float:
        """Record a failure of ``key``; the seconds it must now wait (0: it may try again)."""
        with self._lock:
            self._forget_expired(now)
            times = self._failures.pop(key, ())
            if not times and len(self._failures) >= self.max_keys:
                self._failures.popitem(last=False)
            # Re-inserted at the end: the table stays ordered by last failure.
            self._failures[key] = (*times, now)[-self.limit :]
            return self._wait(key, now)

    def succeeded(self, key: str) -> None:
        """A success: the key's failures are forgotten."""
        with self._lock:
            self._failures.pop(key, None)

    def _wait(self, key: str, now: float) -> float:
        times = self._failures.get(key, ())
        if len(times) < self.limit:
            return 0.0
        return max(0.0, times[0] + self.window - now)

    def _forget_expired(self, now: float) -> None:
        # The front holds the keys that failed least recently; stop at the
        # first one with a failure still inside the window.
        while self._failures:
            key, times = next(iter(self._failures.items()))
            if times[-1] + self.window > now:
                return
            del self._failures[key]


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds, rounded up, never 0 (0 would invite a retry now)."""
    return str(max(1, math.ceil(seconds)))


def client_key(host: str | None) -> str:
    """The key of a client address: IPv4 as it is, IPv6 by its /64 network.

    One IPv6 host is usually handed a whole /64, and could take a new address
    from it for every guess; an IPv4 address seen as IPv6 (``::ffff:a.b.c.d``)
    counts as the IPv4 one. A peer that is not an IP address (a Unix socket,
    a test client) is its name.
    """
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
