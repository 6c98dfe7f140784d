"""``/livez``, ``/readyz`` (also ``/healthz``) and ``/metrics``: what an orchestrator and
Prometheus ask.

The probes are unauthenticated, so they say which dependency is down and
nothing else: no host, port, role or driver message. The reason goes to the
log, where the operator reads it.
"""

from __future__ import annotations

import logging
from typing import Any

import kombu
from amqp.exceptions import AMQPError
from fastapi import APIRouter, Request, Response
from kombu.exceptions import KombuError
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from scout_tasks import migrate
from scout_tasks.api import metrics as metrics_
from scout_tasks.api.deps import ScoutDep
from scout_tasks.api.errors import documented, error
from scout_tasks.api.models import Health, Live, Unhealthy
from scout_tasks.broker import broker_transport_options
from scout_tasks.db import first_line

log = logging.getLogger(__name__)

router = APIRouter(tags=["ops"])


def _database_state(engine: Engine, head: str | None) -> str:
    """``ok``, ``down``, or ``not migrated`` (every route would answer 503 until
    ``scout-tasks db upgrade`` brings the schema to ``head``)."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            try:
                with conn.begin_nested():
                    found = conn.execute(text("SELECT version_num FROM alembic_version")).all()
            except SQLAlchemyError:
                found = []  # no alembic_version table: never migrated
    except SQLAlchemyError as exc:
        log.warning(
            "readiness: database unavailable: %s",
            first_line(exc),
            extra={"action": "api.ready_database_down"},
        )
        return "down"
    revisions = {row[0] for row in found}
    if revisions != {head}:
        log.warning(
            "readiness: database at revision %s, the code wants %s: run `scout-tasks db upgrade`",
            ", ".join(sorted(revisions)) or "none",
            head,
            extra={"action": "api.ready_database_not_migrated"},
        )
        return "not migrated"
    return "ok"


def _broker_answers(url: str | None) -> bool:
    if url is None:
        return False
    try:
        options = broker_transport_options(url)
        with kombu.Connection(url, connect_timeout=3, transport_options=options) as conn:
            conn.connect()
    except (OSError, AMQPError, KombuError) as exc:
        log.warning(
            "readiness: broker unavailable: %s",
            first_line(exc),
            extra={"action": "api.ready_broker_down"},
        )
        return False
    return True


@router.get("/livez", operation_id="livez", response_model=Live)
def livez() -> dict[str, str]:
    """200 while this process serves requests; asks nothing of the database or the broker."""
    return {"status": "ok"}


def _readiness(scout: ScoutDep) -> Any:
    report = {
        "database": _database_state(scout.engine, migrate.head_revision()),
        "broker": "ok" if _broker_answers(scout.settings.broker_url_value()) else "down",
    }
    down = [name for name, state in report.items() if state != "ok"]
    if down:
        return error(503, f"unavailable: {', '.join(down)}", None, status="unavailable", **report)
    return {"status": "ok", **report}


_PROBE = {200: {"model": Health}, 503: {"model": Unhealthy}}


@router.get("/readyz", operation_id="readyz", responses=_PROBE)
def readyz(scout: ScoutDep) -> Any:
    """200 when PostgreSQL answers, its schema is at the code's Alembic head, and the
    broker accepts a connection; else 503 naming which is ``down`` (or ``not migrated``)."""
    return _readiness(scout)


@router.get("/healthz", operation_id="healthz", responses=_PROBE)
def healthz(scout: ScoutDep) -> Any:
    """The same as ``/readyz``."""
    return _readiness(scout)


@router.get(
    "/metrics",
    operation_id="metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **documented(503)},
)
def metrics(request: Request) -> Response:
    """Prometheus text, read from the database at scrape time."""
    registry = request.app.state.metrics_registry
    return Response(metrics_.exposition(registry), media_type=CONTENT_TYPE_LATEST)
