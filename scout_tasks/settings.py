"""Configuration read from the environment (and an optional ``.env`` file).

The variable names are part of the contract (CONTRACT.md); everything else about
the process reads its configuration from :func:`get_settings`.
"""

from __future__ import annotations

import functools
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from scout_tasks.errors import ConfigurationError

DEFAULT_DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/scout"
DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SCOUT_", env_file=".env", extra="ignore", frozen=True
    )

    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str = DEFAULT_BROKER_URL
    exchange: str = Field(default="scout", min_length=1, max_length=255)
    tick_seconds: float = Field(default=30.0, gt=0, le=3600)
    api_token: str | None = None
    # The Celery queue the tick and fire tasks travel on; separate deployments
    # (or test runs) sharing a vhost use different names.
    task_queue: str = Field(default="scout-tasks", min_length=1, max_length=255)
    # How many due schedules one transaction claims; bounded so a tick never
    # holds thousands of row locks for long.
    fire_batch_size: int = Field(default=1000, ge=1, le=10000)
    run_pending_timeout: float = Field(default=3600.0, gt=0)
    run_timeout: float = Field(default=6 * 3600.0, gt=0)

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: str) -> str:
        if not value.startswith(("postgresql", "postgres://")):
            raise ValueError("must be a PostgreSQL URL (postgresql+psycopg2://...)")
        if value.startswith("postgres://"):
            value = "postgresql+psycopg2://" + value.removeprefix("postgres://")
        elif value.startswith("postgresql://"):
            value = "postgresql+psycopg2://" + value.removeprefix("postgresql://")
        return value

    @field_validator("api_token")
    @classmethod
    def _empty_token_is_unset(cls, value: str | None) -> str | None:
        return value or None


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced, for logs and banners."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}:***@{netloc[1]}"))


@functools.cache
def get_settings() -> Settings:
    """The process's settings, validated once; a bad value is a one-line error."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "settings"
        raise ConfigurationError(f"SCOUT_{field.upper()}: {first['msg']}") from None
