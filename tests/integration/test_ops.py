"""Operating scout-tasks on the real servers: /livez and /readyz, ``scout-tasks status``,
retention (``runs prune``), and the warning of an API open to the network.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kombu
import psycopg2
import pytest
from sqlalchemy import Engine, text
from starlette.exceptions import StarletteDeprecationWarning

from scout_tasks import heartbeat, retention
from scout_tasks.api import create_app
from scout_tasks.beat import psycopg2_dsn
from scout_tasks.settings import Settings
from tests.integration.helpers import (
    SCOUT_TASKS,
    count,
    execute,
    insert_due_schedules,
    rows,
    run_cli,
    scalar,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- /livez, /readyz, /healthz ---------------------------------------------------------------


def _client(database_url: str, broker_url: str) -> TestClient:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=database_url, broker_url=broker_url, exchange="scout-test"
    )
    return TestClient(create_app(settings), raise_server_exceptions=False)


def test_readyz_and_healthz_are_200_when_both_answer(db_url: str, broker_url: str) -> None:
    with _client(db_url, broker_url) as client:
        for path in ("/readyz", "/healthz"):
            response = client.get(path)
            assert response.status_code == 200, response.text
            assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}
        assert client.get("/livez").json() == {"status": "ok"}


@pytest.mark.parametrize("schema", ["older revision", "never migrated"])
def test_readyz_is_503_until_the_schema_is_at_head(
    schema: str, db_url: str, broker_url: str, engine: Engine
) -> None:
    with _client(db_url, broker_url) as client:
        assert client.get("/readyz").status_code == 200
        if schema == "older revision":
            execute(engine, "UPDATE alembic_version SET version_num = '0001'")
        else:
            # What a fresh database looks like to readiness before `db upgrade`.
            execute(engine, "DROP TABLE alembic_version")
        ready = client.get("/readyz")
    assert ready.status_code == 503, ready.text
    assert ready.json() == {
        "status": "unavailable",
        "database": "not migrated",
        "broker": "ok",
        "detail": "unavailable: database",
        "field": None,
    }
    assert "0001" not in ready.text and "alembic" not in ready.text


def test_readyz_on_an_empty_database_is_not_migrated(broker_url: str) -> None:
    name = f"scout_fixb_empty_{os.getpid()}"
    admin = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
        with _client(url, broker_url) as client:
            ready = client.get("/readyz")
            client.app.state.scout.close()  # type: ignore[attr-defined]
        assert ready.status_code == 503 and ready.json()["database"] == "not migrated"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.mark.parametrize("down", ["database", "broker", "both"])
def test_readyz_names_what_is_down_and_nothing_else(
    down: str, db_url: str, broker_url: str
) -> None:
    dead_db_port, dead_amqp_port = closed_port(), closed_port()
    database = (
        f"postgresql+psycopg2://scout_role:pw@127.0.0.1:{dead_db_port}/scoutdb"
        if down in ("database", "both")
        else db_url
    )
    broker = (
        f"amqp://agent_user:pw@127.0.0.1:{dead_amqp_port}//"
        if down in ("broker", "both")
        else broker_url
    )
    with _client(database, broker) as client:
        live = client.get("/livez")
        ready = client.get("/readyz")
        health = client.get("/healthz")

    assert live.status_code == 200 and live.json() == {"status": "ok"}
    assert ready.status_code == 503 and health.status_code == 503
    body = ready.json()
    assert health.json() == body
    expected = {
        "database": "down" if down in ("database", "both") else "ok",
        "broker": "down" if down in ("broker", "both") else "ok",
    }
    names = ", ".join(n for n in ("database", "broker") if expected[n] == "down")
    assert body == {
        "status": "unavailable",
        **expected,
        "detail": f"unavailable: {names}",
        "field": None,
    }
    # No internals for an unauthenticated caller: no host, port, role, database or driver text.
    for internal in (
        "127.0.0.1",
        str(dead_db_port),
        str(dead_amqp_port),
        "scout_role",
        "agent_user",
        "scoutdb",
        "Connection refused",
        "psycopg2",
        "Errno",
    ):
        assert internal not in ready.text, internal


# --- scout-tasks status ------------------------------------------------------------------------


def record_tick(db_url: str, leader: str = "beat-host:4242", tick_seconds: float = 30.0) -> None:
    """What the leading beat writes each time it sends a tick."""
    conn = psycopg2.connect(psycopg2_dsn(db_url))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            heartbeat.record_tick(cur, leader, tick_seconds)
    finally:
        conn.close()


def status(db_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("status", *args, env={"SCOUT_DATABASE_URL": db_url}, cwd=tmp_path)


def test_status_is_unhealthy_until_a_beat_ticks_then_healthy(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    never = status(db_url, tmp_path)
    assert never.returncode == 1, never.stderr
    assert "no beat has ever ticked" in never.stdout

    record_tick(db_url)
    execute(
        engine,
        """
        INSERT INTO scout_schedules (name, cron_expression, source, max_strategies, next_run_at)
        VALUES ('soon', '0 * * * *', 's', 1, now() + interval '1 hour'),
               ('just due', '0 * * * *', 's', 1, now() - interval '5 seconds');
        INSERT INTO scout_runs (trigger_type, source, max_strategies, status)
        VALUES ('manual', 's', 1, 'pending'), ('manual', 's', 1, 'running');
        """,
    )
    healthy = status(db_url, tmp_path)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "beat-host:4242" in healthy.stdout and "healthy" in healthy.stdout
    assert "2 enabled, 1 due, 0 overdue" in healthy.stdout
    assert "1 pending, 1 running" in healthy.stdout

    as_json = status(db_url, tmp_path, "--json")
    assert as_json.returncode == 0
    report = json.loads(as_json.stdout)
    assert report["healthy"] is True and report["problems"] == []
    assert report["beat"]["leader"] == "beat-host:4242"
    assert report["beat"]["tick_seconds"] == 30.0
    assert report["beat"]["last_tick_at"].endswith("+00:00")
    assert report["schedules"] == {"enabled": 2, "due": 1, "overdue": 0, "cannot_fire": 0}
    assert report["outbox"]["backlog"] == 0
    assert report["runs"] == {"pending": 1, "running": 1}


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        (
            "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies, "
            "next_run_at) VALUES ('late', '0 * * * *', 's', 1, now() - interval '61 seconds')",
            "1 schedule(s) overdue",
        ),
        (
            "UPDATE scout_beat SET last_tick_at = now() - interval '91 seconds'",
            "the beat is silent",
        ),
        (
            "INSERT INTO scout_outbox (event_id, routing_key, payload, created_at) VALUES "
            "(gen_random_uuid(), 'scout.trigger', '{}', now() - interval '301 seconds')",
            "the outbox is stuck",
        ),
        (
            "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies, "
            "last_error) VALUES ('broken', '61 * * * *', 's', 1, "
            "'cron_expression: bad minute field')",
            "1 enabled schedule(s) cannot fire",
        ),
    ],
    ids=["overdue schedule", "silent beat", "stuck outbox", "schedule that cannot fire"],
)
def test_status_exits_1_and_says_why(
    sql: str, problem: str, db_url: str, engine: Engine, tmp_path: Path
) -> None:
    record_tick(db_url)
    assert status(db_url, tmp_path).returncode == 0
    execute(engine, sql)

    result = status(db_url, tmp_path)
    assert result.returncode == 1, result.stdout
    assert "UNHEALTHY" in result.stdout and problem in result.stdout
    report = json.loads(status(db_url, tmp_path, "--json").stdout)
    assert report["healthy"] is False
    assert [p for p in report["problems"] if problem in p]
    # The beat's healthcheck fails only for what a beat restart can fix.
    only_beat = status(db_url, tmp_path, "--only", "beat")
    assert only_beat.returncode == (1 if problem == "the beat is silent" else 0), only_beat.stdout


def test_status_only_beat_is_unhealthy_without_a_leader(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    never = status(db_url, tmp_path, "--only", "beat")
    assert never.returncode == 1 and "no beat has ever ticked" in never.stdout
    record_tick(db_url)
    assert status(db_url, tmp_path, "--only", "beat").returncode == 0
    bad = status(db_url, tmp_path, "--only", "nothing")
    assert bad.returncode == 2 and "--only" in bad.stderr


def test_status_judges_the_beat_by_its_own_tick_period(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    # A beat ticking every 120 s is not silent after 91 s, whatever this shell's setting.
    record_tick(db_url, tick_seconds=120)
    execute(engine, "UPDATE scout_beat SET last_tick_at = now() - interval '300 seconds'")
    env = {"SCOUT_DATABASE_URL": db_url, "SCOUT_TICK_SECONDS": "5"}
    assert run_cli("status", env=env, cwd=tmp_path).returncode == 0
    execute(engine, "UPDATE scout_beat SET last_tick_at = now() - interval '361 seconds'")
    assert run_cli("status", env=env, cwd=tmp_path).returncode == 1


def test_status_with_the_database_down_is_one_line_and_exit_1(tmp_path: Path) -> None:
    url = f"postgresql+psycopg2://postgres:pw@127.0.0.1:{closed_port()}/scout"
    result = status(url, tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "database unavailable" in result.stderr and "Traceback" not in result.stderr


def test_a_new_leader_is_recorded_with_its_own_leader_since(db_url: str, engine: Engine) -> None:
    record_tick(db_url, "a:1")
    first = rows(engine, "SELECT * FROM scout_beat")[0]
    time.sleep(0.05)
    record_tick(db_url, "a:1")
    same = rows(engine, "SELECT * FROM scout_beat")[0]
    assert same["leader_since"] == first["leader_since"]
    assert same["last_tick_at"] > first["last_tick_at"]
    record_tick(db_url, "b:2", 10)
    other = rows(engine, "SELECT * FROM scout_beat")
    assert len(other) == 1
    assert other[0]["leader"] == "b:2" and other[0]["tick_seconds"] == 10
    assert other[0]["leader_since"] > first["leader_since"]


# --- retention ---------------------------------------------------------------------------------


def seed_runs(engine: Engine) -> dict[str, str]:
    """Runs of every status, ended long ago or lately, each with a recorded event,
    and a schedule whose last run is an old one; returns their ids by label."""
    with engine.begin() as conn:
        made = conn.execute(
            text(
                """
        WITH s AS (
            INSERT INTO scout_schedules (name, cron_expression, source, max_strategies)
            VALUES ('keeper', '0 * * * *', 's', 1) RETURNING id
        )
        INSERT INTO scout_runs (trigger_type, source, max_strategies, status, schedule_id,
                                created_at, completed_at)
        SELECT 'manual', v.label, 1, v.status, (SELECT id FROM s),
               now() - interval '200 days', now() - v.ended
        FROM (VALUES
            ('old completed', 'completed', interval '10 days'),
            ('old failed', 'failed', interval '10 days'),
            ('old cancelled', 'cancelled', interval '10 days'),
            ('recent completed', 'completed', interval '1 day'),
            ('old pending', 'pending', NULL),
            ('old running', 'running', NULL)
        ) AS v(label, status, ended)
        RETURNING source AS label, id
        """
            )
        ).all()
    ids = {r.label: str(r.id) for r in made}
    execute(
        engine,
        """
        INSERT INTO scout_run_events (event_id, run_id, event_type)
        SELECT gen_random_uuid(), id, 'scout.started' FROM scout_runs;
        INSERT INTO scout_outbox (event_id, routing_key, payload, run_id)
        VALUES (gen_random_uuid(), 'scout.cancelled', '{}', CAST(:cancelled AS uuid));
        UPDATE scout_schedules SET last_run_id = CAST(:last AS uuid);
        """,
        cancelled=ids["old cancelled"],
        last=ids["old completed"],
    )
    return ids


def test_runs_prune_dry_run_then_real_keeps_active_and_recent_runs(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    ids = seed_runs(engine)
    history = count(engine, "scout_schedule_changes")
    env = {"SCOUT_DATABASE_URL": db_url}

    dry = run_cli(
        "runs", "prune", "--older-than", "5", "--dry-run", "--json", env=env, cwd=tmp_path
    )
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["runs"] == 3 and json.loads(dry.stdout)["dry_run"] is True
    assert count(engine, "scout_runs") == 6 and count(engine, "scout_run_events") == 6

    real = run_cli("runs", "prune", "--older-than", "5", env=env, cwd=tmp_path)
    assert real.returncode == 0, real.stderr
    assert "deleted 3 run(s)" in real.stdout and "3 recorded event(s)" in real.stdout
    left = {r["source"] for r in rows(engine, "SELECT source FROM scout_runs")}
    assert left == {"recent completed", "old pending", "old running"}
    assert scalar(engine, "SELECT count(*) FROM scout_run_events") == 3
    assert count(engine, "scout_outbox") == 0
    # The schedule lost its last run to ON DELETE SET NULL; that is bookkeeping, not history.
    assert scalar(engine, "SELECT last_run_id FROM scout_schedules") is None
    assert count(engine, "scout_schedule_changes") == history
    assert ids["old pending"] in {str(r["id"]) for r in rows(engine, "SELECT id FROM scout_runs")}

    again = run_cli("runs", "prune", "--older-than", "5", "--json", env=env, cwd=tmp_path)
    assert json.loads(again.stdout)["runs"] == 0


@pytest.mark.parametrize("days", ["0", "-1", "x", "36501"])
def test_runs_prune_refuses_a_bad_age(days: str, db_url: str, tmp_path: Path) -> None:
    env = {"SCOUT_DATABASE_URL": db_url}
    result = run_cli("runs", "prune", "--older-than", days, env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "--older-than" in result.stderr and "Traceback" not in result.stderr


def insert_ended_runs(engine: Engine, n: int, days_ago: int = 100) -> None:
    execute(
        engine,
        """
        INSERT INTO scout_runs (trigger_type, source, max_strategies, status, created_at,
                                completed_at)
        SELECT 'manual', 's', 1, 'completed', now() - make_interval(days => :d),
               now() - make_interval(days => :d) + g * interval '1 second'
        FROM generate_series(1, :n) AS g
        """,
        n=n,
        d=days_ago,
    )


def test_prune_works_in_batches_and_a_bounded_call_leaves_the_rest(engine: Engine) -> None:
    insert_ended_runs(engine, 2500)

    first = retention.prune_runs(engine, 90, batch_size=1000, max_batches=1)
    assert (first.runs, first.batches, first.complete) == (1000, 1, False)
    rest = retention.prune_runs(engine, 90, batch_size=1000)
    assert (rest.runs, rest.batches, rest.complete) == (1500, 2, True)
    assert count(engine, "scout_runs") == 0


def test_prune_skips_a_run_another_transaction_holds_and_never_waits(engine: Engine) -> None:
    insert_ended_runs(engine, 5)
    held = scalar(engine, "SELECT id FROM scout_runs ORDER BY completed_at LIMIT 1")
    with engine.connect() as holder:
        holder.execute(text("SELECT 1 FROM scout_runs WHERE id = :id FOR UPDATE"), {"id": held})
        done = threading.Event()
        result: list[Any] = []

        def prune() -> None:
            result.append(retention.prune_runs(engine, 90, batch_size=2))
            done.set()

        threading.Thread(target=prune, daemon=True).start()
        assert done.wait(20), "the prune waited for a locked run"
        holder.rollback()
    assert result[0].runs == 4
    assert [str(r["id"]) for r in rows(engine, "SELECT id FROM scout_runs")] == [str(held)]


def test_prune_never_waits_for_a_schedule_held_that_points_at_an_old_run(
    engine: Engine,
) -> None:
    # Deleting a run sets scout_schedules.last_run_id to NULL where it points at
    # it (ON DELETE SET NULL), which needs that schedule's row: an operator
    # editing the schedule in an open transaction must not hold the prune (and,
    # from the tick, a pool process) until they commit.
    insert_ended_runs(engine, 5)
    oldest = scalar(engine, "SELECT id FROM scout_runs ORDER BY completed_at LIMIT 1")
    with engine.begin() as conn:
        schedule = conn.execute(
            text(
                "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies,"
                " last_run_id) VALUES ('yearly', '@yearly', 's', 1, :r) RETURNING id"
            ),
            {"r": oldest},
        ).scalar_one()
    with engine.connect() as holder:
        holder.execute(
            text("UPDATE scout_schedules SET description = 'editing' WHERE id = :id"),
            {"id": schedule},
        )
        done = threading.Event()
        result: list[Any] = []

        def prune() -> None:
            result.append(retention.prune_runs(engine, 90, batch_size=2))
            done.set()

        threading.Thread(target=prune, daemon=True).start()
        assert done.wait(20), "the prune waited for a locked schedule"
        holder.rollback()
    assert result[0].runs == 4
    assert [str(r["id"]) for r in rows(engine, "SELECT id FROM scout_runs")] == [str(oldest)]
    # Once the schedule is free, the run goes too.
    assert retention.prune_runs(engine, 90).runs == 1
    assert scalar(engine, "SELECT last_run_id FROM scout_schedules") is None


def test_the_tick_prunes_with_the_retention_setting(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    from scout_tasks import db, tasks
    from scout_tasks.settings import get_settings

    insert_ended_runs(engine, 3, days_ago=10)
    insert_ended_runs(engine, 2, days_ago=1)
    # The settings as a worker reads them, and the engine they name.
    monkeypatch.setenv("SCOUT_DATABASE_URL", db_url)
    monkeypatch.setenv("SCOUT_RUN_RETENTION_DAYS", "5")
    get_settings.cache_clear()
    try:
        assert tasks._prune(None) == 3
        assert count(engine, "scout_runs") == 2

        monkeypatch.setenv("SCOUT_RUN_RETENTION_DAYS", "0")
        get_settings.cache_clear()
        insert_ended_runs(engine, 2, days_ago=5000)
        assert tasks._prune(None) == 0
        assert count(engine, "scout_runs") == 4
    finally:
        get_settings.cache_clear()
        db.dispose_engines()


# --- scout-tasks api: a loud warning when open to the network without a token ------------------


@pytest.fixture
def api_server(db_url: str, tmp_path: Path) -> Iterator[Any]:
    started: list[subprocess.Popen[bytes]] = []

    def start(host: str, token: str | None = None) -> tuple[subprocess.Popen[bytes], Path, int]:
        port = closed_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCOUT_")}
        env.update(SCOUT_DATABASE_URL=db_url, PYTHONUNBUFFERED="1")
        if token:
            env["SCOUT_API_TOKEN"] = token
        err = tmp_path / f"api-{port}.err"
        with err.open("wb") as stderr:
            proc = subprocess.Popen(
                [SCOUT_TASKS, "api", "--host", host, "--port", str(port)],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        started.append(proc)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/livez", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.2)
        return proc, err, port

    yield start
    for proc in started:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_the_api_warns_loudly_when_open_beyond_loopback_without_a_token(api_server: Any) -> None:
    _proc, err, port = api_server("0.0.0.0")
    output = err.read_text()
    warning = [line for line in output.splitlines() if "without SCOUT_API_TOKEN" in line]
    # One log line (uvicorn's format) and one plain line on stderr.
    assert len(warning) == 2, output
    assert any(line.startswith("WARNING") for line in warning), output
    assert any(line.startswith("scout-tasks: WARNING") for line in warning), output
    assert f"0.0.0.0:{port}" in warning[0]


@pytest.mark.parametrize(("host", "token"), [("127.0.0.1", None), ("0.0.0.0", "t0k3n-abc")])
def test_the_api_does_not_warn_on_loopback_or_with_a_token(
    api_server: Any, host: str, token: str | None
) -> None:
    _proc, err, _port = api_server(host, token)
    assert "SCOUT_API_TOKEN" not in err.read_text()


# One fire task, run as a pool process runs it; it prints its result, whether the
# hand-over was still being sent when the task was done, and the tasks' warnings.
_FIRE_ONCE = """
import json, logging, threading
from scout_tasks import tasks

actions = []

class Keep(logging.Handler):
    def emit(self, record):
        actions.append(getattr(record, "action", None))

logging.getLogger("scout_tasks.tasks").addHandler(Keep(logging.WARNING))
result = tasks._fire("2026-11-30T00:00:00+00:00", "fire")
handing = [t for t in threading.enumerate() if t.name == "scout-fan-out"]
for thread in handing:
    thread.join(timeout=30)
print(json.dumps({"result": result, "still_handing": bool(handing), "actions": actions}))
"""


def test_a_hand_over_that_cannot_be_sent_leaves_the_burst_to_this_process(
    engine: Engine, db_url: str, broker_url: str, exchange_name: str, event_queue: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    """Celery's own broker refusing the fan-out task fails nothing: every run is made."""
    insert_due_schedules(engine, 25)
    task_queue = f"scout-test-tasks-{uuid.uuid4().hex[:10]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCOUT_", "CELERY_"))}
    env.update(
        SCOUT_DATABASE_URL=db_url,
        # The events' broker is the real one ...
        SCOUT_BROKER_URL=broker_url,
        SCOUT_EXCHANGE=exchange_name,
        SCOUT_FIRE_BATCH_SIZE="10",
        # ... Celery's own (the hand-over's) a port nothing listens on. Celery reads
        # this variable before any setting, so scout-tasks' defaults cannot hide it.
        CELERY_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{closed_port()}//",
        # Should the hand-over reach a broker after all, it lands in a queue of this test's.
        SCOUT_TASK_QUEUE=task_queue,
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", _FIRE_ONCE],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        with kombu.Connection(broker_url) as conn, contextlib.suppress(Exception):
            conn.default_channel.queue_delete(task_queue)

    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["actions"] == ["fire.fan_out_failed"], done.stderr
    assert (out["result"]["runs"], out["result"]["published"]) == (25, 25)
    assert count(engine, "scout_runs") == 25
    assert len(event_queue.get(count=25, timeout=10)) == 25
    # kombu tries a refused broker for a few seconds; the burst did not wait for that.
    assert out["still_handing"] is True
