"""The console in ``scout-tasks dev``: from the first command to a run started at ``/ui``.

No SCOUT_* variable and no server, as a new user starts: ``dev`` prints the
console's URL, the demo schedule is on the page, "run now" (clicked in headless
Chromium) creates a run of it, and dev's own event tail prints its ``scout.trigger``.
"""

from __future__ import annotations

import os
import re
import time
import urllib.request
from pathlib import Path

import pytest

from tests.cdp import CHROMIUM, Browser
from tests.e2e.test_dev import Dev, _free_port, project  # noqa: F401 - project is a fixture

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK),
        reason=f"headless Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)",
    ),
]


def _wait_until_served(url: str, timeout: float = 60) -> None:
    """The API is dev's child: it may still be starting when dev says it is ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


def test_dev_serves_the_console_and_run_now_reaches_the_event_tail(project: Path) -> None:  # noqa: F811
    port = _free_port()
    dev = Dev(project, "--api-port", str(port))
    try:
        url = dev.wait_for(r"console at (http://127\.0\.0\.1:\d+/ui)", timeout=120).group(1)
        assert url == f"http://127.0.0.1:{port}/ui"
        dev.wait_for(r"waiting for scout\.\* events", timeout=60)
        _wait_until_served(url)
        with Browser() as browser:
            browser.goto(url)
            assert "demo: every minute" in browser.text("table.schedules")
            assert "Every minute" in browser.text("table.schedules")
            browser.click("table.schedules td.name a")
            browser.click("form[action$='/run'] button[type=submit]")
            banner = browser.text(".banner")
        short = re.search(r"Run ([0-9a-f]{8}) created", banner)
        assert short, banner
        dev.wait_for(rf"scout\.trigger .*run_id={short.group(1)}", timeout=30)
    finally:
        dev.interrupt()
