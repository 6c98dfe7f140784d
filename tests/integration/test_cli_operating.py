"""``scout-tasks schedules run|pause|resume|history`` and ``cron_description``, as a subprocess."""

from __future__ import annotations

import getpass
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.conftest import EventQueue
from tests.integration.helpers import Cli, cli_json, counts, execute, one_error_line, row


@pytest.fixture
def daily(cli: Cli) -> dict[str, Any]:
    return cli_json(  # type: ignore[no-any-return]
        cli(
            "schedules",
            "add",
            "Daily Scout Run",
            "--cron",
            "0 9 * * MON-FRI",
            "--source",
            "stratninja",
            "--max-strategies",
            "10",
            "--timezone",
            "Europe/Berlin",
            "--json",
        )
    )


def test_show_and_list_carry_the_cron_description(cli: Cli, daily: dict[str, Any]) -> None:
    assert daily["cron_description"] == "At 09:00, Monday through Friday"
    shown = cli_json(cli("schedules", "show", "Daily Scout Run", "--json"))
    assert shown["cron_description"] == "At 09:00, Monday through Friday"
    text = cli("schedules", "show", "Daily Scout Run").stdout
    assert "cron_description" in text and "At 09:00, Monday through Friday" in text
    listed = cli_json(cli("schedules", "list", "--json"))
    assert [s["cron_description"] for s in listed] == ["At 09:00, Monday through Friday"]


def test_run_now_by_name_publishes_a_manual_run_of_the_schedule(
    cli: Cli, daily: dict[str, Any], event_queue: EventQueue
) -> None:
    run = cli_json(cli("schedules", "run", "Daily Scout Run", "--actor", "dana", "--json"))
    assert run["schedule_id"] == daily["id"]
    assert (run["trigger_type"], run["scheduled_for"], run["triggered_by"]) == (
        "manual",
        None,
        "dana",
    )
    [event] = event_queue.get(count=1)
    assert (event.routing_key, event.body["run_id"]) == ("scout.trigger", run["id"])
    assert event.body["schedule_id"] == daily["id"]
    by_id = cli_json(cli("schedules", "run", daily["id"], "--json"))
    assert by_id["schedule_id"] == daily["id"]


def test_pause_resume_and_history_name_the_login_or_the_actor(
    cli: Cli, engine: Engine, daily: dict[str, Any]
) -> None:
    paused = cli_json(
        cli("schedules", "pause", "Daily Scout Run", "--reason", "vendor outage", "--json")
    )
    assert (paused["enabled"], paused["paused_reason"]) == (False, "vendor outage")
    assert paused["paused_by"] == getpass.getuser()
    assert paused["cron_description"] == "At 09:00, Monday through Friday"
    resumed = cli_json(cli("schedules", "resume", "Daily Scout Run", "--actor", "erin", "--json"))
    assert (resumed["enabled"], resumed["paused_reason"]) == (True, None)
    execute(engine, "UPDATE scout_schedules SET max_strategies = 3 WHERE id = :id", id=daily["id"])

    history = cli_json(cli("schedules", "history", "Daily Scout Run", "--json"))
    assert [(h["action"], h["actor"]) for h in history][1:] == [
        ("resume", "erin"),
        ("pause", getpass.getuser()),
        ("create", getpass.getuser()),
    ]
    assert history[0]["changes"] == {"max_strategies": [10, 3]}
    assert history[0]["actor"].startswith("postgres")
    text = cli("schedules", "history", "Daily Scout Run").stdout
    assert "max_strategies: 10 -> 3" in text
    assert "paused_reason: null -> vendor outage" in text


def test_pause_without_a_usable_reason_is_one_line_exit_2_and_writes_nothing(
    cli: Cli, engine: Engine, daily: dict[str, Any]
) -> None:
    before = counts(engine)
    line = one_error_line(cli("schedules", "pause", "Daily Scout Run", "--reason", ""), 2)
    assert "reason" in line
    line = one_error_line(cli("schedules", "pause", "Daily Scout Run", "--reason", "x" * 501), 2)
    assert "reason" in line
    assert counts(engine) == before
    assert row(engine, "SELECT enabled FROM scout_schedules WHERE id = :id", id=daily["id"])[
        "enabled"
    ]


def test_unknown_schedules_and_bad_actors_are_exit_2(cli: Cli, daily: dict[str, Any]) -> None:
    for args in (
        ("schedules", "run", "nope"),
        ("schedules", "pause", "nope", "--reason", "x"),
        ("schedules", "resume", "nope"),
        ("schedules", "history", "nope"),
    ):
        assert "nope" in one_error_line(cli(*args), 2), args
    line = one_error_line(
        cli("schedules", "pause", "Daily Scout Run", "--reason", "x", "--actor", "a\tb"), 2
    )
    assert "actor" in line
