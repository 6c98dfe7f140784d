"""The full loop with real processes and the reference agent (examples/scout_agent.py).

SQL row -> beat -> worker fires -> ``scout.trigger`` -> agent -> ``scout.started`` /
``scout.progress`` / ``scout.completed`` (or ``scout.failed``) -> the worker's
lifecycle consumer -> the run row.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kombu
import pytest
from sqlalchemy import Engine, text

from tests.e2e.procs import CeleryProcess, scout_env, stop_all

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "examples" / "scout_agent.py"
COUNTERS = ("total_fetched", "validated", "validation_failed", "duplicates_removed", "submitted")
# From the schedule's slot to the run row being terminal: 2 s of lead time,
# the agent's 0.4 s of simulated work, and generous slack for a slow machine.
DEADLINE = 30.0


class AgentProcess:
    """``python examples/scout_agent.py`` with its log in a file."""

    def __init__(
        self, broker_url: str, exchange: str, queue: str, workdir: Path, *extra: str
    ) -> None:
        self.log_path = workdir / f"agent-{uuid.uuid4().hex[:6]}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(AGENT),
                "--broker-url",
                broker_url,
                "--exchange",
                exchange,
                "--queue",
                queue,
                "--once",
                "1",
                "--work-seconds",
                "0.4",
                *extra,
            ],
            cwd=workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited early:\n{self.log()[-4000:]}")
            time.sleep(0.05)
        raise AssertionError(f"agent never logged {needle!r}:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture
def roundtrip(
    db_url: str, broker_url: str, exchange_name: str, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    """A worker and a beat; the test adds the agent. Every queue is deleted afterwards."""
    env = scout_env(db_url, broker_url, exchange_name)
    task_queue = env["SCOUT_TASK_QUEUE"]
    agent_queue = f"scout-agent-e2e-{uuid.uuid4().hex[:8]}"
    worker = CeleryProcess("worker", env, tmp_path)
    beat = CeleryProcess("beat", env, tmp_path)
    agents: list[AgentProcess] = []
    try:
        # The lifecycle queue must be bound before the agent reports.
        worker.wait_for("consuming lifecycle events from")
        worker.wait_for("ready")
        beat.wait_for("this beat is now the leader")
        yield {
            "worker": worker,
            "beat": beat,
            "agents": agents,
            "agent_queue": agent_queue,
            "tmp_path": tmp_path,
        }
    finally:
        for agent in agents:
            agent.stop()
        stop_all([beat, worker])
        with kombu.Connection(broker_url) as conn:
            channel = conn.default_channel
            for name in (
                task_queue,
                f"{task_queue}.lifecycle.v2",
                f"{task_queue}.lifecycle.v2.dead",
                agent_queue,
            ):
                try:
                    channel.queue_delete(name)
                except conn.channel_errors:
                    # A missing queue closes the channel; carry on with a new one.
                    channel = conn.channel()
            with contextlib.suppress(conn.channel_errors):
                channel.exchange_delete(f"{task_queue}.lifecycle.v2.dlx")


def _start_agent(rt: dict[str, Any], broker_url: str, exchange: str, *extra: str) -> AgentProcess:
    agent = AgentProcess(broker_url, exchange, rt["agent_queue"], rt["tmp_path"], *extra)
    rt["agents"].append(agent)
    # Its queue must exist before the trigger is published, or the trigger
    # waits in the outbox for the next tick.
    agent.wait_for("consuming scout.trigger")
    return agent


def _insert_due_in(engine: Engine, name: str, seconds: float) -> uuid.UUID:
    with engine.begin() as conn:
        return conn.execute(
            text(
                "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies,"
                " next_run_at) VALUES (:n, '0 0 * * *', 'stratninja', 12,"
                " now() + make_interval(secs => :s)) RETURNING id"
            ),
            {"n": name, "s": seconds},
        ).scalar_one()


def _wait_for_terminal_run(engine: Engine, schedule_id: uuid.UUID, rt: dict[str, Any]) -> Any:
    deadline = time.monotonic() + DEADLINE
    run = None
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            run = conn.execute(
                text("SELECT * FROM scout_runs WHERE schedule_id = :s"), {"s": schedule_id}
            ).one_or_none()
        if run is not None and run.status in ("completed", "failed", "cancelled"):
            return run
        time.sleep(0.1)
    agent_log = rt["agents"][-1].log() if rt["agents"] else ""
    raise AssertionError(
        f"run not terminal within {DEADLINE}s: {run}\n"
        f"--- worker\n{rt['worker'].log()[-3000:]}\n--- agent\n{agent_log[-3000:]}"
    )


def test_agent_completes_a_scheduled_run(
    roundtrip: dict[str, Any], engine: Engine, broker_url: str, exchange_name: str
) -> None:
    agent = _start_agent(roundtrip, broker_url, exchange_name)
    inserted = time.monotonic()
    schedule_id = _insert_due_in(engine, "Agent round trip", 2.0)

    run = _wait_for_terminal_run(engine, schedule_id, roundtrip)
    took = time.monotonic() - inserted

    assert run.status == "completed", run
    assert run.trigger_type == "scheduled"
    assert run.error_message is None
    assert run.started_at is not None and run.completed_at is not None
    assert run.scheduled_for <= run.created_at <= run.started_at <= run.completed_at
    metrics = run.metrics
    for key in COUNTERS:
        assert isinstance(metrics.get(key), int), (key, metrics)
    assert (
        metrics["validated"] + metrics["validation_failed"] + metrics["duplicates_removed"]
        == metrics["total_fetched"]
    )
    assert 0 < metrics["submitted"] <= min(metrics["validated"], 12)
    # The last progress event is kept, with its stage metrics.
    progress = metrics["progress"]
    assert progress["stage"] == "submit" and progress["progress"] == 100, progress
    assert progress["stage_metrics"]["submitted"] == metrics["submitted"]

    # --once 1: the agent acknowledged the trigger and exited on its own.
    assert agent.proc.wait(timeout=10) == 0, agent.log()
    assert f"run {run.id}: scout.completed, trigger acknowledged" in agent.log()
    slot_to_done = (run.completed_at - run.scheduled_for).total_seconds()
    print(f"\ninsert -> completed {took:.2f}s; slot -> completed_at {slot_to_done:.2f}s")


def test_agent_failure_fails_the_run(
    roundtrip: dict[str, Any], engine: Engine, broker_url: str, exchange_name: str
) -> None:
    agent = _start_agent(roundtrip, broker_url, exchange_name, "--fail-rate", "1")
    schedule_id = _insert_due_in(engine, "Agent failure", 2.0)

    run = _wait_for_terminal_run(engine, schedule_id, roundtrip)

    assert run.status == "failed", run
    assert run.error_message and run.error_message.startswith("simulated failure in the ")
    assert run.started_at is not None and run.completed_at is not None
    assert run.metrics["stage"] in ("fetch", "deduplicate", "validate", "submit")
    assert not any(key in run.metrics for key in COUNTERS)
    assert agent.proc.wait(timeout=10) == 0, agent.log()
    assert f"run {run.id}: scout.failed, trigger acknowledged" in agent.log()
