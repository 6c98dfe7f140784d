"""`schedules apply` / `export` and POST /api/scout/schedules/apply, on the real servers."""

from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine
from starlette.exceptions import StarletteDeprecationWarning

from scout_tasks import apply, service
from scout_tasks.api import create_app
from tests.integration.helpers import (
    Cli,
    app_settings,
    cli_ok,
    count,
    execute,
    one_error_line,
    row,
    rows,
    scalar,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient


def _entry(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "cron_expression": "0 9 * * *",
        "source": "stratninja",
        "max_strategies": 10,
        **fields,
    }


def _write(tmp_path: Path, entries: list[dict[str, Any]], name: str = "s.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"schedules": entries}, sort_keys=False))
    return str(path)


def _history(engine: Engine) -> int:
    return count(engine, "scout_schedule_changes")


def test_apply_creates_updates_prunes_and_is_idempotent(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    service.create_schedule(engine, _entry("by-hand"))
    first = _write(tmp_path, [_entry("a"), _entry("b", jitter_seconds=30, enabled=False)])

    out = cli_ok(cli("schedules", "apply", "-f", first, "--actor", "deploy-bot"))

    assert out.splitlines()[:2] == ["+ a", "+ b"]
    created = row(engine, "SELECT * FROM scout_schedules WHERE name = 'b'")
    assert (created["managed_by"], created["jitter_seconds"], created["enabled"]) == (
        "apply",
        30,
        False,
    )
    assert created["next_run_at"] is None
    assert row(engine, "SELECT next_run_at FROM scout_schedules WHERE name = 'a'")["next_run_at"]
    actors = {
        r["actor"]
        for r in rows(
            engine,
            "SELECT c.actor FROM scout_schedule_changes c JOIN scout_schedules s"
            " ON s.id = c.schedule_id WHERE s.managed_by = 'apply'",
        )
    }
    assert actors == {"deploy-bot"}

    # Same file again: all "=", nothing written, no history.
    before = _history(engine)
    again = cli_ok(cli("schedules", "apply", "-f", first))
    assert again.splitlines()[:2] == ["= a", "= b"]
    assert "no changes" in again
    assert _history(engine) == before

    # Change one field, enable one, drop one and prune: by-hand survives.
    second = _write(
        tmp_path, [_entry("b", jitter_seconds=45, enabled=True), _entry("by-hand")], "t.yaml"
    )
    plan = json.loads(cli_ok(cli("schedules", "apply", "-f", second, "--prune", "--json")))
    assert [(p["action"], p["name"]) for p in plan] == [
        ("update", "b"),
        ("unchanged", "by-hand"),
        ("delete", "a"),
    ]
    assert plan[0]["changes"] == {"enabled": [False, True], "jitter_seconds": [30, 45]}
    names = [r["name"] for r in rows(engine, "SELECT name FROM scout_schedules ORDER BY name")]
    assert names == ["b", "by-hand"]
    enabled = row(engine, "SELECT * FROM scout_schedules WHERE name = 'b'")
    assert enabled["enabled"] and enabled["next_run_at"] is not None

    # Pruning with an empty file deletes what apply wrote, never the rest.
    empty = _write(tmp_path, [], "empty.yaml")
    assert cli_ok(cli("schedules", "apply", "-f", empty, "--prune")).splitlines()[0] == "- b"
    assert [r["name"] for r in rows(engine, "SELECT name FROM scout_schedules")] == ["by-hand"]


def test_dry_run_prints_the_plan_and_writes_nothing(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    service.create_schedule(engine, _entry("a", max_strategies=3))
    path = _write(tmp_path, [_entry("a"), _entry("new")])
    before = _history(engine)

    out = cli_ok(cli("schedules", "apply", "-f", path, "--dry-run"))

    assert out.splitlines() == [
        "~ a  max_strategies: 3 -> 10, managed_by: null -> apply",
        "+ new",
        "dry run: 1 to create, 1 to update, 0 to delete, 0 unchanged; nothing written",
    ]
    assert count(engine, "scout_schedules") == 1
    assert _history(engine) == before


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (
            "schedules:\n  - {name: ok, cron_expression: '0 9 * * *', source: s,"
            " max_strategies: 1}\n"
            "  - {name: bad, cron_expression: '0 25 * * *', source: s, max_strategies: 1}\n",
            "schedules[1].cron_expression",
        ),
        (
            "schedules:\n  - {name: x, cron_expression: '0 9 * * *', source: s, max_strategies: 1,"
            " colour: red}\n",
            "schedules[0].colour: unknown field",
        ),
        (
            "schedules:\n  - {name: x, cron_expression: '0 9 * * *', source: s,"
            " max_strategies: 1}\n"
            "  - {name: x, cron_expression: '0 9 * * *', source: s, max_strategies: 1}\n",
            "schedules[1].name",
        ),
        ("schedules: [\n", "file: YAML syntax error"),
        ("- name: x\n", "schedules: the document must be a mapping"),
        ("schedules: 3\n", "schedules: must be a list"),
        (
            "schedules:\n  - {name: x, cron_expression: '0 9 * * *', source: s,"
            " max_strategies: ten}\n",
            "schedules[0].max_strategies",
        ),
        ("\xff\xfe", "file:"),
    ],
)
def test_a_bad_file_exits_2_with_one_line_and_writes_nothing(
    cli: Cli, engine: Engine, tmp_path: Path, content: str, words: str
) -> None:
    service.create_schedule(engine, _entry("ok", max_strategies=5))
    path = tmp_path / "bad.yaml"
    path.write_bytes(content.encode("latin-1") if content.startswith("\xff") else content.encode())
    before = rows(engine, "SELECT * FROM scout_schedules")
    history = _history(engine)

    line = one_error_line(cli("schedules", "apply", "-f", str(path), "--prune"), 2)

    assert words in line
    assert rows(engine, "SELECT * FROM scout_schedules") == before
    assert _history(engine) == history


def test_a_missing_file_names_the_file(cli: Cli, tmp_path: Path) -> None:
    missing = cli("schedules", "apply", "-f", str(tmp_path / "no"))
    assert "file: cannot read" in one_error_line(missing, 2)


def test_a_failure_while_writing_rolls_every_step_back(engine: Engine) -> None:
    service.create_schedule(engine, _entry("taken"))
    # A name the database refuses only at write time: over the column's size is
    # caught by validation, so use a race instead: another session takes the name.
    document = {"schedules": [_entry("first"), _entry("late")]}

    def take_name_then_apply() -> None:
        execute(
            engine,
            "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies)"
            " VALUES ('late', '0 9 * * *', 's', 1)",
        )

    # The plan sees no "late" (its lock query ran first), the insert then collides.
    real = apply.schedules.find_for_apply

    def lock_then_race(conn: Any, names: Any, *, managed: bool) -> Any:
        found = real(conn, names, managed=managed)
        worker = threading.Thread(target=take_name_then_apply)
        worker.start()
        worker.join()
        return found

    apply.schedules.find_for_apply = lock_then_race  # type: ignore[assignment]
    try:
        with pytest.raises(Exception, match="late"):
            apply.apply(engine, document)
    finally:
        apply.schedules.find_for_apply = real  # type: ignore[assignment]
    names = {r["name"] for r in rows(engine, "SELECT name FROM scout_schedules")}
    assert names == {"taken", "late"}  # "first" was rolled back with the failed step


def test_export_round_trips_with_no_change(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    service.create_schedule(
        engine,
        _entry(
            "tricky: 'name' # x",
            timezone="America/New_York",
            description="two\nlines ünïcode",
            jitter_seconds=59,
            misfire_policy="catch_up",
            misfire_grace_seconds=0,
            overlap_policy="skip",
        ),
    )
    service.create_schedule(engine, _entry("off", enabled=False, cron_expression="@hourly"))
    service.pause(engine, "tricky: 'name' # x", reason="agents down")
    out = tmp_path / "export.yaml"
    cli_ok(cli("schedules", "export", "-o", str(out)))
    before = rows(engine, "SELECT * FROM scout_schedules ORDER BY name")
    history = _history(engine)

    plan = json.loads(cli_ok(cli("schedules", "apply", "-f", str(out), "--json")))

    assert [p["action"] for p in plan] == ["unchanged", "unchanged"]
    assert rows(engine, "SELECT * FROM scout_schedules ORDER BY name") == before
    assert _history(engine) == history
    # And stdout carries the same document; --json too, which apply reads as well.
    assert yaml.safe_load(cli_ok(cli("schedules", "export"))) == yaml.safe_load(out.read_text())
    as_json = tmp_path / "export.json"
    cli_ok(cli("schedules", "export", "--json", "-o", str(as_json)))
    assert json.loads(as_json.read_text()) == yaml.safe_load(out.read_text())
    again = json.loads(cli_ok(cli("schedules", "apply", "-f", str(as_json), "--json")))
    assert [p["action"] for p in again] == ["unchanged", "unchanged"]


def test_export_refuses_a_schedule_apply_would_refuse(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    # Plain SQL can store what the write rules refuse (cron is checked by
    # scout-tasks, not the database); exporting it would make a file that
    # apply rejects, so export says which schedule and writes nothing.
    service.create_schedule(engine, _entry("fine"))
    execute(
        engine,
        "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies)"
        " VALUES ('never', '0 0 30 2 *', 'sql', 2)",
    )
    out = tmp_path / "export.yaml"

    line = one_error_line(cli("schedules", "export", "-o", str(out)), 2)

    assert line.startswith("scout-tasks: error: schedules[1].cron_expression: ")
    assert "'never'" in line and "can never fire" in line
    assert not out.exists()


def test_http_apply_returns_the_plan_and_refuses_like_the_cli(
    db_url: str, broker_url: str, exchange_name: str, engine: Engine
) -> None:
    settings = app_settings(db_url, broker_url, exchange_name)
    with TestClient(create_app(settings)) as client:
        url = "/api/scout/schedules/apply"
        body = {"schedules": [_entry("h1"), _entry("h2")]}
        dry = client.post(url, json={**body, "dry_run": True})
        assert dry.status_code == 200, dry.text
        assert [p["action"] for p in dry.json()["plan"]] == ["create", "create"]
        assert count(engine, "scout_schedules") == 0

        done = client.post(url, json=body, headers={"X-Scout-Actor": "ci"})
        assert done.json()["applied"] is True
        # A created schedule's object carries its new id, as every other step's does.
        made = {
            r["name"]: str(r["id"]) for r in rows(engine, "SELECT id, name FROM scout_schedules")
        }
        assert {p["name"]: p["id"] for p in done.json()["plan"]} == made
        assert scalar(engine, "SELECT count(*) FROM scout_schedule_changes WHERE actor = 'ci'") == 2

        again = client.post(url, json=body)
        assert again.json()["applied"] is False
        assert {p["action"] for p in again.json()["plan"]} == {"unchanged"}

        bad = client.post(url, json={"schedules": [_entry("h1"), _entry("h3", source="")]})
        assert bad.status_code == 422
        assert bad.json()["field"] == "schedules[1].source"
        for wrong, field in (
            ({"schedules": {}}, "schedules"),
            ({"schedules": [], "prune": "yes"}, "prune"),
            ({"schedules": [], "force": True}, "force"),
            ({}, "schedules"),
        ):
            refused = client.post(url, json=wrong)
            assert (refused.status_code, refused.json()["field"]) == (422, field), wrong
        pruned = client.post(url, json={"schedules": [_entry("h1")], "prune": True})
        assert [(p["action"], p["name"]) for p in pruned.json()["plan"]] == [
            ("unchanged", "h1"),
            ("delete", "h2"),
        ]
        assert count(engine, "scout_schedules") == 1


def test_apply_locks_only_the_rows_it_writes(engine: Engine) -> None:
    apply.apply(engine, {"schedules": [_entry("busy"), _entry("edited")]})
    # Another transaction (a fire batch, an operator) holds "busy".
    with engine.connect() as holder:
        holder.begin()
        holder.exec_driver_sql("SELECT 1 FROM scout_schedules WHERE name = 'busy' FOR UPDATE")
        done = threading.Event()

        def run() -> None:
            apply.apply(engine, {"schedules": [_entry("busy"), _entry("edited", description="x")]})
            done.set()

        worker = threading.Thread(target=run)
        worker.start()
        finished = done.wait(timeout=10)
        holder.rollback()
        worker.join()
    assert finished, "apply waited for a row it does not change"
    assert row(engine, "SELECT description FROM scout_schedules WHERE name = 'edited'") == {
        "description": "x"
    }
