"""A good lifecycle event held while the database is away must survive broker reconnects.

The consumer holds such an event unacknowledged so that the outage spends none of its
deliveries (scout_tasks.lifecycle_hold). But RabbitMQ 3.x counts a message returned by a
lost connection as a delivery of a quorum queue: reconnecting and holding it again on each
of DELIVERY_LIMIT + 1 broker reconnects during one database outage dead-lettered a valid
scout.started, and its run was never recorded. After a lost connection the consumer now
waits for the database before it consumes again.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from sqlalchemy import Engine, make_url

from scout_tasks.db import make_engine
from scout_tasks.lifecycle_queues import DELIVERY_LIMIT
from scout_tasks.publisher import ConfirmingPublisher
from tests.integration.test_lifecycle import Harness, get_run, new_run, publish, wait_until
from tests.integration.test_lifecycle import event as agent_event
from tests.tcp_proxy import TcpProxy, through


def test_a_held_event_survives_broker_reconnects_during_a_database_outage(
    engine: Engine,
    db_url: str,
    broker_url: str,
    exchange_name: str,
    publisher: ConfirmingPublisher,
) -> None:
    db_proxy = TcpProxy(target_port=make_url(db_url).port or 5432)
    proxied = make_engine(
        make_url(db_url).set(port=db_proxy.port).render_as_string(hide_password=False)
    )
    mq_proxy = TcpProxy(target_port=urlsplit(broker_url).port or 5672)
    harness = Harness(broker_url, exchange_name, proxied, start=False)
    # Only the consumer goes through the broker's proxy; the harness's own checks do not.
    harness.broker_url = through(broker_url, mq_proxy.port)
    try:
        run_id = new_run(engine)
        db_proxy.cut()
        harness.start()
        consumer = harness.consumer
        assert consumer is not None
        publish(publisher, agent_event("scout.started", run_id))
        wait_until(lambda: consumer.db_failures >= 1, "the event held")
        for _ in range(DELIVERY_LIMIT + 2):
            mq_proxy.cut()
            time.sleep(0.5)
            mq_proxy.restore()
            time.sleep(1.0)
        # One session, lost once: the consumer did not consume again while the database
        # was away, so the event was delivered once and returned once.
        assert consumer.sessions == 1
        assert harness.depth(harness.dead_queue) == 0
        db_proxy.restore()
        wait_until(lambda: get_run(engine, run_id)["status"] == "running", "the event recorded")
        assert harness.depth(harness.dead_queue) == 0
    finally:
        harness.close()
        proxied.dispose()
        db_proxy.close()
        mq_proxy.close()
