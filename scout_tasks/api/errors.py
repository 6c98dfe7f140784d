"""Every failure as JSON ``{"detail", "field"}``, FastAPI's own refusals included.

A database outage is a 503 the client may retry, never a 500 with a
traceback. Database errors are classified once, by the project's shared
:func:`scout_tasks.db.translate_db_error`, and mapped to a status in
:func:`translated_error`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException

from scout_tasks.api.models import ErrorBody
from scout_tasks.db import translate_db_error
from scout_tasks.errors import (
    ConstraintViolation,
    DatabaseError,
    DatabaseNotMigrated,
    DatabaseUnavailable,
    DuplicateScheduleName,
    InvalidInput,
    InvalidValue,
    NotFound,
    PublishError,
    RunAlreadyTerminal,
    ScoutTasksError,
)

log = logging.getLogger(__name__)

Handler = Callable[[Request, Exception], JSONResponse]


def error(code: int, detail: str, field: str | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": detail, "field": field, **extra}, status_code=code)


def documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses."""
    return {code: {"model": ErrorBody} for code in codes}


def scout_error(_request: Request, exc: Exception) -> JSONResponse:
    # DuplicateScheduleName is an InvalidInput: test it first.
    if isinstance(exc, DuplicateScheduleName):
        return error(409, str(exc), exc.field)
    if isinstance(exc, InvalidInput):
        return error(422, str(exc), exc.field)
    if isinstance(exc, NotFound):
        return error(404, str(exc))
    if isinstance(exc, RunAlreadyTerminal):
        return error(409, str(exc))
    if isinstance(exc, PublishError):
        return error(503, str(exc))
    if isinstance(exc, DatabaseError):
        return translated_error(exc)
    log.error("unexpected error: %s", exc, extra={"action": "api.error"})
    return error(500, "internal error")


def _request_field(loc: Sequence[Any]) -> str:
    """``("query", "page")`` -> ``page``; a whole-body problem is ``body``."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header", "cookie"} and len(parts) > 1:
        parts = parts[1:]
    return ".".join(parts) or "body"


def validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if not errors:
        return error(422, "invalid request", "body")
    first = errors[0]
    name = _request_field(first.get("loc", ()))
    message = "unknown field" if first.get("type") == "extra_forbidden" else first.get("msg", "")
    return error(422, f"{name}: {message}", name)


def http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    response = error(exc.status_code, str(exc.detail))
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


def unexpected(_request: Request, exc: Exception) -> JSONResponse:
    """A bug still answers in JSON; the traceback goes to the log, not to the client."""
    log.error("unhandled error", exc_info=exc, extra={"action": "api.error"})
    return error(500, "internal error")


def database_error(_request: Request, exc: Exception) -> JSONResponse:
    """A driver error, classified by the shared :func:`scout_tasks.db.translate_db_error`."""
    assert isinstance(exc, SQLAlchemyError)
    return translated_error(translate_db_error(exc))


def translated_error(exc: DatabaseError) -> JSONResponse:
    """The one place a database error becomes an HTTP status.

    Unreachable or unmigrated is 503 (retry later), saying no more than that;
    a value the database cannot
    store is the caller's 422; a taken name or another refused row is a
    conflict, 409; anything else is a 500 whose detail stays in the log.
    """
    if isinstance(exc, DatabaseNotMigrated):
        return error(503, str(exc))
    if isinstance(exc, DatabaseUnavailable):
        # Open routes (/metrics, GET lists) answer this too: the driver's text
        # names host, port and role, so it goes to the log only.
        log.warning("database unavailable: %s", exc.detail, extra={"action": "api.db_unavailable"})
        return error(503, "database unavailable")
    if isinstance(exc, InvalidValue):
        # Validation should have caught it, so log it as a gap.
        log.warning("database refused a value: %s", exc.detail, extra={"action": "api.data_error"})
        return error(422, str(exc))
    if isinstance(exc, ConstraintViolation):
        log.warning("database refused a row: %s", exc.detail, extra={"action": "api.constraint"})
        return error(409, str(exc))
    log.error("database error", exc_info=exc, extra={"action": "api.db_error"})
    return error(500, "internal error")


HANDLERS: list[tuple[type[Exception], Handler]] = [
    (ScoutTasksError, scout_error),
    (RequestValidationError, validation_error),
    (HTTPException, http_error),
    (SQLAlchemyError, database_error),
    (Exception, unexpected),
]


def install(app: FastAPI) -> None:
    for exc_class, handler in HANDLERS:
        app.add_exception_handler(exc_class, handler)
