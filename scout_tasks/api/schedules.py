"""``/api/scout/schedules``: create, list, read, change, delete, preview, reload,
and the operator's actions: run now, pause, resume, history.

Every schedule object carries ``cron_description`` (the expression in plain
English), and every write records its actor, the ``X-Scout-Actor`` header.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.encoders import jsonable_encoder

from scout_tasks import schedules, service
from scout_tasks.api.deps import (
    MUTATING,
    Actor,
    JsonBody,
    OptionalJsonBody,
    Page,
    PageSize,
    ScheduleId,
    ScoutDep,
    SourceFilter,
    body_doc,
    paged,
)
from scout_tasks.api.errors import documented
from scout_tasks.api.models import (
    ChangePage,
    Message,
    NextTimes,
    Run,
    Schedule,
    SchedulePage,
)
from scout_tasks.api.runs import event_header
from scout_tasks.cron_description import with_description
from scout_tasks.errors import InvalidInput
from scout_tasks.validation import PauseRequest, RunNowRequest, ScheduleCreate, ScheduleUpdate

router = APIRouter(prefix="/api/scout/schedules", tags=["schedules"])


def _out(row: dict[str, Any]) -> Any:
    """A schedule as the API shows it: the row and its ``cron_description``."""
    return jsonable_encoder(with_description(row))


@router.post(
    "",
    status_code=201,
    operation_id="create_schedule",
    dependencies=MUTATING,
    openapi_extra=body_doc(ScheduleCreate),
    responses={201: {"model": Schedule}, **documented(401, 409, 422, 503)},
)
def create_schedule(scout: ScoutDep, body: JsonBody, actor: Actor) -> Any:
    """Create a schedule; an enabled one gets its first ``next_run_at`` at once."""
    return _out(service.create_schedule(scout.engine, body, actor=actor))


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
    described = [with_description(row) for row in items]
    return jsonable_encoder(paged(described, total, page, page_size))


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
        return _out(schedules.get_schedule(conn, schedule_id))


@router.patch(
    "/{id}",
    operation_id="update_schedule",
    dependencies=MUTATING,
    openapi_extra=body_doc(ScheduleUpdate),
    responses={200: {"model": Schedule}, **documented(401, 404, 409, 422, 503)},
)
def update_schedule(scout: ScoutDep, schedule_id: ScheduleId, body: JsonBody, actor: Actor) -> Any:
    """Change only the fields given; timing changes recompute ``next_run_at``."""
    return _out(service.update_schedule(scout.engine, schedule_id, body, actor=actor))


@router.delete(
    "/{id}",
    status_code=204,
    operation_id="delete_schedule",
    dependencies=MUTATING,
    responses=documented(401, 404, 422, 503),
)
def delete_schedule(scout: ScoutDep, schedule_id: ScheduleId, actor: Actor) -> Response:
    """Delete a schedule; its runs stay, with ``schedule_id`` set to null."""
    service.delete_schedule(scout.engine, schedule_id, actor=actor)
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


def _only(body: dict[str, Any], allowed: set[str]) -> None:
    for key in body:
        if key not in allowed:
            raise InvalidInput(key, "unknown field")


@router.post(
    "/{id}/run",
    status_code=201,
    operation_id="run_schedule_now",
    dependencies=MUTATING,
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": RunNowRequest.model_json_schema()}},
        }
    },
    responses={201: {"model": Run}, **documented(401, 404, 422, 503)},
)
def run_schedule_now(
    scout: ScoutDep,
    schedule_id: ScheduleId,
    body: OptionalJsonBody,
    actor: Actor,
    response: Response,
) -> Any:
    """A manual run of this schedule now, published as ``scout.trigger``; ``next_run_at`` stays.

    The run has the schedule's ``source`` and ``max_strategies``, ``schedule_id``
    set, ``trigger_type`` manual and no ``scheduled_for``.
    """
    _only(body, {"triggered_by"})
    run, delivered = service.run_now(
        scout.engine,
        schedule_id,
        triggered_by=body.get("triggered_by"),
        actor=actor,
        publisher=scout.publisher(),
    )
    event_header(response, delivered)
    return jsonable_encoder(run)


@router.post(
    "/{id}/pause",
    operation_id="pause_schedule",
    dependencies=MUTATING,
    openapi_extra=body_doc(PauseRequest),
    responses={200: {"model": Schedule}, **documented(401, 404, 422, 503)},
)
def pause_schedule(scout: ScoutDep, schedule_id: ScheduleId, body: JsonBody, actor: Actor) -> Any:
    """Disable with a reason (1..500 characters), recording when and by whom."""
    _only(body, {"reason"})
    return _out(service.pause(scout.engine, schedule_id, reason=body.get("reason"), actor=actor))


@router.post(
    "/{id}/resume",
    operation_id="resume_schedule",
    dependencies=MUTATING,
    responses={200: {"model": Schedule}, **documented(401, 404, 422, 503)},
)
def resume_schedule(scout: ScoutDep, schedule_id: ScheduleId, actor: Actor) -> Any:
    """Enable again, clearing the pause; it fires next at its first slot after now."""
    return _out(service.resume(scout.engine, schedule_id, actor=actor))


@router.get(
    "/{id}/changes",
    operation_id="list_schedule_changes",
    responses={200: {"model": ChangePage}, **documented(404, 422, 503)},
)
def list_schedule_changes(
    scout: ScoutDep, schedule_id: ScheduleId, page: Page = 1, page_size: PageSize = 50
) -> Any:
    """Who changed what and when, newest first: API, CLI and plain-SQL edits alike."""
    items, total = service.history(scout.engine, schedule_id, page=page, page_size=page_size)
    shown = [{key: item[key] for key in ("at", "actor", "action", "changes")} for item in items]
    return jsonable_encoder(paged(shown, total, page, page_size))
