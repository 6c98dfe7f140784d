"""The one set of rules for anything that writes a schedule or asks for a run.

The CLI and the HTTP API both build these models; a refusal is an
:class:`~scout_tasks.errors.InvalidInput` naming the field, raised before
anything is written.
"""

from __future__ import annotations

import unicodedata
import uuid
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from scout_tasks import cron
from scout_tasks.errors import InvalidInput
from scout_tasks.tables import MISFIRE_POLICIES, OVERLAP_POLICIES

MisfirePolicy = Literal["coalesce", "skip", "catch_up"]
OverlapPolicy = Literal["allow", "skip"]
assert set(MisfirePolicy.__args__) == set(MISFIRE_POLICIES)  # type: ignore[attr-defined]
assert set(OverlapPolicy.__args__) == set(OVERLAP_POLICIES)  # type: ignore[attr-defined]

Name = Annotated[str, Field(min_length=1, max_length=255)]
Source = Annotated[str, Field(min_length=1, max_length=50)]
# The column is varchar(255); a longer expression is refused before the database sees it.
CronText = Annotated[str, Field(max_length=255)]
MaxStrategies = Annotated[int, Field(ge=1, le=1000, strict=True)]
Grace = Annotated[int, Field(ge=0, le=7 * 24 * 3600, strict=True)]
# Bounds the database's checks repeat (ck_scout_schedules_*), so plain SQL is held to them too.
Description = Annotated[str, Field(max_length=2000)]
Jitter = Annotated[int, Field(ge=0, le=3600, strict=True)]
PauseReason = Annotated[str, Field(min_length=1, max_length=500)]
ACTOR_MAX_LENGTH = 255


def _no_control(value: str, allowed: str = "") -> str:
    # A newline or escape in a name breaks every table and log line it is printed in.
    if "\x00" in value:
        # PostgreSQL text cannot hold NUL; refuse it here rather than fail at the driver.
        raise ValueError("must not contain NUL characters")
    if any(unicodedata.category(c) == "Cc" and c not in allowed for c in value):
        extra = " other than newlines" if allowed else " (tabs and newlines included)"
        raise ValueError(f"must not contain control characters{extra}")
    return value


def _no_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return _no_control(value)


def _no_blank_optional(value: str | None) -> str | None:
    return None if value is None else _no_blank(value)


def _a_name(value: str | None) -> str | None:
    if value is None:
        return None
    value = _no_blank(value)
    try:
        uuid.UUID(value)
    except ValueError:
        return value
    # `schedules rm <uuid>` looks the argument up as an id first: it would hit another schedule.
    raise ValueError("must not be a UUID (schedules are looked up by id or name)")


def _no_nul(value: str | None) -> str | None:
    """A description: free text, newlines allowed, no other control character."""
    return None if value is None else _no_control(value, allowed="\n")


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScheduleCreate(_Input):
    name: Name
    cron_expression: CronText
    source: Source
    max_strategies: MaxStrategies
    timezone: str = "UTC"
    enabled: StrictBool = True
    misfire_policy: MisfirePolicy = "coalesce"
    misfire_grace_seconds: Grace = 60
    overlap_policy: OverlapPolicy = "allow"
    description: Description = ""
    jitter_seconds: Jitter = 0

    _name = field_validator("name")(_a_name)
    _blank = field_validator("source")(_no_blank)
    _nul = field_validator("description")(_no_nul)

    @field_validator("cron_expression")
    @classmethod
    def _cron(cls, value: str) -> str:
        return cron.validate_expression(value)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        cron.get_zone(value)
        return value


class ScheduleUpdate(_Input):
    """A partial update: only the fields given change."""

    name: Name | None = None
    cron_expression: CronText | None = None
    source: Source | None = None
    max_strategies: MaxStrategies | None = None
    timezone: str | None = None
    enabled: StrictBool | None = None
    misfire_policy: MisfirePolicy | None = None
    misfire_grace_seconds: Grace | None = None
    overlap_policy: OverlapPolicy | None = None
    description: Description | None = None
    jitter_seconds: Jitter | None = None

    _nul = field_validator("description")(_no_nul)

    _name = field_validator("name")(_a_name)
    _blank = field_validator("source")(_no_blank_optional)

    @field_validator("cron_expression")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else cron.validate_expression(value)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            cron.get_zone(value)
        return value

    def changes(self) -> dict[str, Any]:
        changes = self.model_dump(exclude_unset=True)
        for key, value in changes.items():
            if value is None:
                raise InvalidInput(key, "must not be null")
        return changes


class TriggerRequest(_Input):
    source: Source
    max_strategies: MaxStrategies
    triggered_by: Annotated[str, Field(min_length=1, max_length=255)] | None = None

    _blank = field_validator("source", "triggered_by")(_no_blank_optional)


class PauseRequest(_Input):
    reason: PauseReason

    _blank = field_validator("reason")(_no_blank)


class RunNowRequest(_Input):
    triggered_by: Annotated[str, Field(min_length=1, max_length=255)] | None = None

    _blank = field_validator("triggered_by")(_no_blank_optional)


def actor(value: str | None) -> str | None:
    """Who makes a change, as given by a caller (``X-Scout-Actor``, ``--actor``).

    None or blank means "not given": the database then records its role and
    application_name. Control characters are refused so a history line reads
    as one line.
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > ACTOR_MAX_LENGTH:
        raise InvalidInput("actor", f"at most {ACTOR_MAX_LENGTH} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidInput("actor", "must not contain control characters")
    return value


# The API's bounds: a page beyond MAX_PAGE would only make the database skip rows.
MAX_PAGE = 1_000_000
MAX_PAGE_SIZE = 1000


def _bounded(field: str, value: Any, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise InvalidInput(field, f"must be an integer from 1 to {high}")
    return value


def page(page: Any, page_size: Any) -> tuple[int, int]:
    """A validated (page, page_size), 1-based, as the API bounds them."""
    return _bounded("page", page, MAX_PAGE), _bounded("page_size", page_size, MAX_PAGE_SIZE)


M = TypeVar("M", bound=BaseModel)


def first_error(exc: ValidationError) -> InvalidInput:
    """The first problem pydantic found, as an InvalidInput naming the field."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "body"
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, InvalidInput):
        return ctx_error
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = "unknown field"
    elif message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    return InvalidInput(field, message)


def parse(model: type[M], data: dict[str, Any]) -> M:
    """Build ``model`` from ``data`` or raise :class:`InvalidInput` naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise first_error(exc) from None
