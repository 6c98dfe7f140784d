"""The lifecycle consumer's reconnect delays: quick at first, then doubling to a bound."""

from __future__ import annotations

import errno

from scout_tasks.reconnect import QUICK_ATTEMPTS, QUICK_DELAY, describe_failure, reconnect_delay


def test_the_first_reconnects_are_quick_then_the_delay_doubles_to_its_bound() -> None:
    delays = [reconnect_delay(n, first_delay=1.0, max_delay=30.0) for n in range(1, 11)]

    assert delays[:QUICK_ATTEMPTS] == [QUICK_DELAY] * QUICK_ATTEMPTS
    assert delays[QUICK_ATTEMPTS:] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_a_quick_delay_never_exceeds_the_maximum() -> None:
    assert reconnect_delay(1, first_delay=0.2, max_delay=0.4) == 0.4


def test_an_overflow_while_consuming_is_named_an_undecodable_frame() -> None:
    overflow = OSError(errno.EOVERFLOW, "Value too large for defined data type")

    assert describe_failure(overflow, consuming=True).startswith("undecodable frame")
    assert describe_failure(overflow, consuming=False) == "connection lost"
    assert describe_failure(ConnectionResetError(), consuming=True) == "connection lost"
