"""``scout-tasks trigger`` and ``scout-tasks runs``: start a manual run, inspect and cancel runs."""

from __future__ import annotations

import click

from scout_tasks.cli.common import (
    emit,
    engine,
    given,
    handles_errors,
    json_option,
    parse_uuid,
    published,
    record,
    schedule_id,
    table,
)

RUN_COLUMNS = (
    "id",
    "status",
    "trigger_type",
    "triggered_by",
    "source",
    "scheduled_for",
    "created_at",
)


@click.command("trigger")
@click.option("--source", required=True)
@click.option("--max-strategies", type=int, required=True)
@click.option("--triggered-by", default=None, help="Who asked (default: Manual trigger).")
@json_option
@handles_errors
def trigger(source: str, max_strategies: int, triggered_by: str | None, as_json: bool) -> None:
    """Start a manual run now and publish its scout.trigger."""
    from scout_tasks import service

    run = published(
        "scout.trigger",
        lambda out: service.trigger_run(
            engine(),
            given(source=source, max_strategies=max_strategies, triggered_by=triggered_by),
            out,
        ),
    )
    emit(run, as_json, record)


@click.group("runs")
def runs_group() -> None:
    """Inspect runs."""


@runs_group.command("list")
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
        schedule_id=schedule_id(schedule) if schedule else None,
        trigger_type=trigger_type,
    )
    with engine().connect() as conn:
        rows, _total = sql.list_runs(conn, filters, limit=limit)
    emit(rows, as_json, lambda r: table(r, RUN_COLUMNS) if r else "no runs")


@runs_group.command("show")
@click.argument("run_id")
@json_option
@handles_errors
def runs_show(run_id: str, as_json: bool) -> None:
    """Show one run."""
    from scout_tasks import runs as sql

    key = parse_uuid(run_id)
    with engine().connect() as conn:
        row = sql.get_run(conn, key)
    emit(row, as_json, record)


@runs_group.command("cancel")
@click.argument("run_id")
@json_option
@handles_errors
def runs_cancel(run_id: str, as_json: bool) -> None:
    """Cancel a pending or running run and publish scout.cancelled."""
    from scout_tasks import service

    run = published(
        "scout.cancelled", lambda out: service.cancel_run(engine(), parse_uuid(run_id), out)
    )
    emit(run, as_json, record)


@runs_group.command("prune")
@click.option(
    "--older-than",
    "days",
    type=click.IntRange(1, 36500),
    required=True,
    metavar="DAYS",
    help="Delete runs that ended more than DAYS days ago.",
)
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@json_option
@handles_errors
def runs_prune(days: int, dry_run: bool, as_json: bool) -> None:
    """Delete completed, failed and cancelled runs that ended more than DAYS days ago.

    Their recorded lifecycle events go with them; a pending or running run is
    never deleted. Works in batches of 1000 runs, one short transaction each.
    """
    from scout_tasks import retention

    report = retention.prune_runs(engine(), days, dry_run=dry_run)
    data = {
        "cutoff": report.cutoff,
        "dry_run": report.dry_run,
        "runs": report.runs,
        "events": None if report.dry_run else report.events,
        "outbox": None if report.dry_run else report.outbox,
        "batches": report.batches,
    }

    cutoff = report.cutoff.isoformat(timespec="seconds")
    if report.dry_run:
        summary = f"would delete {report.runs} run(s) that ended before {cutoff} (dry run)"
    else:
        summary = (
            f"deleted {report.runs} run(s) that ended before {cutoff}, "
            f"with {report.events} recorded event(s), in {report.batches} batch(es)"
        )
    emit(data, as_json, lambda _data: summary)
