"""Flower shows scout-tasks' tasks: real worker, beat and Flower, the page rendered in Chromium.

Flower's tasks page is filled by its JavaScript from Flower's API, so the page
is loaded once in headless Chromium (with a virtual-time budget so the scripts
run) and the rendered DOM is searched; ``/api/tasks`` is checked too, which
pins the task to this test's worker.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kombu
import pytest
from sqlalchemy import Engine, text

from tests.e2e.procs import CeleryProcess, scout_env, stop_all

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
FIRE = "scout_tasks.fire"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK),
        reason=f"headless Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)",
    ),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _wait_http(url: str, proc: CeleryProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if _get(url, timeout=2.0).strip() == b"OK":
                return
        except (OSError, urllib.error.URLError):
            pass
        if not proc.alive():
            raise AssertionError(f"flower exited early:\n{proc.log()[-4000:]}")
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered OK:\n{proc.log()[-4000:]}")


@pytest.fixture
def flower_stack(
    db_url: str, broker_url: str, exchange_name: str, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    """Worker, beat and Flower sharing one environment; every queue deleted afterwards."""
    port = _free_port()
    # The API answers without authentication only when told to.
    env = scout_env(db_url, broker_url, exchange_name, FLOWER_UNAUTHENTICATED_API="true")
    task_queue = env["SCOUT_TASK_QUEUE"]
    procs = {
        "worker": CeleryProcess("worker", env, tmp_path),
        "beat": CeleryProcess("beat", env, tmp_path),
        "flower": CeleryProcess("flower", env, tmp_path, f"--port={port}", "--address=127.0.0.1"),
    }
    url = f"http://127.0.0.1:{port}"
    try:
        procs["worker"].wait_for("ready")
        procs["beat"].wait_for("this beat is now the leader")
        _wait_http(f"{url}/healthcheck", procs["flower"])
        # Flower only knows tasks whose events it received: its event
        # consumer must be connected before the schedule fires.
        procs["flower"].wait_for("Connected to")
        match = re.search(r"(e2e-[0-9a-f]{8}@\S+)", procs["worker"].log())
        assert match, procs["worker"].log()[-3000:]
        yield {"url": url, "worker_name": match.group(1), "tmp_path": tmp_path, **procs}
    finally:
        stop_all(procs[name] for name in ("flower", "beat", "worker"))
        with kombu.Connection(broker_url) as conn:
            channel = conn.default_channel
            lifecycle = f"{task_queue}.lifecycle.v2"
            for queue in (task_queue, lifecycle, f"{lifecycle}.dead"):
                try:
                    channel.queue_delete(queue)
                except conn.channel_errors:
                    channel = conn.channel()


def _wait_for_fire_task(url: str, worker_name: str, timeout: float = 30.0) -> dict[str, Any]:
    """This worker's fire task as Flower's API reports it, once it succeeded."""
    deadline = time.monotonic() + timeout
    tasks: dict[str, Any] = {}
    while time.monotonic() < deadline:
        query = urllib.parse.urlencode({"workername": worker_name, "taskname": FIRE})
        tasks = json.loads(_get(f"{url}/api/tasks?{query}"))
        for task_id, task in tasks.items():
            if (
                task.get("name") == FIRE
                and task.get("worker") == worker_name
                and task.get("state") == "SUCCESS"
            ):
                return {"uuid": task_id, **task}
        time.sleep(0.25)
    seen = sorted({(t.get("name"), t.get("worker"), t.get("state")) for t in tasks.values()})
    raise AssertionError(f"no successful {FIRE} from {worker_name} in Flower's API: {seen}")


def _render(url: str, profile: Path, screenshot: Path) -> str:
    """Load ``url`` once; the DOM after its scripts ran, and a screenshot of it."""
    done = subprocess.run(
        [
            str(CHROMIUM),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            "--window-size=1400,900",
            f"--screenshot={screenshot}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0 and done.stdout.strip(), done.stderr[-3000:]
    return done.stdout


def test_flower_shows_the_fire_task(
    flower_stack: dict[str, Any], engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    url = flower_stack["url"]
    tmp_path: Path = flower_stack["tmp_path"]
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies,"
                " next_run_at) VALUES ('Flower check', '0 0 * * *', 'stratninja', 3,"
                " now() + interval '2 seconds')"
            )
        )

    task = _wait_for_fire_task(url, flower_stack["worker_name"])
    # The run it made: the fire task Flower shows is the one that fired this schedule.
    with engine.connect() as conn:
        runs = conn.execute(text("SELECT count(*) FROM scout_runs")).scalar_one()
    assert runs == 1

    screenshot = tmp_path / "flower.png"
    started = time.monotonic()
    # Filtered to this test's worker (the page's own ``?worker=`` search), so
    # tasks of other runs sharing the vhost cannot push ours off the first page.
    page = f"{url}/tasks?{urllib.parse.urlencode({'worker': flower_stack['worker_name']})}"
    dom = _render(page, tmp_path / f"chromium-{uuid.uuid4().hex[:6]}", screenshot)
    took = time.monotonic() - started
    (tmp_path / "flower-tasks.html").write_text(dom)
    with capsys.disabled():
        print(f"\nFlower tasks page: screenshot {screenshot}, DOM {tmp_path / 'flower-tasks.html'}")
    # The table was filled by the page's JavaScript (the served HTML has no rows).
    assert "No tasks have been received" not in dom, screenshot
    assert FIRE in dom, f"{FIRE} not on the rendered tasks page; see {screenshot}"
    assert task["uuid"] in dom, f"fire task {task['uuid']} not on the page; see {screenshot}"
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert took < 60

    # The operators' script agrees (it loads the page again, with its own profile).
    check = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "flower_check.py"),
            "--url",
            url,
            "--worker",
            flower_stack["worker_name"],
            "--screenshot",
            str(tmp_path / "flower-check.png"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.splitlines()[-1] == "OK", check.stdout
