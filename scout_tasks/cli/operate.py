"""``scout-tasks schedules apply | export | backfill``: schedules as code, and re-running slots.

Added to the ``schedules`` group by :mod:`scout_tasks.cli`.
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Any

import click

from scout_tasks.cli.common import emit, engine, handles_errors, json_option, publisher
from scout_tasks.errors import InvalidInput

actor_option = click.option(
    "--actor", default=None, help="Who acts, for the history (default: your login name)."
)


def _actor(value: str | None) -> str | None:
    if value is not None:
        return value
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def _read(path: str) -> str:
    """The file's text (``-`` is stdin); unreadable or not UTF-8 is bad input naming ``file``."""
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput("file", f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("file", f"{path} is not UTF-8 text") from None


@click.command("apply")
@click.option("-f", "--file", "path", required=True, help="The YAML file ('-': stdin).")
@click.option("--dry-run", is_flag=True, help="Print the plan, write nothing.")
@click.option("--prune", is_flag=True, help="Delete schedules apply wrote that the file omits.")
@actor_option
@json_option
@handles_errors
def schedules_apply(
    path: str, dry_run: bool, prune: bool, actor: str | None, as_json: bool
) -> None:
    """Make the schedules match a YAML file: {"schedules": [{name, cron_expression, ...}]}.

    Prints the plan, one line per schedule: "+" create, "~" update (field: old
    -> new), "-" delete (with --prune), "=" unchanged; then applies it in one
    transaction. An invalid file writes nothing and exits 2.
    """
    from scout_tasks import apply, manifest

    document = manifest.load_yaml(_read(path))
    plan = apply.apply(engine(), document, dry_run=dry_run, prune=prune, actor=_actor(actor))

    def text(_: Any) -> str:
        lines = [step.line() for step in plan.steps] or ["(no schedules in the file)"]
        if dry_run:
            tail = f"dry run: {plan.summary()}; nothing written"
        elif plan.changes:
            tail = f"applied: {plan.summary()}"
        else:
            tail = f"no changes: {plan.summary()}"
        return "\n".join([*lines, tail])

    emit([step.as_dict() for step in plan.steps], as_json, text)


@click.command("export")
@click.option("-o", "--output", default=None, help="Write to this file (default: stdout).")
@json_option
@handles_errors
def schedules_export(output: str | None, as_json: bool) -> None:
    """Write every schedule as YAML (or JSON) that `schedules apply` accepts with no change."""
    from scout_tasks import apply, manifest

    document = apply.export(engine())
    # JSON is YAML too: apply reads either.
    text = (
        json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        if as_json
        else manifest.dump_yaml(document)
    )
    if output is None or output == "-":
        click.echo(text, nl=False)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InvalidInput("output", f"cannot write {output}: {exc.strerror or exc}") from None


@click.command("backfill")
@click.argument("schedule")
@click.option("--from", "start", required=True, help="First instant, ISO 8601 (no offset: UTC).")
@click.option("--to", "end", required=True, help="End instant, excluded, ISO 8601.")
@click.option("--dry-run", is_flag=True, help="List the slots, write nothing.")
@json_option
@handles_errors
def schedules_backfill(schedule: str, start: str, end: str, dry_run: bool, as_json: bool) -> None:
    """Create a run for every slot in [--from, --to) that has none (at most 1000 slots)."""
    from scout_tasks import backfill

    pub = None if dry_run else publisher()
    try:
        result = backfill.backfill(engine(), schedule, start, end, dry_run=dry_run, publisher=pub)
    finally:
        if pub is not None:
            pub.close()

    def text(data: dict[str, Any]) -> str:
        marks = {"created": "+", "would_create": "+", "exists": "="}
        lines = [f"{marks[s['status']]} {s['slot']}" for s in data["slots"]]
        new = len(result.created)
        if dry_run:
            lines.append(f"dry run: {new} run(s) to create, {data['existing']} slot(s) have one")
        else:
            lines.append(f"{new} run(s) created, {data['existing']} slot(s) already had one")
            if new and not result.delivered:
                lines.append("events kept in the outbox; the next tick delivers them")
        return "\n".join(lines)

    emit(result.as_dict(), as_json, text)
