"""``scout-tasks status`` against real celery processes: healthy once the beat ticks,
unhealthy while a schedule is overdue (no worker), healthy again when a worker
fires it; the worker's tick also applies SCOUT_RUN_RETENTION_DAYS."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import kombu
from sqlalchemy import Engine

from tests.e2e.procs import CeleryProcess, scout_env, stop_all
from tests.integration.helpers import execute, run_cli, scalar


def _eventually(
    check: Callable[[], bool], timeout: float, what: str, log: Callable[[], str]
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}:\n{log()[-3000:]}"
        time.sleep(0.5)


def test_status_follows_the_beat_and_the_worker(
    db_url: str, broker_url: str, exchange_name: str, engine: Engine, tmp_path: Path
) -> None:
    env = scout_env(db_url, broker_url, exchange_name, SCOUT_RUN_RETENTION_DAYS="30")
    cli_env = {"SCOUT_DATABASE_URL": db_url}

    def status() -> tuple[int, dict[str, object]]:
        result = run_cli("status", "--json", env=cli_env, cwd=tmp_path)
        return result.returncode, json.loads(result.stdout) if result.stdout else {}

    # Ended runs far past the retention period, and one inside it.
    execute(
        engine,
        """
        INSERT INTO scout_runs (trigger_type, source, max_strategies, status, created_at,
                                completed_at)
        SELECT 'manual', 'old', 1, 'completed', now() - interval '60 days',
               now() - interval '60 days'
        FROM generate_series(1, 25);
        INSERT INTO scout_runs (trigger_type, source, max_strategies, status, completed_at)
        VALUES ('manual', 'recent', 1, 'failed', now() - interval '2 days');
        """,
    )
    beat = CeleryProcess("beat", env, tmp_path)
    worker: CeleryProcess | None = None
    try:
        beat.wait_for("this beat is now the leader")
        _eventually(lambda: status()[0] == 0, 30, "never healthy after a tick", beat.log)
        code, report = status()
        assert report["beat"]["tick_seconds"] == 5.0  # type: ignore[index]

        # Overdue, and no worker to fire it: unhealthy, saying why.
        execute(
            engine,
            """
            INSERT INTO scout_schedules (name, cron_expression, source, max_strategies,
                                         next_run_at)
            VALUES ('late', '0 9 1 1 *', 'stratninja', 1, now() - interval '5 minutes')
            """,
        )
        code, report = status()
        assert code == 1
        assert any("overdue" in p for p in report["problems"])  # type: ignore[attr-defined]

        # A worker fires it and, on its tick, prunes the old runs.
        worker = CeleryProcess("worker", env, tmp_path)
        _eventually(lambda: status()[0] == 0, 60, "never healthy with a worker", worker.log)
        _eventually(
            lambda: scalar(engine, "SELECT count(*) FROM scout_runs WHERE source = 'old'") == 0,
            60,
            "the tick never pruned",
            worker.log,
        )
        assert scalar(engine, "SELECT count(*) FROM scout_runs WHERE source = 'recent'") == 1
        assert scalar(engine, "SELECT count(*) FROM scout_runs WHERE triggered_by = 'late'") == 1
    finally:
        stop_all(proc for proc in (beat, worker) if proc is not None)
        with kombu.Connection(broker_url) as conn:
            queue = env["SCOUT_TASK_QUEUE"]
            for name in (queue, f"{queue}.lifecycle.v2", f"{queue}.lifecycle.v2.dead"):
                with contextlib.suppress(Exception):
                    conn.default_channel.queue_delete(queue=name)
