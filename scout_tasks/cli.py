"""The ``scout-tasks`` command line.

Every command that prints data takes ``--json``. Errors are one line on
stderr: exit code 2 for bad input (naming the field), 1 when a server cannot
be reached; never a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from functools import wraps
from typing import Any, NoReturn, TypeVar

import click
from sqlalchemy.exc import DBAPIError, ProgrammingError

from scout_tasks.errors import (
    ConfigurationError,
    InvalidInput,
    NotFound,
    RunAlreadyTerminal,
    ScoutTasksError,
)
from scout_tasks.settings import get_settings, load_settings, mask_url

F = TypeVar("F", bound=Callable[..., Any])


# --- output -------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date | uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def emit(data: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    click.echo(json.dumps(_plain(data), indent=2, ensure_ascii=False) if as_json else text(data))


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [
        [str(_plain(r.get(c)) if r.get(c) is not None else "-") for c in columns] for r in rows
    ]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _record(row: dict[str, Any]) -> str:
    width = max(len(k) for k in row)
    return "\n".join(
        f"{k.ljust(width)}  {_plain(v) if v is not None else '-'}" for k, v in row.items()
    )


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


# --- errors -------------------------------------------------------------------


class CliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _fail(message: str, code: int) -> NoReturn:
    raise CliError(message, code)


def _db_error(exc: DBAPIError) -> NoReturn:
    if isinstance(exc, ProgrammingError) and "does not exist" in str(exc.orig):
        _fail("the database has no scout-tasks tables; run `scout-tasks db upgrade`", 1)
    if str(getattr(exc.orig, "pgcode", None) or "").startswith("22"):
        # Class 22 (data exception): a value the database cannot store is bad input.
        _fail(f"invalid value: {str(exc.orig).strip().splitlines()[0]}", 2)
    detail = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
    _fail(f"database unavailable ({mask_url(get_settings().database_url)}): {detail}", 1)


def _refuse_undecodable(kwargs: dict[str, Any]) -> None:
    """Arguments that were not UTF-8 arrive with surrogates; nothing could store them."""
    for name, value in kwargs.items():
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidInput(name, "is not valid UTF-8") from None


def handles_errors(func: F) -> F:
    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            _refuse_undecodable(kwargs)
            return func(*args, **kwargs)
        except InvalidInput as exc:
            _fail(str(exc), 2)
        except (NotFound, RunAlreadyTerminal) as exc:
            _fail(str(exc), 2)
        except ConfigurationError as exc:
            _fail(str(exc), 2)
        except DBAPIError as exc:
            _db_error(exc)
        except ScoutTasksError as exc:
            _fail(str(exc), 1)

    return wrapper  # type: ignore[return-value]


def _engine() -> Any:
    from scout_tasks import db

    return db.get_engine()


def _uuid(value: str, field: str = "id") -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidInput(field, f"{value!r} is not a UUID") from None


def _schedule_id(key: str) -> uuid.UUID:
    """Accept a schedule's id or its name."""
    from scout_tasks import schedules

    with _engine().connect() as conn:
        return schedules.find_schedule(conn, key)["id"]  # type: ignore[no-any-return]


# --- commands -----------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="scout-tasks")
def cli() -> None:
    """scout-tasks: cron schedules for Scout runs (Celery + PostgreSQL + RabbitMQ)."""


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@handles_errors
def db_upgrade(revision: str) -> None:
    """Bring the database schema to the latest revision (safe to run again)."""
    from scout_tasks import migrate

    url = get_settings().database_url
    if migrate.ensure_database(url):
        click.echo(f"created database {mask_url(url)}", err=True)
    click.echo(f"migrating {mask_url(url)} to {revision} ...", err=True)
    migrate.upgrade(get_settings().database_url, revision)
    click.echo(f"database at {migrate.current(get_settings().database_url)}", err=True)


# schedules ---------------------------------------------------------------------

SCHEDULE_COLUMNS = ("name", "id", "cron_expression", "timezone", "enabled", "next_run_at")


@cli.group()
def schedules() -> None:
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


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@schedules.command("add")
@click.argument("name")
@click.option("--cron", "cron_expression", required=True, help="5-field cron expression.")
@click.option("--source", required=True, help="Strategy source, e.g. stratninja.")
@click.option("--max-strategies", type=int, required=True)
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone.")
@click.option("--disabled", is_flag=True, help="Create it disabled.")
@_policy_options
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
    as_json: bool,
) -> None:
    """Create a schedule."""
    from scout_tasks import service

    row = service.create_schedule(
        _engine(),
        {
            "name": name,
            "cron_expression": cron_expression,
            "source": source,
            "max_strategies": max_strategies,
            "timezone": timezone,
            "enabled": not disabled,
            **_given(
                misfire_policy=misfire_policy,
                misfire_grace_seconds=misfire_grace_seconds,
                overlap_policy=overlap_policy,
            ),
        },
    )
    emit(row, as_json, _record)


@schedules.command("update")
@click.argument("schedule")
@click.option("--name", default=None)
@click.option("--cron", "cron_expression", default=None)
@click.option("--source", default=None)
@click.option("--max-strategies", type=int, default=None)
@click.option("--timezone", default=None)
@_policy_options
@json_option
@handles_errors
def schedules_update(schedule: str, as_json: bool, **values: Any) -> None:
    """Change a schedule's fields (only those given)."""
    from scout_tasks import service

    row = service.update_schedule(_engine(), _schedule_id(schedule), _given(**values))
    emit(row, as_json, _record)


@schedules.command("list")
@click.option("--enabled/--disabled", "enabled", default=None, help="Only enabled/disabled ones.")
@click.option("--source", default=None)
@json_option
@handles_errors
def schedules_list(enabled: bool | None, source: str | None, as_json: bool) -> None:
    """List schedules."""
    from scout_tasks import schedules as sql

    with _engine().connect() as conn:
        rows, _total = sql.list_schedules(conn, enabled=enabled, source=source)
    emit(rows, as_json, lambda r: _table(r, SCHEDULE_COLUMNS) if r else "no schedules")


@schedules.command("show")
@click.argument("schedule")
@json_option
@handles_errors
def schedules_show(schedule: str, as_json: bool) -> None:
    """Show one schedule (by id or name)."""
    from scout_tasks import schedules as sql

    with _engine().connect() as conn:
        row = sql.find_schedule(conn, schedule)
    emit(row, as_json, _record)


def _toggle(schedule: str, enabled: bool, as_json: bool) -> None:
    from scout_tasks import service

    row = service.set_enabled(_engine(), _schedule_id(schedule), enabled)
    emit(row, as_json, _record)


@schedules.command("enable")
@click.argument("schedule")
@json_option
@handles_errors
def schedules_enable(schedule: str, as_json: bool) -> None:
    """Enable a schedule; it fires from its next slot after now."""
    _toggle(schedule, True, as_json)


@schedules.command("disable")
@click.argument("schedule")
@json_option
@handles_errors
def schedules_disable(schedule: str, as_json: bool) -> None:
    """Disable a schedule."""
    _toggle(schedule, False, as_json)


@schedules.command("rm")
@click.argument("schedule")
@json_option
@handles_errors
def schedules_rm(schedule: str, as_json: bool) -> None:
    """Delete a schedule (its runs stay, with schedule_id set to null)."""
    from scout_tasks import service

    schedule_id = _schedule_id(schedule)
    service.delete_schedule(_engine(), schedule_id)
    emit({"id": schedule_id, "deleted": True}, as_json, lambda d: f"deleted {d['id']}")


@schedules.command("reload")
@handles_errors
def schedules_reload() -> None:
    """Wake every beat to re-read the schedules (changes apply without it too)."""
    from scout_tasks import service

    service.reload_schedules(_engine())
    click.echo("schedules reloaded")


# runs ---------------------------------------------------------------------------

RUN_COLUMNS = (
    "id",
    "status",
    "trigger_type",
    "triggered_by",
    "source",
    "scheduled_for",
    "created_at",
)


def _publisher() -> Any:
    from scout_tasks.publisher import ConfirmingPublisher

    settings = get_settings()
    return ConfirmingPublisher(settings.broker_url, settings.exchange, confirm_timeout=10)


@cli.command("trigger")
@click.option("--source", required=True)
@click.option("--max-strategies", type=int, required=True)
@click.option("--triggered-by", default=None, help="Who asked (default: Manual trigger).")
@json_option
@handles_errors
def trigger(source: str, max_strategies: int, triggered_by: str | None, as_json: bool) -> None:
    """Start a manual run now and publish its scout.trigger."""
    from scout_tasks import service

    publisher = _publisher()
    try:
        run, delivered = service.trigger_run(
            _engine(),
            _given(source=source, max_strategies=max_strategies, triggered_by=triggered_by),
            publisher,
        )
    finally:
        publisher.close()
    if not delivered:
        click.echo(
            "warning: the broker did not confirm scout.trigger yet; "
            "it is kept in the outbox and sent by the next tick",
            err=True,
        )
    emit(run, as_json, _record)


@cli.group()
def runs() -> None:
    """Inspect runs."""


@runs.command("list")
@click.option(
    "--status", type=click.Choice(["pending", "running", "completed", "failed", "cancelled"])
)
@click.option("--source", default=None)
@click.option("--schedule", "schedule", default=None, help="Schedule id or name.")
@click.option("--trigger-type", type=click.Choice(["scheduled", "manual", "event"]))
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@json_option
@handles_errors
def runs_list(
    status: str | None,
    source: str | None,
    schedule: str | None,
    trigger_type: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List runs, newest first."""
    from scout_tasks import runs as sql

    filters = sql.RunFilter(
        status=status,
        source=source,
        schedule_id=_schedule_id(schedule) if schedule else None,
        trigger_type=trigger_type,
    )
    with _engine().connect() as conn:
        rows, _total = sql.list_runs(conn, filters, limit=limit)
    emit(rows, as_json, lambda r: _table(r, RUN_COLUMNS) if r else "no runs")


@runs.command("show")
@click.argument("run_id")
@json_option
@handles_errors
def runs_show(run_id: str, as_json: bool) -> None:
    """Show one run."""
    from scout_tasks import runs as sql

    with _engine().connect() as conn:
        row = sql.get_run(conn, _uuid(run_id))
    emit(row, as_json, _record)


@runs.command("cancel")
@click.argument("run_id")
@json_option
@handles_errors
def runs_cancel(run_id: str, as_json: bool) -> None:
    """Cancel a pending or running run and publish scout.cancelled."""
    from scout_tasks import service

    publisher = _publisher()
    try:
        run, delivered = service.cancel_run(_engine(), _uuid(run_id), publisher)
    finally:
        publisher.close()
    if not delivered:
        click.echo(
            "warning: the broker did not confirm scout.cancelled yet; "
            "it is kept in the outbox and sent by the next tick",
            err=True,
        )
    emit(run, as_json, _record)


# cron ---------------------------------------------------------------------------


@cli.group("cron")
def cron_group() -> None:
    """Cron expression tools."""


@cron_group.command("next")
@click.argument("expression")
@click.option("--timezone", default="UTC", show_default=True)
@click.option("--after", default=None, help="ISO 8601 instant (default: now).")
@click.option("-n", "count", type=click.IntRange(1, 10000), default=5, show_default=True)
@json_option
@handles_errors
def cron_next(expression: str, timezone: str, after: str | None, count: int, as_json: bool) -> None:
    """Print the next N fire times, with their UTC offset, in the schedule's time zone."""
    from scout_tasks import cron

    zone = cron.get_zone(timezone)
    if after is None:
        start = datetime.now(UTC)
    else:
        try:
            start = datetime.fromisoformat(after.replace("Z", "+00:00").replace("z", "+00:00"))
            if start.tzinfo is None:
                # A bare local time means a wall time in the schedule's zone.
                start = start.replace(tzinfo=zone)
            start.astimezone(UTC)
        except ValueError:
            raise InvalidInput("after", f"{after!r} is not an ISO 8601 timestamp") from None
        except OverflowError:
            raise InvalidInput("after", f"{after!r} is out of range") from None
    times = cron.next_times(expression, timezone, start, count)
    emit([t.isoformat() for t in times], as_json, lambda ts: "\n".join(ts))


# api ----------------------------------------------------------------------------


@cli.command("api")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@handles_errors
def api(host: str, port: int) -> None:
    """Serve the HTTP API."""
    import uvicorn

    get_settings()
    from scout_tasks import logs

    uvicorn.run(
        "scout_tasks.api:create_app",
        factory=True,
        host=host,
        port=port,
        log_level="info",
        log_config=logs.uvicorn_log_config(),
    )


@cli.command("dev")
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
    from scout_tasks import dev as dev_mode

    return dev_mode.run(
        load_settings(),
        api_port=api_port,
        with_api=not no_api,
        demo_in_seconds=demo_in_seconds,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: one-line errors, exit 2 for bad input, no tracebacks."""
    # Library warnings (e.g. an event kept in the outbox) are summarised by
    # the commands themselves; only errors would add information.
    logging.basicConfig(level=logging.ERROR, format="scout-tasks: %(levelname)s: %(message)s")
    try:
        result = cli.main(args=argv, prog_name="scout-tasks", standalone_mode=False)
    except CliError as exc:
        click.echo(f"scout-tasks: error: {exc}", err=True)
        return exc.code
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        return 2
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "scout-tasks"
        click.echo(f"{where}: error: {exc.format_message()}", err=True)
        return 2
    except click.ClickException as exc:
        click.echo(f"scout-tasks: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the contract promises no tracebacks
        click.echo(f"scout-tasks: error: {type(exc).__name__}: {exc}".splitlines()[0], err=True)
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
