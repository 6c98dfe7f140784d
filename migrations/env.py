"""Alembic environment: the URL comes from scout-tasks' settings, the schema from tables.py."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool

from scout_tasks.errors import ConfigurationError
from scout_tasks.settings import get_settings
from scout_tasks.tables import metadata

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = metadata


def _url() -> str:
    given = config.attributes.get("database_url")
    if given:
        return str(given)
    try:
        settings = get_settings()
        url = None if settings.database_url is None else settings.database_url_value()
    except ConfigurationError as exc:
        # One line, like every other scout-tasks entry point, not a traceback.
        raise SystemExit(f"alembic: {exc}") from None
    if not url:
        raise SystemExit("alembic: set SCOUT_DATABASE_URL or run `scout-tasks dev` here")
    return url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
