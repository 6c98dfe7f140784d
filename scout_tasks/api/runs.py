"""``/api/scout/trigger`` and ``/api/scout/runs``: manual runs, their history, cancelling."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.encoders import jsonable_encoder

from scout_tasks import runs, service
from scout_tasks.api.deps import (
    MUTATING,
    JsonBody,
    Page,
    PageSize,
    RunId,
    ScoutDep,
    SourceFilter,
    body_doc,
    paged,
    utc,
)
from scout_tasks.api.errors import documented
from scout_tasks.api.models import Run, RunPage, RunStatus, TriggerType
from scout_tasks.validation import TriggerRequest

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/scout", tags=["runs"])


def event_header(response: Response, delivered: bool) -> None:
    """Tell the caller whether the broker confirmed the event or the outbox holds it."""
    response.headers["Scout-Event"] = "published" if delivered else "queued"
    if not delivered:
        log.warning(
            "event not confirmed by the broker; kept in the outbox",
            extra={"action": "api.event_queued"},
        )


@router.post(
    "/trigger",
    status_code=201,
    operation_id="trigger_run",
    dependencies=MUTATING,
    openapi_extra=body_doc(TriggerRequest),
    responses={201: {"model": Run}, **documented(401, 422, 503)},
)
def trigger_run(scout: ScoutDep, body: JsonBody, response: Response) -> Any:
    """Start a manual run and publish its ``scout.trigger``.

    201 once the run is committed: if the broker is down the event waits in
    the outbox (header ``Scout-Event: queued``) and the next tick sends it.
    """
    run, delivered = service.trigger_run(scout.engine, body, scout.publisher())
    event_header(response, delivered)
    return jsonable_encoder(run)


@router.get(
    "/runs", operation_id="list_runs", responses={200: {"model": RunPage}, **documented(422, 503)}
)
def list_runs(
    scout: ScoutDep,
    status: RunStatus | None = None,
    source: SourceFilter = None,
    schedule_id: uuid.UUID | None = None,
    trigger_type: TriggerType | None = None,
    created_after: Annotated[
        datetime | None, Query(description="Inclusive; a bare timestamp is UTC.")
    ] = None,
    created_before: Annotated[
        datetime | None, Query(description="Exclusive; a bare timestamp is UTC.")
    ] = None,
    page: Page = 1,
    page_size: PageSize = 50,
) -> Any:
    """Runs, newest first, one page at a time."""
    filters = runs.RunFilter(
        status=status,
        source=source,
        schedule_id=schedule_id,
        trigger_type=trigger_type,
        created_after=utc(created_after, "created_after"),
        created_before=utc(created_before, "created_before"),
    )
    with scout.engine.connect() as conn:
        items, total = runs.list_runs(conn, filters, limit=page_size, offset=(page - 1) * page_size)
    return jsonable_encoder(paged(items, total, page, page_size))


@router.get(
    "/runs/{id}",
    operation_id="get_run",
    responses={200: {"model": Run}, **documented(404, 422, 503)},
)
def get_run(scout: ScoutDep, run_id: RunId) -> Any:
    with scout.engine.connect() as conn:
        return jsonable_encoder(runs.get_run(conn, run_id))


@router.post(
    "/runs/{id}/cancel",
    operation_id="cancel_run",
    dependencies=MUTATING,
    responses={200: {"model": Run}, **documented(401, 404, 409, 422, 503)},
)
def cancel_run(scout: ScoutDep, run_id: RunId, response: Response) -> Any:
    """Cancel a pending or running run and publish ``scout.cancelled``."""
    run, delivered = service.cancel_run(scout.engine, run_id, scout.publisher())
    event_header(response, delivered)
    return jsonable_encoder(run)
