"""Migrations: empty to head, no drift from tables.py, down and up again, idempotent."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.pool import NullPool

from scout_tasks import migrate
from scout_tasks.tables import metadata
from tests.integration.helpers import REPO_ROOT, empty_database, run_cli

TABLES = {"scout_schedules", "scout_runs", "scout_outbox"}
SCRIPTS = ScriptDirectory.from_config(migrate.alembic_config("unused"))
HEAD = SCRIPTS.get_current_head()
FIRST = SCRIPTS.get_base()


def _engine(url: str) -> Engine:
    return create_engine(url, poolclass=NullPool)


def _drift(url: str) -> list[object]:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = _engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _triggers(url: str) -> set[str]:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return set(
                conn.execute(
                    text(
                        "SELECT tgname FROM pg_trigger "
                        "WHERE tgrelid = 'scout_schedules'::regclass AND NOT tgisinternal"
                    )
                ).scalars()
            )
    finally:
        engine.dispose()


@pytest.fixture
def empty_url() -> Iterator[str]:
    with empty_database() as url:
        yield url


def test_upgrade_from_empty_matches_the_models(empty_url: str) -> None:
    assert _tables(empty_url) == set()
    migrate.upgrade(empty_url)

    assert _tables(empty_url) >= TABLES
    assert migrate.current(empty_url) == HEAD
    assert _drift(empty_url) == []
    assert _triggers(empty_url) == {"scout_schedules_before_update", "scout_schedules_notify"}

    # The comparison is not vacuous: a hand-made change shows up as drift.
    engine = _engine(empty_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE scout_outbox DROP COLUMN last_error"))
    finally:
        engine.dispose()
    assert _drift(empty_url) != []


def test_downgrade_to_base_and_upgrade_again(empty_url: str) -> None:
    migrate.upgrade(empty_url)
    migrate.downgrade(empty_url, "base")

    assert _tables(empty_url) - {"alembic_version"} == set()
    assert migrate.current(empty_url) is None
    engine = _engine(empty_url)
    try:
        with engine.connect() as conn:
            leftovers = conn.execute(
                text("SELECT proname FROM pg_proc WHERE proname LIKE 'scout_%'")
            ).all()
    finally:
        engine.dispose()
    assert leftovers == []

    # One revision at a time, as a database created by an older release would go.
    migrate.upgrade(empty_url, FIRST)
    assert migrate.current(empty_url) == FIRST
    migrate.upgrade(empty_url)
    assert migrate.current(empty_url) == HEAD
    assert _drift(empty_url) == []
    assert len(_triggers(empty_url)) == 2


def test_upgrading_twice_is_harmless(db_url: str, engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies) "
                "VALUES ('keep me', '0 * * * *', 'stratninja', 5)"
            )
        )
    migrate.upgrade(db_url)
    migrate.upgrade(db_url)

    assert migrate.current(db_url) == HEAD
    assert _drift(db_url) == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM scout_schedules")).scalars().all() == ["keep me"]


def test_db_upgrade_command(empty_url: str, tmp_path: Path) -> None:
    result = run_cli("db", "upgrade", env={"SCOUT_DATABASE_URL": empty_url}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert migrate.current(empty_url) == HEAD
    assert _drift(empty_url) == []

    again = run_cli("db", "upgrade", env={"SCOUT_DATABASE_URL": empty_url}, cwd=tmp_path)
    assert again.returncode == 0, again.stderr


def test_alembic_from_the_repo_root(empty_url: str) -> None:
    """docs/contract.md: `alembic upgrade head` from the repo root works too."""
    root = REPO_ROOT
    if not (root / "alembic.ini").exists():
        pytest.fail("alembic.ini is missing from the repo root")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOUT_")}
    env["SCOUT_DATABASE_URL"] = empty_url
    result = subprocess.run(
        [str(Path(sys.executable).with_name("alembic")), "upgrade", "head"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert migrate.current(empty_url) == HEAD


def test_timestamps_are_timestamptz(engine: Engine) -> None:
    with engine.connect() as conn:
        found = conn.execute(
            text(
                """
                SELECT table_name, column_name, data_type
                FROM information_schema.columns
                WHERE table_schema = 'public' AND table_name LIKE 'scout_%'
                  AND (data_type LIKE 'timestamp%' OR column_name LIKE '%\\_at'
                       OR column_name = 'scheduled_for')
                """
            )
        ).all()
    by_column = {(t, c): d for t, c, d in found}
    expected = {
        ("scout_schedules", "last_run_at"),
        ("scout_schedules", "next_run_at"),
        ("scout_schedules", "created_at"),
        ("scout_schedules", "updated_at"),
        ("scout_runs", "created_at"),
        ("scout_runs", "started_at"),
        ("scout_runs", "completed_at"),
        ("scout_runs", "scheduled_for"),
        ("scout_outbox", "created_at"),
        ("scout_outbox", "available_at"),
    }
    assert expected <= by_column.keys()
    assert {k: v for k, v in by_column.items() if v != "timestamp with time zone"} == {}


def test_unique_slot_constraint_exists(engine: Engine) -> None:
    with engine.connect() as conn:
        found = conn.execute(
            text(
                """
                SELECT c.conname, array_agg(a.attname ORDER BY k.ord) AS columns
                FROM pg_constraint c
                CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
                JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
                WHERE c.conrelid = 'scout_runs'::regclass AND c.contype = 'u'
                GROUP BY c.conname
                """
            )
        ).all()
    assert ["schedule_id", "scheduled_for"] in [list(cols) for _name, cols in found]


def test_seed_columns_and_foreign_keys(engine: Engine) -> None:
    inspector = inspect(engine)
    schedule_cols = {c["name"] for c in inspector.get_columns("scout_schedules")}
    run_cols = {c["name"] for c in inspector.get_columns("scout_runs")}
    assert {
        "id",
        "name",
        "cron_expression",
        "source",
        "max_strategies",
        "enabled",
        "last_run_id",
        "last_run_at",
        "next_run_at",
        "created_at",
        "updated_at",
        "timezone",
    } <= schedule_cols
    assert {
        "id",
        "trigger_type",
        "triggered_by",
        "source",
        "max_strategies",
        "status",
        "error_message",
        "metrics",
        "created_at",
        "started_at",
        "completed_at",
        "schedule_id",
        "scheduled_for",
    } <= run_cols
    fks = {
        (
            table,
            tuple(fk["constrained_columns"]),
            fk["referred_table"],
            fk["options"].get("ondelete"),
        )
        for table in ("scout_schedules", "scout_runs")
        for fk in inspector.get_foreign_keys(table)
    }
    assert ("scout_schedules", ("last_run_id",), "scout_runs", "SET NULL") in fks
    assert ("scout_runs", ("schedule_id",), "scout_schedules", "SET NULL") in fks
