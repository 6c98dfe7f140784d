"""``scout-tasks db``: the database schema."""

from __future__ import annotations

import click

from scout_tasks.cli.common import handles_errors
from scout_tasks.settings import get_settings, mask_url


@click.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@handles_errors
def db_upgrade(revision: str) -> None:
    """Bring the database schema to the latest revision (safe to run again)."""
    from scout_tasks import migrate

    url = get_settings().database_url_value()
    if migrate.ensure_database(url):
        click.echo(f"created database {mask_url(url)}", err=True)
    click.echo(f"migrating {mask_url(url)} to {revision} ...", err=True)
    migrate.upgrade(url, revision)
    click.echo(f"database at {migrate.current(url)}", err=True)
