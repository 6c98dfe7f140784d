"""The API's objects as typed models, for OpenAPI: enums, bodies and errors.

Request bodies are the :mod:`scout_tasks.validation` models themselves, so the
documentation and the rules cannot disagree. Responses are the rows as they
are (like the CLI's ``--json``), not re-serialised through these models: the
models describe them, and a unit test keeps their fields equal to the tables'
columns.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from scout_tasks.tables import RUN_STATUSES, TRIGGER_TYPES
from scout_tasks.validation import MisfirePolicy, OverlapPolicy

RunStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
TriggerType = Literal["scheduled", "manual", "event"]
assert set(RunStatus.__args__) == set(RUN_STATUSES)  # type: ignore[attr-defined]
assert set(TriggerType.__args__) == set(TRIGGER_TYPES)  # type: ignore[attr-defined]


class ErrorBody(BaseModel):
    """Every error response: a message, and the request field at fault (if any)."""

    detail: str
    field: str | None = None


class Message(BaseModel):
    message: str


class Schedule(BaseModel):
    """A schedule as stored in ``scout_schedules``."""

    id: uuid.UUID
    name: str
    cron_expression: str
    source: str
    max_strategies: int
    enabled: bool
    last_run_id: uuid.UUID | None
    last_run_at: datetime | None
    next_run_at: datetime | None
    created_at: datetime
    updated_at: datetime
    timezone: str
    misfire_policy: MisfirePolicy
    misfire_grace_seconds: int
    overlap_policy: OverlapPolicy
    skipped_slots: int
    last_error: str | None
    description: str
    jitter_seconds: int
    paused_reason: str | None
    paused_at: datetime | None
    paused_by: str | None
    managed_by: str | None
    cron_description: str


class Run(BaseModel):
    """A run as stored in ``scout_runs``."""

    id: uuid.UUID
    trigger_type: TriggerType
    triggered_by: str | None
    source: str
    max_strategies: int
    status: RunStatus
    error_message: str | None
    metrics: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    schedule_id: uuid.UUID | None
    scheduled_for: datetime | None
    updated_at: datetime


class SchedulePage(BaseModel):
    items: list[Schedule]
    total: int
    page: int
    page_size: int


class RunPage(BaseModel):
    items: list[Run]
    total: int
    page: int
    page_size: int


class Change(BaseModel):
    """One change of a schedule: ``changes`` maps each field to ``[old, new]``."""

    at: datetime
    actor: str | None
    action: str
    changes: dict[str, list[Any]]


class ChangePage(BaseModel):
    items: list[Change]
    total: int
    page: int
    page_size: int


class NextTimes(BaseModel):
    id: uuid.UUID
    cron_expression: str
    timezone: str
    times: list[datetime]


class Live(BaseModel):
    """``/livez``: the process serves."""

    status: Literal["ok"]


class Health(BaseModel):
    """``/readyz`` (and ``/healthz``): each dependency ``ok`` or ``down``, nothing more."""

    status: Literal["ok", "unavailable"]
    database: Literal["ok", "down", "not migrated"]
    broker: Literal["ok", "down"]


class Unhealthy(Health):
    """``/readyz`` when a dependency is down: ``detail`` names which."""

    detail: str
    field: None = None
