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
