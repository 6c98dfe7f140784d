"""The console in headless Chromium, driving a real ``scout-tasks api`` on the real servers.

Clicks and typing are real input events over the DevTools protocol
(:mod:`tests.cdp`), so the page's own forms, hidden CSRF fields and buttons do
the work. A ``scout.trigger`` is read from a queue bound to the test's exchange.
A cross-site post comes from a page served on ``localhost`` (another site than
``127.0.0.1``), as an attacker's page would.
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from scout_tasks import service
from tests.cdp import CHROMIUM, Browser
from tests.conftest import EventQueue
from tests.integration.helpers import counts, execute, row, scalar

SCOUT_TASKS = str(Path(sys.executable).with_name("scout-tasks"))
TOKEN = "browser-token"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK),
        reason=f"headless Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)",
    ),
]

StartApi = Callable[..., str]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def start_api(
    db_url: str, broker_url: str, exchange_name: str, tmp_path: Path
) -> Iterator[StartApi]:
    """``scout-tasks api`` as a process of its own; returns its base URL."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(**extra_env: str) -> str:
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCOUT_")}
        env.update(
            SCOUT_DATABASE_URL=db_url,
            SCOUT_BROKER_URL=broker_url,
            SCOUT_EXCHANGE=exchange_name,
            **extra_env,
        )
        log = (tmp_path / f"api-{port}.log").open("wb")
        proc = subprocess.Popen(
            [SCOUT_TASKS, "api", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/ui", timeout=2) as response:
                    if response.status == 200:
                        return base
            except (OSError, urllib.error.URLError):
                pass
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(
            f"scout-tasks api did not answer:\n{(tmp_path / log.name).read_text()}"
        )

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture
def browser() -> Iterator[Browser]:
    with Browser(width=1280, height=900) as b:
        yield b


def add(engine: Engine, name: str = "Daily Scout Run") -> dict[str, Any]:
    return service.create_schedule(
        engine,
        {
            "name": name,
            "cron_expression": "0 9 * * MON-FRI",
            "source": "stratninja",
            "max_strategies": 10,
            "timezone": "Europe/Berlin",
        },
        actor="tester",
    )


def test_schedules_page_shows_the_schedule_with_its_description_and_next_times(
    start_api: StartApi, browser: Browser, engine: Engine
) -> None:
    made = add(engine)
    base = start_api()
    browser.goto(f"{base}/ui")
    row_text = browser.text("table.schedules tbody tr")
    assert "Daily Scout Run" in row_text
    assert "0 9 * * MON-FRI" in row_text
    assert "At 09:00, Monday through Friday" in row_text
    assert "Europe/Berlin" in row_text
    times = browser.js(
        "[...document.querySelectorAll('table.schedules td.next li')].map(li => li.innerText)"
    )
    assert len(times) == 3
    assert all("09:00 CE" in t for t in times), times  # CET or CEST: Berlin's wall clock
    assert times[0].startswith("in ")
    # At 1280 px the table fits, whatever the rows hold: no horizontal scrolling.
    for index, zone in enumerate(("America/Argentina/ComodRivadavia", "Pacific/Port_Moresby")):
        long = service.create_schedule(
            engine,
            {
                "name": f"{index}-" + "x" * 250,
                "cron_expression": "*/30 0-6 1,15 JAN-MAR MON-FRI",
                "source": "s" * 50,
                "max_strategies": 1000,
                "timezone": zone,
            },
        )
        service.pause(engine, long["id"], reason="why " * 125, actor="a" * 200)
    browser.goto(f"{base}/ui")
    assert browser.js(
        "(w => w.scrollWidth <= w.clientWidth)(document.querySelector('.table-wrap'))"
    ), browser.js("document.querySelector('.table-wrap').scrollWidth")
    browser.goto(f"{base}/ui")
    # The UTC instant is one hover away.
    title = browser.js("document.querySelector('table.schedules td.next time').title")
    assert title.endswith(" UTC") and (" 08:00:00" in title or " 07:00:00" in title), title
    # The page's own script keeps relative times and adds copy buttons.
    browser.goto(f"{base}/ui/schedules/{made['id']}")
    assert browser.js("document.querySelector('button.copy').hidden") is False
    # Keyboard: the first Tab lands on the skip link, and the skip link's target is the page.
    browser.press("Tab", "Tab", 9)
    assert browser.js("document.activeElement.className") == "skip"


def test_run_now_on_the_page_creates_a_run_and_its_trigger_goes_out(
    start_api: StartApi, browser: Browser, engine: Engine, event_queue: EventQueue
) -> None:
    made = add(engine)
    base = start_api()
    browser.goto(f"{base}/ui/schedules/{made['id']}")
    browser.click("form[action$='/run'] button[type=submit]")
    banner = browser.text(".banner")
    assert banner.startswith("Run ") and "created" in banner, banner
    assert browser.url == f"{base}/ui/schedules/{made['id']}"
    run = row(engine, "SELECT * FROM scout_runs WHERE schedule_id = :id", id=made["id"])
    assert (run["trigger_type"], run["scheduled_for"]) == ("manual", None)
    assert str(run["id"])[:8] in banner
    [event] = event_queue.get(count=1, timeout=15)
    assert event.routing_key == "scout.trigger"
    assert event.body["run_id"] == str(run["id"])
    assert event.body["schedule_id"] == str(made["id"])
    # The new run is on the page, newest first.
    assert str(run["id"])[:8] in browser.text("table.runs tbody tr")


def test_pausing_with_a_reason_on_the_page_shows_the_reason_on_the_list(
    start_api: StartApi, browser: Browser, engine: Engine
) -> None:
    made = add(engine)
    base = start_api()
    browser.goto(f"{base}/ui/schedules/{made['id']}")
    # The browser itself refuses an empty reason (required), so nothing is posted.
    browser.click("form[action$='/pause'] button[type=submit]", navigates=False)
    time.sleep(0.5)
    assert scalar(engine, "SELECT enabled FROM scout_schedules WHERE id = :id", id=made["id"])
    browser.type("#reason", "vendor outage until 14:00")
    browser.click("form[action$='/pause'] button[type=submit]")
    assert browser.text(".banner") == "Paused: vendor outage until 14:00"
    browser.goto(f"{base}/ui")
    listed = browser.text("table.schedules tbody tr")
    assert "paused" in listed
    assert "vendor outage until 14:00" in listed
    assert "Paused by console" in listed
    assert browser.js("document.querySelector('table.schedules tbody tr').className") == "is-off"
    # And back: the Resume button on the schedule's page.
    browser.goto(f"{base}/ui/schedules/{made['id']}")
    browser.click("form[action$='/resume'] button[type=submit]")
    assert browser.text(".banner") == "Resumed Daily Scout Run"


@contextmanager
def attacker_site(target: str) -> Iterator[str]:
    """A page on another site (``localhost``) with a form posting to ``target``."""
    page = f"""<!doctype html><title>win a prize</title>
<form method="post" action="{target}"><input type="hidden" name="reason" value="pwned">
<input type="hidden" name="csrf" value="guessed"><button id="go">Claim</button></form>"""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_with_a_token_actions_need_sign_in_and_a_cross_site_post_is_refused(
    start_api: StartApi, browser: Browser, engine: Engine
) -> None:
    made = add(engine)
    base = start_api(SCOUT_API_TOKEN=TOKEN)
    page = f"{base}/ui/schedules/{made['id']}"
    browser.goto(page)
    assert "Sign in to act" in browser.text(".actions")
    assert browser.js("document.querySelector('form[action$=\"/run\"]')") is None

    browser.click(".actions a")  # "Sign in to act"
    assert browser.url.startswith(f"{base}/ui/login")
    browser.type("#token", "wrong")
    browser.click("form.stack button[type=submit]")
    assert "not this server's SCOUT_API_TOKEN" in browser.text(".banner")
    browser.type("#token", TOKEN)
    browser.type("#name", "dana")
    browser.click("form.stack button[type=submit]")
    assert browser.text(".banner") == "Signed in"
    assert browser.url == page  # back to the page that asked
    cookie = browser.call("Network.getAllCookies")["cookies"]
    session = [c for c in cookie if c["name"] == "scout_console"]
    assert session and session[0]["httpOnly"] and session[0]["sameSite"] == "Lax"

    # Signed in here, an attacker's page on another site posts to the console.
    before = counts(engine)
    with attacker_site(f"{base}/ui/schedules/{made['id']}/pause") as evil:
        browser.goto(evil)
        browser.click("#go")
    assert "posted from another site" in browser.text("main")
    assert counts(engine) == before
    assert scalar(engine, "SELECT enabled FROM scout_schedules WHERE id = :id", id=made["id"])

    # The operator's own click still works, and names them.
    browser.goto(page)
    browser.type("#reason", "maintenance")
    browser.click("form[action$='/pause'] button[type=submit]")
    assert browser.text(".banner") == "Paused: maintenance"
    stored = row(engine, "SELECT paused_by FROM scout_schedules WHERE id = :id", id=made["id"])
    assert stored["paused_by"] == "dana (console)"


def test_the_phone_layout_shows_cards_without_horizontal_scrolling(
    start_api: StartApi, browser: Browser, engine: Engine
) -> None:
    add(engine)
    base = start_api()
    browser.viewport(390, 844, mobile=True, scale=2)
    browser.goto(f"{base}/ui")
    width = browser.js("document.documentElement.scrollWidth")
    assert width <= 390, width
    label = browser.js(
        "getComputedStyle(document.querySelector('table.schedules td'), '::before').content"
    )
    assert label == '"Status"'


def test_a_long_error_without_spaces_wraps_instead_of_widening_the_page(
    start_api: StartApi, browser: Browser, engine: Engine
) -> None:
    """An agent's error often holds a URL or a token with no space in it."""
    made = add(engine)
    error = (
        'Traceback (most recent call last):\n  File "agent.py", line 412\n'
        "ConnectionError: https://api.vendor.example/v2/strategies?filter=" + "x" * 600
    )
    run_id = uuid.uuid4()
    execute(
        engine,
        "INSERT INTO scout_runs (id, trigger_type, source, max_strategies, status, error_message,"
        " schedule_id, started_at, completed_at) VALUES (:run, 'manual', 'stratninja', 10,"
        " 'failed', :error, :id, now(), now())",
        run=run_id,
        error=error,
        id=made["id"],
    )
    base = start_api()
    pages = (f"/ui/runs/{run_id}", "/ui/runs", f"/ui/schedules/{made['id']}")
    for width, mobile in ((1280, False), (390, True)):
        browser.viewport(width, 844, mobile=mobile)
        for path in pages:
            browser.goto(base + path)
            page_width = browser.js("document.documentElement.scrollWidth")
            assert page_width <= width, (path, width, page_width)
            # Inside the tables too: nothing is hidden behind a sideways scroll.
            wide = browser.js(
                "[...document.querySelectorAll('.table-wrap')]"
                ".filter(w => w.scrollWidth > w.clientWidth).length"
            )
            assert wide == 0, (path, width)
            # In a list the error is cut to a few lines; the run's page shows all of it.
            lines = browser.js(
                "Math.max(0, ...[...document.querySelectorAll('.grid .err')].map(e =>"
                " e.getBoundingClientRect().height / parseFloat(getComputedStyle(e).lineHeight)))"
            )
            assert lines <= 3.5, (path, width, lines)
    browser.goto(f"{base}/ui/runs/{run_id}")
    assert browser.text(".note-bad").endswith("x" * 100)
