"""``scout-tasks status``: is scheduling healthy? Exit 0 when it is, 1 when not.

For operators, scripts and container healthchecks (docker-compose's beat runs
it). A database that cannot be reached is one line on stderr and exit 1, like
any other command's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from scout_tasks.cli.common import emit, engine, handles_errors, json_option


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m {seconds % 60}s ago"
    return f"{seconds // 3600}h {seconds % 3600 // 60}m ago"


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


def render(report: dict[str, Any]) -> str:
    beat = report["beat"]
    if beat is None:
        beat_line = "no beat has ticked yet"
    else:
        beat_line = (
            f"{beat['leader']}, last tick {_ago(beat['last_tick_age_seconds'])} "
            f"({_when(beat['last_tick_at'])}), every {beat['tick_seconds']:g}s"
        )
    schedules, out, runs = report["schedules"], report["outbox"], report["runs"]
    oldest = (
        f", oldest {_ago(out['oldest_age_seconds'])} ({_when(out['oldest_created_at'])})"
        if out["backlog"]
        else ""
    )
    lines = [
        f"beat       {beat_line}",
        f"schedules  {schedules['enabled']} enabled, {schedules['due']} due, "
        f"{schedules['overdue']} overdue"
        + (f", {schedules['cannot_fire']} cannot fire" if schedules["cannot_fire"] else ""),
        f"outbox     {out['backlog']} event(s) waiting{oldest}",
        f"runs       {runs['pending']} pending, {runs['running']} running",
    ]
    if report["healthy"]:
        lines.append("status     healthy")
    else:
        lines.append("status     UNHEALTHY")
        lines += [f"  - {problem}" for problem in report["problems"]]
    return "\n".join(lines)


@click.command("status")
@click.option(
    "--only",
    type=click.Choice(["beat"]),
    default=None,
    help="Judge only this: `beat` is healthy iff a beat leads and ticked within 3 of its "
    "periods (the beat container's healthcheck).",
)
@json_option
@handles_errors
def status(only: str | None, as_json: bool) -> int:
    """The leading beat's last tick, schedules due and overdue, the outbox, active runs.

    Exit 0 when healthy; 1 when the beat is silent (no tick for 3 of its
    periods), schedules are overdue, the outbox is stuck, or the database
    cannot be reached. With ``--only beat``, only the first counts.
    """
    from scout_tasks import health

    snap = health.snapshot(engine())
    report = health.report(snap, only)
    emit(report, as_json, render)
    return 0 if report["healthy"] else 1
