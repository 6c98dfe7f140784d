"""/metrics on the real servers: counters that never go down, a cumulative fire-lag
histogram whose _count is the runs fired, gauges from indexed queries, one registry.

Counters live in ``scout_counters`` and are bumped in the transaction of the
work they count, so these tests do the work the way production does (firing,
the API, the lifecycle recorder, the sweep, retention) and read /metrics with
prometheus_client's own text parser.
"""

from __future__ import annotations

import json
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg2
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Connection, Engine, event, text
from starlette.exceptions import StarletteDeprecationWarning

from scout_tasks import counters, firing, heartbeat, outbox, retention, runs, schedules, sweep
from scout_tasks.api import create_app
from scout_tasks.beat import psycopg2_dsn
from scout_tasks.db import make_engine
from scout_tasks.recorder import OutcomeKind, handle_message
from scout_tasks.settings import Settings
from tests.conftest import EventQueue
from tests.integration.helpers import execute, insert_due_schedules, rows, scalar

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def client(db_url: str, broker_url: str, exchange_name: str) -> Iterator[TestClient]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=db_url, broker_url=broker_url, exchange=exchange_name
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def scrape(client: TestClient) -> tuple[Samples, dict[str, str]]:
    """Every sample by (name, labels), and each family's type, parsed as Prometheus would."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(response.text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def buckets(samples: Samples) -> list[tuple[float, float]]:
    found = [
        (float(dict(labels)["le"]), v)
        for (name, labels), v in samples.items()
        if name == "scout_fire_lag_seconds_bucket"
    ]
    return sorted(found)


def agent_event(event_type: str, run_id: Any, **fields: Any) -> bytes:
    return json.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "event_type": event_type,
            "timestamp": datetime.now(UTC).isoformat(),
            "run_id": str(run_id),
            **fields,
        }
    ).encode()


COMPLETED = {
    "total_fetched": 5,
    "validated": 4,
    "validation_failed": 1,
    "duplicates_removed": 0,
    "submitted": 3,
}


def counter_samples(samples: Samples, types: dict[str, str]) -> Samples:
    """The samples of counters and histograms: what must never go down."""
    monotonic = {name for name, kind in types.items() if kind in ("counter", "histogram")}
    return {
        key: v
        for key, v in samples.items()
        if any(key[0] == n or key[0].startswith(f"{n}_") for n in monotonic)
    }


def test_counters_never_go_down_across_a_schedule_deletion_and_a_run_prune(
    client: TestClient, engine: Engine, publisher: Any, event_queue: EventQueue
) -> None:
    before, types = scrape(client)
    assert types["scout_runs_created"] == "counter"
    assert types["scout_fire_lag_seconds"] == "histogram"
    assert value(before, "scout_runs_created_total", trigger_type="scheduled") == 0
    assert value(before, "scout_fire_lag_seconds_count") == 0

    # Fire: 4 schedules due 5 minutes ago (one run each, ~300 s late) and one
    # every-minute 'skip' schedule 10 minutes behind (its missed slots skipped).
    # Leap-day noon: no slot of theirs falls in those 5 minutes whenever this runs
    # (an hourly one would, in an hour's first 5 minutes, and fire that later slot).
    insert_due_schedules(engine, 4, cron="0 12 29 2 *", ago="5 minutes")
    execute(
        engine,
        """
        INSERT INTO scout_schedules (name, cron_expression, source, max_strategies,
                                     misfire_policy, next_run_at)
        VALUES ('skipper', '* * * * *', 'stratninja', 1, 'skip',
                date_trunc('minute', now()) - interval '10 minutes')
        """,
    )
    fired = firing.fire_due(engine, publisher)
    assert fired.runs >= 4 and fired.skipped >= 8 and fired.published == fired.runs

    # A manual run, a cancel, and agents' last events on three runs.
    manual = client.post("/api/scout/trigger", json={"source": "s", "max_strategies": 1})
    assert manual.status_code == 201
    cancel = client.post(f"/api/scout/runs/{manual.json()['id']}/cancel")
    assert cancel.status_code == 200
    scheduled = [
        r["id"] for r in rows(engine, "SELECT id FROM scout_runs WHERE trigger_type = 'scheduled'")
    ]

    def agent(event_type: str, run_id: Any, **fields: Any) -> OutcomeKind:
        return handle_message(
            engine, agent_event(event_type, run_id, **fields), event_type, None
        ).kind

    done = [
        agent("scout.completed", scheduled[0], **COMPLETED),
        agent("scout.completed", scheduled[1], **COMPLETED),
        agent("scout.failed", scheduled[2], error_message="boom"),
        # A second terminal event for a finished run counts nothing.
        agent("scout.failed", scheduled[0], error_message="late"),
    ]
    assert done == [OutcomeKind.APPLIED] * 3 + [OutcomeKind.IGNORED]

    middle, _ = scrape(client)
    assert value(middle, "scout_runs_created_total", trigger_type="scheduled") == fired.runs
    assert value(middle, "scout_runs_created_total", trigger_type="manual") == 1
    assert value(middle, "scout_runs_created_total", trigger_type="event") == 0
    assert value(middle, "scout_runs_finished_total", status="completed") == 2
    assert value(middle, "scout_runs_finished_total", status="failed") == 1
    assert value(middle, "scout_runs_finished_total", status="cancelled") == 1
    assert value(middle, "scout_skipped_slots_total") == fired.skipped
    # The fired runs' triggers, the manual one and the cancel, each confirmed once.
    assert value(middle, "scout_events_published_total") == fired.published + 2
    assert len(event_queue.drain(quiet=0.5)) == fired.published + 2

    # The histogram: _count is the runs fired, buckets cumulative, +Inf = _count.
    lag = buckets(middle)
    assert lag[0][0] <= 0.01
    assert [v for _le, v in lag] == sorted(v for _le, v in lag)
    assert lag[-1] == (float("inf"), fired.runs)
    assert value(middle, "scout_fire_lag_seconds_count") == fired.runs
    # The skip schedule's run is under a minute late, the others 300 s and a bit.
    assert fired.runs == 5
    assert dict(lag)[30.0] <= 1 and dict(lag)[60.0] == 1 and dict(lag)[3600.0] == 5
    assert value(middle, "scout_fire_lag_seconds_sum") >= 4 * 300

    # Delete a schedule (its skipped slots with it) and prune every ended run.
    skipper = scalar(engine, "SELECT id FROM scout_schedules WHERE name = 'skipper'")
    assert client.delete(f"/api/scout/schedules/{skipper}").status_code == 204
    execute(engine, "UPDATE scout_runs SET completed_at = now() - interval '40 days'")
    pruned = retention.prune_runs(engine, 30)
    assert pruned.runs == 4  # 2 completed, 1 failed, 1 cancelled

    after, _ = scrape(client)
    for key, then in counter_samples(middle, types).items():
        assert after[key] == then, key
    # The gauges did follow the data.
    assert value(after, "scout_schedules_enabled") == value(middle, "scout_schedules_enabled") - 1


def test_the_sweep_counts_stale_runs_as_failed(client: TestClient, engine: Engine) -> None:
    execute(
        engine,
        """
        INSERT INTO scout_runs (trigger_type, source, max_strategies, status, created_at)
        VALUES ('manual', 's', 1, 'pending', now() - interval '2 hours'),
               ('manual', 's', 1, 'pending', now() - interval '2 hours'),
               ('manual', 's', 1, 'pending', now())
        """,
    )
    assert sweep.sweep_stale_runs(engine, None, pending_timeout=3600, run_timeout=3600) == 2
    assert sweep.sweep_stale_runs(engine, None, pending_timeout=3600, run_timeout=3600) == 0

    samples, _ = scrape(client)
    assert value(samples, "scout_runs_stale_total") == 2
    assert value(samples, "scout_runs_finished_total", status="failed") == 2
    assert value(samples, "scout_runs_active", status="pending") == 1


def test_gauges_read_the_database_at_each_scrape(
    client: TestClient, engine: Engine, db_url: str
) -> None:
    samples, _ = scrape(client)
    # No beat ever ticked: no series, so the alert rules' absent() can see it.
    assert not any(name == "scout_beat_last_tick_timestamp_seconds" for name, _ in samples)
    assert value(samples, "scout_outbox_oldest_age_seconds") == 0

    execute(
        engine,
        """
        INSERT INTO scout_schedules (name, cron_expression, source, max_strategies,
                                     enabled, next_run_at)
        VALUES ('overdue', '0 * * * *', 's', 1, true, now() - interval '2 minutes'),
               ('due', '0 * * * *', 's', 1, true, now() - interval '10 seconds'),
               ('later', '0 * * * *', 's', 1, true, now() + interval '1 hour'),
               ('off', '0 * * * *', 's', 1, false, now() - interval '1 day');
        INSERT INTO scout_schedules (name, cron_expression, source, max_strategies, last_error)
        VALUES ('broken', '61 * * * *', 's', 1, 'cron_expression: bad minute field');
        INSERT INTO scout_outbox (event_id, routing_key, payload, created_at)
        VALUES (gen_random_uuid(), 'scout.trigger', '{}', now() - interval '400 seconds'),
               (gen_random_uuid(), 'scout.trigger', '{}', now());
        INSERT INTO scout_runs (trigger_type, source, max_strategies, status)
        VALUES ('manual', 's', 1, 'pending'), ('manual', 's', 1, 'running'),
               ('manual', 's', 1, 'running'), ('manual', 's', 1, 'completed');
        """,
    )
    conn = psycopg2.connect(psycopg2_dsn(db_url))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            heartbeat.record_tick(cur, "host-a:1", 30.0)
    finally:
        conn.close()

    samples, types = scrape(client)
    assert types["scout_schedules_overdue"] == "gauge"
    assert value(samples, "scout_schedules_enabled") == 4
    assert value(samples, "scout_schedules_due") == 2
    assert value(samples, "scout_schedules_overdue") == 1
    assert types["scout_schedules_cannot_fire"] == "gauge"
    assert value(samples, "scout_schedules_cannot_fire") == 1
    assert value(samples, "scout_outbox_backlog") == 2
    assert 395 <= value(samples, "scout_outbox_oldest_age_seconds") < 460
    assert value(samples, "scout_runs_active", status="pending") == 1
    assert value(samples, "scout_runs_active", status="running") == 2
    tick = value(samples, "scout_beat_last_tick_timestamp_seconds")
    assert abs(tick - float(scalar(engine, "SELECT extract(epoch FROM now())"))) < 30

    # The same registry, a fresh read.
    registry = client.app.state.metrics_registry  # type: ignore[attr-defined]
    execute(engine, "DELETE FROM scout_outbox")
    samples, _ = scrape(client)
    assert client.app.state.metrics_registry is registry  # type: ignore[attr-defined]
    assert value(samples, "scout_outbox_backlog") == 0


def _plan(engine: Engine, call: Callable[[Connection], object]) -> str:
    """EXPLAIN of every statement ``call`` runs, with sequential scans priced out, so
    a predicate that no longer matches its (partial) index shows as a missing index."""
    statements: list[str] = []

    def capture(_conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        statements.append(cursor.mogrify(statement, params).decode())

    event.listen(engine, "before_cursor_execute", capture)
    try:
        with engine.connect() as conn:
            call(conn)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    with engine.connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")
        return "\n".join(
            line
            for statement in statements
            for line in conn.exec_driver_sql("EXPLAIN " + statement.replace("%", "%%")).scalars()
        )


def test_gauge_and_retention_queries_use_their_indexes(engine: Engine) -> None:
    cutoff = datetime.now(UTC)
    assert "ix_scout_runs_active" in _plan(engine, runs.count_active)
    assert "ix_scout_schedules_due" in _plan(engine, lambda c: schedules.count_enabled(c, 60))
    assert "ix_scout_runs_ended" in _plan(engine, lambda c: runs.count_prunable(c, cutoff))
    assert "ix_scout_runs_ended" in _plan(engine, lambda c: runs.lock_prunable(c, cutoff, 10))
    assert "pk_scout_outbox" in _plan(engine, outbox.backlog)
    # What deleting a run cascades to: the schedules that point at it.
    plan = _plan(
        engine,
        lambda c: c.execute(text("SELECT id FROM scout_schedules WHERE last_run_id = :id"),
                            {"id": uuid.uuid4()}),
    )  # fmt: skip
    assert "ix_scout_schedules_last_run_id" in plan


def test_counters_are_exact_under_concurrent_writers_and_count_nothing_on_rollback(
    db_url: str, engine: Engine
) -> None:
    writers, rounds = 6, 40
    errors: list[BaseException] = []

    def work() -> None:
        own = make_engine(db_url)
        try:
            for i in range(rounds):
                with own.begin() as conn:
                    counters.bump(
                        conn,
                        counters.merge(
                            counters.runs_created("scheduled", 2),
                            counters.runs_finished(["completed", "failed"]),
                            counters.fire_lag([0.004, 0.02, 7.0 + i]),
                        ),
                    )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=work) for _ in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []

    with pytest.raises(RuntimeError), engine.begin() as conn:
        counters.bump(conn, counters.runs_created("scheduled", 1000))
        raise RuntimeError("rolled back")

    with engine.connect() as conn:
        totals = counters.totals(conn)
        shards = conn.execute(text("SELECT count(DISTINCT shard) FROM scout_counters")).scalar_one()
    n = writers * rounds
    assert totals[(counters.RUNS_CREATED, "scheduled")] == 2 * n
    assert totals[(counters.RUNS_FINISHED, "completed")] == n
    assert totals[(counters.FIRE_LAG_BUCKET, "0.005")] == n
    assert totals[(counters.FIRE_LAG_BUCKET, "0.025")] == n
    assert totals[(counters.FIRE_LAG_BUCKET, "10.0")] == writers * 4  # 7, 8, 9, 10 s
    assert totals[(counters.FIRE_LAG_SUM_MICROS, "")] == writers * sum(
        4_000 + 20_000 + (7 + i) * 1_000_000 for i in range(rounds)
    )
    # Several backends, several shards: no single hot row.
    assert shards > 1


def test_a_database_that_does_not_answer_fails_the_scrape(
    broker_url: str, exchange_name: str
) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url="postgresql+psycopg2://postgres@127.0.0.1:1/none",
        broker_url=broker_url,
        exchange=exchange_name,
    )
    with TestClient(create_app(settings)) as down:
        response = down.get("/metrics")
    assert response.status_code == 503
    assert response.json()["detail"].startswith("database unavailable")


def test_upgrading_starts_the_counters_from_what_the_database_already_holds() -> None:
    from scout_tasks import migrate
    from tests.integration.helpers import empty_database

    with empty_database() as url:
        migrate.upgrade(url, "0003")
        old = make_engine(url)
        try:
            execute(
                old,
                """
                INSERT INTO scout_schedules (name, cron_expression, source, max_strategies,
                                             skipped_slots)
                VALUES ('a', '0 * * * *', 's', 1, 7), ('b', '0 * * * *', 's', 1, 5);
                INSERT INTO scout_runs (trigger_type, source, max_strategies, status)
                VALUES ('scheduled', 's', 1, 'completed'), ('scheduled', 's', 1, 'pending'),
                       ('manual', 's', 1, 'failed'), ('manual', 's', 1, 'cancelled');
                """,
            )
        finally:
            old.dispose()
        migrate.upgrade(url)
        new = make_engine(url)
        try:
            with new.connect() as conn:
                totals = counters.totals(conn)
        finally:
            new.dispose()
    assert totals == {
        (counters.SKIPPED_SLOTS, ""): 12,
        (counters.RUNS_CREATED, "scheduled"): 2,
        (counters.RUNS_CREATED, "manual"): 2,
        (counters.RUNS_FINISHED, "completed"): 1,
        (counters.RUNS_FINISHED, "failed"): 1,
        (counters.RUNS_FINISHED, "cancelled"): 1,
    }
