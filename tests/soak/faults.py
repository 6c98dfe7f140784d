"""The menu of faults: processes killed, servers stopped, networks cut, poison, bad rows.

Each fault names the resources it holds (``db-server``, ``broker-server``, ``db-net``,
``broker-net``, a process name) and needs; the soak picks only faults whose resources
are free, so two outages of one server never overlap, while different ones do. An
outage runs on a thread of its own: apply, wait, restore. Every random choice comes
from the soak's seeded ``random.Random``, drawn on the main thread in order, so a
seed replays the same faults with the same parameters (their timing depends on the
machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kombu
from kombu import Producer
from kombu.exceptions import KombuError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError

from tests.soak.world import EXCHANGE, Supervised, World

# Headers that just fit RabbitMQ's default frame_max when published (see test_lifecycle),
# less room for the poison marker.
PAD = 130_950 - 64
FIVE_MB = 5 * 1024 * 1024
POISON_HEADER = "x-soak-poison"
# What a row may hold when written by SQL, though no face would accept it; and its fix.
BAD_VALUES = {
    "row_bad_cron": (
        "cron_expression",
        ["61 * * * *", "* * *", "0 0 31 2 *", "@fortnightly", "0 4-4/0 * * *", "*/0 * * * *"],
        "* * * * *",
    ),
    "row_unknown_zone": ("timezone", ["Mars/Olympus_Mons", "UTC+25", "Europe/Paris ", ""], "UTC"),
}


def victim_pids(root: int) -> list[int]:
    """``root`` and every process under it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


@dataclass
class Applied:
    at: float  # seconds since the soak started
    kind: str
    detail: str
    seconds: float = 0.0  # how long the outage lasted, if any


@dataclass
class Ledger:
    """What the faults did, for the audit."""

    applied: list[Applied] = field(default_factory=list)
    sql_slots: list[tuple[uuid.UUID, Any]] = field(default_factory=list)
    row_notes: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    forged_dup: list[uuid.UUID] = field(default_factory=list)  # runs that must stay completed
    poison: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Faults:
    """Draws and applies faults against a :class:`World`."""

    def __init__(self, world: World, rng: random.Random, started: float) -> None:
        self.world = world
        self.rng = rng
        self.started = started
        self.ledger = Ledger()
        self.held: set[str] = set()
        self.threads: list[threading.Thread] = []
        self._victims = 0
        self.menu: list[tuple[str, int, tuple[str, ...], Callable[[], str | None]]] = [
            # kind, weight, resources held/needed, apply (returns a detail, None if not applicable)
            ("kill_worker", 4, ("worker",), self.kill_worker),
            ("kill_beat", 4, ("beat",), self.kill_beat),
            ("kill_agent", 1, ("agent",), self.kill_agent),
            ("close_connections", 3, ("broker-server",), self.close_connections),
            ("broker_restart", 2, ("broker-server",), self.broker_restart),
            ("broker_crash", 1, ("broker-server",), self.broker_crash),
            ("postgres_restart", 3, ("db-server",), self.postgres_restart),
            ("db_proxy_cut", 2, ("db-net",), lambda: self.proxy_cut("db")),
            ("broker_proxy_cut", 2, ("broker-net",), lambda: self.proxy_cut("broker")),
            ("db_proxy_stall", 2, ("db-net",), lambda: self.proxy_stall("db")),
            ("broker_proxy_stall", 2, ("broker-net",), lambda: self.proxy_stall("broker")),
            ("freeze_worker", 1, ("worker",), lambda: self.freeze("worker")),
            ("freeze_beat", 1, ("beat",), lambda: self.freeze("beat")),
            ("freeze_postgres", 1, ("db-server",), self.freeze_postgres),
            ("broker_alarm", 1, ("broker-server",), self.broker_alarm),
            ("row_lock_held", 1, ("db-server",), self.row_lock_held),
            ("poison_big_headers", 1, ("broker-server",), self.poison_big_headers),
            ("poison_5mb_progress", 1, ("broker-server", "db-server"), self.poison_5mb),
            ("poison_future_timestamp", 1, ("broker-server", "db-server"), self.poison_future),
            ("poison_unknown_run", 1, ("broker-server",), self.poison_unknown_run),
            ("poison_duplicate_event_id", 1, ("broker-server", "db-server"), self.poison_dup),
            ("poison_not_json", 1, ("broker-server",), self.poison_not_json),
            ("row_bad_cron", 1, ("db-server",), lambda: self.row_break("row_bad_cron")),
            ("row_unknown_zone", 1, ("db-server",), lambda: self.row_break("row_unknown_zone")),
            ("row_huge_max_strategies", 1, ("db-server",), self.row_huge_max),
            ("row_null_next_run_at", 1, ("db-server",), self.row_null_next),
            ("row_disable_enable", 1, ("db-server",), self.row_flip),
            ("row_delete_mid_fire", 1, ("db-server",), self.row_delete_mid_fire),
        ]

    # -- drawing ----------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def free(self, resources: tuple[str, ...]) -> bool:
        with self.ledger.lock:
            return not (set(resources) & self.held)

    def apply_one(self) -> None:
        """Draw one fault among those whose resources are free, and apply it."""
        kinds = [(k, w, r, f) for k, w, r, f in self.menu if self.free(r)]
        if not kinds:
            return
        kind, _w, _r, apply = self.rng.choices(kinds, weights=[w for _k, w, *_ in kinds])[0]
        at = self.elapsed()
        try:
            detail = apply()
        except (DBAPIError, OSError, KombuError) as exc:
            detail = f"not applied: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        if detail is not None:
            self.record(Applied(round(at, 1), kind, detail))

    def record(self, applied: Applied) -> None:
        with self.ledger.lock:
            self.ledger.applied.append(applied)
        print(f"  t+{applied.at:6.1f}s  {applied.kind:26} {applied.detail}", flush=True)

    def outage(
        self,
        kind: str,
        resources: tuple[str, ...],
        seconds: float,
        down: Callable[[], None],
        up: Callable[[], None],
        detail: str,
    ) -> str:
        """Take something down now, bring it back after ``seconds`` on a thread."""
        with self.ledger.lock:
            self.held |= set(resources)
        at = self.elapsed()

        def run() -> None:
            try:
                down()
                time.sleep(seconds)
            finally:
                try:
                    up()
                finally:
                    with self.ledger.lock:
                        self.held -= set(resources)
            print(f"  t+{self.elapsed():6.1f}s  {kind:26} restored after {seconds:.1f}s "
                  f"(from t+{at:.1f}s)", flush=True)  # fmt: skip

        thread = threading.Thread(target=run, name=kind, daemon=True)
        thread.start()
        self.threads.append(thread)
        return detail

    def wait_restored(self) -> None:
        for thread in self.threads:
            thread.join(timeout=300)

    # -- processes --------------------------------------------------------------------

    def _kill(self, kind: str, resource: str) -> str:
        victim: Supervised = self.rng.choice(self.world.of_kind(kind))
        delay = round(self.rng.uniform(0.2, 6.0), 1)

        def down() -> None:
            victim.held = True
            victim.kill()

        def up() -> None:
            victim.start()
            victim.restarts += 1
            victim.held = False

        return self.outage(
            f"kill_{kind}", (resource,), delay, down, up,
            f"SIGKILL {victim.name} (pid {victim.pid}), restarted after {delay}s",
        )  # fmt: skip

    def kill_worker(self) -> str:
        return self._kill("worker", "worker")

    def kill_beat(self) -> str:
        return self._kill("beat", "beat")

    def kill_agent(self) -> str:
        return self._kill("agent", "agent")

    # -- servers and network ----------------------------------------------------------

    def close_connections(self) -> str:
        self.world.rabbit.ctl("close_all_connections", "-p", "/", "soak fault", timeout=60)
        return "rabbitmqctl close_all_connections -p /"

    def broker_restart(self) -> str:
        seconds = round(self.rng.uniform(2, 15), 1)
        rabbit = self.world.rabbit
        return self.outage(
            "broker_restart", ("broker-server",), seconds,
            lambda: rabbit.ctl("stop_app"), lambda: rabbit.ctl("start_app", timeout=300),
            f"rabbitmqctl stop_app, start_app after {seconds}s",
        )  # fmt: skip

    def broker_crash(self) -> str:
        seconds = round(self.rng.uniform(1, 8), 1)
        rabbit = self.world.rabbit
        return self.outage(
            "broker_crash", ("broker-server",), seconds, rabbit.crash,
            lambda: self.world.launch(rabbit.start),
            f"SIGKILL of the RabbitMQ node, started again after {seconds}s",
        )  # fmt: skip

    def postgres_restart(self) -> str:
        seconds = round(self.rng.uniform(1, 12), 1)
        mode = self.rng.choice(["fast", "immediate", "kill"])
        sig = {"fast": signal.SIGINT, "immediate": signal.SIGQUIT, "kill": signal.SIGKILL}[mode]
        pg = self.world.pg

        def down() -> None:
            pg.stop(sig)

        return self.outage(
            "postgres_restart", ("db-server",), seconds, down,
            lambda: self.world.launch(pg.start),
            f"PostgreSQL {mode} stop, started again after {seconds}s",
        )  # fmt: skip

    def proxy_cut(self, which: str) -> str:
        seconds = round(self.rng.uniform(1, 20), 1)
        proxy = self.world.db_proxy if which == "db" else self.world.amqp_proxy
        return self.outage(
            f"{which}_proxy_cut", (f"{which}-net",), seconds, proxy.cut, proxy.restore,
            f"TCP proxy to the {'database' if which == 'db' else 'broker'} cut for {seconds}s",
        )  # fmt: skip

    def proxy_stall(self, which: str) -> str:
        seconds = round(self.rng.uniform(5, 60), 1)
        proxy = self.world.db_proxy if which == "db" else self.world.amqp_proxy
        return self.outage(
            f"{which}_proxy_stall", (f"{which}-net",), seconds, proxy.stall, proxy.resume,
            f"TCP to the {'database' if which == 'db' else 'broker'} black-holed for {seconds}s"
            " (connections open, nothing passes), then flowing again",
        )  # fmt: skip

    def freeze(self, kind: str) -> str:
        """SIGSTOP a process (a long GC pause, a VM stolen from under it), SIGCONT later."""
        victim: Supervised = self.rng.choice(self.world.of_kind(kind))
        seconds = round(self.rng.uniform(3, 40), 1)
        pids = victim_pids(victim.pid)

        def signal_all(sig: int) -> None:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)

        def down() -> None:
            victim.held = True
            signal_all(signal.SIGSTOP)

        def up() -> None:
            signal_all(signal.SIGCONT)
            victim.held = False

        return self.outage(
            f"freeze_{kind}", (kind,), seconds, down, up,
            f"SIGSTOP {victim.name} and its children for {seconds}s, then SIGCONT",
        )  # fmt: skip

    def freeze_postgres(self) -> str:
        seconds = round(self.rng.uniform(3, 30), 1)
        pg = self.world.pg
        assert pg.proc is not None
        pids = victim_pids(pg.proc.pid)

        def signal_all(sig: int) -> None:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)

        return self.outage(
            "freeze_postgres", ("db-server",), seconds,
            lambda: signal_all(signal.SIGSTOP), lambda: signal_all(signal.SIGCONT),
            f"SIGSTOP PostgreSQL (all {len(pids)} processes) for {seconds}s, then SIGCONT",
        )  # fmt: skip

    def broker_alarm(self) -> str:
        """A memory alarm: RabbitMQ blocks every publishing connection until it clears."""
        seconds = round(self.rng.uniform(3, 45), 1)
        rabbit = self.world.rabbit
        return self.outage(
            "broker_alarm", ("broker-server",), seconds,
            lambda: rabbit.ctl("set_vm_memory_high_watermark", "0.000001"),
            lambda: rabbit.ctl("set_vm_memory_high_watermark", "0.4"),
            f"RabbitMQ memory alarm (publishers blocked) for {seconds}s",
        )  # fmt: skip

    def row_lock_held(self) -> str:
        """A transaction (a slow migration, an operator's psql) holds schedule rows locked."""
        seconds = round(self.rng.uniform(3, 40), 1)
        how = self.rng.choice(["rows", "table"])
        held: dict[str, Any] = {}

        def down() -> None:
            conn = self.world.engine.connect()
            held["conn"] = conn
            conn.begin()
            if how == "rows":
                conn.execute(text("SELECT id FROM scout_schedules WHERE name LIKE"
                                  " 'soak-steady-1%' FOR UPDATE"))  # fmt: skip
            else:
                conn.execute(text("LOCK TABLE scout_schedules IN SHARE ROW EXCLUSIVE MODE"))

        def up() -> None:
            conn = held.get("conn")
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.rollback()
                with contextlib.suppress(Exception):
                    conn.close()

        what = ("11 steady schedules' rows locked FOR UPDATE" if how == "rows"
                else "scout_schedules locked against writes")  # fmt: skip
        return self.outage(
            "row_lock_held", ("db-server",), seconds, down, up, f"{what} for {seconds}s"
        )

    # -- poison -----------------------------------------------------------------------

    def _publish(self, body: bytes, routing_key: str, **kwargs: Any) -> None:
        # Marked, so the audit can tell a dead-lettered poison from a lost agent event.
        headers = {POISON_HEADER: "1", **kwargs.pop("headers", {})}
        with kombu.Connection(self.world.rabbit.url(), connect_timeout=5) as conn:
            Producer(conn.default_channel).publish(
                body, exchange=EXCHANGE, routing_key=routing_key,
                content_type="application/json", content_encoding="utf-8",
                delivery_mode=2, retry=False, headers=headers, **kwargs,
            )  # fmt: skip
        with self.ledger.lock:
            self.ledger.poison += 1

    def _recent_run(self, status: str | None = None) -> uuid.UUID | None:
        with self.world.engine.connect() as conn:
            runs = list(
                conn.execute(
                    text(
                        "SELECT id FROM scout_runs WHERE (CAST(:s AS text) IS NULL OR status = :s)"
                        " ORDER BY created_at DESC, id LIMIT 20"
                    ),
                    {"s": status},
                ).scalars()
            )
        return self.rng.choice(runs) if runs else None

    @staticmethod
    def _event(event_type: str, run_id: uuid.UUID, **fields: Any) -> dict[str, Any]:
        return {
            "event_id": str(uuid.uuid4()),
            "event_type": event_type,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "run_id": str(run_id),
            **fields,
        }

    def poison_big_headers(self) -> str:
        self._publish(b"not json", "scout.progress", headers={"x-pad": "p" * PAD})
        return f"scout.progress, body 'not json', {PAD:,} bytes of headers"

    def poison_not_json(self) -> str:
        body = bytes(self.rng.randrange(256) for _ in range(200))
        self._publish(body, self.rng.choice(["scout.started", "scout.completed", "scout.failed"]))
        return "200 random bytes as a lifecycle event"

    def poison_5mb(self) -> str | None:
        run_id = self._recent_run()
        if run_id is None:
            return None
        event = self._event("scout.progress", run_id, stage="pad", message="x" * FIVE_MB)
        self._publish(json.dumps(event).encode(), "scout.progress")
        return f"5 MB scout.progress for run {run_id}"

    def poison_future(self) -> str | None:
        run_id = self._recent_run()
        if run_id is None:
            return None
        event = self._event("scout.progress", run_id, stage="forged", progress=99)
        event["timestamp"] = "9999-12-31T23:59:59Z"
        self._publish(json.dumps(event).encode(), "scout.progress")
        return f"scout.progress stamped 9999-12-31 for run {run_id}"

    def poison_unknown_run(self) -> str:
        run_id = uuid.uuid4()
        kind = self.rng.choice(
            ["scout.started", "scout.progress", "scout.completed", "scout.failed"]
        )
        self._publish(json.dumps(self._event(kind, run_id, error_message="forged")).encode(), kind)
        return f"{kind} for unknown run {run_id}"

    def poison_dup(self) -> str | None:
        """scout.failed reusing the event_id of an applied scout.completed: must change nothing."""
        with self.world.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT e.event_id, e.run_id FROM scout_run_events e"
                    " JOIN scout_runs r ON r.id = e.run_id"
                    " WHERE e.event_type = 'scout.completed' AND r.status = 'completed'"
                    " ORDER BY e.received_at DESC LIMIT 20"
                )
            ).all()
        if not rows:
            return None
        event_id, run_id = self.rng.choice(rows)
        event = self._event("scout.failed", run_id, error_message="forged duplicate")
        event["event_id"] = str(event_id)
        self._publish(json.dumps(event).encode(), "scout.failed", message_id=str(event_id))
        with self.ledger.lock:
            self.ledger.forged_dup.append(run_id)
        return f"scout.failed reusing completed event_id {event_id} of run {run_id}"

    # -- rows written by SQL ----------------------------------------------------------

    def victim(self, cron_expression: str = "* * * * *", **extra: Any) -> uuid.UUID:
        self._victims += 1
        columns = {"misfire_policy": "catch_up", "misfire_grace_seconds": 600, **extra}
        names = ", ".join(columns)
        values = ", ".join(f":{k}" for k in columns)
        return self._sql(  # type: ignore[no-any-return]
            "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies,"
            f" {names}) VALUES (:name, :cron, 'soak', 1, {values}) RETURNING id",
            name=f"soak-victim-{self._victims}",
            cron=cron_expression,
            **columns,
        )

    def _sql(self, statement: str, **params: Any) -> Any:
        """Run one statement, waiting out a database restart (another fault) for up to 90 s."""
        deadline = time.monotonic() + 90
        while True:
            try:
                with self.world.engine.begin() as conn:
                    result = conn.execute(text(statement), params)
                    return result.scalar_one() if result.returns_rows else None
            except OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    def row_break(self, kind: str) -> str:
        seconds = round(self.rng.uniform(3, 20), 1)
        schedule_id = self.victim()
        column, choices, good = BAD_VALUES[kind]
        bad = self.rng.choice(choices)

        def down() -> None:
            self._sql(
                f"UPDATE scout_schedules SET {column} = :v WHERE id = :id", v=bad, id=schedule_id
            )

        def up() -> None:
            error = self._sql(
                "SELECT last_error FROM scout_schedules WHERE id = :id", id=schedule_id
            )
            with self.ledger.lock:
                self.ledger.row_notes.append(
                    f"{column}={bad!r}: last_error {'set' if error else 'NOT set'}"
                    f" after {seconds}s{': ' + error[:100] if error else ''}"
                )
            self._sql(
                f"UPDATE scout_schedules SET {column} = :v WHERE id = :id", v=good, id=schedule_id
            )

        return self.outage(
            kind, (), seconds, down, up,
            f"{column} = {bad!r} on a new schedule by SQL, fixed after {seconds}s",
        )  # fmt: skip

    def row_huge_max(self) -> str:
        value = self.rng.choice([2_147_483_647, 1001, 0, -5])
        schedule_id = self.victim()
        try:
            self._sql("UPDATE scout_schedules SET max_strategies = :v WHERE id = :id",
                      v=value, id=schedule_id)  # fmt: skip
        except DBAPIError as exc:
            if "max_strategies" not in str(exc.orig):
                raise
            with self.ledger.lock:
                self.ledger.refused.append(f"max_strategies={value}")
            return f"max_strategies = {value} by SQL: refused by the CHECK constraint"
        self._sql("UPDATE scout_schedules SET max_strategies = 1000 WHERE id = :id", id=schedule_id)
        return f"max_strategies = {value} by SQL: ACCEPTED"

    def row_null_next(self) -> str:
        schedule_id = self.victim()
        time.sleep(self.rng.uniform(0.5, 3))
        self._sql("UPDATE scout_schedules SET next_run_at = NULL WHERE id = :id", id=schedule_id)
        return "next_run_at = NULL by SQL on a schedule"

    def row_flip(self) -> str:
        seconds = round(self.rng.uniform(0.5, 10), 1)
        schedule_id = self.victim()
        return self.outage(
            "row_disable_enable", (), seconds,
            lambda: self._sql("UPDATE scout_schedules SET enabled = false WHERE id = :id",
                              id=schedule_id),
            lambda: self._sql("UPDATE scout_schedules SET enabled = true WHERE id = :id",
                              id=schedule_id),
            f"enabled = false by SQL, true again after {seconds}s",
        )  # fmt: skip

    def row_delete_mid_fire(self) -> str:
        lead = round(self.rng.uniform(0.3, 2.0), 2)
        after = round(self.rng.uniform(0.0, 2.5), 2)
        schedule_id = self.victim("0 0 1 1 *")
        self._sql(
            "UPDATE scout_schedules SET next_run_at = now() + make_interval(secs => :s)"
            " WHERE id = :id", s=lead, id=schedule_id,
        )  # fmt: skip
        time.sleep(lead + after)
        self._sql("DELETE FROM scout_schedules WHERE id = :id", id=schedule_id)
        return f"schedule due in {lead}s deleted by SQL {after}s after its slot"
