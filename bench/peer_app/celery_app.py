"""The peer's Celery app and its one task, ``peer.fire``: insert the run, publish, confirm.

Run as ``celery -A peer_app.celery_app worker`` and ``celery -A
peer_app.celery_app beat -S django_celery_beat.schedulers:DatabaseScheduler``
with ``bench/`` on the path and the ``PEER_*`` variables set.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from datetime import datetime, timedelta
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "peer_app.settings")
django.setup()

import kombu  # noqa: E402
from celery import Celery  # noqa: E402
from celery.signals import beat_init  # noqa: E402
from django.db import IntegrityError  # noqa: E402
from django.utils import timezone  # noqa: E402
from kombu import Exchange  # noqa: E402

from peer_app.models import PeerRun  # noqa: E402

BROKER_URL = os.environ.get("PEER_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
EXCHANGE = os.environ.get("PEER_EXCHANGE", "scout")
READY = "peer beat ready"

app = Celery("peer", broker=BROKER_URL)
app.conf.update(
    task_default_queue=os.environ.get("PEER_TASK_QUEUE", "peer"),
    timezone="UTC",
    enable_utc=True,
    worker_hijack_root_logger=True,
    broker_connection_retry_on_startup=True,
)
log = logging.getLogger("peer")


def _iso(dt: datetime) -> str:
    return dt.isoformat().removesuffix("+00:00") + "Z"


class _Publisher:
    """One connection per (pool) process with per-message publisher confirms."""

    producer: kombu.Producer | None = None

    @classmethod
    def get(cls) -> kombu.Producer:
        if cls.producer is None:
            connection = kombu.Connection(BROKER_URL, transport_options={"confirm_publish": True})
            events = Exchange(EXCHANGE, type="topic", durable=True)
            cls.producer = connection.Producer(exchange=events)
            events(cls.producer.channel).declare()
        return cls.producer


def slot_of(now: datetime, minute: int) -> datetime:
    """The hourly cron slot (``minute`` past the hour) at or before ``now``."""
    slot = now.replace(minute=minute, second=0, microsecond=0)
    return slot if slot <= now else slot - timedelta(hours=1)


@app.task(name="peer.fire", ignore_result=True)
def fire(schedule_id: str, name: str, source: str, max_strategies: int, minute: int) -> None:
    now = timezone.now()
    slot = slot_of(now, minute)
    try:
        run = PeerRun.objects.create(
            trigger_type="scheduled",
            triggered_by=name,
            source=source,
            max_strategies=max_strategies,
            schedule_id=schedule_id,
            scheduled_for=slot,
        )
    except IntegrityError:
        return  # this slot already has its run
    event_id = str(uuid.uuid4())
    payload: dict[str, Any] = {
        "event_id": event_id,
        "event_type": "scout.trigger",
        "timestamp": _iso(now),
        "run_id": str(run.id),
        "source": source,
        "max_strategies": max_strategies,
        "trigger_type": "scheduled",
        "triggered_by": name,
        "schedule_id": schedule_id,
        "scheduled_for": _iso(slot),
    }
    _Publisher.get().publish(
        json.dumps(payload).encode(),
        routing_key="scout.trigger",
        content_type="application/json",
        content_encoding="utf-8",
        delivery_mode=2,
        message_id=event_id,
        retry=True,
    )


@beat_init.connect
def _schedule_loaded(sender: Any, **_kwargs: Any) -> None:
    """Read the schedule now and say so: the bench waits for this line before T."""
    log.warning("%s: %d entries", READY, len(sender.scheduler.schedule))
