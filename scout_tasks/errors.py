"""The exceptions callers handle; every one derives from :class:`ScoutTasksError`."""

from __future__ import annotations


class ScoutTasksError(Exception):
    """Something went wrong in scout-tasks."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(ScoutTasksError):
    """The configuration is invalid."""


class InvalidInput(ScoutTasksError, ValueError):
    """A value written by a caller is invalid; ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}")


class InvalidCronExpression(InvalidInput):
    """The cron expression does not parse or can never fire."""

    def __init__(self, message: str, field: str = "cron_expression") -> None:
        super().__init__(field, message)


class DuplicateScheduleName(InvalidInput):
    """Another schedule already has this name."""

    def __init__(self, name: str) -> None:
        super().__init__("name", f"a schedule named {name!r} already exists")


class NotFound(ScoutTasksError, LookupError):
    """The requested object does not exist."""


class ScheduleNotFound(NotFound):
    """No such schedule."""


class RunNotFound(NotFound):
    """No such run."""


class RunAlreadyTerminal(ScoutTasksError):
    """The run has already ended; its status can no longer change."""


class PublishError(ScoutTasksError):
    """The broker did not confirm every message; the outbox keeps them."""


# --- the database's errors, translated once (see scout_tasks.db.translate_db_errors) -----


class DatabaseError(ScoutTasksError):
    """The database failed the operation."""

    def __init__(
        self,
        message: str | None = None,
        *,
        detail: str | None = None,
        connection_invalidated: bool = False,
    ) -> None:
        super().__init__(message)
        # The driver's own first line, for messages that add their own context.
        self.detail = detail if detail is not None else str(self)
        # The driver dropped the connection: a caller holding an engine may dispose it.
        self.connection_invalidated = connection_invalidated


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached; try again later."""


class DatabaseNotMigrated(DatabaseUnavailable):
    """the database has no scout-tasks tables; run `scout-tasks db upgrade`"""


class InvalidValue(DatabaseError, ValueError):
    """The database refused a value it cannot store (SQLSTATE class 22)."""


class ConstraintViolation(DatabaseError, ValueError):
    """The database refused a row that breaks one of its constraints (SQLSTATE class 23)."""
