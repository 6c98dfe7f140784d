"""``POST /api/scout/schedules/apply`` and ``POST /api/scout/schedules/{id}/backfill``.

The same operations as ``scout-tasks schedules apply`` and ``backfill``, with
the same plan and the same refusals (422 naming the entry and the field, or
``to``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.encoders import jsonable_encoder

from scout_tasks import apply, backfill
from scout_tasks.api.deps import MUTATING, JsonBody, ScheduleId, ScoutDep
from scout_tasks.api.errors import documented
from scout_tasks.errors import InvalidInput

router = APIRouter(prefix="/api/scout/schedules", tags=["schedules"])

ActorHeader = Annotated[
    str | None,
    Header(alias="X-Scout-Actor", description="Who acts, for the history (default `api`)."),
]

_APPLY_BODY = {
    "type": "object",
    "required": ["schedules"],
    "properties": {
        "schedules": {
            "type": "array",
            "items": {"type": "object"},
            "description": "The schedules as in `scout-tasks schedules apply` (API field names).",
        },
        "dry_run": {"type": "boolean", "default": False},
        "prune": {"type": "boolean", "default": False},
    },
    "additionalProperties": False,
}
_BACKFILL_BODY = {
    "type": "object",
    "required": ["from", "to"],
    "properties": {
        "from": {"type": "string", "format": "date-time", "description": "First instant."},
        "to": {"type": "string", "format": "date-time", "description": "End, excluded."},
        "dry_run": {"type": "boolean", "default": False},
    },
    "additionalProperties": False,
}


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise InvalidInput(name, "must be true or false")
    return value


def _only(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(k for k in body if k not in allowed)
    if unknown:
        raise InvalidInput(unknown[0], "unknown field")


@router.post(
    "/apply",
    operation_id="apply_schedules",
    dependencies=MUTATING,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _APPLY_BODY}},
        }
    },
    responses=documented(401, 409, 422, 503),
)
def apply_schedules(scout: ScoutDep, body: JsonBody, x_scout_actor: ActorHeader = None) -> Any:
    """Make the schedules match ``schedules`` (matched by name) in one transaction.

    Returns the plan: one object per schedule with ``action`` (create, update,
    delete, unchanged), ``name``, ``id`` and ``changes`` (``{"field": [old,
    new]}``). ``prune`` deletes schedules apply wrote that the list omits.
    """
    _only(body, ("schedules", "dry_run", "prune"))
    dry_run, prune = _flag(body, "dry_run"), _flag(body, "prune")
    if "schedules" not in body:
        raise InvalidInput("schedules", "is required")
    plan = apply.apply(
        scout.engine,
        {"schedules": body["schedules"]},
        dry_run=dry_run,
        prune=prune,
        actor=x_scout_actor or "api",
    )
    return {
        "dry_run": dry_run,
        "prune": prune,
        "applied": not dry_run and plan.changes > 0,
        "summary": plan.summary(),
        "plan": [step.as_dict() for step in plan.steps],
    }


@router.post(
    "/{id}/backfill",
    operation_id="backfill_schedule",
    dependencies=MUTATING,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _BACKFILL_BODY}},
        }
    },
    responses=documented(401, 404, 422, 503),
)
def backfill_schedule(scout: ScoutDep, schedule_id: ScheduleId, body: JsonBody) -> Any:
    """A run for every slot ``from <= slot < to`` that has none (at most 1000 slots).

    Timestamps without an offset are UTC. The runs are scheduled runs for
    their slots, published as usual; a second call creates nothing.
    """
    _only(body, ("from", "to", "dry_run"))
    for name in ("from", "to"):
        if name not in body:
            raise InvalidInput(name, "is required")
    dry_run = _flag(body, "dry_run")
    result = backfill.backfill(
        scout.engine,
        schedule_id,
        body["from"],
        body["to"],
        dry_run=dry_run,
        publisher=None if dry_run else scout.publisher(),
    )
    return jsonable_encoder(result.as_dict())
