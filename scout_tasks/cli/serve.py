"""``scout-tasks api`` and ``scout-tasks dev``: the long-running commands."""

from __future__ import annotations

import ipaddress
import logging
import logging.config
from typing import Any

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

    settings = get_settings()
    log_config = logs.uvicorn_log_config()
    if settings.api_token is None and beyond_loopback(host):
        _warn_open(host, port, log_config)
    uvicorn.run(
        "scout_tasks.api:create_app",
        factory=True,
        host=host,
        port=port,
        log_level="info",
        log_config=log_config,
    )


def beyond_loopback(host: str) -> bool:
    """Whether other machines may reach ``host`` (a name may resolve to anything)."""
    if host.lower() == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return True


def _warn_open(host: str, port: int, log_config: dict[str, Any]) -> None:
    """Loud on purpose: a log line in the server's format, and the same on stderr."""
    message = (
        f"the API listens on {host}:{port}, beyond loopback, without SCOUT_API_TOKEN: "
        "anyone who reaches it can create, change and delete schedules and start or "
        "cancel runs. Set SCOUT_API_TOKEN, or listen on 127.0.0.1."
    )
    logging.config.dictConfig(log_config)
    logging.getLogger("uvicorn.error").warning(message, extra={"action": "api.no_token"})
    click.echo(f"scout-tasks: WARNING: {message}", err=True)


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
