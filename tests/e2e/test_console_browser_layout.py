"""The console's tables at 1280 px and on a phone, with the widest text real rows hold.

Found by looking at the console with a realistic data set: a Pacific/Chatham
next run ("UTC+13:45"), a 255-character schedule name on the runs page, a
500-character pause reason, an opened run timeline. Each must stay inside the
page instead of pushing a column (Max, Error) behind a sideways scroll.
"""

from __future__ import annotations

import re
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from scout_tasks import service
from tests.cdp import Browser
from tests.e2e.test_console_browser import (  # noqa: F401 (fixtures)
    TOKEN,
    StartApi,
    browser,
    pytestmark,
    start_api,
)
from tests.integration.helpers import execute

NO_SIDEWAYS_SCROLL = (
    "[...document.querySelectorAll('.table-wrap')].filter(w => w.scrollWidth > w.clientWidth)"
    ".map(w => [w.scrollWidth, w.clientWidth])"
)


def schedule(engine: Engine, name: str, **fields: Any) -> dict[str, Any]:
    data = {
        "name": name,
        "cron_expression": "0 9 * * MON-FRI",
        "source": "stratninja",
        "max_strategies": 10,
        "timezone": "Europe/Berlin",
        **fields,
    }
    return service.create_schedule(engine, data, actor="tester")


def run_with_events(engine: Engine, schedule_id: Any, source: str, by: str) -> None:
    run_id = uuid.uuid4()
    execute(
        engine,
        "INSERT INTO scout_runs (id, trigger_type, triggered_by, source, max_strategies, status,"
        " error_message, schedule_id, created_at, started_at, completed_at) VALUES (:run,"
        " 'manual', :by, :source, 10, 'failed', 'agent lost: no heartbeat for 600 s', :id,"
        " now() - interval '2 hours', now() - interval '2 hours',"
        " now() - interval '58 minutes')",
        run=run_id,
        by=by,
        source=source,
        id=schedule_id,
    )
    for kind, ago in (("started", 7200), ("progress", 7000), ("failed", 3480)):
        execute(
            engine,
            "INSERT INTO scout_run_events (event_id, run_id, event_type, received_at)"
            " VALUES (:e, :r, :t, now() - make_interval(secs => :ago))",
            e=uuid.uuid4(),
            r=run_id,
            t=f"scout.{kind}",
            ago=ago,
        )


def test_tables_fit_1280_px_and_times_never_break_inside(
    start_api: StartApi,  # noqa: F811
    browser: Browser,  # noqa: F811
    engine: Engine,
) -> None:
    chatham = schedule(engine, "Chatham", cron_expression="5 4 * * SUN", timezone="Pacific/Chatham")
    schedule(
        engine,
        "Quarterly",
        cron_expression="0 3 * JAN,APR,JUL,OCT 1",
        timezone="America/Argentina/ComodRivadavia",
        source="vendor-feed-eu-west-1-primary-replica",
    )
    late = schedule(engine, "Late", cron_expression="@daily", timezone="Australia/Sydney")
    execute(
        engine,
        "UPDATE scout_schedules SET next_run_at = now() - interval '25 minutes' WHERE id = :id",
        id=late["id"],
    )
    paused = schedule(
        engine, "Paused", cron_expression="*/30 0-6 1,15 JAN-MAR MON-FRI", timezone="Asia/Kathmandu"
    )
    service.pause(
        engine, paused["id"], reason="vendor outage, waiting for them " * 15, actor="dana"
    )
    long = schedule(engine, "Strategy discovery " + "for the European vendor feed " * 8)
    run_with_events(engine, long["id"], "s" * 50, "a" * 255)
    run_with_events(engine, chatham["id"], "stratninja", "dana (console)")
    base = start_api()

    browser.goto(f"{base}/ui")
    assert browser.js(NO_SIDEWAYS_SCROLL) == []
    # The last column (Max) is on the screen, not behind a scroll.
    # And the next run's first line ("in 4 d Sun 6 Dec 04:05 UTC+13:45") stays one line,
    # unless it is marked overdue.
    wrapped = browser.js(
        "[...document.querySelectorAll('td.next li:first-child')]"
        ".filter(li => !li.querySelector('.late'))"
        ".filter(li => li.offsetHeight > 1.5 * parseFloat(getComputedStyle(li).lineHeight))"
        ".map(li => li.innerText)"
    )
    assert wrapped == []
    right = browser.js(
        "document.querySelector('table.schedules th:last-child').getBoundingClientRect().right"
    )
    assert right <= 1280, right
    # A long pause reason is a few lines in the list, all of it on hover.
    why = browser.js(
        "(e => [e.getBoundingClientRect().height / parseFloat(getComputedStyle(e).lineHeight),"
        " e.title])(document.querySelector('.paused-why'))"
    )
    assert why[0] <= 4.5 and why[1].strip() == ("vendor outage, waiting for them " * 15).strip(), (
        why
    )

    browser.goto(f"{base}/ui/runs")
    assert browser.js(NO_SIDEWAYS_SCROLL) == []

    browser.goto(f"{base}/ui/schedules/{long['id']}")
    browser.js("document.querySelectorAll('details.timeline').forEach(d => d.open = true)")
    assert browser.js(NO_SIDEWAYS_SCROLL) == []

    # On a phone a wall time ("Sun 6 Dec 04:05 UTC+13:45") is never split across lines.
    browser.viewport(390, 844, mobile=True)
    browser.goto(f"{base}/ui")
    split = browser.js(
        "[...document.querySelectorAll('.abs')].filter(e => e.getClientRects().length > 1)"
        ".map(e => e.innerText)"
    )
    assert split == []
    assert browser.js("document.documentElement.scrollWidth") <= 390


BAR = (
    "(b => [b.scrollWidth <= b.clientWidth, [...b.querySelectorAll('a, button')]"
    ".filter(e => (r => r.height > 40 || r.right > innerWidth)(e.getBoundingClientRect()))"
    ".map(e => e.innerText)])(document.querySelector('.bar'))"
)


def test_the_top_bar_is_one_line_on_a_phone_signed_in_or_not(
    start_api: StartApi,  # noqa: F811
    browser: Browser,  # noqa: F811
) -> None:
    base = start_api(SCOUT_API_TOKEN=TOKEN)
    browser.viewport(390, 844, mobile=True)
    browser.goto(f"{base}/ui/runs")
    # Every link whole and on the screen: no "Sign / in", no Sign in behind a scroll.
    assert browser.js(BAR) == [True, []]
    browser.goto(f"{base}/ui/login?next=/ui/runs")
    browser.type("#token", TOKEN)
    browser.type("#name", "Dana Scully-Mulder of Operations")
    browser.click("form.stack button[type=submit]")
    assert browser.text(".banner") == "Signed in"
    assert browser.js(BAR) == [True, []]
    # On a wide screen the name is there, cut if long, whole on hover.
    browser.viewport(1280, 800)
    browser.goto(f"{base}/ui/runs")
    assert browser.js("document.querySelector('.bar .who').title") == (
        "Dana Scully-Mulder of Operations"
    )
    assert browser.js(BAR) == [True, []]


def test_a_long_unbroken_name_and_description_wrap_on_the_schedules_page(
    start_api: StartApi,  # noqa: F811
    browser: Browser,  # noqa: F811
    engine: Engine,
) -> None:
    made = schedule(engine, "nightly_" + "x" * 247, description="d" * 400, source="s" * 50)
    service.update_schedule(engine, made["id"], {"description": "e" * 400}, actor="tester")
    base = start_api()
    for width, mobile in ((1280, False), (390, True)):
        browser.viewport(width, 844, mobile=mobile)
        browser.goto(f"{base}/ui/schedules/{made['id']}")
        # The heading, the lead and the history's old -> new all wrap inside the page.
        assert browser.js("document.documentElement.scrollWidth") <= width, width
        assert browser.js(NO_SIDEWAYS_SCROLL) == [], width


def test_relative_times_keep_the_servers_clock_when_the_browsers_is_off(
    start_api: StartApi,  # noqa: F811
    browser: Browser,  # noqa: F811
    engine: Engine,
) -> None:
    """The page is rendered on the database's clock; the script must not redo it on a
    laptop clock an hour ahead ("in 4 h" would read "in 3 h")."""
    hour = (datetime.now(UTC) + timedelta(hours=5)).hour
    schedule(engine, "Later today", cron_expression=f"30 {hour} * * *", timezone="UTC")
    base = start_api()
    with urllib.request.urlopen(f"{base}/ui") as response:
        served = re.search(r"data-relative>([^<]+)<", response.read().decode())
    assert served is not None
    browser.call(
        "Page.addScriptToEvaluateOnNewDocument",
        source="(() => { const real = Date.now; Date.now = () => real() + 3600e3; })()",
    )
    browser.goto(f"{base}/ui")
    shown = browser.js("document.querySelector('td.next time[data-relative]').textContent")
    assert shown.split(" h")[0] == served.group(1).split(" h")[0], (shown, served.group(1))
