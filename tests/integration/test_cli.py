"""The real ``scout-tasks`` console script, in a subprocess, against the real servers."""

from __future__ import annotations

import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from scout_tasks import service
from scout_tasks.tables import runs as runs_table
from scout_tasks.tables import schedules as schedules_table
from tests.integration.helpers import (
    Cli,
    cli_json,
    cli_ok,
    count,
    counts,
    one_error_line,
    row,
    rows,
)

# The columns, like the API's object, plus the expression in plain English.
SCHEDULE_KEYS = {c.name for c in schedules_table.c} | {"cron_description"}
RUN_KEYS = {c.name for c in runs_table.c}
NO_BROKER = "amqp://guest:guest@127.0.0.1:1/"


def _parallel(cli: Cli, *commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Independent commands run side by side (each one is a whole Python start)."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda args: cli(*args), commands))


def _instant(value: str) -> datetime:
    """An ISO 8601 timestamp that carries its UTC offset."""
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, f"{value!r} has no offset"
    return parsed


def _check_timestamps(obj: dict[str, Any], columns: Any) -> None:
    for column in columns:
        if column.type.python_type is datetime and obj[column.name] is not None:
            _instant(obj[column.name])


ADD = ["schedules", "add"]


def _add_args(name: str) -> list[str]:
    return [*ADD, name, "--cron", "0 2 * * *", "--source", "stratninja", "--max-strategies", "10"]


# --- schedules add ---------------------------------------------------------------------


def test_add_human_and_json(cli: Cli, engine: Engine) -> None:
    human = cli_ok(cli(*_add_args("Daily Scout Run")))
    assert "Daily Scout Run" in human
    assert "next_run_at" in human

    created = cli_json(
        cli(
            *ADD,
            "Tokyo morning",
            "--cron",
            "30 6 * * MON-FRI",
            "--source",
            "stratninja",
            "--max-strategies",
            "25",
            "--timezone",
            "Asia/Tokyo",
            "--json",
        )
    )

    assert set(created) == SCHEDULE_KEYS
    _check_timestamps(created, schedules_table.c)
    assert uuid.UUID(created["id"])
    assert created["name"] == "Tokyo morning"
    assert created["timezone"] == "Asia/Tokyo"
    assert created["max_strategies"] == 25
    assert created["enabled"] is True
    assert _instant(created["next_run_at"]) > datetime.now(UTC)
    stored = row(engine, "SELECT * FROM scout_schedules WHERE name = 'Tokyo morning'")
    assert str(stored["id"]) == created["id"]
    assert stored["next_run_at"] == _instant(created["next_run_at"])
    assert count(engine, "scout_schedules") == 2


def test_add_disabled(cli: Cli) -> None:
    created = cli_json(cli(*_add_args("off"), "--disabled", "--json"))
    assert created["enabled"] is False
    assert created["next_run_at"] is None


# (what is wrong, the options that differ from a valid add, the field the error must name)
REFUSALS = [
    ("bad cron", ["--cron", "61 * * * *"], "cron_expression"),
    ("cron that never fires", ["--cron", "0 0 30 2 *"], "cron_expression"),
    ("bad timezone", ["--timezone", "Mars/Olympus"], "timezone"),
    ("max-strategies 0", ["--max-strategies", "0"], "max_strategies"),
    ("max-strategies 1001", ["--max-strategies", "1001"], "max_strategies"),
    ("max-strategies not an integer", ["--max-strategies", "ten"], "max-strategies"),
    ("source too long", ["--source", "s" * 51], "source"),
    ("duplicate name", ["--name", "existing"], "name"),
]


def test_add_refusals(cli: Cli, engine: Engine) -> None:
    """Every refusal: exit 2, one stderr line naming the field, no traceback, no row.

    The cases are independent subprocesses, so they run side by side.
    """
    service.create_schedule(
        engine,
        {"name": "existing", "cron_expression": "0 * * * *", "source": "x", "max_strategies": 1},
    )
    before = counts(engine)

    def attempt(args: list[str]) -> subprocess.CompletedProcess[str]:
        options = {
            "--name": "new one",
            "--cron": "0 2 * * *",
            "--source": "stratninja",
            "--max-strategies": "10",
        }
        options.update(dict(zip(args[::2], args[1::2], strict=True)))
        name = options.pop("--name")
        return cli(*ADD, name, *[part for pair in options.items() for part in pair])

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(attempt, [args for _label, args, _field in REFUSALS]))

    problems = []
    for (label, _args, field), result in zip(REFUSALS, results, strict=True):
        lines = result.stderr.strip().splitlines()
        if (
            result.returncode != 2
            or len(lines) != 1
            or field not in lines[0]
            or "Traceback" in result.stderr
        ):
            problems.append(f"{label}: exit {result.returncode}, stderr {result.stderr!r}")
    assert problems == []
    assert counts(engine) == before


# --- list / show / enable / disable / rm ---------------------------------------------------


def test_list_show_enable_disable_rm(cli: Cli, engine: Engine) -> None:
    a = service.create_schedule(
        engine,
        {"name": "alpha", "cron_expression": "0 * * * *", "source": "s", "max_strategies": 1},
    )
    service.create_schedule(
        engine,
        {"name": "beta", "cron_expression": "5 4 * * *", "source": "s", "max_strategies": 2},
    )

    listed, human, by_name, by_id = _parallel(
        cli,
        ["schedules", "list", "--json"],
        ["schedules", "list"],
        ["schedules", "show", "alpha", "--json"],
        ["schedules", "show", str(a["id"]), "--json"],
    )

    listed = cli_json(listed)
    assert [s["name"] for s in listed] == ["alpha", "beta"]
    for item in listed:
        assert set(item) == SCHEDULE_KEYS
        _check_timestamps(item, schedules_table.c)
    assert "alpha" in cli_ok(human)
    by_name, by_id = cli_json(by_name), cli_json(by_id)
    assert by_name == by_id
    assert by_name["id"] == str(a["id"])
    assert _instant(by_name["next_run_at"]) == a["next_run_at"]

    disabled = cli_json(cli("schedules", "disable", "alpha", "--json"))
    assert disabled["enabled"] is False
    assert disabled["next_run_at"] is None
    assert row(engine, "SELECT enabled FROM scout_schedules WHERE name = 'alpha'") == {
        "enabled": False
    }

    enabled = cli_json(cli("schedules", "enable", str(a["id"]), "--json"))
    assert enabled["enabled"] is True
    assert _instant(enabled["next_run_at"]) > datetime.now(UTC)

    cli_ok(cli("schedules", "rm", "alpha", "--json"))
    remaining, gone = _parallel(
        cli, ["schedules", "list", "--json"], ["schedules", "show", "alpha"]
    )

    assert [s["name"] for s in cli_json(remaining)] == ["beta"]
    assert "alpha" in one_error_line(gone, 2)


# --- trigger and runs ------------------------------------------------------------------------


def test_trigger_runs_list_show_cancel(cli: Cli, engine: Engine, event_queue) -> None:
    run = cli_json(cli("trigger", "--source", "stratninja", "--max-strategies", "7", "--json"))

    assert set(run) == RUN_KEYS
    _check_timestamps(run, runs_table.c)
    assert run["trigger_type"] == "manual"
    assert run["status"] == "pending"
    assert run["schedule_id"] is None
    assert run["scheduled_for"] is None
    events = event_queue.get(timeout=10)
    assert len(events) == 1
    assert events[0].routing_key == "scout.trigger"
    assert events[0].body["run_id"] == run["id"]
    assert events[0].body["trigger_type"] == "manual"
    assert events[0].body["max_strategies"] == 7
    assert count(engine, "scout_outbox") == 0

    listed, human, shown = _parallel(
        cli, ["runs", "list", "--json"], ["runs", "list"], ["runs", "show", run["id"], "--json"]
    )

    listed = cli_json(listed)
    assert [r["id"] for r in listed] == [run["id"]]
    assert set(listed[0]) == RUN_KEYS
    assert run["id"] in cli_ok(human)
    assert cli_json(shown) == run

    cancelled = cli_json(cli("runs", "cancel", run["id"], "--json"))
    assert cancelled["status"] == "cancelled"
    _instant(cancelled["completed_at"])
    events = event_queue.get(timeout=10)
    assert [e.routing_key for e in events] == ["scout.cancelled"]
    assert events[0].body["run_id"] == run["id"]

    again, bad_id = _parallel(cli, ["runs", "cancel", run["id"]], ["runs", "show", "not-a-uuid"])

    assert "cancelled" in one_error_line(again, 2)
    assert event_queue.get(timeout=0.5) == []
    assert "id" in one_error_line(bad_id, 2)


def test_trigger_refusals_write_nothing(cli: Cli, engine: Engine) -> None:
    def attempt(value: str) -> subprocess.CompletedProcess[str]:
        return cli("trigger", "--source", "stratninja", "--max-strategies", value)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(attempt, ["0", "1001"]))

    for result in results:
        assert "max_strategies" in one_error_line(result, 2)
    assert counts(engine) == {"scout_schedules": 0, "scout_runs": 0, "scout_outbox": 0}


def test_trigger_with_the_broker_down_keeps_the_event(cli: Cli, engine: Engine) -> None:
    result = cli(
        "trigger",
        "--source",
        "stratninja",
        "--max-strategies",
        "3",
        "--json",
        SCOUT_BROKER_URL=NO_BROKER,
    )

    run = cli_json(result)
    warning = result.stderr.strip().splitlines()
    assert len(warning) == 1
    assert "scout.trigger" in warning[0] and "outbox" in warning[0]
    kept = row(engine, "SELECT run_id FROM scout_outbox")
    assert str(kept["run_id"]) == run["id"]


def test_cancel_with_the_broker_down_keeps_the_event(cli: Cli, engine: Engine) -> None:
    made, _ = service.trigger_run(engine, {"source": "stratninja", "max_strategies": 3}, None)
    result = cli("runs", "cancel", str(made["id"]), "--json", SCOUT_BROKER_URL=NO_BROKER)

    assert cli_json(result)["status"] == "cancelled"
    warning = result.stderr.strip().splitlines()
    assert len(warning) == 1
    assert "scout.cancelled" in warning[0] and "outbox" in warning[0]
    kept = rows(engine, "SELECT routing_key FROM scout_outbox WHERE run_id = :id", id=made["id"])
    assert "scout.cancelled" in {k["routing_key"] for k in kept}


# --- cron next -----------------------------------------------------------------------------


def test_cron_next_across_the_fall_back_night(cli: Cli) -> None:
    out = cli_ok(
        cli(
            "cron",
            "next",
            "30 1 * * *",
            "--timezone",
            "America/New_York",
            "--after",
            "2024-11-02T12:00:00Z",
            "-n",
            "3",
        )
    )
    assert out.splitlines() == [
        "2024-11-03T01:30:00-04:00",
        "2024-11-04T01:30:00-05:00",
        "2024-11-05T01:30:00-05:00",
    ]


def test_cron_next_refuses_a_bad_expression(cli: Cli) -> None:
    line = one_error_line(cli("cron", "next", "0 0 30 2 *"), 2)
    assert "cron" in line


# --- servers out of reach ---------------------------------------------------------------------


def test_an_unreachable_database_is_one_line_and_exit_1(cli: Cli) -> None:
    result = cli(
        "schedules", "list", SCOUT_DATABASE_URL="postgresql+psycopg2://postgres@127.0.0.1:1/x"
    )
    line = one_error_line(result, 1)
    assert "database" in line
