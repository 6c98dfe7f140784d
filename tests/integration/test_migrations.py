"""Migrations: empty to head, no drift from tables.py, down and up again, idempotent."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import NullPool

from scout_tasks import migrate
from scout_tasks.tables import SCHEDULE_BOOKKEEPING, metadata
from scout_tasks.tables import schedules as schedules_table
from tests.integration.helpers import REPO_ROOT, empty_database, run_cli

TABLES = {
    "scout_schedules",
    "scout_runs",
    "scout_outbox",
    "scout_schedule_changes",
    "scout_schedule_search",
}
TRIGGERS = {
    "scout_schedules_before_update",
    "scout_schedules_notify",
    "scout_schedules_record_create",
    "scout_schedules_record_delete",
    "scout_schedules_record_update",
    "scout_schedules_search_insert",
    "scout_schedules_search_update",
}
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
    assert _triggers(empty_url) == TRIGGERS

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
    assert _triggers(empty_url) == TRIGGERS


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


# --- 0003: what Python cannot represent is kept out, and repaired on upgrade ------------

SCHEDULE_TIMES = ("next_run_at", "last_run_at", "created_at", "updated_at", "paused_at")
RUN_TIMES = ("scheduled_for", "created_at", "started_at", "completed_at", "updated_at")
# Out of Python's reach, or within a day of it (shown in a far zone, the day flips over).
UNREADABLE = (
    "0001-01-01 00:00:00+00 BC",
    "12000-01-01 00:00:00+00",
    "0001-01-01 23:59:59+00",
    "9999-12-31 00:00:00+00",
    "infinity",
    "-infinity",
)
READABLE_EDGES = ("0001-01-02 00:00:00+00", "9999-12-30 23:59:59.999999+00")


def _insert_schedule_and_run(conn) -> None:  # type: ignore[no-untyped-def]
    conn.execute(
        text(
            "INSERT INTO scout_schedules (id, name, cron_expression, source, max_strategies) "
            "VALUES ('00000000-0000-0000-0000-000000000001', 's', '0 * * * *', 'x', 1)"
        )
    )
    conn.execute(
        text(
            "INSERT INTO scout_runs (id, trigger_type, source, max_strategies, schedule_id, "
            "scheduled_for) VALUES ('00000000-0000-0000-0000-000000000002', 'scheduled', 'x', 1, "
            "'00000000-0000-0000-0000-000000000001', '2030-01-01 00:00+00')"
        )
    )


@pytest.mark.parametrize(
    ("table", "column"),
    [("scout_schedules", c) for c in SCHEDULE_TIMES] + [("scout_runs", c) for c in RUN_TIMES],
)
def test_the_database_refuses_timestamps_python_cannot_read(
    engine: Engine, table: str, column: str
) -> None:
    with engine.begin() as conn:
        _insert_schedule_and_run(conn)
    if (table, column) == ("scout_schedules", "updated_at"):
        # An UPDATE sets updated_at = now() whatever it says; an INSERT can name it.
        statement = (
            "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies, "
            "updated_at) VALUES ('t', '0 * * * *', 'x', 1, CAST(:v AS timestamptz))"
        )
    else:
        extra = ", paused_reason = 'r', enabled = false" if column == "paused_at" else ""
        statement = f"UPDATE {table} SET {column} = CAST(:v AS timestamptz){extra}"
    for value in UNREADABLE:
        with pytest.raises(IntegrityError) as caught, engine.begin() as conn:
            conn.execute(text(statement), {"v": value})
        assert f"ck_{table}_{column}_range" in str(caught.value), value
    for value in READABLE_EDGES:
        with engine.begin() as conn:
            conn.execute(text(statement), {"v": value})
            conn.execute(text("DELETE FROM scout_schedules WHERE name = 't'"))


@pytest.mark.parametrize("zone", ["UTC", "Pacific/Kiritimati", "Pacific/Niue"])
def test_the_bounds_do_not_move_with_the_sessions_time_zone(engine: Engine, zone: str) -> None:
    with engine.begin() as conn:
        _insert_schedule_and_run(conn)
    for value in READABLE_EDGES:
        with engine.begin() as conn:
            conn.execute(text(f"SET LOCAL TIME ZONE '{zone}'"))
            conn.execute(
                text("UPDATE scout_schedules SET next_run_at = CAST(:v AS timestamptz)"),
                {"v": value},
            )
        with engine.connect() as conn:
            # Python reads it back, and can show it in a zone a day away.
            read = conn.execute(text("SELECT next_run_at FROM scout_schedules")).scalar_one()
        for shown_in in ("Pacific/Kiritimati", "Pacific/Niue"):
            read.astimezone(ZoneInfo(shown_in))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text(f"SET LOCAL TIME ZONE '{zone}'"))
        conn.execute(text("UPDATE scout_schedules SET next_run_at = '0001-01-01 23:59:59+00'"))


def test_the_issue_10_rows_are_refused(engine: Engine) -> None:
    """Issue #10.3: these two statements stopped the beat and the API."""
    with engine.begin() as conn:
        _insert_schedule_and_run(conn)
    for statement in (
        "UPDATE scout_schedules SET next_run_at = '0001-01-01 00:00:00+00 BC'",
        "UPDATE scout_schedules SET next_run_at = '12000-01-01 00:00:00+00'",
    ):
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text(statement))


def test_upgrade_repairs_rows_python_cannot_read(empty_url: str) -> None:
    migrate.upgrade(empty_url, "0002")
    engine = _engine(empty_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    """
                    INSERT INTO scout_schedules (name, cron_expression, source, max_strategies,
                                                 next_run_at, last_run_at, created_at)
                    VALUES ('bc', '0 * * * *', 'x', 1, '0001-01-01 00:00:00+00 BC',
                            '12000-01-01 00:00+00', '0001-01-01 12:00+00'),
                           ('fine', '0 * * * *', 'x', 1, '2030-01-01 00:00+00',
                            '2020-01-01 00:00+00', '2019-01-01 00:00+00')
                    """
                )
            )
            conn.execute(
                text(
                    """
                    INSERT INTO scout_runs (trigger_type, source, max_strategies, status,
                                            scheduled_for, created_at, started_at, completed_at,
                                            updated_at)
                    VALUES ('manual', 'bad', 1, 'completed', 'infinity',
                            '0001-01-01 00:00+00 BC', '12000-01-01 00:00+00',
                            '9999-12-31 12:00+00', '-infinity'),
                           ('manual', 'fine', 1, 'completed', '2030-01-01 00:00+00',
                            '2020-01-01 00:00+00', '2020-01-01 00:01+00',
                            '2020-01-01 00:02+00', '2020-01-01 00:02+00')
                    """
                )
            )
            fine_before = (
                conn.execute(text("SELECT * FROM scout_schedules WHERE name = 'fine'"))
                .one()
                ._asdict()
            )
            fine_run_before = (
                conn.execute(text("SELECT * FROM scout_runs WHERE source = 'fine'")).one()._asdict()
            )

        migrate.upgrade(empty_url)

        assert migrate.current(empty_url) == HEAD
        with engine.connect() as conn:
            now = conn.execute(text("SELECT now()")).scalar_one()
            # Every value reads back into Python now.
            bad = conn.execute(text("SELECT * FROM scout_schedules WHERE name = 'bc'")).one()
            fine = conn.execute(text("SELECT * FROM scout_schedules WHERE name = 'fine'")).one()
            bad_run = conn.execute(text("SELECT * FROM scout_runs WHERE source = 'bad'")).one()
            fine_run = conn.execute(text("SELECT * FROM scout_runs WHERE source = 'fine'")).one()
            history = conn.execute(text("SELECT count(*) FROM scout_schedule_changes")).scalar()
    finally:
        engine.dispose()
    assert (bad.next_run_at, bad.last_run_at) == (None, None)
    assert abs((bad.created_at - now).total_seconds()) < 3600
    assert {k: v for k, v in fine._asdict().items() if k in fine_before} == fine_before
    assert (bad_run.scheduled_for, bad_run.started_at, bad_run.completed_at) == (None,) * 3
    assert abs((bad_run.created_at - now).total_seconds()) < 3600
    assert abs((bad_run.updated_at - now).total_seconds()) < 3600
    assert {k: v for k, v in fine_run._asdict().items() if k in fine_run_before} == fine_run_before
    # The repair is the migration's, not a change of anyone's schedule.
    assert history == 0


def test_downgrade_from_0003_keeps_the_schedules(empty_url: str) -> None:
    migrate.upgrade(empty_url)
    engine = _engine(empty_url)
    try:
        with engine.begin() as conn:
            _insert_schedule_and_run(conn)
            conn.execute(text("UPDATE scout_schedules SET paused_reason = 'r', description = 'd'"))
        migrate.downgrade(empty_url, "0002")
        with engine.connect() as conn:
            names = conn.execute(text("SELECT name FROM scout_schedules")).scalars().all()
            functions = (
                conn.execute(
                    text("SELECT proname FROM pg_proc WHERE proname LIKE 'scout_%' ORDER BY 1")
                )
                .scalars()
                .all()
            )
    finally:
        engine.dispose()
    assert names == ["s"]
    assert functions == ["scout_schedules_before_update", "scout_schedules_notify"]
    assert _triggers(empty_url) == {"scout_schedules_before_update", "scout_schedules_notify"}
    assert "scout_schedule_changes" not in _tables(empty_url)
    migrate.upgrade(empty_url)
    assert _drift(empty_url) == []


def test_every_schedule_column_is_tracked_by_the_history_or_is_bookkeeping(engine: Engine) -> None:
    """A column added later must be added to the UPDATE trigger's WHEN clause too."""
    with engine.connect() as conn:
        definition = conn.execute(
            text(
                "SELECT pg_get_triggerdef(oid) FROM pg_trigger "
                "WHERE tgname = 'scout_schedules_record_update'"
            )
        ).scalar_one()
    ignored = {"id", "created_at", *SCHEDULE_BOOKKEEPING}
    untracked = [
        c.name
        for c in schedules_table.c
        if c.name not in ignored and f"old.{c.name}" not in definition.lower()
    ]
    assert untracked == []
    for column in SCHEDULE_BOOKKEEPING:
        assert f"old.{column} " not in definition.lower()


def test_upgrade_keeps_a_non_object_run_metrics_under_value(empty_url: str) -> None:
    migrate.upgrade(empty_url, "0005")
    engine = _engine(empty_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    """
                    INSERT INTO scout_runs (trigger_type, source, max_strategies, metrics)
                    VALUES ('manual', 'array', 1, '[1, 2, 3]'), ('manual', 'str', 1, '"s"'),
                           ('manual', 'null', 1, 'null'), ('manual', 'none', 1, NULL),
                           ('manual', 'object', 1, '{"a": 1}')
                    """
                )
            )

        migrate.upgrade(empty_url)

        with engine.connect() as conn:
            found = dict(conn.execute(text("SELECT source, metrics FROM scout_runs")).all())
    finally:
        engine.dispose()
    assert found == {
        "array": {"value": [1, 2, 3]},
        "str": {"value": "s"},
        "null": None,
        "none": None,
        "object": {"a": 1},
    }


@pytest.mark.parametrize(
    ("name", "source", "constraint"),
    [
        ("", "sql", "ck_scout_schedules_name_length"),
        ("empty source", "", "ck_scout_schedules_source_length"),
        ("long source", "s" * 51, "ck_scout_schedules_source_length"),
    ],
)
def test_plain_sql_is_held_to_the_name_and_source_lengths(
    engine: Engine, name: str, source: str, constraint: str
) -> None:
    """The write rules bind plain SQL too: such a row used to fire with the bad value."""
    with pytest.raises(IntegrityError, match=constraint), engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies)"
                " VALUES (:name, '* * * * *', :source, 1)"
            ),
            {"name": name, "source": source},
        )
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies)"
                " VALUES ('x', '* * * * *', :source, 1)"
            ),
            {"source": "s" * 50},
        )


def test_upgrade_repairs_and_pauses_rows_that_break_the_lengths(
    empty_url: str, tmp_path: Path
) -> None:
    # `db upgrade` brings any database to head: rows written by hand before the
    # checks existed are repaired as little as possible and paused for review.
    migrate.upgrade(empty_url, "0008")
    engine = _engine(empty_url)
    try:
        with engine.begin() as conn:
            ids = {
                label: conn.execute(
                    text(
                        "INSERT INTO scout_schedules (name, cron_expression, source,"
                        " max_strategies, enabled, paused_reason, paused_at, paused_by)"
                        " VALUES (:name, '* * * * *', :source, 1, :enabled, :reason,"
                        " CASE WHEN :reason IS NULL THEN NULL ELSE now() END, :by) RETURNING id"
                    ),
                    {"name": name, "source": source, "enabled": reason is None,
                     "reason": reason, "by": "alice" if reason else None},
                ).scalar_one()
                for label, name, source, reason in [
                    ("long", "long", "s" * 60, None),
                    ("empty", "", "", None),
                    ("paused", "paused", "p" * 51, "maintenance"),
                    ("fine", "fine", "ok", None),
                ]
            }  # fmt: skip

        result = run_cli("db", "upgrade", env={"SCOUT_DATABASE_URL": empty_url}, cwd=tmp_path)

        assert result.returncode == 0, result
        assert migrate.current(empty_url) == migrate.head_revision()
        assert str(ids["long"]) in result.stderr and str(ids["empty"]) in result.stderr
        with engine.begin() as conn:
            got = {
                r.id: r
                for r in conn.execute(
                    text(
                        "SELECT id, name, source, enabled, paused_reason, paused_by"
                        " FROM scout_schedules"
                    )
                )
            }
        long, empty, paused, fine = (got[ids[k]] for k in ("long", "empty", "paused", "fine"))
        assert (long.name, long.source, long.enabled) == ("long", "s" * 50, False)
        assert long.paused_by == "scout-tasks db upgrade"
        assert "source was 60 characters, cut to 50" in long.paused_reason
        assert (empty.name, empty.source) == (f"unnamed-{ids['empty']}", "unknown")
        assert "name was empty" in empty.paused_reason
        assert "source was empty" in empty.paused_reason
        # An operator's pause stays theirs; the note is added to its reason.
        assert paused.paused_by == "alice"
        assert paused.paused_reason.startswith("maintenance / db upgrade 0009: ")
        assert (fine.enabled, fine.paused_reason, fine.source) == (True, None, "ok")
    finally:
        engine.dispose()
