"""The worker bootstep that runs the lifecycle consumer on a thread and connection of its own."""

from __future__ import annotations

import threading
from typing import Any

from celery import bootsteps
from sqlalchemy import Engine

from scout_tasks import db
from scout_tasks.lifecycle import LifecycleConsumer
from scout_tasks.lifecycle_queues import LifecycleQueues, broker_dead_letters
from scout_tasks.settings import get_settings


class LifecycleStep(bootsteps.StartStopStep):
    """Runs :class:`LifecycleConsumer` inside ``celery worker``.

    A worker bootstep, not a consumer one: it does not share the connection
    of the worker's task consumer, so a message that costs the lifecycle
    connection (a broker-side channel or connection error) restarts only this
    consumer, never the consumption of tick and fire. It starts after the pool
    (so the pool's first children are not forked with its thread running) and
    stops before it, waiting up to ``join_timeout`` seconds for the message in
    hand. Register it with ``app.steps["worker"].add(LifecycleStep)``.
    """

    label = "lifecycle consumer"
    requires = ("celery.worker.components:Pool",)
    join_timeout = 15.0

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.consumer: LifecycleConsumer | None = None
        self.thread: threading.Thread | None = None

    # Where to record and what to consume; a test subclass points these elsewhere.
    def get_engine(self) -> Engine:
        return db.get_engine()

    def exchange_name(self) -> str:
        return get_settings().exchange

    def task_queue(self) -> str:
        return get_settings().task_queue

    def create_consumer(self, worker: Any) -> LifecycleConsumer:
        app = worker.app
        connection = app.connection_for_read(heartbeat=app.conf.broker_heartbeat)
        names = LifecycleQueues.for_task_queue(
            self.task_queue(), dead_lettering=broker_dead_letters(connection)
        )
        return LifecycleConsumer(
            connection, exchange=self.exchange_name(), names=names, engine=self.get_engine
        )

    def start(self, worker: Any) -> None:
        self.consumer = self.create_consumer(worker)
        self.thread = threading.Thread(
            target=self.consumer.run, name="scout-lifecycle", daemon=True
        )
        self.thread.start()

    def stop(self, worker: Any) -> None:
        if self.consumer is not None:
            self.consumer.stop()
        if self.thread is not None:
            self.thread.join(self.join_timeout)
            self.thread = None

    def terminate(self, worker: Any) -> None:
        self.stop(worker)
