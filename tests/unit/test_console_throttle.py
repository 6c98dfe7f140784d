"""The sign-in limit without a server: time is an argument, seconds from an arbitrary start."""

from __future__ import annotations

import pytest

from scout_tasks.console.throttle import FailureLimit, client_key, retry_after_header

A, B = "203.0.113.5", "198.51.100.7"


def test_five_failures_in_a_minute_block_the_sixth_attempt() -> None:
    limit = FailureLimit(limit=5, window=60)
    for second in range(4):
        assert limit.failed(A, 100.0 + second) == 0
        assert limit.retry_after(A, 100.0 + second) == 0

    # The fifth failure (t=104) uses up the minute: free again when t=100 is 60 s old.
    assert limit.failed(A, 104.0) == pytest.approx(56.0)
    assert limit.retry_after(A, 104.0) == pytest.approx(56.0)
    assert limit.retry_after(A, 130.0) == pytest.approx(30.0)
    assert limit.retry_after(A, 159.9) == pytest.approx(0.1)
    assert limit.retry_after(A, 160.0) == 0


def test_a_sliding_window_not_a_fixed_minute() -> None:
    limit = FailureLimit(limit=5, window=60)
    for t in (0.0, 50.0, 51.0, 52.0, 53.0):
        limit.failed(A, t)
    assert limit.retry_after(A, 59.0) == pytest.approx(1.0)
    # At t=60 the first failure has left: one more try, and its failure
    # blocks until the one at t=50 leaves.
    assert limit.retry_after(A, 60.0) == 0
    assert limit.failed(A, 60.0) == pytest.approx(50.0)


def test_failures_spread_out_never_block() -> None:
    limit = FailureLimit(limit=5, window=60)
    for n in range(50):
        assert limit.failed(A, n * 15.0) == 0  # 5 in any 60 s, never more


def test_addresses_are_counted_apart() -> None:
    limit = FailureLimit(limit=2, window=60)
    limit.failed(A, 0.0)
    limit.failed(A, 1.0)
    assert limit.retry_after(A, 2.0) > 0
    assert limit.retry_after(B, 2.0) == 0
    assert limit.failed(B, 2.0) == 0


def test_a_success_forgets_the_failures() -> None:
    limit = FailureLimit(limit=3, window=60)
    limit.failed(A, 0.0)
    limit.failed(A, 1.0)
    limit.succeeded(A)
    assert limit.failed(A, 2.0) == 0
    assert limit.failed(A, 3.0) == 0
    assert limit.failed(A, 4.0) > 0
    # Successes of an address that never failed are not even stored.
    limit.succeeded(B)
    assert len(limit) == 1


def test_idle_addresses_are_dropped_once_their_failures_leave_the_window() -> None:
    limit = FailureLimit(limit=5, window=60)
    for n in range(100):
        limit.failed(f"10.0.{n // 256}.{n % 256}", float(n) / 10)
    assert len(limit) == 100
    limit.failed(A, 70.0)  # every earlier failure (t <= 9.9) is older than 60 s
    assert len(limit) == 1


def test_a_flood_of_addresses_stays_within_max_keys_and_keeps_the_recent_ones() -> None:
    limit = FailureLimit(limit=2, window=60, max_keys=100)
    limit.failed(A, 0.0)
    limit.failed(A, 0.0)
    for n in range(10_000):
        limit.failed(f"flood-{n}", 1.0 + n / 1_000_000)
        assert len(limit) <= 100
    # The least recent went first: A, then all but the last 100 of the flood.
    assert limit.retry_after(A, 2.0) == 0
    assert limit.failed("flood-9999", 2.0) > 0


def test_only_the_last_failures_are_kept_per_address() -> None:
    limit = FailureLimit(limit=3, window=60)
    for n in range(1000):
        limit.failed(A, float(n))
    assert len(limit._failures[A]) == 3
    assert limit.retry_after(A, 999.0) == pytest.approx(58.0)  # 997 + 60 - 999


@pytest.mark.parametrize("arguments", [(0, 60, 10), (5, 0, 10), (5, 60, 0)])
def test_nonsense_limits_are_refused(arguments: tuple[int, float, int]) -> None:
    with pytest.raises(ValueError):
        FailureLimit(*arguments)


@pytest.mark.parametrize(
    ("seconds", "header"), [(56.0, "56"), (55.2, "56"), (0.1, "1"), (0.0, "1"), (60.0, "60")]
)
def test_retry_after_is_whole_seconds_rounded_up(seconds: float, header: str) -> None:
    assert retry_after_header(seconds) == header


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.5", "203.0.113.5"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:203.0.113.5", "203.0.113.5"),
        ("testclient", "testclient"),
        (None, "unknown"),
        ("", "unknown"),
    ],
)
def test_client_key(host: str | None, key: str) -> None:
    assert client_key(host) == key
