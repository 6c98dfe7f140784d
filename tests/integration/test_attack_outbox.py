"""Attacks on the outbox hand-off: relay against firing, a killed worker, a lost lock session.

Real PostgreSQL and RabbitMQ. A pause in a publisher subclass (in a subprocess)
only decides *when* a worker dies; every byte still goes to the real broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import Engine

from scout_tasks import firing, outbox
from scout_tasks.publisher import ConfirmingPublisher, OutgoingMessage, Sent
from tests.conftest import EventQueue
from tests.integration.helpers import count, execute, insert_due_schedules, rows, scalar

ROOT = Path(__file__).resolve().parents[2]


def _event_ids(engine: Engine) -> set[str]:
    return {
        str(r["id"]) for r in rows(engine, "SELECT payload->>'event_id' AS id FROM scout_outbox")
    }


def _run_ids(engine: Engine) -> set[str]:
    return {str(r["id"]) for r in rows(engine, "SELECT id FROM scout_runs")}


def test_a_relay_racing_a_firing_worker_publishes_every_event_exactly_once(
    engine: Engine, broker_url: str, exchange_name: str, event_queue: EventQueue
) -> None:
    insert_due_schedules(engine, 300)
    firing_pub = ConfirmingPublisher(broker_url, exchange_name)
    relay_pub = ConfirmingPublisher(broker_url, exchange_name)
    done = threading.Event()
    relayed = 0
    errors: list[BaseException] = []

    def relay_loop() -> None:
        nonlocal relayed
        try:
            while not done.is_set():
                relayed += outbox.relay(engine, relay_pub, limit=7).published
            relayed += outbox.relay(engine, relay_pub, limit=7).published
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    relaying = threading.Thread(target=relay_loop)
    relaying.start()
    try:
        report = firing.fire_due(engine, firing_pub, batch_size=20)
    finally:
        done.set()
        relaying.join(timeout=30)
        firing_pub.close()
        relay_pub.close()

    assert errors == []
    assert report.runs == 300
    assert report.published + relayed == 300
    assert count(engine, "scout_outbox") == 0
    received = event_queue.get(timeout=10, count=300) + event_queue.get(timeout=0.5)
    per_run = Counter(r.body["run_id"] for r in received)
    assert set(per_run) == _run_ids(engine)
    assert max(per_run.values()) == 1, "an event went out twice"


_KILLABLE_WORKER = textwrap.dedent(
    """
    import sys, time
    from sqlalchemy import create_engine
    from scout_tasks import firing
    from scout_tasks.publisher import ConfirmingPublisher

    db_url, broker_url, exchange, when = sys.argv[1:5]

    class FreezeOnSecondSend(ConfirmingPublisher):
        sends = 0

        def send(self, messages):
            self.sends += 1
            if self.sends == 2 and when == "before":
                print("FROZEN", flush=True)
                time.sleep(60)
            sent = super().send(messages)
            if self.sends == 2 and when == "after":
                # Written and confirmed by the broker, the rows not yet deleted.
                self._wait(sent)
                print("FROZEN", flush=True)
                time.sleep(60)
            return sent

    engine = create_engine(db_url)
    firing.fire_due(engine, FreezeOnSecondSend(broker_url, exchange), batch_size=5)
    """
)


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_worker_killed_mid_burst_leaves_the_relay_exactly_the_unconfirmed_events(
    engine: Engine,
    db_url: str,
    broker_url: str,
    exchange_name: str,
    event_queue: EventQueue,
    when: str,
) -> None:
    insert_due_schedules(engine, 15)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen(
        [sys.executable, "-c", _KILLABLE_WORKER, db_url, broker_url, exchange_name, when],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "FROZEN"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)

    # Batch 1 was confirmed and deleted; batch 2 was committed and handed over
    # (or not) but never settled; batch 3 was never claimed.
    assert count(engine, "scout_runs") == 10
    stranded = _event_ids(engine)
    assert len(stranded) == 5
    first = {r.body["event_id"] for r in event_queue.get(timeout=10, count=5)}
    assert len(first) == 5 and not first & stranded
    # PostgreSQL ends the killed worker's session (and its row locks) on its own.
    unlocked = "SELECT count(*) FROM (SELECT 1 FROM scout_outbox FOR UPDATE SKIP LOCKED) t"
    for _ in range(100):
        if scalar(engine, unlocked) == 5:
            break
        threading.Event().wait(0.05)

    pub = ConfirmingPublisher(broker_url, exchange_name)
    try:
        report = outbox.relay(engine, pub)
        assert report.published == 5
        fired = firing.fire_due(engine, pub, batch_size=5)
    finally:
        pub.close()

    assert fired.runs == 5 and fired.published == 5
    assert count(engine, "scout_outbox") == 0
    expected = 10 if when == "before" else 15
    rest = Counter(r.body["event_id"] for r in event_queue.get(timeout=10, count=expected))
    rest.update(r.body["event_id"] for r in event_queue.get(timeout=0.5))
    # The confirmed-and-deleted batch never goes out again.
    assert not first & set(rest)
    # The stranded batch goes out by the relay: once, or twice when the killed
    # worker had already handed it over (the same event_id, which consumers dedupe).
    assert {e: n for e, n in rest.items() if e in stranded} == {
        e: (1 if when == "before" else 2) for e in stranded
    }
    assert sum(n for e, n in rest.items() if e not in stranded) == 5


class _KillTheLockOnSend(ConfirmingPublisher):
    """Once: after handing a batch over, the session holding its outbox rows dies."""

    def __init__(self, engine: Engine, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.engine = engine
        self.killed = 0

    def send(self, messages: list[OutgoingMessage]) -> Sent:  # type: ignore[override]
        sent = super().send(messages)
        if not self.killed:
            # The only session idle inside a transaction is the one locking the rows.
            self.killed = execute(
                self.engine,
                """
                SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                WHERE datname = current_database() AND pid <> pg_backend_pid()
                  AND state = 'idle in transaction'
                """,
            )
        return sent


def test_losing_the_session_that_locks_a_batch_in_flight_loses_no_event(
    engine: Engine, broker_url: str, exchange_name: str, event_queue: EventQueue
) -> None:
    insert_due_schedules(engine, 4)
    pub = _KillTheLockOnSend(engine, broker_url, exchange_name)
    try:
        with pytest.raises(Exception) as failed:
            firing.fire_due(engine, pub, batch_size=2)
        assert pub.killed == 1
        # The DELETE of the confirmed rows died with the session: they stay.
        assert "terminat" in str(failed.value).lower() or "closed" in str(failed.value).lower()
        assert count(engine, "scout_runs") == 4
        assert len(_event_ids(engine)) == 4

        report = outbox.relay(engine, pub)
    finally:
        pub.close()

    assert report.published == 4
    assert count(engine, "scout_outbox") == 0
    received = event_queue.get(timeout=10, count=6) + event_queue.get(timeout=0.5)
    per_run = Counter(r.body["run_id"] for r in received)
    assert set(per_run) == _run_ids(engine)
