"""What routes depend on: the shared resources, the token check, the raw JSON body,
and the path and query parameters several routes take.
"""

from __future__ import annotations

import hmac
import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy import Engine
from starlette.exceptions import HTTPException

from scout_tasks.errors import InvalidInput
from scout_tasks.settings import Settings
from scout_tasks.shared_publisher import SharedPublisher

MAX_PAGE_SIZE = 1000
# Bounds the OFFSET so a silly page number is a 422, not a bigint overflow.
MAX_PAGE = 1_000_000


@dataclass
class Scout:
    """What the routes share: settings, the engine, and the lazily made publisher."""

    settings: Settings
    engine: Engine
    _publisher: SharedPublisher | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def publisher(self) -> SharedPublisher:
        """Created on first use, so the API starts (and serves reads) without a broker."""
        with self._lock:
            if self._publisher is None:
                self._publisher = SharedPublisher(
                    self.settings.broker_url_value(), self.settings.exchange
                )
            return self._publisher

    def close(self) -> None:
        with self._lock:
            publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.close()
        self.engine.dispose()


def get_scout(request: Request) -> Scout:
    return request.app.state.scout  # type: ignore[no-any-return]


ScoutDep = Annotated[Scout, Depends(get_scout)]

_bearer = HTTPBearer(auto_error=False, description="SCOUT_API_TOKEN, when the server sets one.")


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Mutating routes need the token when one is configured; reads stay open."""
    token = get_scout(request).settings.token()
    if token is None:
        return
    given = credentials.credentials if credentials is not None else ""
    # Constant-time, so the response time does not reveal how much of a guess matched.
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(
            401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


MUTATING = [Depends(require_token)]


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON allows a key twice and keeps the last; a scheduler should not guess."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidInput(key, "given more than once")
        result[key] = value
    return result


async def json_object(request: Request) -> dict[str, Any]:
    """The body as a raw JSON object, so :mod:`scout_tasks.validation` alone judges it.

    Declared as a dependency after the token check, so an unauthenticated
    request is a 401 whatever its body. Its size is already capped by
    :class:`scout_tasks.api.limits.BodySizeLimit`.
    """
    raw = await request.body()
    if not raw.strip():
        raise InvalidInput("body", "a JSON object is required")
    try:
        data = json.loads(raw, object_pairs_hook=_no_duplicate_keys)
    except InvalidInput:
        raise
    except (ValueError, RecursionError) as exc:
        raise InvalidInput("body", f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        kind = "an array" if isinstance(data, list) else f"a {type(data).__name__}"
        raise InvalidInput("body", f"must be a JSON object, not {kind}")
    return data


JsonBody = Annotated[dict[str, Any], Depends(json_object)]


async def optional_json_object(request: Request) -> dict[str, Any]:
    """As :func:`json_object`, but an empty body is the empty object."""
    if not (await request.body()).strip():
        return {}
    return await json_object(request)


OptionalJsonBody = Annotated[dict[str, Any], Depends(optional_json_object)]
DEFAULT_ACTOR = "api"


def actor(
    x_scout_actor: Annotated[
        str | None,
        Header(
            alias="X-Scout-Actor",
            description="Who acts, for the schedule's history (default `api`).",
        ),
    ] = None,
) -> str:
    """The ``X-Scout-Actor`` header; the service layer validates it (field ``actor``)."""
    if x_scout_actor is None or not x_scout_actor.strip():
        return DEFAULT_ACTOR
    return _utf8(x_scout_actor)


def _utf8(header: str) -> str:
    # HTTP hands header bytes over as latin-1; clients send a name like "José" as
    # UTF-8, which would be recorded as "JosÃ©". Bytes that are not UTF-8 stay as
    # the latin-1 text they were.
    try:
        return header.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return header


Actor = Annotated[str, Depends(actor)]


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a body read as a raw object: the validation model's schema."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


ScheduleId = Annotated[uuid.UUID, Path(alias="id", description="The schedule's id.")]
RunId = Annotated[uuid.UUID, Path(alias="id", description="The run's id.")]
Page = Annotated[int, Query(ge=1, le=MAX_PAGE, description="1-based page number.")]
# A NUL can never be stored, so it can never match: refuse it like any bad value.
SourceFilter = Annotated[str | None, Query(max_length=255, pattern=r"^[^\x00]*$")]
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page.")]


def utc(value: datetime | None, field: str) -> datetime | None:
    """A bare timestamp in a filter means UTC, the zone everything is stored in."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        # PostgreSQL takes offsets up to 15:59; converting here accepts any.
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(field, "is out of range") from None


def paged(items: list[dict[str, Any]], total: int, page: int, page_size: int) -> dict[str, Any]:
    """A list response: one page of items and how many there are in all."""
    return {"items": items, "total": total, "page": page, "page_size": page_size}
