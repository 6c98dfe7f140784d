"""The API in a broker outage: one request pays the connect timeout, not each in turn.

The API's threads share one publisher under a lock. Against a broker that
does not answer (a stalled TCP proxy in front of the real one), a publish
costs seconds while its request holds a database session; without a pause
after the failure, every request queued on the lock would pay it again, one
after another, and a handful of triggers would hold the database pool for
a minute. Every run is still made and its event waits in the outbox.
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Engine

from scout_tasks import service
from scout_tasks.shared_publisher import SharedPublisher
from tests.conftest import EventQueue
from tests.integration.helpers import count
from tests.tcp_proxy import TcpProxy, through

TRIGGER = {"source": "stratninja", "max_strategies": 5}


@pytest.fixture
def stalled(proxy: TcpProxy, broker_url: str) -> tuple[TcpProxy, str]:
    proxy.stall()
    return proxy, through(broker_url, proxy.port)


def test_concurrent_triggers_wait_for_one_failed_connect_not_one_each(
    engine: Engine, stalled: tuple[TcpProxy, str], exchange_name: str, event_queue: EventQueue
) -> None:
    proxy, url = stalled
    shared = SharedPublisher(url, exchange_name, confirm_timeout=2, unreachable_pause=4.0)
    took: list[tuple[float, bool]] = []

    def trigger() -> None:
        start = time.monotonic()
        _run, delivered = service.trigger_run(engine, TRIGGER, shared)
        took.append((time.monotonic() - start, delivered))

    threads = [threading.Thread(target=trigger) for _ in range(6)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    wall = time.monotonic() - start

    assert len(took) == 6 and not any(delivered for _, delivered in took)
    assert count(engine, "scout_runs") == 6
    assert count(engine, "scout_outbox") == 6
    # The first request to take the lock paid the failed connect; the other five
    # waited for it, then failed at once, instead of each trying for as long.
    one_connect = min(seconds for seconds, _ in took)
    assert one_connect > 1.0, took  # the broker really did not answer
    assert wall < 1.7 * one_connect, (wall, took)

    # During the pause a trigger does not touch the network at all.
    started = time.monotonic()
    _run, delivered = service.trigger_run(engine, TRIGGER, shared)
    assert not delivered and time.monotonic() - started < 1.0

    # Once the pause is over, the next publish tries again, and the broker is back.
    proxy.resume()
    time.sleep(4.0)
    _run, delivered = service.trigger_run(engine, TRIGGER, shared)
    shared.close()
    assert delivered
    assert len(event_queue.get(count=1, timeout=5)) == 1
