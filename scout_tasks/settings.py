"""Configuration read from the environment (and an optional ``.env`` file).

The variable names are part of the contract (docs/contract.md); everything else about
the process reads its configuration from :func:`get_settings`.

``SCOUT_DATABASE_URL`` and ``SCOUT_BROKER_URL`` have no fixed default: unset,
they mean the embedded servers of the ``scout-tasks dev`` running in the
current folder (recorded in ``./.scout/dev.json``), so every command run there
uses the same instance. A URL that is set always wins.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from kombu.utils.url import parse_url
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_core import core_schema
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from scout_tasks.dev import state as dev_state
from scout_tasks.errors import ConfigurationError


class SecretUrl:
    """A server URL that never prints its password.

    Not a ``str``: ``str()``, f-strings, ``%s``, ``repr`` and pydantic's
    ``model_dump``/``model_dump_json`` all give :func:`mask_url`'s form. The
    code that connects asks for the URL itself with :meth:`get_secret_value`
    (or :meth:`Settings.database_url_value` / :meth:`Settings.broker_url_value`),
    as with pydantic's ``SecretStr``.
    """

    __slots__ = ("_url",)

    def __init__(self, url: str | SecretUrl) -> None:
        self._url = url.get_secret_value() if isinstance(url, SecretUrl) else str(url)

    def get_secret_value(self) -> str:
        return self._url

    @property
    def masked(self) -> str:
        return mask_url(self._url)

    def __str__(self) -> str:
        return self.masked

    def __repr__(self) -> str:
        return f"SecretUrl({self.masked!r})"

    def __format__(self, spec: str) -> str:
        return format(self.masked, spec)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SecretUrl):
            return self._url == other._url
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._url)

    def __bool__(self) -> bool:
        return bool(self._url)

    @classmethod
    def __get_pydantic_core_schema__(cls, _source: Any, _handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls,
            core_schema.union_schema(
                [core_schema.is_instance_schema(cls), core_schema.str_schema()]
            ),
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda value: value.masked if isinstance(value, SecretUrl) else mask_url(value)
            ),
        )


def _secret_url(value: str | SecretUrl | None) -> SecretUrl | None:
    return None if value is None else SecretUrl(value)


_BAD_URL = "not a valid URL (percent-encode special characters in the password)"


def _url_parses(url: str, field: str | None) -> bool:
    """True if the driver will read ``url`` as its author meant (a port is a number)."""
    try:
        if field == "database_url":
            make_url(url)  # casts the port to int
        else:
            if not parse_url(url).get("transport"):
                return False
            _ = urlsplit(url).port  # the int() kombu does at connect
    except (ValueError, ArgumentError):
        return False
    return True


# The fields whose values are URLs that may carry a password.
_URL_FIELDS = ("database_url", "broker_url")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SCOUT_",
        env_file=".env",
        extra="ignore",
        frozen=True,
        # A refused value is never repeated in an error: it may be a password.
        hide_input_in_errors=True,
    )

    # None: the embedded servers of the `scout-tasks dev` running here (see resolve()).
    database_url: SecretUrl | None = None
    broker_url: SecretUrl | None = None
    exchange: str = Field(default="scout", min_length=1, max_length=255)
    # At least 1 s: a faster tick only loads the database (fire times are whole minutes).
    tick_seconds: float = Field(default=30.0, ge=1, le=3600)
    # A secret: repr and str show '**********'; .get_secret_value() is the token.
    api_token: SecretStr | None = None
    # The Celery queue the tick and fire tasks travel on; separate deployments
    # (or test runs) sharing a vhost use different names.
    task_queue: str = Field(default="scout-tasks", min_length=1, max_length=255)
    # How many due schedules one transaction claims; bounded so a tick never
    # holds thousands of row locks for long.
    fire_batch_size: int = Field(default=500, ge=1, le=10000)
    # Ended runs (and their recorded events) older than this many days are
    # deleted by the tick, a few batches at a time; 0 keeps everything.
    run_retention_days: int = Field(default=90, ge=0, le=36500)
    run_pending_timeout: float = Field(default=3600.0, gt=0)
    run_timeout: float = Field(default=6 * 3600.0, gt=0)
    # `json`: every log line of beat, worker and API is one JSON object (scout_tasks.logs).
    log_format: Literal["human", "json"] = "human"

    @field_validator("database_url", "broker_url", mode="before")
    @classmethod
    def _empty_url_is_unset(cls, value: object) -> object:
        # `export SCOUT_DATABASE_URL=` means "not set", not "an invalid URL".
        return None if value == "" else value

    @field_validator("database_url", mode="before")
    @classmethod
    def _postgres_only(cls, value: object) -> object:
        if not isinstance(value, str) or value == "":
            return value
        if not value.startswith(("postgresql", "postgres://")):
            # The message never repeats the value: it may hold a password.
            raise ValueError("must be a PostgreSQL URL (postgresql+psycopg2://...)")
        if value.startswith("postgres://"):
            value = "postgresql+psycopg2://" + value.removeprefix("postgres://")
        elif value.startswith("postgresql://"):
            value = "postgresql+psycopg2://" + value.removeprefix("postgresql://")
        return value

    @field_validator("database_url", "broker_url", mode="after")
    @classmethod
    def _parses(cls, value: SecretUrl | None, info: ValidationInfo) -> SecretUrl | None:
        # Checked here, once, so a bad URL is a line naming the variable rather
        # than a driver's error (which quotes the password) at first connect.
        if value is not None and not _url_parses(value.get_secret_value(), info.field_name):
            raise ValueError(_BAD_URL)
        return value

    @field_validator("api_token", mode="before")
    @classmethod
    def _empty_token_is_unset(cls, value: object) -> object:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        return value or None

    def model_copy(self, *, update: Any = None, deep: bool = False) -> Settings:
        # model_copy(update=...) skips validation: keep a URL put in that way secret.
        if update:
            update = {
                k: (_secret_url(v) if k in _URL_FIELDS else v) for k, v in dict(update).items()
            }
        return super().model_copy(update=update, deep=deep)

    def database_url_value(self) -> str:
        """The database URL itself, password included, for the code that connects."""
        if self.database_url is None:
            raise missing_url_error(["SCOUT_DATABASE_URL"])
        return self.database_url.get_secret_value()

    def broker_url_value(self) -> str | None:
        """The broker URL itself (None when unset), for the code that connects."""
        return None if self.broker_url is None else self.broker_url.get_secret_value()

    def token(self) -> str | None:
        """The API token itself (compare it, never print it)."""
        return None if self.api_token is None else self.api_token.get_secret_value()


def mask_url(url: str | SecretUrl) -> str:
    """Return ``url`` with any password replaced, for logs, banners and errors.

    Works on the text rather than a parsed URL: a password holding ``#``, ``/``
    or ``?`` makes URL parsers split in the wrong place and show it.
    """
    if isinstance(url, SecretUrl):
        return url.masked
    masked = _USERINFO_PASSWORD.sub(r"\1:***@", url)
    return _QUERY_PASSWORD.sub(r"\1***", masked)


# scheme://user:password@ -- the password runs to the last "@" before the host.
_USERINFO_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*):.*@(?=[^@]*$)")
_QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd)=)[^&]*", re.IGNORECASE)


def load_settings() -> Settings:
    """The settings as configured, URLs not resolved yet; a bad value is a one-line error.

    ``scout-tasks dev`` starts from this: an unset URL is what it provides.
    """
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "settings"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigurationError(f"SCOUT_{field.upper()}: {message}") from None


def resolve(settings: Settings, folder: Path | str | None = None) -> Settings:
    """``settings`` with each unset URL taken from the ``scout-tasks dev`` running in ``folder``.

    ``folder`` defaults to the current directory. Without such an instance (no
    ``.scout/dev.json``, or its PostgreSQL has stopped) an unset database URL
    is a one-line :class:`ConfigurationError`: every command that gets this far
    needs the database. An unset broker URL stays None instead, because some
    commands (``db upgrade``, ``schedules list``, Alembic) need no broker; what
    does need one (:class:`~scout_tasks.publisher.ConfirmingPublisher`, the
    Celery app) refuses None with :func:`missing_url_error`.
    """
    if settings.database_url is not None and settings.broker_url is not None:
        return settings
    instance = dev_state.running_instance(dev_state.Layout.here(folder))
    if instance is not None:
        return settings.model_copy(
            update={
                "database_url": settings.database_url or _secret_url(instance.database_url),
                "broker_url": settings.broker_url or _secret_url(instance.broker_url),
            }
        )
    if settings.database_url is None:
        unset = ["SCOUT_DATABASE_URL"] + (
            ["SCOUT_BROKER_URL"] if settings.broker_url is None else []
        )
        raise missing_url_error(unset, folder)
    return settings


def missing_url_error(unset: Sequence[str], folder: Path | str | None = None) -> ConfigurationError:
    """The one line for URLs that are neither set nor provided by a `scout-tasks dev` here."""
    layout = dev_state.Layout.here(folder)
    stale = (
        f" (the one recorded in {dev_state.STATE_DIR}/{dev_state.STATE_FILE} has stopped)"
        if dev_state.read_state(layout) is not None
        else ""
    )
    return ConfigurationError(
        f"no {' or '.join(unset)} set and no `scout-tasks dev` running in "
        f"{layout.folder}{stale}; start one or set {' and '.join(unset)}"
    )


@functools.cache
def get_settings() -> Settings:
    """The process's settings, validated and resolved once; any problem is a one-line error."""
    return resolve(load_settings())
