"""db.translate_db_error: every face classifies a driver error the same way, by SQLSTATE.

The driver errors are built as SQLAlchemy wraps them (``exc.orig`` carrying
``pgcode`` and ``diag``), so no server is needed; the CLI and API tests see
the same classification against a real PostgreSQL.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InternalError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from scout_tasks.db import translate_db_error, translate_db_errors
from scout_tasks.errors import (
    ConstraintViolation,
    DatabaseError,
    DatabaseNotMigrated,
    DatabaseUnavailable,
    DuplicateScheduleName,
    InvalidInput,
    InvalidValue,
)


class DriverError(Exception):
    def __init__(self, message: str, pgcode: str | None, constraint: str | None = None) -> None:
        super().__init__(message)
        self.pgcode = pgcode
        self.diag = SimpleNamespace(constraint_name=constraint)


def wrapped(cls: type[DBAPIError], message: str, pgcode: str | None, **kw: object) -> DBAPIError:
    return cls("SELECT 1", {}, DriverError(message, pgcode, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "kind", "message"),
    [
        (
            wrapped(ProgrammingError, 'relation "scout_schedules" does not exist\nLINE 1', "42P01"),
            DatabaseNotMigrated,
            "the database has no scout-tasks tables; run `scout-tasks db upgrade`",
        ),
        (
            wrapped(ProgrammingError, 'column "last_error" does not exist', "42703"),
            DatabaseNotMigrated,
            "the database has no scout-tasks tables; run `scout-tasks db upgrade`",
        ),
        (
            wrapped(DataError, "value too long for type character varying(200)", "22001"),
            InvalidValue,
            "invalid value: value too long for type character varying(200)",
        ),
        (
            wrapped(InternalError, "invalid byte sequence for encoding", "22021"),
            InvalidValue,
            "invalid value: invalid byte sequence for encoding",
        ),
        (
            wrapped(IntegrityError, "new row violates check constraint", "23514", constraint="ck"),
            ConstraintViolation,
            "refused by the database: new row violates check constraint",
        ),
        (
            wrapped(OperationalError, "connection refused\n\tIs the server running?", None),
            DatabaseUnavailable,
            "database unavailable: connection refused",
        ),
        (
            wrapped(ProgrammingError, "syntax error at or near", "42601"),
            DatabaseError,
            "database error: syntax error at or near",
        ),
    ],
)
def test_classified_by_sqlstate(error: DBAPIError, kind: type, message: str) -> None:
    translated = translate_db_error(error)

    assert type(translated) is kind
    assert str(translated) == message


def test_a_taken_schedule_name_is_a_duplicate_only_when_the_name_is_known() -> None:
    error = wrapped(
        IntegrityError, "duplicate key value", "23505", constraint="uq_scout_schedules_name"
    )

    duplicate = translate_db_error(error, schedule_name="nightly")
    unnamed = translate_db_error(error)

    assert isinstance(duplicate, DuplicateScheduleName) and isinstance(duplicate, InvalidInput)
    assert duplicate.field == "name"
    assert type(unnamed) is ConstraintViolation


def test_pool_and_disconnection_errors_mean_unavailable() -> None:
    assert type(translate_db_error(PoolTimeoutError("QueuePool limit"))) is DatabaseUnavailable
    assert type(translate_db_error(DisconnectionError("gone"))) is DatabaseUnavailable


def test_a_dropped_connection_is_unavailable_and_says_so() -> None:
    error = wrapped(DBAPIError, "server closed the connection unexpectedly", None)
    error.connection_invalidated = True

    translated = translate_db_error(error)

    assert type(translated) is DatabaseUnavailable
    assert translated.connection_invalidated is True  # type: ignore[attr-defined]
    assert translated.detail == "server closed the connection unexpectedly"  # type: ignore[attr-defined]


def test_the_context_manager_raises_the_translation_from_the_original() -> None:
    error = wrapped(DataError, "integer out of range", "22003")

    with pytest.raises(InvalidValue) as caught, translate_db_errors():
        raise error

    assert caught.value.__cause__ is error
    assert isinstance(caught.value, ValueError)


def test_other_exceptions_pass_through_untouched() -> None:
    with pytest.raises(KeyError), translate_db_errors():
        raise KeyError("x")
