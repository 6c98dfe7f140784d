"""Peer: django-celery-beat's DatabaseScheduler against scout-tasks, N schedules due at one instant.

For each size N, in one run, on fresh scratch databases:

- django-celery-beat: N enabled PeriodicTasks on the crontab ``M * * * *``
  (UTC) with ``last_run_at`` in the minute before, so all N come due at the
  minute boundary T = ``hh:M:00`` and none again for an hour. A real ``celery
  beat -S django_celery_beat.schedulers:DatabaseScheduler`` (its schedule read
  before T) and a real ``celery worker -c 2`` (prefork, persistent Django
  connections) run the task ``peer.fire`` per due entry: insert the run into
  ``peer_runs`` (``UNIQUE (schedule_id, scheduled_for)``) and publish its
  ``scout.trigger`` event with a publisher confirm (``bench/peer_app/``).
  Measured: from T until N runs exist and the counting queue (bound to
  ``scout.#``) holds N messages.
- scout-tasks: the same measurement as ``burst.py``'s, on N due schedules.

The two alternate (their order swaps every repetition); medians are reported
with the ratio scout-tasks / django-celery-beat in fires/s. This script runs in
the project's environment; the peer's beat and worker (and its database setup) run
in one of their own, ``bench/.venv-peer``, which ``peer_venv`` makes on first use
from ``bench/peer_app/requirements.txt`` (django-celery-beat cannot be installed
beside scout-tasks: it requires ``cron-descriptor<2``).

    python bench/peer.py --sizes 1000,5000 --repeat 1
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import burst
import common
import peer_venv
import psycopg2

HERE = Path(__file__).resolve().parent
SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"


@dataclass
class Result:
    elapsed: float
    runs: int
    depth: int
    lag_p50: float
    lag_p99: float
    late_setup: float
    client_cpu: float  # beat + worker + pool (scout-tasks: the same three)
    db_cpu: float  # their PostgreSQL backends
    complete: bool = True
    beat_cpu: float = math.nan  # the beat's share of client_cpu (the peer only)

    @property
    def rate(self) -> float:
        return self.runs / self.elapsed


# --- the peer's databases ---------------------------------------------------------------


def _admin() -> psycopg2.extensions.connection:
    conn = psycopg2.connect(common.ADMIN_URL)
    conn.autocommit = True
    return conn


def _dsn(name: str) -> str:
    return common.libpq_dsn(common._url(name))


def _env(dsn: str, exchange: str = "", task_queue: str = "") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEER_", "SCOUT_"))}
    env.update(
        PEER_DATABASE_URL=dsn,
        PEER_BROKER_URL=common.BROKER_URL,
        PEER_EXCHANGE=exchange,
        PEER_TASK_QUEUE=task_queue,
        DJANGO_SETTINGS_MODULE="peer_app.settings",
        PYTHONPATH=os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]),
        PYTHONUNBUFFERED="1",
    )
    return env


def _prepare(peer_bin: Path, dsn: str, *args: str) -> None:
    subprocess.run(
        [str(peer_bin / "python"), "-m", "peer_app.prepare", *args],
        env=_env(dsn),
        cwd=HERE,
        check=True,
    )


class Databases:
    """A template migrated once (django-celery-beat's tables and ``peer_runs``), copied per run.

    ``peer_bin`` is the peer environment's ``bin`` folder (``peer_venv.ensure()``).
    """

    def __init__(self, peer_bin: Path) -> None:
        self.peer_bin = peer_bin
        self.template: str | None = None

    @contextmanager
    def scratch(self) -> Iterator[str]:
        admin = _admin()
        try:
            if self.template is None:
                self.template = f"scout_bench_peer_tpl_{uuid.uuid4().hex[:10]}"
                with admin.cursor() as cur:
                    cur.execute(f'CREATE DATABASE "{self.template}"')
                _prepare(self.peer_bin, _dsn(self.template), "migrate")
            name = f"scout_bench_peer_{uuid.uuid4().hex[:10]}"
            with admin.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
            try:
                yield _dsn(name)
            finally:
                with admin.cursor() as cur:
                    cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            admin.close()

    def drop(self) -> None:
        if self.template is not None:
            admin = _admin()
            try:
                with admin.cursor() as cur:
                    cur.execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
            finally:
                admin.close()
            self.template = None


class Poller:
    def __init__(self, dsn: str) -> None:
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True

    def runs(self) -> int:
        with self.conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM peer_runs")
            return int(cur.fetchone()[0])  # type: ignore[index]

    def backends(self) -> list[int]:
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return [int(row[0]) for row in cur.fetchall()]

    def lag(self) -> tuple[float, float]:
        with self.conn.cursor() as cur:
            cur.execute(
                """
                SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY lag),
                       percentile_disc(0.99) WITHIN GROUP (ORDER BY lag)
                FROM (SELECT extract(epoch FROM created_at - scheduled_for)::float8 AS lag
                      FROM peer_runs) AS r
                """
            )
            p50, p99 = cur.fetchone()  # type: ignore[misc]
        return p50 or math.nan, p99 or math.nan

    def close(self) -> None:
        self.conn.close()


# --- measuring ----------------------------------------------------------------------------


def next_boundary(lead: float) -> float:
    """The first whole minute (``time.time()`` seconds) at least ``lead`` seconds ahead."""
    return math.ceil((time.time() + lead) / 60) * 60


def measure_peer(databases: Databases, count: int, timeout: float, loglevel: str) -> Result:
    exchange = f"bench-peer-{uuid.uuid4().hex[:8]}"
    task_queue = f"bench-peer-tasks-{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="scout-bench-peer-"))
    with databases.scratch() as dsn, common.counting_queue(exchange) as queue:
        # Room for inserting the tasks and for beat's first read of all of them.
        t = next_boundary(20 + count * 0.006)
        due = datetime.fromtimestamp(t, UTC)
        last_run = (due - timedelta(seconds=30)).isoformat()
        _prepare(databases.peer_bin, dsn, "tasks", str(count), str(due.minute), last_run)
        env = _env(dsn, exchange, task_queue)
        common.log(f"  django-celery-beat: {count:,} tasks due at {due:%H:%M:%S}")
        worker = common.CeleryProcess(
            "worker",
            env,
            workdir,
            loglevel=loglevel,
            app="peer_app.celery_app",
            celery=str(databases.peer_bin / "celery"),
            extra_args=(
                "-n",
                f"bench-peer-{uuid.uuid4().hex[:8]}@%h",
                "--without-mingle",
                "--without-gossip",
                "-c",
                "2",
            ),
        )
        beat = common.CeleryProcess(
            "beat",
            env,
            workdir,
            loglevel=loglevel,
            app="peer_app.celery_app",
            celery=str(databases.peer_bin / "celery"),
            extra_args=("-S", SCHEDULER, "-s", str(workdir / "beat-schedule")),
        )
        poller = Poller(dsn)
        try:
            beat.wait_for("peer beat ready", timeout=max(60.0, t - time.time()))
            if not common.wait_until(lambda: common.consumers(task_queue) > 0, 60):
                raise RuntimeError(f"peer worker not consuming:\n{worker.log()[-3000:]}")
            late = burst._check_setup(t, "django-celery-beat")

            def clients() -> list[int]:
                return [*common.process_tree(worker.pid), beat.pid]

            common.sleep_until(t - 0.1)
            cpu_before = common.cpu_of(clients()), common.cpu_of(poller.backends())
            common.sleep_until(t)
            complete = True
            while True:
                polled = time.time()
                runs = poller.runs()
                if runs >= count and queue.depth() >= count:
                    break
                if polled > t + timeout:
                    common.log(f"  WARNING: {runs:,} of {count:,} runs after {timeout:.0f} s")
                    complete = False
                    break
                time.sleep(0.02)
            cpu_after = common.cpu_of(clients())
            client_cpu = common.cpu_used(cpu_before[0], cpu_after)
            beat_cpu = cpu_after[beat.pid] - cpu_before[0][beat.pid]
            db_cpu = common.cpu_used(cpu_before[1], common.cpu_of(poller.backends()))
            p50, p99 = poller.lag()
            return Result(
                polled - t,
                runs,
                queue.depth(),
                p50,
                p99,
                late,
                client_cpu,
                db_cpu,
                complete,
                beat_cpu,
            )
        except Exception:
            common.log(f"beat log:\n{beat.log()[-2000:]}\nworker log:\n{worker.log()[-2000:]}")
            raise
        finally:
            poller.close()
            beat.stop()
            worker.stop()
            # Celery's default exchange for the task queue has the queue's name.
            common.delete_broker_objects(queues=[task_queue], exchanges=[task_queue])
            for path in workdir.iterdir():
                path.unlink()
            workdir.rmdir()


def measure_ours(count: int, loglevel: str) -> Result:
    r = burst.measure_ours(count, loglevel, timeout=max(120.0, count / 200))
    return Result(
        r.elapsed, r.runs, r.depth, r.lag_p50, r.lag_p99, r.late_setup, r.client_cpu, r.db_cpu
    )


# --- report -------------------------------------------------------------------------------

CONTENDERS = ("ours", "peer")
LABELS = {"ours": "scout-tasks", "peer": "django-celery-beat"}


def _row(label: str, results: list[Result]) -> list[str]:
    return [
        label + ("" if all(r.complete for r in results) else " (incomplete)"),
        f"{common.median([r.elapsed for r in results]):.2f}",
        f"{common.median([r.rate for r in results]):,.0f}",
        f"{common.median([r.lag_p50 for r in results]):.2f}",
        f"{common.median([r.lag_p99 for r in results]):.2f}",
        f"{common.median([1e6 * r.client_cpu / r.runs for r in results]):.0f}",
        f"{common.median([1e6 * r.db_cpu / r.runs for r in results]):.0f}",
        " ".join(f"{r.elapsed:.2f}" for r in results),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,5000", help="comma-separated N")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--loglevel", default="warning", help="celery -l for every process")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    results: dict[str, dict[int, list[Result]]] = {w: {n: [] for n in sizes} for w in CONTENDERS}
    # Made (once) before anything is measured, so its minute of pip is in no figure.
    databases = Databases(peer_venv.ensure())
    started = time.strftime("%Y-%m-%d %H:%M")
    try:
        for rep in range(args.repeat):
            for n in sizes:
                order = CONTENDERS if rep % 2 == 0 else CONTENDERS[::-1]
                for who in order:
                    common.log(f"repeat {rep + 1}/{args.repeat}: {LABELS[who]}, N={n:,}")
                    if who == "ours":
                        r = measure_ours(n, args.loglevel)
                    else:
                        # The peer's rate falls with N (about 30/s at 5,000 here).
                        r = measure_peer(databases, n, 120 + n / 5, args.loglevel)
                    results[who][n].append(r)
                    common.log(
                        f"  {r.elapsed:.2f} s, {r.rate:,.0f} fires/s, runs {r.runs:,}, "
                        f"queue {r.depth:,}, lag p50 {r.lag_p50:.2f} s p99 {r.lag_p99:.2f} s, "
                        f"CPU {r.client_cpu:.2f} s"
                        + ("" if math.isnan(r.beat_cpu) else f" (beat {r.beat_cpu:.2f} s)")
                        + f" + PostgreSQL {r.db_cpu:.2f} s"
                    )
                    if r.runs != n or r.depth != n:
                        common.log(f"  WARNING: expected {n:,} runs and messages")
    finally:
        databases.drop()
        common.drop_template()

    print(f"\npeer ({started}, {common.machine()}, median of {args.repeat})\n")
    headers = [
        "",
        "time s",
        "fires/s",
        "lag p50 s",
        "lag p99 s",
        "CPU µs/fire",
        "PG µs/fire",
        "each run s",
    ]
    rows = [_row(f"{LABELS[w]} N={n:,}", results[w][n]) for n in sizes for w in CONTENDERS]
    print(common.table(headers, rows))
    print()
    ratio_rows = []
    for n in sizes:
        ours, peer = results["ours"][n], results["peer"][n]
        ratio = common.median([r.rate for r in ours]) / common.median([r.rate for r in peer])
        each = " ".join(f"{o.rate / p.rate:.1f}" for o, p in zip(ours, peer, strict=True))
        ratio_rows.append([f"N={n:,}", f"{ratio:,.1f}x", each])
    print(common.table(["", "scout-tasks/django-celery-beat (fires/s)", "each repeat"], ratio_rows))


if __name__ == "__main__":
    main()
