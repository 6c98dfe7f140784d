"""``/healthz`` and ``/metrics``: what an orchestrator and Prometheus ask."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import kombu
from amqp.exceptions import AMQPError
from fastapi import APIRouter, Response
from kombu.exceptions import KombuError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from scout_tasks import outbox, runs, schedules
from scout_tasks.api.deps import ScoutDep
from scout_tasks.api.errors import documented, error, first_line
from scout_tasks.api.models import Health, Unhealthy
from scout_tasks.broker import broker_transport_options
from scout_tasks.tables import RUN_STATUSES

router = APIRouter(tags=["ops"])

# Fire lag buckets, in seconds: a healthy beat fires within a second or two of
# the slot; minutes mean the beat or the database was down.
LAG_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
LAG_WINDOW = timedelta(hours=1)


def _check_database(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return first_line(exc)
    return None


def _check_broker(url: str) -> str | None:
    try:
        options = broker_transport_options(url)
        with kombu.Connection(url, connect_timeout=3, transport_options=options) as conn:
            conn.connect()
    except (OSError, AMQPError, KombuError) as exc:
        return first_line(exc)
    return None


def collect_metrics(conn: Connection) -> list[Metric]:
    """Every metric, read from the database now.

    Scraped state lives in PostgreSQL, not in this process, so any API
    process reports the same numbers as any other.
    """
    by_status = dict.fromkeys(RUN_STATUSES, 0)
    by_status.update(runs.count_by_status(conn))
    enabled, skipped = schedules.enabled_and_skipped_totals(conn)
    backlog = outbox.backlog(conn)
    count, total, cumulative = runs.fire_lag_buckets(conn, LAG_BUCKETS, LAG_WINDOW)

    runs_metric = GaugeMetricFamily("scout_runs", "Runs by status.", labels=["status"])
    for status, n in by_status.items():
        runs_metric.add_metric([status], n)
    lag = HistogramMetricFamily(
        "scout_fire_lag_seconds",
        "created_at - scheduled_for of scheduled runs created in the last hour.",
        buckets=[
            *((str(bound), n) for bound, n in zip(LAG_BUCKETS, cumulative, strict=True)),
            ("+Inf", count),
        ],
        sum_value=float(total),
    )
    return [
        runs_metric,
        GaugeMetricFamily("scout_schedules_enabled", "Enabled schedules.", value=enabled),
        GaugeMetricFamily(
            "scout_outbox_backlog", "Events waiting in the outbox for the broker.", value=backlog
        ),
        CounterMetricFamily(
            "scout_skipped_slots", "Cron slots skipped by misfire or overlap policy.", skipped
        ),
        lag,
    ]


class _Snapshot(Collector):
    """Hands already-read metrics to a registry made for one scrape."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self.metrics = list(metrics)

    def collect(self) -> Iterable[Metric]:
        return self.metrics


@router.get(
    "/healthz",
    operation_id="healthz",
    responses={200: {"model": Health}, 503: {"model": Unhealthy}},
)
def healthz(scout: ScoutDep) -> Any:
    """200 only when PostgreSQL answers ``SELECT 1`` and RabbitMQ accepts a connection."""
    checks = {
        "database": _check_database(scout.engine),
        "broker": _check_broker(scout.settings.broker_url),
    }
    report = {name: problem or "ok" for name, problem in checks.items()}
    failed = [name for name, problem in checks.items() if problem is not None]
    if failed:
        detail = "; ".join(f"{name} unavailable: {checks[name]}" for name in failed)
        return error(503, detail, None, status="unavailable", **report)
    return {"status": "ok", **report}


@router.get(
    "/metrics",
    operation_id="metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **documented(503)},
)
def metrics(scout: ScoutDep) -> Response:
    """Prometheus text, computed at scrape time from the database."""
    with scout.engine.connect() as conn:
        snapshot = collect_metrics(conn)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(snapshot))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
