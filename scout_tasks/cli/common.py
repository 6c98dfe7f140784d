"""What every ``scout-tasks`` command shares: output, one-line errors, and lookups.

Errors are one line on stderr: exit code 2 for bad input (naming the field), 1
when a server cannot be reached; never a traceback. Database errors are
classified once, by :func:`scout_tasks.db.translate_db_errors`.
"""

from __future__ import annotations

import json
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime
from functools import wraps
from typing import Any, NoReturn, TypeVar

import click

from scout_tasks.errors import (
    ConfigurationError,
    ConstraintViolation,
    DatabaseError,
    DatabaseNotMigrated,
    InvalidInput,
    InvalidValue,
    NotFound,
    RunAlreadyTerminal,
    ScoutTasksError,
)
from scout_tasks.settings import get_settings, mask_url

F = TypeVar("F", bound=Callable[..., Any])


# --- output -------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date | uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def emit(data: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    click.echo(json.dumps(_plain(data), indent=2, ensure_ascii=False) if as_json else text(data))


def shown(value: Any) -> str:
    """A value as one line of text: a control character (a newline or escape that
    plain SQL stored) is written as its escape, so one row stays one line."""
    if value is None:
        return "-"
    text = str(_plain(value))
    if text.isprintable():
        return text
    return "".join(repr(c)[1:-1] if unicodedata.category(c) == "Cc" else c for c in text)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[shown(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def record(row: dict[str, Any]) -> str:
    width = max(len(k) for k in row)
    return "\n".join(f"{k.ljust(width)}  {shown(v)}" for k, v in row.items())


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


# --- errors -------------------------------------------------------------------


class CliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int) -> NoReturn:
    raise CliError(message, code)


def _db_error(exc: DatabaseError) -> NoReturn:
    if isinstance(exc, DatabaseNotMigrated):
        fail(str(exc), 1)
    if isinstance(exc, InvalidValue | ConstraintViolation):
        # A value the database cannot store or accept is bad input.
        fail(str(exc), 2)
    fail(f"database unavailable ({mask_url(get_settings().database_url)}): {exc.detail}", 1)


def _refuse_undecodable(kwargs: dict[str, Any]) -> None:
    """Arguments that were not UTF-8 arrive with surrogates; nothing could store them."""
    for name, value in kwargs.items():
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidInput(name, "is not valid UTF-8") from None


def handles_errors(func: F) -> F:
    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from scout_tasks.db import translate_db_errors

        try:
            _refuse_undecodable(kwargs)
            with translate_db_errors():
                return func(*args, **kwargs)
        except (InvalidInput, NotFound, RunAlreadyTerminal, ConfigurationError) as exc:
            fail(str(exc), 2)
        except DatabaseError as exc:
            _db_error(exc)
        except ScoutTasksError as exc:
            fail(str(exc), 1)

    return wrapper  # type: ignore[return-value]


# --- lookups ----------------------------------------------------------------------


def engine() -> Any:
    from scout_tasks import db

    return db.get_engine()


def parse_uuid(value: str, field: str = "id") -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidInput(field, f"{value!r} is not a UUID") from None


def schedule_id(key: str) -> uuid.UUID:
    """Accept a schedule's id or its name."""
    from scout_tasks import schedules

    with engine().connect() as conn:
        return schedules.find_schedule(conn, key)["id"]  # type: ignore[no-any-return]


def given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def publisher() -> Any:
    from scout_tasks.publisher import ConfirmingPublisher

    settings = get_settings()
    return ConfirmingPublisher(settings.broker_url_value(), settings.exchange, confirm_timeout=10)


def published(event: str, act: Callable[[Any], tuple[dict[str, Any], bool]]) -> dict[str, Any]:
    """The run ``act(publisher)`` returns, with a publisher open for just that call.

    ``act`` also says whether the broker confirmed ``event``; when it did not, the
    command still succeeds (the event waits in the outbox), but says so on stderr.
    """
    out = publisher()
    try:
        run, delivered = act(out)
    finally:
        out.close()
    if not delivered:
        click.echo(
            f"warning: the broker did not confirm {event} yet; "
            "it is kept in the outbox and sent by the next tick",
            err=True,
        )
    return run
