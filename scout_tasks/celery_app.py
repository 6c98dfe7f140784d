"""The Celery application: ``celery -A scout_tasks beat|worker|flower`` finds it as ``app``.

Configuration comes from scout-tasks' settings as lazy defaults, so importing
this module reads no environment; an optional top-level ``celeryconfig``
module (imported from the current folder) overrides any Celery setting,
scout-tasks' own included.
"""

from __future__ import annotations

import sys
from typing import Any

from celery import Celery
from celery.app.defaults import _TO_NEW_KEY
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    celeryd_init,
    worker_process_init,
    worker_process_shutdown,
)
from kombu import Queue

from scout_tasks.broker import broker_transport_options
from scout_tasks.errors import ConfigurationError
from scout_tasks.lifecycle_step import LifecycleStep
from scout_tasks.settings import get_settings, missing_url_error

# The tasks' names: the beat sends them by name, so it need not import the tasks.
TICK = "scout_tasks.tick"
FIRE = "scout_tasks.fire"
# A message header on the fire tasks the beat sends two at a time for a burst
# (more than a batch due): each of the two hands the rest on only after its
# second full claim. A header, not an argument, so a worker that does not know
# it runs the task as before.
PAIRED = "scout_paired"
# A message header on a fire task the beat sent ahead of its slot: the task
# waits for the slot (by the database's clock) before it claims.
EARLY = "scout_early"


def celery_defaults() -> dict[str, Any]:
    try:
        settings = get_settings()
        if settings.broker_url is None:
            raise missing_url_error(["SCOUT_BROKER_URL"])
        transport_options = broker_transport_options(settings.broker_url_value())
    except ConfigurationError as exc:
        # Celery would print a traceback; an operator needs the one line.
        print(f"scout-tasks: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    defaults: dict[str, Any] = {
        "broker_url": settings.broker_url_value(),
        "broker_connection_retry_on_startup": True,
        "beat_scheduler": "scout_tasks.beat:ScoutScheduler",
        "task_default_queue": settings.task_queue,
        "task_queues": [Queue(settings.task_queue, durable=True)],
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        # A task is acknowledged only when it finished; a worker killed mid-task
        # has it redelivered, which is safe because firing is keyed on the slot.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Flower shows the tick and fire tasks.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "timezone": "UTC",
        "enable_utc": True,
        "worker_hijack_root_logger": True,
        # ``include``, not ``imports``: an operator's ``imports`` adds to it.
        "include": ("scout_tasks.tasks",),
    }
    if transport_options:
        # The embedded default's filesystem:// broker: kombu takes its folders
        # (and a polling interval short enough for on-time events) only here.
        defaults["broker_transport_options"] = transport_options
    return defaults


def _yield_to_celeryconfig() -> dict[str, Any]:
    """scout-tasks' defaults, less every setting the operator's ``celeryconfig`` sets.

    Celery ranks lazy defaults above the config module, so without this a
    ``broker_url`` or ``task_default_queue`` written there would be ignored.
    Old-style names (``BROKER_URL``) count as their new ones. A default queue
    renamed there is also the queue the worker consumes, unless the module
    names its ``task_queues`` too: otherwise the beat would send where no
    worker listens.
    """
    # None when there is no such module to import from the current folder.
    module = app.loader.conf or {}
    given = {_TO_NEW_KEY.get(key, key): value for key, value in module.items()}
    ours = celery_defaults()
    if "task_default_queue" in given and "task_queues" not in given:
        ours["task_queues"] = [Queue(given["task_default_queue"], durable=True)]
    return {key: value for key, value in ours.items() if key not in given}


app = Celery("scout_tasks")
app.add_defaults(_yield_to_celeryconfig)
app.config_from_object("celeryconfig", silent=True)

# The agents' lifecycle events are consumed inside the worker, living and
# dying with it, on a connection of their own (never the task consumer's).
app.steps["worker"].add(LifecycleStep)


@after_setup_logger.connect
@after_setup_task_logger.connect
def _log_context(logger: Any = None, **_: Any) -> None:
    from scout_tasks import logs

    logs.install(logger)


@celeryd_init.connect
def _early_log_format(**_: Any) -> None:
    # The worker warns before Celery's logging exists; in JSON mode those lines are JSON too.
    from scout_tasks import logs

    logs.install_early()


@worker_process_init.connect
def _forget_parent_connections(**_: Any) -> None:
    # A forked pool child must not share the parent's database sockets.
    from scout_tasks import db, publisher

    db.dispose_engines()

    def task_producer() -> None:
        # Celery's own connection, which sends the burst's hand-over (a fire task).
        with app.producer_or_acquire() as producer:
            producer.connection.ensure_connection(max_retries=1)

    # It connects to all three off its main thread, and nothing waits for that:
    # a burst hands its second half to the other pool process, which should not
    # start by connecting.
    publisher.connect_process_publisher_soon(before=(db.connect_engine, task_producer))


@worker_process_shutdown.connect
def _close_connections(**_: Any) -> None:
    from scout_tasks import db, publisher

    publisher.close_process_publisher()
    db.dispose_engines()
