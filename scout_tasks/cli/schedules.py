"""``scout-tasks schedules``: create, change, list and remove cron schedules."""

from __future__ import annotations

from typing import Any

import click

from scout_tasks.cli.common import (
    F,
    emit,
    engine,
    given,
    handles_errors,
    json_option,
    record,
    schedule_id,
    table,
)
from scout_tasks.cli.control import actor_of, actor_option, described

SCHEDULE_COLUMNS = ("name", "id", "cron_expression", "timezone", "enabled", "next_run_at")


@click.group("schedules")
def schedules_group() -> None:
    """Manage cron schedules."""


def _policy_options(func: F) -> F:
    func = click.option(
        "--overlap-policy",
        type=click.Choice(["allow", "skip"]),
        default=None,
        help="skip: no new run while the previous one is pending or running.",
    )(func)
    func = click.option(
        "--misfire-grace-seconds",
        type=int,
        default=None,
        help="How late a slot may fire and still count as on time.",
    )(func)
    func = click.option(
        "--misfire-policy",
        type=click.Choice(["coalesce", "skip", "catch_up"]),
        default=None,
        help="What to do with slots missed while nothing could fire.",
    )(func)
    return func


@schedules_group.command("add")
@click.argument("name")
@click.option("--cron", "cron_expression", required=True, help="5-field cron expression.")
@click.option("--source", required=True, help="Strategy source, e.g. stratninja.")
@click.option("--max-strategies", type=int, required=True)
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone.")
@click.option("--disabled", is_flag=True, help="Create it disabled.")
@_policy_options
@actor_option
@json_option
@handles_errors
def schedules_add(
    name: str,
    cron_expression: str,
    source: str,
    max_strategies: int,
    timezone: str,
    disabled: bool,
    misfire_policy: str | None,
    misfire_grace_seconds: int | None,
    overlap_policy: str | None,
    actor: str | None,
    as_json: bool,
) -> None:
    """Create a schedule."""
    from scout_tasks import service

    row = service.create_schedule(
        engine(),
        {
            "name": name,
            "cron_expression": cron_expression,
            "source": source,
            "max_strategies": max_strategies,
            "timezone": timezone,
            "enabled": not disabled,
            **given(
                misfire_policy=misfire_policy,
                misfire_grace_seconds=misfire_grace_seconds,
                overlap_policy=overlap_policy,
            ),
        },
        actor=actor_of(actor),
    )
    emit(described(row), as_json, record)


@schedules_group.command("update")
@click.argument("schedule")
@click.option("--name", default=None)
@click.option("--cron", "cron_expression", default=None)
@click.option("--source", default=None)
@click.option("--max-strategies", type=int, default=None)
@click.option("--timezone", default=None)
@_policy_options
@actor_option
@json_option
@handles_errors
def schedules_update(schedule: str, actor: str | None, as_json: bool, **values: Any) -> None:
    """Change a schedule's fields (only those given)."""
    from scout_tasks import service

    row = service.update_schedule(
        engine(), schedule_id(schedule), given(**values), actor=actor_of(actor)
    )
    emit(described(row), as_json, record)


@schedules_group.command("list")
@click.option("--enabled/--disabled", "enabled", default=None, help="Only enabled/disabled ones.")
@click.option("--source", default=None)
@json_option
@handles_errors
def schedules_list(enabled: bool | None, source: str | None, as_json: bool) -> None:
    """List schedules."""
    from scout_tasks import schedules as sql

    with engine().connect() as conn:
        rows, _total = sql.list_schedules(conn, enabled=enabled, source=source)
    rows = [described(r) for r in rows]
    emit(rows, as_json, lambda r: table(r, SCHEDULE_COLUMNS) if r else "no schedules")


@schedules_group.command("show")
@click.argument("schedule")
@json_option
@handles_errors
def schedules_show(schedule: str, as_json: bool) -> None:
    """Show one schedule (by id or name)."""
    from scout_tasks import schedules as sql

    with engine().connect() as conn:
        row = sql.find_schedule(conn, schedule)
    emit(described(row), as_json, record)


def _toggle(schedule: str, enabled: bool, actor: str | None, as_json: bool) -> None:
    from scout_tasks import service

    row = service.set_enabled(engine(), schedule_id(schedule), enabled, actor=actor_of(actor))
    emit(described(row), as_json, record)


@schedules_group.command("enable")
@click.argument("schedule")
@actor_option
@json_option
@handles_errors
def schedules_enable(schedule: str, actor: str | None, as_json: bool) -> None:
    """Enable a schedule; it fires from its next slot after now."""
    _toggle(schedule, True, actor, as_json)


@schedules_group.command("disable")
@click.argument("schedule")
@actor_option
@json_option
@handles_errors
def schedules_disable(schedule: str, actor: str | None, as_json: bool) -> None:
    """Disable a schedule."""
    _toggle(schedule, False, actor, as_json)


@schedules_group.command("rm")
@click.argument("schedule")
@actor_option
@json_option
@handles_errors
def schedules_rm(schedule: str, actor: str | None, as_json: bool) -> None:
    """Delete a schedule (its runs stay, with schedule_id set to null)."""
    from scout_tasks import service

    deleted = schedule_id(schedule)
    service.delete_schedule(engine(), deleted, actor=actor_of(actor))
    emit({"id": deleted, "deleted": True}, as_json, lambda d: f"deleted {d['id']}")


@schedules_group.command("reload")
@handles_errors
def schedules_reload() -> None:
    """Wake every beat to re-read the schedules (changes apply without it too)."""
    from scout_tasks import service

    service.reload_schedules(engine())
    click.echo("schedules reloaded")
