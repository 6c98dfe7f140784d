"""The one set of rules for anything that writes a schedule or asks for a run.

The CLI and the HTTP API both build these models; a refusal is an
:class:`~scout_tasks.errors.InvalidInput` naming the field, raised before
anything is written.
"""

from __future__ import annotations

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


def _no_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _no_blank_optional(value: str | None) -> str | None:
    return None if value is None else _no_blank(value)


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

    _blank = field_validator("name", "source")(_no_blank)

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

    @field_validator("name", "source")
    @classmethod
    def _blank(cls, value: str | None) -> str | None:
        return None if value is None else _no_blank(value)

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
