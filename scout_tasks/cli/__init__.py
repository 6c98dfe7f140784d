"""The ``scout-tasks`` command line: one module per command group.

Every command that prints data takes ``--json``. Errors are one line on
stderr: exit code 2 for bad input (naming the field), 1 when a server cannot
be reached; never a traceback (see :mod:`scout_tasks.cli.common`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import click

from scout_tasks.cli.common import CliError
from scout_tasks.cli.control import COMMANDS as STEERING
from scout_tasks.cli.cron import cron_group
from scout_tasks.cli.db import db_group
from scout_tasks.cli.operate import schedules_apply, schedules_backfill, schedules_export
from scout_tasks.cli.runs import runs_group, trigger
from scout_tasks.cli.schedules import schedules_group
from scout_tasks.cli.serve import api, dev
from scout_tasks.cli.status import status

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="scout-tasks")
def cli() -> None:
    """scout-tasks: cron schedules for Scout runs (Celery + PostgreSQL + RabbitMQ)."""


for _command in (db_group, schedules_group, trigger, runs_group, cron_group, status, api, dev):
    cli.add_command(_command)
for _command in (schedules_apply, schedules_export, schedules_backfill, *STEERING):
    schedules_group.add_command(_command)


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
