"""SCOUT_LOG_FORMAT=json: every line real beat and worker processes write on stderr is JSON.

Celery's own records (the worker's "ready", a task's "succeeded" line from a
prefork child) and scout-tasks' records with their ids are all checked, with
stderr kept apart from stdout, where Celery prints its banner.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kombu
import pytest

from tests.e2e.procs import CELERY, scout_env


class JsonProcess:
    """``celery -A scout_tasks <kind>`` with stdout and stderr in separate files."""

    def __init__(
        self, kind: str, env: dict[str, str], workdir: Path, *extra: str, level: str = "info"
    ) -> None:
        self.kind = kind
        self.err_path = workdir / f"{kind}.stderr"
        self._out = (workdir / f"{kind}.stdout").open("wb")
        self._err = self.err_path.open("wb")
        self.proc = subprocess.Popen(
            [CELERY, "-A", "scout_tasks", kind, "-l", level, *extra],
            env=env,
            cwd=workdir,
            stdout=self._out,
            stderr=self._err,
        )

    def lines(self) -> list[dict[str, Any]]:
        """Every stderr line parsed; a line that is not one JSON object fails the test."""
        parsed = []
        for number, line in enumerate(self.err_path.read_text().splitlines(), 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                pytest.fail(f"{self.kind} stderr line {number} is not JSON: {line!r}")
            assert isinstance(record, dict), line
            assert isinstance(record.get("level"), str) and "message" in record, line
            parsed.append(record)
        return parsed

    def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout: float = 40.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(match(record) for record in self.lines()):
                return
            if self.proc.poll() is not None:
                pytest.fail(f"{self.kind} exited early:\n{self.err_path.read_text()[-3000:]}")
            time.sleep(0.2)
        pytest.fail(f"{self.kind}: no such line in time:\n{self.err_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._out.close()
        self._err.close()


@pytest.fixture
def json_stack(
    db_url: str, broker_url: str, exchange_name: str, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    env = scout_env(db_url, broker_url, exchange_name, SCOUT_LOG_FORMAT="json")
    worker = JsonProcess(
        "worker",
        env,
        tmp_path,
        "-n",
        f"json-{uuid.uuid4().hex[:8]}@%h",
        "--without-mingle",
        "--without-gossip",
        "-c",
        "1",
    )
    # Debug: the "sent" lines carry the slot.
    beat = JsonProcess("beat", env, tmp_path, "-s", str(tmp_path / "beat-schedule"), level="debug")
    try:
        yield {"worker": worker, "beat": beat, "env": env}
    finally:
        beat.stop()
        worker.stop()
        with kombu.Connection(broker_url) as conn:
            channel = conn.default_channel
            queue = env["SCOUT_TASK_QUEUE"]
            for name in (queue, f"{queue}.lifecycle.v2", f"{queue}.lifecycle.v2.dead"):
                try:
                    channel.queue_delete(name)
                except conn.channel_errors:
                    channel = conn.channel()


def test_beat_and_worker_write_json_lines(
    json_stack: dict[str, Any], broker_url: str, exchange_name: str
) -> None:
    worker: JsonProcess = json_stack["worker"]
    beat: JsonProcess = json_stack["beat"]

    worker.wait_for(
        lambda r: str(r["message"]).endswith("ready.") and r["logger"] == "celery.apps.worker"
    )
    beat.wait_for(lambda r: r.get("action") == "beat.leader")
    # The periodic tick, sent by beat and run in a prefork child: Celery's own
    # "succeeded" record from the child is JSON too.
    beat.wait_for(lambda r: r.get("action") == "beat.sent" and "slot" in r)
    worker.wait_for(
        lambda r: "scout_tasks.tick" in str(r["message"]) and "succeeded" in str(r["message"])
    )

    # A lifecycle event for a run that does not exist: its ids become fields.
    run_id = str(uuid.uuid4())
    with kombu.Connection(broker_url) as conn:
        exchange = kombu.Exchange(exchange_name, type="topic", durable=True)
        producer = conn.Producer()
        deadline = time.monotonic() + 30
        while not any(r.get("run_id") == run_id for r in worker.lines()):
            assert time.monotonic() < deadline, worker.err_path.read_text()[-3000:]
            event_id = str(uuid.uuid4())
            producer.publish(
                {
                    "event_id": event_id,
                    "event_type": "scout.started",
                    "timestamp": datetime.now(UTC).isoformat(),
                    "run_id": run_id,
                    "source": "stratninja",
                },
                exchange=exchange,
                routing_key="scout.started",
                message_id=event_id,
                serializer="json",
                delivery_mode=2,
            )
            time.sleep(1.0)
    unknown = next(r for r in worker.lines() if r.get("run_id") == run_id)
    assert unknown["level"] == "WARNING"
    assert unknown["action"] == "lifecycle.unknown_run"
    assert unknown["event_id"]

    beat.stop()
    worker.stop()
    # Shutdown lines too: parse everything once more after both exited.
    for proc in (beat, worker):
        records = proc.lines()
        assert records, proc.kind
        for record in records:
            datetime.fromisoformat(record["time"])
            assert record["logger"]


def test_api_writes_json_lines(db_url: str, broker_url: str, tmp_path: Path) -> None:
    """`scout-tasks api`: uvicorn's start-up and access lines and scout-tasks' own, all JSON."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    env = scout_env(db_url, broker_url, "scout", SCOUT_LOG_FORMAT="json")
    out_path, err_path = tmp_path / "api.stdout", tmp_path / "api.stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            [str(Path(CELERY).with_name("scout-tasks")), "api", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=err,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"{base}/api/scout/runs", timeout=2).read()
                    break
                except OSError:
                    assert proc.poll() is None, err_path.read_text()
                    assert time.monotonic() < deadline, err_path.read_text()
                    time.sleep(0.2)
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(f"{base}/api/scout/runs/not-a-uuid", timeout=5)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    records = []
    for path in (err_path, out_path):
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                pytest.fail(f"{path.name} line is not JSON: {line!r}")
            assert isinstance(record.get("level"), str) and "message" in record, line
            assert "color_message" not in record, line
            records.append(record)
    loggers = {record["logger"] for record in records}
    assert {"uvicorn.error", "uvicorn.access"} <= loggers, loggers
    assert any("/api/scout/runs HTTP/1.1" in str(r["message"]) for r in records)
