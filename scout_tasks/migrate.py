"""Alembic, driven from Python: ``scout-tasks db upgrade`` and the tests use this."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

# Shipped inside the package (see pyproject.toml) so an installed scout-tasks
# can migrate without the source tree; in a checkout it is ./migrations.
_CANDIDATES = (
    Path(__file__).resolve().parent / "migrations",
    Path(__file__).resolve().parent.parent / "migrations",
)


def script_location() -> Path:
    for candidate in _CANDIDATES:
        if (candidate / "env.py").exists():
            return candidate
    raise FileNotFoundError("scout-tasks migrations not found")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.set_main_option("path_separator", "os")
    config.attributes["database_url"] = database_url
    config.attributes["configure_logger"] = False
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def current(database_url: str) -> str | None:
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


@cache
def head_revision() -> str | None:
    """The revision ``db upgrade`` goes to, read from the scripts once per process."""
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()


def ensure_database(database_url: str) -> bool:
    """Create the database named in ``database_url`` if it does not exist; True if created.

    Connects to the server's ``postgres`` database to do so, which a local
    development server allows; on a managed server the database already exists.
    """
    url = make_url(database_url)
    if not url.database:
        return False
    engine = create_engine(
        url.set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database}
            ).first()
            if exists:
                return False
            conn.execute(text(f'CREATE DATABASE "{url.database.replace(chr(34), chr(34) * 2)}"'))
            return True
    finally:
        engine.dispose()
