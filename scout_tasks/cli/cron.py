"""``scout-tasks cron``: cron expression tools."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from scout_tasks.cli.common import emit, handles_errors, json_option
from scout_tasks.errors import InvalidInput


@click.group("cron")
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
    if not times:
        # Fewer than N is still an answer (exit 0); none at all is the caller's `after`.
        raise InvalidInput(
            "after",
            f"no fire time after {start.isoformat()} before the calendar ends in 9999",
        )
    emit([t.isoformat() for t in times], as_json, lambda ts: "\n".join(ts))
