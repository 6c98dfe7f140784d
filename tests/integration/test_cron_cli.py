"""Debian's cron rules through the real ``scout-tasks`` console script (issue 10, point 4).

Expectations are written by hand from Debian cron's rules (see tests/unit/test_cron.py).
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine

from tests.integration.helpers import Cli, cli_ok, count, one_error_line, row


def _refused(result: subprocess.CompletedProcess[str]) -> str:
    line = one_error_line(result, 2)
    assert "cron" in line
    return line


@pytest.mark.parametrize(
    ("expr", "zone", "after", "expected"),
    [
        # Midnight is not touched by New York's spring-forward night.
        ("@daily", "America/New_York", "2024-03-09T17:00:00Z",
         ["2024-03-10T00:00:00-05:00", "2024-03-11T00:00:00-04:00"]),
        # @hourly is a wildcard job: both 01:00s of the fall-back night.
        (" @hourly ", "America/New_York", "2024-11-03T04:30:00Z",
         ["2024-11-03T01:00:00-04:00", "2024-11-03T01:00:00-05:00",
          "2024-11-03T02:00:00-05:00"]),
        ("@weekly", "Europe/Riga", "2024-03-30T10:00:00Z",
         ["2024-03-31T00:00:00+02:00", "2024-04-07T00:00:00+03:00"]),
        # A one-value range with a step: 04:00 only, not every hour from 04:00.
        ("0 4-4/1 * * *", "UTC", "2024-03-04T00:00:00Z",
         ["2024-03-04T04:00:00+00:00", "2024-03-05T04:00:00+00:00",
          "2024-03-06T04:00:00+00:00"]),
        ("0 0 * * MON-FRI/2", "UTC", "2024-03-04T00:00:00Z",
         ["2024-03-06T00:00:00+00:00", "2024-03-08T00:00:00+00:00",
          "2024-03-11T00:00:00+00:00"]),
    ],
)  # fmt: skip
def test_cron_next(cli: Cli, expr: str, zone: str, after: str, expected: list[str]) -> None:
    out = cli_ok(
        cli("cron", "next", expr, "--timezone", zone, "--after", after, "-n", str(len(expected)))
    )
    assert out.splitlines() == expected


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("@reboot", "means nothing to a scheduler"),
        ("@DAILY", "nicknames are lowercase"),
        ("0 0 31 4-4/1 *", "can never fire"),
        ("0 0 30 2 *", "can never fire"),
        ("5/10 * * * *", "a step needs a range"),
    ],
)
def test_cron_next_refusals(cli: Cli, expr: str, problem: str) -> None:
    assert problem in _refused(cli("cron", "next", expr))


def test_cron_next_at_the_end_of_the_calendar_prints_what_exists(cli: Cli) -> None:
    # No fire time exists after the last midnight: one line naming `after`, exit 2.
    for expr, after in (("@daily", "9999-12-31T12:00:00Z"), ("* * * * *", "9999-12-31T23:59:00Z")):
        result = cli("cron", "next", expr, "--after", after, "-n", "3")
        assert result.returncode == 2, result.stdout
        assert result.stdout == ""
        assert result.stderr.strip().splitlines() == [
            f"scout-tasks: error: after: no fire time after {after.replace('Z', '+00:00')} "
            "before the calendar ends in 9999"
        ]
    # Fewer than N: those that exist, exit 0.
    out = cli_ok(cli("cron", "next", "@hourly", "--after", "9999-12-31T21:30:00Z", "-n", "5"))
    assert out.splitlines() == ["9999-12-31T22:00:00+00:00", "9999-12-31T23:00:00+00:00"]


def _add(cli: Cli, name: str, expr: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli(
        "schedules", "add", name, "--cron", expr, "--source", "stratninja",
        "--max-strategies", "10", *extra,
    )  # fmt: skip


def test_schedules_add_keeps_the_nickname(cli: Cli, engine: Engine) -> None:
    created = json.loads(cli_ok(_add(cli, "hourly", "@hourly", "--json")))
    assert created["cron_expression"] == "@hourly"
    next_run = datetime.fromisoformat(created["next_run_at"])
    assert next_run > datetime.now(UTC)
    assert (next_run.minute, next_run.second) == (0, 0)
    assert row(engine, "SELECT cron_expression FROM scout_schedules WHERE name = 'hourly'") == {
        "cron_expression": "@hourly"
    }

    riga = json.loads(cli_ok(_add(cli, "riga", "@daily", "--timezone", "Europe/Riga", "--json")))
    local = datetime.fromisoformat(riga["next_run_at"]).astimezone(ZoneInfo("Europe/Riga"))
    assert (local.hour, local.minute) == (0, 0)

    listed = json.loads(cli_ok(cli("schedules", "list", "--json")))
    assert sorted(s["cron_expression"] for s in listed) == ["@daily", "@hourly"]


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("@reboot", "means nothing to a scheduler"),
        ("@DAILY", "nicknames are lowercase"),
        ("0 0 31 4-4/1 *", "can never fire"),
    ],
)
def test_schedules_add_refusals_write_nothing(
    cli: Cli, engine: Engine, expr: str, problem: str
) -> None:
    line = _refused(_add(cli, "bad", expr))
    assert problem in line
    assert count(engine, "scout_schedules") == 0
