"""``scout-tasks api`` and ``scout-tasks dev``: the long-running commands."""

from __future__ import annotations

import click

from scout_tasks.cli.common import handles_errors
from scout_tasks.settings import get_settings, load_settings


@click.command("api")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@handles_errors
def api(host: str, port: int) -> None:
    """Serve the HTTP API."""
    import uvicorn

    from scout_tasks import logs

    get_settings()
    uvicorn.run(
        "scout_tasks.api:create_app",
        factory=True,
        host=host,
        port=port,
        log_level="info",
        log_config=logs.uvicorn_log_config(),
    )


@click.command("dev")
@click.option("--api-port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--no-api", is_flag=True, help="Do not start the HTTP API.")
@click.option(
    "--demo-in-seconds",
    type=click.FloatRange(0.5, 3600),
    default=None,
    hidden=True,
    help="Fire a new demo schedule this many seconds after start (for tests).",
)
@handles_errors
def dev(api_port: int, no_api: bool, demo_in_seconds: float | None) -> int:
    """Run everything in one terminal: migrate, beat, worker, API, and a live event tail.

    With no SCOUT_DATABASE_URL / SCOUT_BROKER_URL it needs no server: it runs an
    embedded PostgreSQL and a file-based broker with their state in ./.scout,
    which every other command run in this folder then uses.
    """
    from scout_tasks.dev import run as dev_mode

    return dev_mode.run(
        load_settings(),
        api_port=api_port,
        with_api=not no_api,
        demo_in_seconds=demo_in_seconds,
    )
