"""The console's search copy (migration 0006): filled on upgrade, kept by triggers, never
written by firing, and the query plans it exists for."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from scout_tasks import migrate, search
from tests.integration.helpers import empty_database, execute, scalar


@pytest.fixture
def empty_url() -> Iterator[str]:
    with empty_database() as url:
        yield url


def test_upgrading_from_0005_copies_the_existing_schedules(empty_url: str) -> None:
    migrate.upgrade(empty_url, "0005")
    engine = create_engine(empty_url, poolclass=NullPool)
    try:
        execute(
            engine,
            "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies) "
            "VALUES ('before upgrade', '@daily', 'legacy', 1)",
        )
        migrate.upgrade(empty_url)
        with engine.connect() as conn:
            page, _ = search.search_schedules(conn, search.ScheduleSearch(text="upgrade"), 10)
        assert [r["name"] for r in page] == ["before upgrade"]
        migrate.downgrade(empty_url, "0005")
        assert scalar(engine, "SELECT count(*) FROM scout_schedules") == 1
    finally:
        engine.dispose()


def _xmin(engine: Engine) -> str:
    return str(scalar(engine, "SELECT xmin::text FROM scout_schedule_search"))


def test_firing_bookkeeping_never_rewrites_the_copy(engine: Engine) -> None:
    execute(
        engine,
        "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies) "
        "VALUES ('hourly', '0 * * * *', 'src', 1)",
    )
    before = _xmin(engine)
    # What the fire path writes: next slot, last run, skipped counter.
    execute(
        engine,
        "UPDATE scout_schedules SET next_run_at = now() + interval '1 hour', "
        "last_run_at = now(), skipped_slots = skipped_slots + 1",
    )
    # Naming a column without changing it does not either.
    execute(engine, "UPDATE scout_schedules SET name = name, source = source")
    assert _xmin(engine) == before
    execute(engine, "UPDATE scout_schedules SET source = 'other'")
    assert _xmin(engine) != before
    assert scalar(engine, "SELECT source FROM scout_schedule_search") == "other"


def test_bulk_inserts_are_copied_in_one_statement(engine: Engine) -> None:
    execute(
        engine,
        "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies) "
        "SELECT 'bulk-' || g, '@hourly', 'src', 1 FROM generate_series(1, 500) g",
    )
    assert scalar(engine, "SELECT count(*) FROM scout_schedule_search") == 500
    execute(engine, "DELETE FROM scout_schedules WHERE name LIKE 'bulk-1%'")
    assert scalar(engine, "SELECT count(*) FROM scout_schedule_search") == scalar(
        engine, "SELECT count(*) FROM scout_schedules"
    )


def test_a_search_can_use_the_trigram_index(engine: Engine) -> None:
    execute(
        engine,
        "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies) "
        "SELECT 'job-' || md5(g::text), '@hourly', 'src', 1 FROM generate_series(1, 5000) g",
    )
    execute(engine, "ANALYZE scout_schedule_search")
    with engine.connect() as conn:
        # At 5,000 rows a scan is cheaper; this only proves the index can serve
        # the query (bench/console.py measures the plans at a million).
        conn.execute(text("SET enable_seqscan = off"))
        plan = "\n".join(
            conn.execute(
                text(
                    "EXPLAIN SELECT schedule_id FROM scout_schedule_search "
                    "WHERE name ILIKE '%abcdef%'"
                )
            ).scalars()
        )
    assert "ix_scout_schedule_search_name_trgm" in plan, plan
