"""One soak: schedules firing every few seconds, an agent reporting, random faults, an audit."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import kombu
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from scout_tasks.deliveries import raw_body
from tests.soak.faults import POISON_HEADER, Applied, Faults
from tests.soak.world import World

STEADY = 30  # '* * * * *' schedules, every slot caught up (catch_up, 15 min grace)
JITTERED = 3  # the same with jitter_seconds
LIFECYCLE_QUEUE = "scout-tasks.lifecycle.v2"
DEAD_QUEUE = LIFECYCLE_QUEUE + ".dead"
BY_SQL = 4  # yearly schedules whose next_run_at the soak sets by SQL every few seconds


@dataclass
class Options:
    minutes: float = 3.0
    seed: int = 0
    faults_per_minute: float = 6.0
    workers: int = 1
    beats: int = 2
    tick_seconds: int = 3
    keep: bool = False


@dataclass
class Outcome:
    seed: int
    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    faults: list[Applied] = field(default_factory=list)
    root: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


def _create_schedules(world: World) -> None:
    with world.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies,"
                " misfire_policy, misfire_grace_seconds, jitter_seconds)"
                " SELECT 'soak-steady-' || g, '* * * * *', 'soak', 1 + g % 10, 'catch_up', 900,"
                " CASE WHEN g > :steady THEN 15 ELSE 0 END"
                " FROM generate_series(1, :n) AS g"
            ),
            {"steady": STEADY, "n": STEADY + JITTERED},
        )
        conn.execute(
            text(
                "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies,"
                " misfire_policy, misfire_grace_seconds)"
                " SELECT 'soak-sql-' || g, '0 0 1 1 *', 'soak', 2, 'catch_up', 900"
                " FROM generate_series(1, :n) AS g"
            ),
            {"n": BY_SQL},
        )


class SqlSetter:
    """Sets ``next_run_at`` of the ``soak-sql-*`` schedules by SQL every few seconds.

    A schedule gets a new instant only once its last one fired (its next_run_at
    went back to the yearly slot), so every instant written must have one run.
    """

    def __init__(self, world: World, faults: Faults, seed: int) -> None:
        self.world = world
        self.faults = faults
        self.rng = random.Random(seed + 1)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sql-setter", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.rng.uniform(2.0, 4.0)):
            try:
                with self.world.engine.begin() as conn:
                    rows = conn.execute(
                        text(
                            "UPDATE scout_schedules SET next_run_at = now() + make_interval("
                            "secs => :s) WHERE name LIKE 'soak-sql-%' AND enabled"
                            " AND next_run_at > now() + interval '1 day'"
                            " RETURNING id, next_run_at"
                        ),
                        {"s": round(self.rng.uniform(0.5, 3.0), 2)},
                    ).all()
            except DBAPIError:
                continue  # the database is down (a fault): try later
            with self.faults.ledger.lock:
                self.faults.ledger.sql_slots.extend((r.id, r.next_run_at) for r in rows)


def _wait(predicate: Any, timeout: float, step: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except DBAPIError:
            pass
        time.sleep(step)
    return False


def soak(options: Options) -> Outcome:
    """Run one soak and audit it. The servers and processes are the soak's own."""
    outcome = Outcome(options.seed)
    rng = random.Random(options.seed)
    print(f"soak: seed {options.seed}, {options.minutes} min, "
          f"{options.faults_per_minute} faults/min", flush=True)  # fmt: skip
    world = World(
        workers=options.workers, beats=options.beats, tick_seconds=options.tick_seconds,
        keep=options.keep,
    )  # fmt: skip
    outcome.root = str(world.root)
    print(f"soak: PostgreSQL :{world.pg.port}, RabbitMQ {world.rabbit.node} :{world.rabbit.port},"
          f" files in {world.root}", flush=True)  # fmt: skip
    try:
        world.wait_ready()
        _create_schedules(world)
        started = time.monotonic()
        faults = Faults(world, rng, started)
        setter = SqlSetter(world, faults, options.seed)
        setter.thread.start()
        _loop(world, faults, options, outcome)
        setter.stop.set()
        setter.thread.join(timeout=30)
        faults.wait_restored()
        outcome.faults = faults.ledger.applied
        _settle_and_audit(world, faults, outcome)
    except BaseException as exc:
        outcome.problems.append(f"soak aborted: {exc!r}")
        raise
    finally:
        if not outcome.ok:
            world.keep = True
            for proc in world.procs:
                outcome.figures.setdefault("logs", []).extend(str(p) for p in proc.logs)
        world.close()
    return outcome


def _loop(world: World, faults: Faults, options: Options, outcome: Outcome) -> None:
    """Faults at random instants (a Poisson process), supervision in between."""
    end = time.monotonic() + options.minutes * 60
    rate = options.faults_per_minute / 60.0
    next_fault = time.monotonic() + faults.rng.expovariate(rate) if rate > 0 else float("inf")
    while time.monotonic() < end:
        _supervise(world, faults, outcome)
        if time.monotonic() >= next_fault:
            faults.apply_one()
            next_fault = time.monotonic() + faults.rng.expovariate(rate)
        time.sleep(0.2)


def _supervise(world: World, faults: Faults, outcome: Outcome) -> None:
    """Restart a process that died when no fault was holding it down: that is a finding."""
    for proc in world.procs:
        if proc.held or proc.alive():
            continue
        problem = (
            f"{proc.name} exited on its own (code {proc.exit_code()}) at t+{faults.elapsed():.0f}s;"
            f" log tail: {proc.log_tail(600)!r}"
        )
        print(f"  !! {problem}", flush=True)
        proc.unexpected.append(problem)
        outcome.problems.append(problem)
        proc.start()


def _settle_and_audit(world: World, faults: Faults, outcome: Outcome) -> None:
    figures = outcome.figures
    engine = world.engine
    _supervise(world, faults, outcome)
    # Every steady schedule catches up to the present (scheduling did not stop), and every
    # instant the setter wrote by SQL has fired (next_run_at is back on the yearly slot);
    # disabling before then would cancel a slot the audit expects.
    caught_up = _wait(
        lambda: _scalar(world, "SELECT count(*) FROM scout_schedules WHERE (name LIKE"
                        " 'soak-steady-%' AND next_run_at <= now() - interval '5 seconds') OR"
                        " (name LIKE 'soak-sql-%' AND next_run_at < now() + interval '1 day')")
        == 0,
        timeout=180,
    )  # fmt: skip
    if not caught_up:
        outcome.problems.append("schedules did not catch up within 180 s of the last fault")
    with engine.begin() as conn:
        disabled_at = (
            conn.execute(text("UPDATE scout_schedules SET enabled = false RETURNING now()"))
            .scalars()
            .first()
        )
    # The agent finishes every run; the outbox empties.
    settled = _wait(
        lambda: (
            _scalar(world, "SELECT count(*) FROM scout_runs WHERE status <> 'completed'") == 0
            and _scalar(world, "SELECT count(*) FROM scout_outbox") == 0
        ),
        timeout=240,
        step=2.0,
    )
    # Let the collector hear the last events.
    _wait(lambda: time.time() - world.collector.last_at() > 5, timeout=60)
    _supervise(world, faults, outcome)
    if not settled:
        outcome.problems.append("runs or outbox did not settle within 240 s")
    _audit(world, faults, outcome, disabled_at)
    figures["worker_rss_mb"] = round(world.rss_mb("worker"), 1)
    if figures["worker_rss_mb"] > 400:
        outcome.problems.append(f"worker RSS {figures['worker_rss_mb']} MB")


def _scalar(world: World, sql: str, **params: Any) -> Any:
    with world.engine.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def _audit(world: World, faults: Faults, outcome: Outcome, disabled_at: datetime) -> None:
    f, problems = outcome.figures, outcome.problems
    with world.engine.connect() as conn:
        runs = conn.execute(
            text(
                "SELECT r.id, r.schedule_id, r.scheduled_for, r.status, r.created_at,"
                " s.name, s.created_at AS schedule_created FROM scout_runs r"
                " LEFT JOIN scout_schedules s ON s.id = r.schedule_id"
            )
        ).all()
        victims_bad = conn.execute(
            text(
                "SELECT name, last_error, next_run_at FROM scout_schedules"
                " WHERE name LIKE 'soak-victim-%' AND (last_error IS NOT NULL)"
            )
        ).all()
        backlog = conn.execute(text("SELECT count(*) FROM scout_outbox")).scalar_one()
        biggest_metrics = conn.execute(
            text("SELECT coalesce(max(pg_column_size(metrics)), 0) FROM scout_runs")
        ).scalar_one()
    seen = world.collector.snapshot()
    triggers = [s for s in seen if s.routing_key == "scout.trigger" and s.body]
    ids_per_run: dict[str, set[str]] = {}
    for s in triggers:
        assert s.body is not None
        ids_per_run.setdefault(str(s.body.get("run_id")), set()).add(str(s.body.get("event_id")))
    run_ids = {str(r.id) for r in runs}
    per_slot = Counter((r.schedule_id, r.scheduled_for) for r in runs if r.schedule_id)
    statuses = Counter(r.status for r in runs)
    f.update(
        runs=len(runs),
        statuses=dict(statuses),
        duplicate_runs=sum(n - 1 for n in per_slot.values()),
        lost_events=len(run_ids - set(ids_per_run)),
        unknown_events=len(set(ids_per_run) - run_ids),
        redelivered_events=len(triggers) - len(ids_per_run),
        runs_with_two_event_ids=sum(1 for ids in ids_per_run.values() if len(ids) > 1),
        outbox_backlog=backlog,
        stuck_runs=len(runs) - statuses.get("completed", 0),
        lifecycle_events_seen=sum(1 for s in seen if s.routing_key != "scout.trigger"),
        collector_reconnects=world.collector.reconnects,
        largest_stored_metrics_bytes=biggest_metrics,
    )
    if biggest_metrics > 256 * 1024:
        problems.append(f"a run stores {biggest_metrics} bytes of metrics")
    for key in ("duplicate_runs", "lost_events", "unknown_events", "runs_with_two_event_ids",
                "outbox_backlog", "stuck_runs"):  # fmt: skip
        if f[key]:
            problems.append(f"{key} = {f[key]}")
    if f["lost_events"]:
        lost = sorted(run_ids - set(ids_per_run))[:5]
        problems.append(f"runs without a delivered scout.trigger, e.g. {lost}")
    if f["stuck_runs"]:
        stuck = [(str(r.id), r.status, r.name) for r in runs if r.status != "completed"][:5]
        problems.append(f"runs not completed, e.g. {stuck}")
    _audit_slots(runs, disabled_at, faults, outcome)
    for name, error, _next in victims_bad:
        problems.append(f"{name} still has last_error after its fix: {error}")
    f["row_checks"] = list(faults.ledger.row_notes)
    f["refused_by_check"] = list(faults.ledger.refused)
    f["poison_published"] = faults.ledger.poison
    left = _queues_drained(world)
    if left:
        problems.append(f"messages left in scout-tasks' queues after 90 s: {left}")
    _audit_dead_letters(world, outcome)
    f["unexpected_exits"] = sum(len(p.unexpected) for p in world.procs)
    f["restarts"] = {p.name: p.restarts for p in world.procs}
    dead = [p.name for p in world.procs if not p.alive()]
    f["alive"] = f"{len(world.procs) - len(dead)}/{len(world.procs)}"
    if dead:
        problems.append(f"not alive at the end: {dead}")


def _queues_drained(world: World, timeout: float = 90.0) -> dict[str, int]:
    """What is still in scout-tasks' queues once they stop draining (empty: nothing).

    Runs complete when their last event is applied, while duplicates (redelivered
    after a lost connection) may still be queued; a quorum queue's count is also a few
    seconds stale. So wait for zero, and report what stays.
    """
    left: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            depths = world.rabbit.queue_depths()
        except Exception as exc:  # noqa: BLE001 - the broker is ours and up: report it
            return {f"cannot list queues: {exc}": 0}
        left = {q: n for q, n in depths.items() if q in (LIFECYCLE_QUEUE, "scout-tasks") and n}
        if not left:
            return {}
        time.sleep(3.0)
    return left


def _audit_dead_letters(world: World, outcome: Outcome) -> None:
    """Only the soak's poison may be dead-lettered: anything else is an agent's event lost."""
    reasons: Counter[str] = Counter()
    lost: list[str] = []
    with kombu.Connection(world.rabbit.url()) as conn:
        queue = kombu.Queue(DEAD_QUEUE, no_declare=True)(conn.default_channel)
        while (message := queue.get(no_ack=True)) is not None:
            headers = message.headers or {}
            deaths = headers.get("x-death") or [{}]
            reason = str(deaths[0].get("reason", headers.get("x-scout-dead-reason", "?")))
            reasons[reason] += 1
            if POISON_HEADER not in headers:
                lost.append(f"{message.delivery_info.get('routing_key')} ({reason}):"
                            f" {raw_body(message)[:200]!r}")  # fmt: skip
    outcome.figures["dead_lettered"] = dict(reasons)
    outcome.figures["dead_lettered_agent_events"] = len(lost)
    if lost:
        outcome.problems.append(f"{len(lost)} agent event(s) dead-lettered, e.g. {lost[:3]}")


def _audit_slots(runs: list[Any], disabled_at: datetime, faults: Faults, outcome: Outcome) -> None:
    """Every minute of every steady schedule has its run; every SQL-set instant has one."""
    f, problems = outcome.figures, outcome.problems
    by_schedule: dict[str, list[datetime]] = {}
    created: dict[str, datetime] = {}
    lags: list[float] = []
    for r in runs:
        if r.name and r.name.startswith("soak-steady-"):
            by_schedule.setdefault(r.name, []).append(r.scheduled_for)
            created[r.name] = r.schedule_created
            lags.append((r.created_at - r.scheduled_for).total_seconds())
    gaps = 0
    for name, slots in by_schedule.items():
        minutes = sorted({s.astimezone(UTC).replace(second=0, microsecond=0) for s in slots})
        first = (created[name] + timedelta(minutes=1)).replace(second=0, microsecond=0)
        last = disabled_at.replace(second=0, microsecond=0)
        expected = []
        t = first
        while t <= last:
            expected.append(t)
            t += timedelta(minutes=1)
        missing = [m for m in expected if m not in set(minutes)]
        # The slot of the disabling minute may not have fired yet when it was disabled.
        if missing and missing[-1] == last:
            missing.pop()
        if missing:
            gaps += len(missing)
            problems.append(f"{name}: no run for {[m.strftime('%H:%M') for m in missing][:5]}")
    f["steady_schedules_with_runs"] = len(by_schedule)
    f["missed_minute_slots"] = gaps
    if lags:
        lags.sort()
        f["fire_lag_p50_s"] = round(lags[len(lags) // 2], 2)
        f["fire_lag_max_s"] = round(lags[-1], 2)
    if len(by_schedule) < STEADY + JITTERED:
        problems.append(f"only {len(by_schedule)} of {STEADY + JITTERED} steady schedules fired")
    fired = Counter((r.schedule_id, r.scheduled_for) for r in runs if r.name and
                    r.name.startswith("soak-sql-"))  # fmt: skip
    with faults.ledger.lock:
        sql_slots = list(faults.ledger.sql_slots)
    missing_sql = [slot for slot in sql_slots if fired.get(slot, 0) != 1]
    f["sql_set_instants"] = len(sql_slots)
    if missing_sql:
        problems.append(f"{len(missing_sql)} next_run_at set by SQL without exactly one run,"
                        f" e.g. {[(str(i), str(t)) for i, t in missing_sql[:3]]}")  # fmt: skip
    forged = {str(r) for r in faults.ledger.forged_dup}
    changed = [str(r.id) for r in runs if str(r.id) in forged and r.status != "completed"]
    if changed:
        problems.append(f"a duplicate event_id changed completed runs: {changed[:5]}")


def new_seed() -> int:
    return uuid.uuid4().int % 1_000_000
