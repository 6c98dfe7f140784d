"""The agents' lifecycle events as they arrive: typed, bounded models and :func:`parse_event`.

Anyone who can publish to the events exchange can send anything, so every
limit is enforced here, before a byte reaches the database:

- a body over :data:`MAX_BODY_BYTES` (256 KiB) is refused unparsed;
- free text is cut, not refused (losing the end of an agent's error message
  is better than losing the event): ``error_message`` and ``message`` to
  :data:`MAX_MESSAGE_CHARS`, ``stage`` and ``source`` to :data:`MAX_NAME_CHARS`
  characters, the last one replaced by ``…``;
- ``stage_metrics`` deeper than :data:`MAX_DEPTH` levels is refused, and one
  whose JSON is over :data:`MAX_STAGE_METRICS_BYTES` (16 KiB) is dropped from
  the stored progress with a note saying so (the event itself is kept);
- what PostgreSQL cannot store (NUL characters, lone surrogates, NaN) is
  refused, so such a message is malformed rather than retried forever.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from scout_tasks.events import COMPLETED, FAILED, PROGRESS, STARTED

MAX_BODY_BYTES = 256 * 1024
MAX_MESSAGE_CHARS = 4000
MAX_NAME_CHARS = 200
MAX_STAGE_METRICS_BYTES = 16 * 1024
MAX_DEPTH = 32
_MAX_ERRORS_SHOWN = 3


class MalformedEvent(ValueError):
    """The message can never be applied; ``str()`` is the reason, naming the field."""


def _storable(value: Any, depth: int = 0) -> Any:
    """Refuse what PostgreSQL cannot store, so such a message is malformed, not a retry.

    ``text`` and ``jsonb`` refuse NUL characters, UTF-8 refuses lone surrogates
    (``json.loads`` lets both through), and JSON itself has no NaN/Infinity.
    The depth bound keeps this recursion, and PostgreSQL's jsonb parser, far
    from their stack limits (a stack overflow there would look like an outage).
    """
    if depth > MAX_DEPTH:
        raise ValueError(f"is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("contains a NUL character")
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ValueError("is not valid Unicode") from None
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("is not a finite number")
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key, depth + 1)
            _storable(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _storable(item, depth + 1)
    return value


def _cut(limit: int) -> Callable[[str], str]:
    def cut(value: str) -> str:
        return value if len(value) <= limit else value[: limit - 1] + "…"

    return cut


Message = Annotated[
    str, Field(strict=True), AfterValidator(_storable), AfterValidator(_cut(MAX_MESSAGE_CHARS))
]
Name = Annotated[
    str, Field(strict=True), AfterValidator(_storable), AfterValidator(_cut(MAX_NAME_CHARS))
]
Count = Annotated[int, Field(strict=True, ge=0)]
Percent = Annotated[float, Field(strict=True, ge=0, le=100, allow_inf_nan=False)]


class _Inbound(BaseModel):
    """What every agent event carries. Unknown keys are ignored (the contract says so)."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    # The routing key (and event_type) this model is for.
    EVENT_TYPE: ClassVar[str]

    event_id: uuid.UUID
    run_id: uuid.UUID
    event_type: str | None = None
    # Optional: the run's timestamps come from the database's clock, so a
    # missing timestamp loses nothing worth refusing an event for. Only the
    # ordering of progress events reads it (and distrusts it, see runs.py).
    timestamp: datetime | None = None

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        # The contract writes UTC ("...Z"); a naive timestamp means UTC too.
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class StartedEvent(_Inbound):
    EVENT_TYPE = STARTED

    source: Name | None = None


class ProgressEvent(_Inbound):
    EVENT_TYPE = PROGRESS

    stage: Name
    progress: Percent
    message: Message | None = None
    stage_metrics: Annotated[dict[str, Any], AfterValidator(_storable)] | None = None

    def as_metrics(self) -> dict[str, Any]:
        """What ``metrics['progress']`` keeps (the store adds ``at``)."""
        # 40 stays 40 in the JSON, not 40.0.
        progress = int(self.progress) if self.progress.is_integer() else self.progress
        out: dict[str, Any] = {
            "stage": self.stage,
            "progress": progress,
            "message": self.message,
            "stage_metrics": self.stage_metrics,
        }
        if self.stage_metrics is not None:
            size = len(json.dumps(self.stage_metrics, separators=(",", ":")).encode())
            if size > MAX_STAGE_METRICS_BYTES:
                # Every run page carries metrics: a bulky progress must not weigh on them.
                out["stage_metrics"] = None
                out["note"] = (
                    f"stage_metrics dropped: {size} bytes of JSON, "
                    f"over the {MAX_STAGE_METRICS_BYTES}-byte limit"
                )
        return out


class CompletedEvent(_Inbound):
    EVENT_TYPE = COMPLETED

    total_fetched: Count
    validated: Count
    validation_failed: Count
    duplicates_removed: Count
    submitted: Count

    def counters(self) -> dict[str, int]:
        return {
            "total_fetched": self.total_fetched,
            "validated": self.validated,
            "validation_failed": self.validation_failed,
            "duplicates_removed": self.duplicates_removed,
            "submitted": self.submitted,
        }


class FailedEvent(_Inbound):
    EVENT_TYPE = FAILED

    error_message: Message
    stage: Name | None = None


LifecycleEvent = StartedEvent | ProgressEvent | CompletedEvent | FailedEvent

MODELS: dict[str, type[_Inbound]] = {
    model.EVENT_TYPE: model for model in (StartedEvent, ProgressEvent, CompletedEvent, FailedEvent)
}


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One decoder for every message: json.loads with an argument builds a new one each time.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def _loads(body: bytes) -> Any:
    """``json.loads(body, parse_constant=_refuse_constant)``, without building a decoder."""
    return _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:_MAX_ERRORS_SHOWN]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    if exc.error_count() > _MAX_ERRORS_SHOWN:
        parts.append(f"and {exc.error_count() - _MAX_ERRORS_SHOWN} more")
    return "invalid payload: " + "; ".join(parts)


def parse_event(body: bytes, routing_key: str, message_id: str | None) -> LifecycleEvent:
    """The typed event in a message, or :class:`MalformedEvent` saying why not.

    The routing key picks the model (it is the event type, by contract); an
    ``event_type`` in the body must agree with it. The body's ``event_id`` is
    the idempotency key; only a body without one falls back to the
    ``message_id`` (which the contract makes the same value).

    A well-formed body is validated straight from its bytes (:func:`_parse_fast`);
    anything that path does not accept goes through :func:`parse_event_strictly`,
    which gives the verdict and the reason.
    """
    if len(body) > MAX_BODY_BYTES:
        # Checked before anything reads it: a 5 MB body is never parsed, let alone stored.
        raise MalformedEvent(f"body is {len(body)} bytes, over the {MAX_BODY_BYTES}-byte limit")
    model = MODELS.get(routing_key)
    if model is None:
        raise MalformedEvent(f"unknown routing key {routing_key[:MAX_NAME_CHARS]!r}")
    event = _parse_fast(model, body, routing_key)
    if event is not None:
        return event
    return parse_event_strictly(body, routing_key, message_id)


def _parse_fast(model: type[_Inbound], body: bytes, routing_key: str) -> LifecycleEvent | None:
    """The event, validated from the raw bytes in one pass; None when in any doubt.

    pydantic's own JSON parser costs a third of ``json`` then ``model_validate``,
    and the models' validators (the limits) run the same either way. Where the
    two parsers differ, this path must never accept what the strict one
    refuses: NaN and Infinity are JSON to pydantic's parser, not to ours (even
    in an ignored key), so a body that spells either anywhere, even inside a
    string, goes the strict way. Every other difference (a UTF-16 body, a lone
    surrogate, nesting past its own depth limit, a missing ``event_id`` the
    ``message_id`` stands in for) makes this path refuse, and the strict
    path then decides. ``tests/unit/test_inbound_fast.py`` holds it to that.
    """
    if b"NaN" in body or b"Infinity" in body:
        return None
    try:
        event = model.model_validate_json(body)
    except (ValidationError, RecursionError):
        return None
    if event.event_type is not None and event.event_type != routing_key:
        return None
    return event  # type: ignore[return-value]


def parse_event_strictly(body: bytes, routing_key: str, message_id: str | None) -> LifecycleEvent:
    """:func:`parse_event` by the reference path: ``json`` first, then the model.

    Gives every refusal its reason; :func:`parse_event` comes here whenever its
    fast path does not accept a body.
    """
    if len(body) > MAX_BODY_BYTES:
        raise MalformedEvent(f"body is {len(body)} bytes, over the {MAX_BODY_BYTES}-byte limit")
    model = MODELS.get(routing_key)
    if model is None:
        raise MalformedEvent(f"unknown routing key {routing_key[:MAX_NAME_CHARS]!r}")
    try:
        data = _loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError included
        raise MalformedEvent(f"body is not JSON: {exc}") from None
    except RecursionError:
        raise MalformedEvent("body is not JSON this parser can read: nested too deep") from None
    if not isinstance(data, dict):
        raise MalformedEvent(f"body is a JSON {type(data).__name__}, not an object")
    if data.get("event_id") is None and message_id:
        data["event_id"] = message_id
    try:
        event = model.model_validate(data)
    except ValidationError as exc:
        raise MalformedEvent(_describe(exc)) from None
    except RecursionError:
        raise MalformedEvent("invalid payload: nested too deep") from None
    if event.event_type is not None and event.event_type != routing_key:
        raise MalformedEvent(
            f"event_type {event.event_type[:MAX_NAME_CHARS]!r} "
            f"does not match routing key {routing_key!r}"
        )
    return event  # type: ignore[return-value]
