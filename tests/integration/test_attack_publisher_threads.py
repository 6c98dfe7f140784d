"""Attacks on the publishers' sharing: API threads across reconnects, fork, the early connect.

The broker is the real RabbitMQ, reached through a TCP proxy the tests cut.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from scout_tasks import publisher as publisher_module
from scout_tasks.errors import PublishError
from scout_tasks.publisher import OutgoingMessage
from scout_tasks.shared_publisher import SharedPublisher
from tests.conftest import EventQueue
from tests.integration.helpers import fresh_process_publisher_env
from tests.tcp_proxy import TcpProxy, through


def _msgs(n: int) -> list[OutgoingMessage]:
    return [OutgoingMessage(str(uuid.uuid4()), "scout.trigger", b"{}") for _ in range(n)]


@pytest.fixture
def proxied_process_publisher(
    monkeypatch: pytest.MonkeyPatch, proxy: TcpProxy, broker_url: str, exchange_name: str
) -> Iterator[None]:
    with fresh_process_publisher_env(monkeypatch, through(broker_url, proxy.port), exchange_name):
        yield


def _wait_for(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def _join_early_connects(timeout: float = 10.0) -> None:
    for thread in threading.enumerate():
        if thread.name == "scout-connect":
            thread.join(timeout)


def test_api_threads_sharing_a_publisher_across_cuts_never_confirm_what_no_queue_got(
    proxy: TcpProxy, broker_url: str, exchange_name: str, event_queue: EventQueue
) -> None:
    # No pause after a failure: this test wants every publish to really try.
    shared = SharedPublisher(
        through(broker_url, proxy.port), exchange_name, confirm_timeout=3, unreachable_pause=0
    )
    confirmed: list[set[str]] = []
    unexpected: list[BaseException] = []
    failures = 0
    guard = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        nonlocal failures
        for _ in range(10):
            batch = _msgs(5)
            try:
                result = shared.settle(shared.send(batch))
            except PublishError:
                with guard:
                    failures += 1
                continue
            except BaseException as exc:  # noqa: BLE001 - anything else is the bug
                unexpected.append(exc)
                return
            # One verdict per message of this thread's batch, never another's.
            if result.confirmed | set(result.rejected) != {m.message_id for m in batch}:
                unexpected.append(AssertionError(f"foreign verdicts: {result}"))
            with guard:
                confirmed.append(result.confirmed)

    def cutter() -> None:
        # A few cuts while the clients publish (each reconnect may cost kombu's 2 s
        # connect retry, under the lock, so more would only make the test slow).
        for _ in range(4):
            if stop.wait(0.1):
                return
            proxy.cut()
            proxy.restore()

    try:
        shared.connect()
        threads = [threading.Thread(target=client) for _ in range(4)]
        cutting = threading.Thread(target=cutter)
        cutting.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        stop.set()
        cutting.join()
        # Whatever the cuts did, the shared publisher works again afterwards.
        last = _msgs(3)
        assert shared.publish(last).confirmed == {m.message_id for m in last}
    finally:
        stop.set()
        shared.close()

    assert unexpected == []
    assert len(confirmed) + failures == 4 * 10
    said = set().union(*confirmed) | {m.message_id for m in last}
    got = {r.properties["message_id"] for r in event_queue.drain(quiet=1.0)}
    assert said <= got, f"{len(said - got)} confirmed message(s) never reached the queue"


def test_a_forked_child_neither_uses_nor_breaks_the_parents_process_publisher(
    proxied_process_publisher: None, proxy: TcpProxy, event_queue: EventQueue
) -> None:
    parent = publisher_module.process_publisher()
    before = _msgs(1)
    assert parent.publish(before).confirmed == {before[0].message_id}
    amqp_connection = parent._connection.connection  # type: ignore[union-attr]
    child_id = str(uuid.uuid4())

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            mine = publisher_module.process_publisher()
            ok = mine is not parent
            ok &= mine.publish([OutgoingMessage(child_id, "scout.trigger", b"{}")]).confirmed == {
                child_id
            }
            publisher_module.close_process_publisher()
            # Drop every reference to the inherited publisher, as a long-lived child would.
            del mine
            gc.collect()
            code = 0 if ok else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    after = _msgs(1)
    # The same connection, not a silent reconnect after the child broke it.
    assert parent.publish(after).confirmed == {after[0].message_id}
    assert parent._connection.connection is amqp_connection  # type: ignore[union-attr]
    got = {r.properties["message_id"] for r in event_queue.get(timeout=10, count=3)}
    assert got == {before[0].message_id, child_id, after[0].message_id}


def test_an_early_connect_finishing_after_shutdown_installs_nothing_and_leaks_nothing(
    proxied_process_publisher: None, proxy: TcpProxy
) -> None:
    release = threading.Event()
    publisher_module.connect_process_publisher_soon(before=(lambda: release.wait(10),))
    # The process shuts down (worker_process_shutdown) while the early connect waits.
    publisher_module.close_process_publisher()
    release.set()
    _join_early_connects()

    assert publisher_module._process_publisher is None
    assert _wait_for(lambda: proxy.connections == 0), "the early connection was left open"


def test_an_early_connect_racing_a_tasks_own_publisher_leaves_one_connection(
    proxied_process_publisher: None, proxy: TcpProxy, event_queue: EventQueue
) -> None:
    release = threading.Event()
    publisher_module.connect_process_publisher_soon(before=(lambda: release.wait(10),))
    own = publisher_module.process_publisher()
    batch = _msgs(10)
    sent = own.send(batch)  # in flight while the early connect finishes
    release.set()
    _join_early_connects()

    assert own.settle(sent).confirmed == {m.message_id for m in batch}
    assert publisher_module.process_publisher() is own
    assert _wait_for(lambda: proxy.connections == 1), f"{proxy.connections} connection(s)"
    assert len(event_queue.get(timeout=10, count=10)) == 10
