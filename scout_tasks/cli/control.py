"""``scout-tasks schedules run|pause|resume|history``: steering a schedule, with an actor.

Every write names who acts (``--actor``, default the login name), and the
database's history trigger records it with the change in the same transaction.
"""

from __future__ import annotations

import getpass
from typing import Any

import click

from scout_tasks.cli.common import (
    F,
    emit,
    engine,
    handles_errors,
    json_option,
    published,
    record,
    shown,
)


def login_name() -> str | None:
    """The operator's login name; None (the database then names its role) if there is none."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        # A container user with no passwd entry and no LOGNAME/USER variables.
        return None


def actor_option(func: F) -> F:
    return click.option(
        "--actor",
        default=None,
        metavar="NAME",
        help="Who acts, for the schedule's history (default: your login name).",
    )(func)


def actor_of(given: str | None) -> str | None:
    return given if given is not None else login_name()


def described(row: dict[str, Any]) -> dict[str, Any]:
    """A schedule as the CLI shows it: the row and its ``cron_description``."""
    from scout_tasks.cron_description import with_description

    return with_description(row)


@click.command("run")
@click.argument("schedule")
@click.option("--triggered-by", default=None, help="Recorded on the run (default: the actor).")
@actor_option
@json_option
@handles_errors
def schedules_run(
    schedule: str, triggered_by: str | None, actor: str | None, as_json: bool
) -> None:
    """Run a schedule now (by name or id): a manual run; its next slot stays."""
    from scout_tasks import service

    run = published(
        "scout.trigger",
        lambda out: service.run_now(
            engine(), schedule, triggered_by=triggered_by, actor=actor_of(actor), publisher=out
        ),
    )
    emit(run, as_json, record)


@click.command("pause")
@click.argument("schedule")
@click.option("--reason", required=True, help="Why (1..500 characters); shown with the schedule.")
@actor_option
@json_option
@handles_errors
def schedules_pause(schedule: str, reason: str, actor: str | None, as_json: bool) -> None:
    """Pause a schedule with a reason; it fires no more until resumed."""
    from scout_tasks import service

    row = service.pause(engine(), schedule, reason=reason, actor=actor_of(actor))
    emit(described(row), as_json, record)


@click.command("resume")
@click.argument("schedule")
@actor_option
@json_option
@handles_errors
def schedules_resume(schedule: str, actor: str | None, as_json: bool) -> None:
    """Resume a paused schedule at its next slot after now (missed slots are not caught up)."""
    from scout_tasks import service

    row = service.resume(engine(), schedule, actor=actor_of(actor))
    emit(described(row), as_json, record)


def _value(value: Any) -> str:
    """A history value as the apply plan writes one: null, true/false, and a string
    quoted when it is empty or starts or ends with a space, so '' is not null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and (value == "" or value != value.strip()):
        return repr(value)
    return shown(value)


def _history_text(items: list[dict[str, Any]]) -> str:
    if not items:
        return "no recorded changes"
    lines = []
    for item in items:
        lines.append(f"{item['at'].isoformat()}  {item['actor'] or '-'}  {item['action']}")
        for field, (old, new) in sorted(item["changes"].items()):
            lines.append(f"    {field}: {_value(old)} -> {_value(new)}")
    return "\n".join(lines)


@click.command("history")
@click.argument("schedule")
@click.option("--page", type=click.IntRange(1), default=1, show_default=True)
@click.option("--page-size", type=click.IntRange(1, 1000), default=50, show_default=True)
@json_option
@handles_errors
def schedules_history(schedule: str, page: int, page_size: int, as_json: bool) -> None:
    """Who changed a schedule, what and when (newest first), plain-SQL edits included."""
    from scout_tasks import service

    items, _total = service.history(engine(), schedule, page=page, page_size=page_size)
    shown = [{k: item[k] for k in ("at", "actor", "action", "changes")} for item in items]
    emit(shown, as_json, _history_text)


COMMANDS = (schedules_run, schedules_pause, schedules_resume, schedules_history)
