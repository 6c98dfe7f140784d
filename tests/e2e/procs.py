"""Real ``celery -A scout_tasks`` processes for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import kombu

from scout_tasks.lifecycle_queues import LifecycleQueues

CELERY = str(Path(sys.executable).with_name("celery"))


class CeleryProcess:
    """One ``celery -A scout_tasks <kind>`` process with its log in a file."""

    def __init__(self, kind: str, env: dict[str, str], workdir: Path, *extra: str) -> None:
        self.kind = kind
        self.log_path = workdir / f"{kind}-{uuid.uuid4().hex[:6]}.log"
        args = [CELERY, "-A", "scout_tasks", kind, "-l", "info", *extra]
        if kind == "worker":
            args += [
                "-n",
                f"e2e-{uuid.uuid4().hex[:8]}@%h",
                "--without-mingle",
                "--without-gossip",
                "-c",
                "2",
            ]
        elif kind == "beat":
            args += ["-s", str(workdir / f"beat-{uuid.uuid4().hex[:6]}")]
        self._log = self.log_path.open("wb")
        self._terminated_at: float | None = None
        self.proc = subprocess.Popen(
            args, env=env, cwd=workdir, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.kind} exited early:\n{self.log()[-4000:]}")
            time.sleep(0.1)
        raise AssertionError(f"{self.kind} never logged {text!r}:\n{self.log()[-4000:]}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the process and its pool children."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def terminate(self) -> None:
        """SIGTERM once, without waiting (:meth:`stop` or :func:`stop_all` waits)."""
        if self.alive() and self._terminated_at is None:
            self._terminated_at = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 20.0) -> float:
        """SIGTERM, wait; returns how long the exit took (SIGKILL after ``timeout``)."""
        if not self.alive():
            self._log.close()
            return 0.0
        self.terminate()
        assert self._terminated_at is not None
        try:
            self.proc.wait(timeout=max(0.0, self._terminated_at + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()
        return time.monotonic() - self._terminated_at


def stop_all(procs: Iterable[CeleryProcess], timeout: float = 20.0) -> None:
    """Stop several processes at once: a warm shutdown takes seconds, and each waits alone.

    SIGTERM goes to every one first, so the teardown lasts as long as the slowest
    exit rather than the sum of them.
    """
    procs = list(procs)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.stop(timeout)


# Every task queue scout_env named: tests/e2e/conftest.py deletes what a worker
# declared for each after the test, whether or not the test cleaned up itself.
STARTED_TASK_QUEUES: list[str] = []


def scout_env(db_url: str, broker_url: str, exchange: str, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOUT_")}
    env.update(
        SCOUT_DATABASE_URL=db_url,
        SCOUT_BROKER_URL=broker_url,
        SCOUT_EXCHANGE=exchange,
        SCOUT_TASK_QUEUE=f"scout-tasks-e2e-{uuid.uuid4().hex[:8]}",
        SCOUT_TICK_SECONDS="5",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    STARTED_TASK_QUEUES.append(env["SCOUT_TASK_QUEUE"])
    return env


def delete_worker_queues(broker_url: str, task_queue: str) -> None:
    """Remove what a worker on ``task_queue`` declared: its task queue, lifecycle queues and
    exchanges, so a test run leaves nothing behind in the vhost."""
    names = LifecycleQueues.for_task_queue(task_queue)
    with kombu.Connection(broker_url) as conn:
        for queue in (task_queue, *names.all_names()):
            with contextlib.suppress(Exception):
                conn.channel().queue_delete(queue=queue)
        for exchange in (task_queue, names.dead_exchange):
            with contextlib.suppress(Exception):
                conn.channel().exchange_delete(exchange=exchange)
