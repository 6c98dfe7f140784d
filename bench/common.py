"""Shared setup for the benchmarks: scratch databases, queues, processes and /proc readings.

Everything a benchmark creates is uniquely named and removed afterwards: the
databases (copied from a template migrated once per process), the events
exchange, the counting queue, and the Celery task queue with the lifecycle
queues the worker declares.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import kombu
import psycopg2
import psycopg2.extensions
from kombu import Exchange, Queue
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ADMIN_URL = os.environ.get("SCOUT_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BROKER_URL = os.environ.get(
    "SCOUT_BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/scout-tasks-test"
)
CELERY = str(Path(sys.executable).with_name("celery"))
CLK_TCK = os.sysconf("SC_CLK_TCK")

# A mix of expressions and zones, as real schedule tables have.
EXPRESSIONS = [
    "* * * * *",
    "*/5 * * * *",
    "0 * * * *",
    "30 9 * * MON-FRI",
    "0 0 * * *",
    "15 */2 * * *",
]
ZONES = ["UTC", "America/New_York", "Europe/Riga", "Asia/Kolkata", "Australia/Lord_Howe"]
# Fires once a year: a schedule given a one-off next_run_at fires once in a run.
YEARLY = "0 0 1 1 *"


# --- figures ----------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, columns padded so it also reads well in a terminal."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join(
        [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]
    )


def machine() -> str:
    load = os.getloadavg()
    return f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- PostgreSQL -------------------------------------------------------------------


def _admin() -> psycopg2.extensions.connection:
    conn = psycopg2.connect(ADMIN_URL)
    conn.autocommit = True
    return conn


def _url(name: str) -> str:
    return (
        make_url(ADMIN_URL)
        .set(drivername="postgresql+psycopg2", database=name)
        .render_as_string(hide_password=False)
    )


def libpq_dsn(db_url: str) -> str:
    """A libpq URI for a SQLAlchemy URL."""
    return make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)


def connect(db_url: str) -> psycopg2.extensions.connection:
    return psycopg2.connect(libpq_dsn(db_url), options="-c timezone=UTC")


_template: str | None = None


# Schedules every scratch database starts with, none due during a run
# (see use_idle_schedules).
_idle_schedules = 0


def use_idle_schedules(count: int) -> None:
    """Give every scratch database ``count`` schedules that are not due (30 days ahead).

    Call before the first scratch database: they are inserted once, into the
    template, so a burst can be measured in a table of 1,000 or of 1,000,000.
    """
    global _idle_schedules
    if _template is not None:
        raise RuntimeError("use_idle_schedules() must come before the first scratch database")
    _idle_schedules = count


def idle_schedules() -> int:
    return _idle_schedules


def _template_database() -> str:
    """A database migrated to head once per process; scratch databases copy it."""
    global _template
    if _template is None:
        from scout_tasks import migrate

        name = f"scout_bench_tpl_{uuid.uuid4().hex[:10]}"
        admin = _admin()
        try:
            with admin.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            admin.close()
        migrate.upgrade(_url(name))
        if _idle_schedules:
            log(f"template: inserting {_idle_schedules:,} idle schedules")
            insert_schedules(_url(name), _idle_schedules, None, prefix="idle")
        _template = name
    return _template


def drop_template() -> None:
    global _template
    if _template is not None:
        admin = _admin()
        try:
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{_template}" WITH (FORCE)')
        finally:
            admin.close()
        _template = None


@contextmanager
def scratch_database(prefix: str = "scout_bench") -> Iterator[str]:
    """A migrated database (SQLAlchemy URL) that is dropped afterwards."""
    template = _template_database()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = _admin()
    try:
        with admin.cursor() as cur:
            # A large template copies faster file by file than through the WAL.
            strategy = " STRATEGY FILE_COPY" if _idle_schedules else ""
            cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"{strategy}')
        yield _url(name)
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def insert_schedules(
    db_url: str,
    count: int,
    due_at: datetime | None,
    *,
    spread: float = 0.0,
    expressions: list[str] | None = None,
    zones: list[str] | None = None,
    prefix: str = "bench",
) -> float:
    """Insert ``count`` enabled schedules in one transaction; returns the seconds it took.

    Schedule ``g`` (1..count) is due at ``due_at + (g - 1) * spread`` seconds, or
    30 days from now when ``due_at`` is None. Expressions and zones cycle through
    the given lists. The table is then VACUUM ANALYZEd, so autovacuum does not
    start in the middle of a measurement and the planner knows the table's size.
    """
    exprs = expressions or EXPRESSIONS
    zone_list = zones or ZONES
    start = time.monotonic()
    conn = connect(db_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                """
                INSERT INTO scout_schedules (name, cron_expression, timezone, source,
                                             max_strategies, next_run_at)
                SELECT %(prefix)s || '-' || g,
                       (%(exprs)s::text[])[1 + g %% cardinality(%(exprs)s::text[])],
                       (%(zones)s::text[])[1 + g %% cardinality(%(zones)s::text[])],
                       'bench', 10,
                       CASE WHEN %(due)s::timestamptz IS NULL THEN now() + interval '30 days'
                            ELSE %(due)s::timestamptz + make_interval(secs => (g - 1) * %(spread)s)
                       END
                FROM generate_series(1, %(n)s) AS g
                """,
                {
                    "exprs": exprs,
                    "zones": zone_list,
                    "due": due_at,
                    "spread": spread,
                    "n": count,
                    "prefix": prefix,
                },
            )
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE scout_schedules")
    finally:
        conn.close()
    return time.monotonic() - start


def db_now(db_url: str) -> datetime:
    conn = connect(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT now()")
            return cur.fetchone()[0]  # type: ignore[no-any-return, index]
    finally:
        conn.close()


@dataclass(frozen=True)
class RunStats:
    runs: int
    outbox: int
    lag_p50: float
    lag_p99: float
    lag_max: float
    first_created: datetime | None
    last_created: datetime | None


def run_stats(db_url: str) -> RunStats:
    """Runs made, events still in the outbox, and fire lag (created_at - scheduled_for)."""
    conn = connect(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                """
                SELECT count(*),
                       percentile_disc(0.5) WITHIN GROUP (ORDER BY lag),
                       percentile_disc(0.99) WITHIN GROUP (ORDER BY lag),
                       max(lag), min(created_at), max(created_at)
                FROM (SELECT created_at,
                             extract(epoch FROM created_at - scheduled_for)::float8 AS lag
                      FROM scout_runs WHERE schedule_id IS NOT NULL) AS r
                """
            )
            count, p50, p99, worst, first, last = cur.fetchone()  # type: ignore[misc]
            cur.execute("SELECT count(*) FROM scout_outbox")
            outbox = cur.fetchone()[0]  # type: ignore[index]
    finally:
        conn.close()
    nan = float("nan")
    return RunStats(count, outbox, p50 or nan, p99 or nan, worst or nan, first, last)


class Progress:
    """Cheap repeated questions to one database: how many runs, how many outbox rows."""

    def __init__(self, db_url: str) -> None:
        self.conn = connect(db_url)
        self.conn.autocommit = True

    def counts(self) -> tuple[int, int]:
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT (SELECT count(*) FROM scout_runs), (SELECT count(*) FROM scout_outbox)"
            )
            runs, outbox = cur.fetchone()  # type: ignore[misc]
        return int(runs), int(outbox)

    def close(self) -> None:
        self.conn.close()


# --- RabbitMQ ---------------------------------------------------------------------


class CountingQueue:
    """A durable queue bound to every ``scout.*`` event of an exchange: the agents' side."""

    def __init__(self, exchange: str, broker_url: str = BROKER_URL) -> None:
        self.connection = kombu.Connection(broker_url)
        self.name = f"bench-events-{uuid.uuid4().hex[:8]}"
        self.queue = Queue(
            self.name,
            Exchange(exchange, type="topic", durable=True),
            routing_key="scout.#",
            durable=True,
            auto_delete=False,
        )
        self.queue(self.connection.default_channel).declare()

    def depth(self) -> int:
        _name, count, _consumers = self.connection.default_channel.queue_declare(
            self.name, passive=True
        )
        return int(count)

    def purge(self) -> None:
        self.connection.default_channel.queue_purge(self.name)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.default_channel.queue_delete(self.name)
        self.connection.release()


@contextmanager
def counting_queue(exchange: str) -> Iterator[CountingQueue]:
    """A :class:`CountingQueue` on ``exchange``; queue and exchange are deleted afterwards."""
    queue = CountingQueue(exchange)
    try:
        yield queue
    finally:
        queue.close()
        delete_broker_objects(exchanges=[exchange])


def delete_broker_objects(
    *, queues: list[str] | tuple[str, ...] = (), exchanges: list[str] | tuple[str, ...] = ()
) -> None:
    with kombu.Connection(BROKER_URL) as conn:
        channel = conn.default_channel
        for name in queues:
            with contextlib.suppress(Exception):
                channel.queue_delete(name)
        for name in exchanges:
            with contextlib.suppress(Exception):
                channel.exchange_delete(name)


# --- Celery processes -------------------------------------------------------------


def scout_env(db_url: str, exchange: str, task_queue: str, **overrides: str) -> dict[str, str]:
    """The environment of a beat or worker: this run's database, exchange and task queue."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOUT_")}
    env.update(
        SCOUT_DATABASE_URL=db_url,
        SCOUT_BROKER_URL=BROKER_URL,
        SCOUT_EXCHANGE=exchange,
        SCOUT_TASK_QUEUE=task_queue,
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


class CeleryProcess:
    """One ``celery -A scout_tasks <kind>`` process (or another ``app``'s), its log in a file.

    It runs in a scratch directory, so no ``.env`` or ``celeryconfig.py`` of the
    caller's working directory changes its configuration. ``celery`` is the
    program to run: the project's by default, another virtual environment's for
    an app that cannot be installed beside scout-tasks (the peer).
    """

    def __init__(
        self,
        kind: str,
        env: dict[str, str],
        workdir: Path,
        *,
        concurrency: int = 2,
        loglevel: str = "warning",
        app: str = "scout_tasks",
        extra_args: tuple[str, ...] = (),
        celery: str = CELERY,
    ) -> None:
        self.kind = kind
        self.log_path = workdir / f"{kind}-{uuid.uuid4().hex[:6]}.log"
        args = [celery, "-A", app, kind, "-l", loglevel, *extra_args]
        if kind == "worker":
            args += [
                "-n",
                f"bench-{uuid.uuid4().hex[:8]}@%h",
                "--without-mingle",
                "--without-gossip",
                "-c",
                str(concurrency),
            ]
        elif kind == "beat":
            args += ["-s", str(workdir / f"beat-{uuid.uuid4().hex[:6]}")]
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            args, env=env, cwd=workdir, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited early:\n{self.log()[-4000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"{self.kind} never logged {text!r}:\n{self.log()[-4000:]}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a warm shutdown), wait; SIGKILL after ``timeout``."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


@dataclass
class Stack:
    worker: CeleryProcess
    beat: CeleryProcess
    task_queue: str
    workdir: Path


@contextmanager
def celery_stack(
    db_url: str,
    exchange: str,
    *,
    concurrency: int = 2,
    loglevel: str = "warning",
    keep_logs: bool = False,
    **env_overrides: str,
) -> Iterator[Stack]:
    """A real worker and beat for ``db_url``, ready when this yields; stopped and cleaned after.

    The worker's task queue and the lifecycle queues it declares are deleted
    afterwards (the events exchange belongs to the caller).
    """
    task_queue = f"bench-tasks-{uuid.uuid4().hex[:8]}"
    env = scout_env(db_url, exchange, task_queue, **env_overrides)
    workdir = Path(tempfile.mkdtemp(prefix="scout-bench-"))
    worker = CeleryProcess("worker", env, workdir, concurrency=concurrency, loglevel=loglevel)
    beat = CeleryProcess("beat", env, workdir, loglevel=loglevel)
    try:
        # Ready without reading logs, so any log level works: the worker consumes
        # its task queue, and the beat holds the leader lock.
        deadline = time.monotonic() + 90
        for proc, ready in (
            (worker, lambda: consumers(task_queue) > 0),
            (beat, lambda: leads(db_url)),
        ):
            while not ready():
                if not proc.alive():
                    raise RuntimeError(f"{proc.kind} exited early:\n{proc.log()[-4000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{proc.kind} not ready after 90 s:\n{proc.log()[-4000:]}")
                time.sleep(0.2)
        yield Stack(worker, beat, task_queue, workdir)
    finally:
        beat.stop()
        worker.stop()
        # Celery declares a direct exchange named after the task queue, too, and
        # the lifecycle queue's dead-letter exchange is named after it.
        delete_broker_objects(
            queues=worker_queues(task_queue),
            exchanges=[task_queue, f"{task_queue}.lifecycle.v2.dlx"],
        )
        if keep_logs:
            log(f"logs kept in {workdir}")
        else:
            for path in workdir.iterdir():
                path.unlink()
            workdir.rmdir()


def worker_queues(task_queue: str) -> list[str]:
    """The queues a worker with ``task_queue`` declares: the task queue and the lifecycle ones.

    The lifecycle queues' names come from scout-tasks' own name function when it
    has one; every queue whose name starts with the (unique) task queue's is
    added from ``rabbitmqctl list_queues`` when that works here, so a renamed
    lifecycle queue is removed too.
    """
    names = [task_queue]
    with contextlib.suppress(ImportError, AttributeError, TypeError):
        from scout_tasks import lifecycle

        names += list(lifecycle.lifecycle_queue_names(task_queue))  # type: ignore[attr-defined]
    names += [q for q in broker_queue_names() if q.startswith(task_queue) and q not in names]
    return names


def broker_queue_names() -> list[str]:
    """Every queue of the bench vhost, from ``rabbitmqctl`` (empty when that cannot run here)."""
    vhost = kombu.Connection(BROKER_URL).virtual_host or "/"
    try:
        out = subprocess.run(
            ["rabbitmqctl", "list_queues", "-q", "--no-table-headers", "-p", vhost, "name"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def consumers(queue: str) -> int:
    """How many consumers ``queue`` has (0 when it does not exist yet)."""
    try:
        with kombu.Connection(BROKER_URL) as conn:
            _name, _count, count = conn.default_channel.queue_declare(queue, passive=True)
            return int(count)
    except Exception:  # noqa: BLE001 - not declared yet
        return 0


def leads(db_url: str) -> bool:
    """Whether a beat holds the leader lock on ``db_url``."""
    from scout_tasks.beat import LEADER_LOCK

    conn = connect(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                """
                SELECT EXISTS (
                    SELECT 1 FROM pg_locks
                    WHERE locktype = 'advisory' AND granted AND objsubid = 1
                      AND database = (SELECT oid FROM pg_database
                                      WHERE datname = current_database())
                      AND (classid::bigint << 32 | objid::bigint) = %s)
                """,
                (LEADER_LOCK,),
            )
            return bool(cur.fetchone()[0])  # type: ignore[index]
    finally:
        conn.close()


# --- /proc --------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the worker's pool processes)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found.extend(int(p) for p in fh.read().split())
    return found


def process_tree(pid: int) -> list[int]:
    pids = [pid]
    for child in children(pid):
        pids.extend(process_tree(child))
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used (its own, not its reaped children's)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    # After the ")" of comm: state is field 3, utime 14 and stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_of(pids: list[int]) -> dict[int, float]:
    """CPU seconds of each of ``pids`` that still exists."""
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            out[pid] = cpu_seconds(pid)
    return out


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two readings; a process born in between counts from zero."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def backends(db_url: str) -> list[int]:
    """PostgreSQL backend pids of the scout-tasks sessions (engine and beat) on ``db_url``."""
    conn = connect(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name LIKE 'scout-tasks%%'"
            )
            return [int(row[0]) for row in cur.fetchall()]
    finally:
        conn.close()


def status_kb(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` figure in kB (VmHWM: peak RSS, VmRSS: current RSS)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


# --- waiting ----------------------------------------------------------------------


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def sleep_until(wall: float) -> None:
    """Sleep until the wall clock reads ``wall`` (``time.time()`` seconds)."""
    while (left := wall - time.time()) > 0:
        time.sleep(min(left, 0.5))
