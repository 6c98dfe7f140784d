"""``/api/scout/schedules``: create, list, read, change, delete, preview and reload."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.encoders import jsonable_encoder

from scout_tasks import schedules, service
from scout_tasks.api.deps import (
    MUTATING,
    JsonBody,
    Page,
    PageSize,
    ScheduleId,
    ScoutDep,
    SourceFilter,
    body_doc,
    paged,
)
from scout_tasks.api.errors import documented
from scout_tasks.api.models import Message, NextTimes, Schedule, SchedulePage
from scout_tasks.validation import ScheduleCreate, ScheduleUpdate

router = APIRouter(prefix="/api/scout/schedules", tags=["schedules"])


@router.post(
    "",
    status_code=201,
    operation_id="create_schedule",
    dependencies=MUTATING,
    openapi_extra=body_doc(ScheduleCreate),
    responses={201: {"model": Schedule}, **documented(401, 409, 422, 503)},
)
def create_schedule(scout: ScoutDep, body: JsonBody) -> Any:
    """Create a schedule; an enabled one gets its first ``next_run_at`` at once."""
    return jsonable_encoder(service.create_schedule(scout.engine, body))


@router.get(
    "",
    operation_id="list_schedules",
    responses={200: {"model": SchedulePage}, **documented(422, 503)},
)
def list_schedules(
    scout: ScoutDep,
    enabled: bool | None = None,
    source: SourceFilter = None,
    page: Page = 1,
    page_size: PageSize = 50,
) -> Any:
    """Schedules ordered by name, one page at a time."""
    with scout.engine.connect() as conn:
        items, total = schedules.list_schedules(
            conn,
            enabled=enabled,
            source=source,
            limit=page_size,
            offset=(page - 1) * page_size,
        )
    return jsonable_encoder(paged(items, total, page, page_size))


@router.post(
    "/reload",
    operation_id="reload_schedules",
    dependencies=MUTATING,
    responses={200: {"model": Message}, **documented(401, 503)},
)
def reload_schedules(scout: ScoutDep) -> Any:
    """Wake every beat now (changes take effect without this too)."""
    service.reload_schedules(scout.engine)
    return {"message": "schedules reloaded"}


@router.get(
    "/{id}",
    operation_id="get_schedule",
    responses={200: {"model": Schedule}, **documented(404, 422, 503)},
)
def get_schedule(scout: ScoutDep, schedule_id: ScheduleId) -> Any:
    with scout.engine.connect() as conn:
        return jsonable_encoder(schedules.get_schedule(conn, schedule_id))


@router.patch(
    "/{id}",
    operation_id="update_schedule",
    dependencies=MUTATING,
    openapi_extra=body_doc(ScheduleUpdate),
    responses={200: {"model": Schedule}, **documented(401, 404, 409, 422, 503)},
)
def update_schedule(scout: ScoutDep, schedule_id: ScheduleId, body: JsonBody) -> Any:
    """Change only the fields given; timing changes recompute ``next_run_at``."""
    return jsonable_encoder(service.update_schedule(scout.engine, schedule_id, body))


@router.delete(
    "/{id}",
    status_code=204,
    operation_id="delete_schedule",
    dependencies=MUTATING,
    responses=documented(401, 404, 422, 503),
)
def delete_schedule(scout: ScoutDep, schedule_id: ScheduleId) -> Response:
    """Delete a schedule; its runs stay, with ``schedule_id`` set to null."""
    service.delete_schedule(scout.engine, schedule_id)
    return Response(status_code=204)


@router.get(
    "/{id}/next",
    operation_id="next_fire_times",
    responses={200: {"model": NextTimes}, **documented(404, 422, 503)},
)
def next_fire_times(
    scout: ScoutDep,
    schedule_id: ScheduleId,
    n: Annotated[int, Query(ge=1, le=1000, description="How many fire times.")] = 5,
) -> Any:
    """The next ``n`` fire times, with their offset in the schedule's zone.

    An enabled schedule starts from its ``next_run_at``, which an operator
    may have set off the cron grid; a disabled one previews from now.
    """
    preview = service.next_fire_times(scout.engine, schedule_id, n)
    return {
        "id": str(preview.schedule_id),
        "cron_expression": preview.cron_expression,
        "timezone": preview.timezone,
        "times": [t.isoformat() for t in preview.times],
    }


@router.post(
    "/{id}/reload",
    operation_id="reload_schedule",
    dependencies=MUTATING,
    responses={200: {"model": Message}, **documented(401, 404, 422, 503)},
)
def reload_schedule(scout: ScoutDep, schedule_id: ScheduleId) -> Any:
    """As in the seed: wakes every beat, after checking the schedule exists."""
    with scout.engine.connect() as conn:
        schedules.get_schedule(conn, schedule_id)
    service.reload_schedules(scout.engine)
    return {"message": f"schedule {schedule_id} reloaded"}
