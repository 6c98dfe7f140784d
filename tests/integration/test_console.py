"""The console's pages and form posts on the real PostgreSQL and RabbitMQ, through TestClient.

Forms are posted the way a browser posts them (urlencoded, with the hidden
CSRF field read from the page), and every refusal is checked twice: the
status and that nothing was written.
"""

from __future__ import annotations

import html
import re
import uuid
import warnings
from typing import Any

import pytest
from sqlalchemy import Engine
from starlette.exceptions import StarletteDeprecationWarning

from scout_tasks import service
from tests.conftest import EventQueue
from tests.integration.conftest import MakeClient
from tests.integration.helpers import counts, execute, row, scalar

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

TOKEN = "console-token"


def add(engine: Engine, name: str = "Daily Scout Run", **overrides: Any) -> dict[str, Any]:
    data = {
        "name": name,
        "cron_expression": "0 9 * * MON-FRI",
        "source": "stratninja",
        "max_strategies": 10,
        "timezone": "Europe/Berlin",
        **overrides,
    }
    return service.create_schedule(engine, data, actor="tester")


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF field on the page"
    return found.group(1)


def banner(page: str) -> str:
    found = re.search(r'class="banner banner-\w+"[^>]*>([^<]*)<', page)
    return html.unescape(found.group(1)) if found else ""


def text_of(page: str) -> str:
    """The page's words, tags dropped and entities decoded."""
    page = page.replace("<wbr>", "")  # a line-break hint, not a space
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


# --- reading -------------------------------------------------------------------------


def test_schedules_page_shows_description_zone_and_next_three_times(
    client: TestClient, engine: Engine
) -> None:
    made = add(engine)
    page = client.get("/ui")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    words = text_of(page.text)
    assert "Daily Scout Run" in words
    assert "0 9 * * MON-FRI" in words
    assert "At 09:00, Monday through Friday" in words
    assert "Europe/Berlin" in words
    times = service.preview_fire_times(made, made["next_run_at"], 3)
    for moment in times:
        # The hover text is the UTC instant; the visible time is Berlin's wall clock.
        utc = moment.astimezone(made["next_run_at"].tzinfo).strftime("%Y-%m-%d %H:%M:%S UTC")
        assert f'title="{utc}"' in page.text
        assert f"{moment:%H:%M} CE" in words  # CET or CEST
    assert "never" in words  # no run yet
    assert f'href="/ui/schedules/{made["id"]}"' in page.text


def test_empty_console_says_what_to_do_next(client: TestClient) -> None:
    words = text_of(client.get("/ui").text)
    assert "No schedules yet" in words and "scout-tasks schedules add" in words
    assert "No runs yet" in text_of(client.get("/ui/runs").text)


def test_pages_are_not_cached_and_not_framed(client: TestClient) -> None:
    page = client.get("/ui")
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    css = client.get("/ui/static/console.css")
    assert css.status_code == 200 and "prefers-color-scheme: dark" in css.text


def test_search_by_substring_prefix_and_source_includes_plain_sql_rows(
    client: TestClient, engine: Engine
) -> None:
    add(engine, "Nightly vendor sync", source="vendor-feed")
    add(engine, "Asia open", source="quantbase")
    # Written with psql: the search copy is kept by a trigger.
    execute(
        engine,
        "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies) "
        "VALUES ('Crypto overnight', '*/30 0-6 * * *', 'cryptolab', 5)",
    )

    def names(**params: str) -> list[str]:
        page = client.get("/ui", params=params).text
        return re.findall(r'href="/ui/schedules/[0-9a-f-]+">([^<]+)<', page)

    assert names(q="vendor") == ["Nightly vendor sync"]
    assert names(q="VENDOR") == ["Nightly vendor sync"]  # case does not matter
    assert names(q="quantb") == ["Asia open"]  # the source
    assert names(q="overnight") == ["Crypto overnight"]
    assert names(q="as") == ["Asia open"]  # short: a prefix of the name
    assert names(q="%") == []  # LIKE's wildcards are plain characters
    assert names(q="_") == []
    execute(engine, "UPDATE scout_schedules SET name = 'Crypto weekend' WHERE name LIKE 'Crypto%'")
    assert names(q="overnight") == []
    assert names(q="weekend") == ["Crypto weekend"]
    execute(engine, "DELETE FROM scout_schedules WHERE name = 'Crypto weekend'")
    assert names(q="weekend") == []
    assert "No schedule matches" in text_of(client.get("/ui", params={"q": "zzz"}).text)


def test_keyset_pages_cover_every_schedule_once_both_ways(
    client: TestClient, engine: Engine
) -> None:
    execute(
        engine,
        "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies) "
        "SELECT 'job-' || lpad(g::text, 3, '0'), '0 * * * *', 'bulk', 1 "
        "FROM generate_series(1, 120) g",
    )
    seen: list[str] = []
    url = "/ui"
    pages = []
    while True:
        page = client.get(url).text
        pages.append(url)
        seen += re.findall(r'href="/ui/schedules/[0-9a-f-]+">([^<]+)<', page)
        following = re.search(r'rel="next" href="([^"]+)"', page)
        if not following:
            break
        url = html.unescape(following.group(1))
    assert seen == [f"job-{n:03d}" for n in range(1, 121)]
    assert len(pages) == 3
    # And back from the last page.
    back = re.search(r'rel="prev" href="([^"]+)"', client.get(url).text)
    assert back
    previous = client.get(html.unescape(back.group(1))).text
    assert re.findall(r'href="/ui/schedules/[0-9a-f-]+">([^<]+)<', previous) == [
        f"job-{n:03d}" for n in range(51, 101)
    ]


def test_filters_paused_and_last_run_failed(client: TestClient, engine: Engine) -> None:
    add(engine, "one")
    two = add(engine, "two")
    three = add(engine, "three")
    service.pause(engine, two["id"], reason="maintenance", actor="maria")
    run, _ = service.run_now(engine, three["id"])
    execute(engine, "UPDATE scout_runs SET status = 'failed' WHERE id = :id", id=run["id"])

    def names(**params: str) -> list[str]:
        page = client.get("/ui", params=params).text
        return re.findall(r'href="/ui/schedules/[0-9a-f-]+">([^<]+)<', page)

    assert names(state="paused") == ["two"]
    assert names(state="enabled") == ["one", "three"]
    assert names(failed="1") == ["three"]
    assert names(state="bogus") == ["one", "three", "two"]  # ignored, not an error
    header = text_of(client.get("/ui").text)
    assert "2 enabled" in header and "1 paused" in header and "0 overdue" in header


def test_header_counts_overdue_schedules_and_says_no_beat_leads(
    client: TestClient, engine: Engine
) -> None:
    add(engine, "late")
    execute(engine, "UPDATE scout_schedules SET next_run_at = now() - interval '10 minutes'")
    words = text_of(client.get("/ui").text)
    assert "1 overdue" in words
    assert "no beat is running" in words


def test_schedule_page_shows_runs_with_events_and_history(
    client: TestClient, engine: Engine
) -> None:
    made = add(engine)
    run, _ = service.run_now(engine, made["id"], actor="bob")
    execute(
        engine,
        "INSERT INTO scout_run_events (event_id, run_id, event_type) "
        "VALUES (:e, :r, 'scout.started')",
        e=uuid.uuid4(),
        r=run["id"],
    )
    execute(engine, "UPDATE scout_schedules SET max_strategies = 20 WHERE id = :id", id=made["id"])
    page = client.get(f"/ui/schedules/{made['id']}")
    assert page.status_code == 200
    words = text_of(page.text)
    assert "Next 5 fire times" in words
    assert str(run["id"])[:8] in words
    assert "<details" in page.text and "started" in words and "1 event" in words
    assert "max_strategies 10 → 20" in words
    assert "postgres" in words  # the plain-SQL edit's actor
    assert "tester" in words  # the creator


def test_unknown_and_malformed_ids_are_404_pages(client: TestClient) -> None:
    for path in (f"/ui/schedules/{uuid.uuid4()}", "/ui/schedules/nope", f"/ui/runs/{uuid.uuid4()}"):
        page = client.get(path)
        assert page.status_code == 404, path
        assert "Back to the schedules" in page.text


def test_runs_page_filters_like_the_api(client: TestClient, engine: Engine) -> None:
    made = add(engine)
    service.run_now(engine, made["id"])
    service.trigger_run(engine, {"source": "elsewhere", "max_strategies": 1}, None)
    all_runs = text_of(client.get("/ui/runs").text)
    assert "2 in all" in all_runs
    only = client.get("/ui/runs", params={"source": "elsewhere"}).text
    assert "1 matching" in text_of(only)
    by_schedule = client.get("/ui/runs", params={"schedule_id": str(made["id"])}).text
    assert "Daily Scout Run" in by_schedule and "1 matching" in text_of(by_schedule)
    bad = client.get("/ui/runs", params={"schedule_id": "nope", "created_after": "yesterday"})
    assert bad.status_code == 200
    assert "Ignored schedule_id, created_after" in text_of(bad.text)


def test_runs_page_takes_any_offset_and_ignores_an_instant_off_the_calendar(
    client: TestClient,
) -> None:
    """As the API does: an offset past PostgreSQL's 15:59 is converted to UTC, not a
    422 with the driver's text; an instant off the calendar in UTC is ignored, said so."""
    far = client.get("/ui/runs", params={"created_after": "2026-12-01T07:00:00+20:00"})
    assert far.status_code == 200, far.text
    assert "Ignored" not in text_of(far.text)
    off = client.get(
        "/ui/runs",
        params={
            "created_after": "0001-01-01T00:00:00+05:00",
            "created_before": "9999-12-31T23:00:00-05:00",
        },
    )
    assert off.status_code == 200, off.text
    assert "Ignored created_after, created_before" in text_of(off.text)


# --- acting ------------------------------------------------------------------------------


def test_pause_via_the_form_shows_the_reason_on_the_list(
    client: TestClient, engine: Engine
) -> None:
    made = add(engine)
    page = client.get(f"/ui/schedules/{made['id']}").text
    done = client.post(
        f"/ui/schedules/{made['id']}/pause",
        data={"csrf": csrf_of(page), "reason": "vendor outage <b>now</b>"},
    )
    assert done.status_code == 200
    assert str(done.url).endswith(f"/ui/schedules/{made['id']}")  # back where it came from
    assert banner(done.text) == "Paused: vendor outage <b>now</b>"
    assert "<b>now</b>" not in done.text  # escaped, never markup
    listing = text_of(client.get("/ui").text)
    assert "Paused by console" in listing and "vendor outage <b>now</b>" in listing
    stored = row(engine, "SELECT * FROM scout_schedules WHERE id = :id", id=made["id"])
    assert (stored["enabled"], stored["paused_by"]) == (False, "console")

    resumed = client.post(f"/ui/schedules/{made['id']}/resume", data={"csrf": csrf_of(done.text)})
    assert banner(resumed.text) == "Resumed Daily Scout Run"
    assert scalar(engine, "SELECT enabled FROM scout_schedules WHERE id = :id", id=made["id"])


def test_a_refused_reason_comes_back_in_the_clis_words(client: TestClient, engine: Engine) -> None:
    made = add(engine)
    page = client.get(f"/ui/schedules/{made['id']}").text
    done = client.post(
        f"/ui/schedules/{made['id']}/pause", data={"csrf": csrf_of(page), "reason": "x" * 501}
    )
    assert banner(done.text).startswith("reason:")
    assert 'class="banner banner-error"' in done.text
    assert scalar(engine, "SELECT enabled FROM scout_schedules WHERE id = :id", id=made["id"])


def test_run_now_creates_a_run_of_the_schedule_and_its_trigger_goes_out(
    client: TestClient, engine: Engine, event_queue: EventQueue
) -> None:
    made = add(engine)
    page = client.get(f"/ui/schedules/{made['id']}").text
    done = client.post(f"/ui/schedules/{made['id']}/run", data={"csrf": csrf_of(page)})
    assert done.status_code == 200
    run = row(engine, "SELECT * FROM scout_runs WHERE schedule_id = :id", id=made["id"])
    assert banner(done.text) == f"Run {str(run['id'])[:8]} created"
    assert (run["trigger_type"], run["scheduled_for"], run["triggered_by"]) == (
        "manual",
        None,
        "console",
    )
    [event] = event_queue.get(count=1)
    assert event.routing_key == "scout.trigger"
    assert event.body["run_id"] == str(run["id"])
    assert event.body["schedule_id"] == str(made["id"])
    assert scalar(engine, "SELECT count(*) FROM scout_outbox") == 0  # confirmed, so gone


def test_cancel_an_active_run_from_its_page(client: TestClient, engine: Engine) -> None:
    made = add(engine)
    run, _ = service.run_now(engine, made["id"])
    page = client.get(f"/ui/runs/{run['id']}")
    assert "Cancel run" in page.text
    token = csrf_of(page.text)
    done = client.post(f"/ui/runs/{run['id']}/cancel", data={"csrf": token})
    assert banner(done.text) == f"Run {str(run['id'])[:8]} cancelled"
    assert "Cancel run" not in done.text
    again = client.post(f"/ui/runs/{run['id']}/cancel", data={"csrf": token})
    assert "already" in banner(again.text)


def test_a_post_without_the_csrf_field_is_403_and_changes_nothing(
    client: TestClient, engine: Engine
) -> None:
    made = add(engine)
    client.get("/ui")  # a session exists, but the form lacks its token
    before = counts(engine)
    for path in ("run", "resume"):
        refused = client.post(f"/ui/schedules/{made['id']}/{path}", data={})
        assert refused.status_code == 403, path
    refused = client.post(
        f"/ui/schedules/{made['id']}/pause", data={"csrf": "forged", "reason": "x"}
    )
    assert refused.status_code == 403
    assert "reload the page" in refused.text
    assert counts(engine) == before
    assert scalar(engine, "SELECT enabled FROM scout_schedules WHERE id = :id", id=made["id"])


def test_a_post_from_another_origin_is_403_even_with_the_token(
    client: TestClient, engine: Engine
) -> None:
    made = add(engine)
    token = csrf_of(client.get(f"/ui/schedules/{made['id']}").text)
    before = counts(engine)
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Referer": "https://evil.example/page"},
        {"Sec-Fetch-Site": "cross-site"},
    ):
        refused = client.post(
            f"/ui/schedules/{made['id']}/run", data={"csrf": token}, headers=headers
        )
        assert refused.status_code == 403, headers
        # No fresh cookie either: that would sign the operator out from any site.
        assert "set-cookie" not in refused.headers
    assert counts(engine) == before
    same = client.post(
        f"/ui/schedules/{made['id']}/run",
        data={"csrf": token},
        headers={"Origin": "http://testserver"},
    )
    assert same.status_code == 200 and "created" in banner(same.text)


def test_a_tampered_session_cookie_is_ignored(client: TestClient, engine: Engine) -> None:
    made = add(engine)
    token = csrf_of(client.get(f"/ui/schedules/{made['id']}").text)
    cookie = client.cookies.get("scout_console")
    assert cookie
    client.cookies.clear()
    # The signature's last characters changed: the whole session is void.
    tampered = cookie[:-4] + ("AAAA" if not cookie.endswith("AAAA") else "BBBB")
    client.cookies.set("scout_console", tampered, domain="testserver.local", path="/ui")
    refused = client.post(f"/ui/schedules/{made['id']}/run", data={"csrf": token})
    assert refused.status_code == 403


def test_redirects_stay_inside_the_console(client: TestClient, engine: Engine) -> None:
    made = add(engine)
    token = csrf_of(client.get(f"/ui/schedules/{made['id']}").text)
    for target in ("https://evil.example/", "//evil.example/ui", "/ui\\@evil", "/api/x"):
        done = client.post(
            f"/ui/schedules/{made['id']}/run",
            data={"csrf": token, "next": target},
            follow_redirects=False,
        )
        assert done.status_code == 303
        assert done.headers["location"] == f"/ui/schedules/{made['id']}", target
    kept = client.post(
        f"/ui/schedules/{made['id']}/run",
        data={"csrf": token, "next": "/ui?q=daily"},
        follow_redirects=False,
    )
    assert kept.headers["location"] == "/ui?q=daily"


# --- signing in -----------------------------------------------------------------------------


def test_sign_in_returns_to_the_page_with_its_search(
    make_client: MakeClient, engine: Engine
) -> None:
    client = make_client(api_token=TOKEN)
    add(engine)
    page = client.get("/ui?q=daily&state=enabled").text
    link = re.search(r'href="(/ui/login\?next=[^"]+)"', page)
    assert link is not None, page
    login = client.get(html.unescape(link.group(1)))
    signed = client.post(
        "/ui/login",
        data={
            "csrf": csrf_of(login.text),
            "token": TOKEN,
            "next": html.unescape(
                re.search(r'name="next" value="([^"]+)"', login.text).group(1)  # type: ignore[union-attr]
            ),
        },
    )
    assert banner(signed.text) == "Signed in"
    assert str(signed.url).endswith("/ui?q=daily&state=enabled"), signed.url


def test_with_a_token_actions_need_a_sign_in(make_client: MakeClient, engine: Engine) -> None:
    client = make_client(api_token=TOKEN)
    made = add(engine)
    page = client.get(f"/ui/schedules/{made['id']}")
    assert page.status_code == 200  # reading needs no sign-in
    assert "Sign in to act" in page.text and "Run now</button>" not in page.text
    before = counts(engine)
    # A valid CSRF token of an anonymous session: still not allowed to act.
    login = client.get(f"/ui/login?next=/ui/schedules/{made['id']}")
    for data in ({"csrf": csrf_of(login.text)}, {}):
        refused = client.post(f"/ui/schedules/{made['id']}/run", data=data)
        assert refused.status_code == 401
        assert "Sign in to act" in refused.text
    assert counts(engine) == before

    wrong = client.post(
        "/ui/login",
        data={"csrf": csrf_of(login.text), "token": "guess", "next": "/ui"},
    )
    assert "not this server's SCOUT_API_TOKEN" in banner(wrong.text)
    signed = client.post(
        "/ui/login",
        data={
            "csrf": csrf_of(wrong.text),
            "token": TOKEN,
            "name": "maria",
            "next": f"/ui/schedules/{made['id']}",
        },
    )
    assert banner(signed.text) == "Signed in"
    assert str(signed.url).endswith(f"/ui/schedules/{made['id']}")
    set_cookie = [v for k, v in signed.history[0].headers.multi_items() if k == "set-cookie"]
    assert any(
        "HttpOnly" in c and "SameSite=lax" in c.replace("Lax", "lax") and "Path=/ui" in c
        for c in set_cookie
    ), set_cookie
    # The CSRF token seen before signing in is not the one after.
    assert csrf_of(signed.text) != csrf_of(login.text)
    done = client.post(
        f"/ui/schedules/{made['id']}/pause", data={"csrf": csrf_of(signed.text), "reason": "r"}
    )
    assert banner(done.text) == "Paused: r"
    assert (
        row(engine, "SELECT paused_by FROM scout_schedules WHERE id = :id", id=made["id"])[
            "paused_by"
        ]
        == "maria (console)"
    )

    out = client.post("/ui/logout", data={"csrf": csrf_of(done.text)})
    assert banner(out.text) == "Signed out"
    after = client.get(f"/ui/schedules/{made['id']}").text
    assert "Sign in to act" in after
    fresh = csrf_of(client.get("/ui/login").text)
    again = client.post(f"/ui/schedules/{made['id']}/resume", data={"csrf": fresh})
    assert again.status_code == 401


def test_a_session_signed_for_another_token_is_not_signed_in(
    make_client: MakeClient, engine: Engine
) -> None:
    made = add(engine)
    first = make_client(api_token=TOKEN)
    login = first.get("/ui/login")
    first.post("/ui/login", data={"csrf": csrf_of(login.text), "token": TOKEN})
    cookie = first.cookies.get("scout_console")
    other = make_client(api_token="rotated-token")
    other.cookies.set("scout_console", cookie, domain="testserver.local", path="/ui")
    page = other.get(f"/ui/schedules/{made['id']}")
    assert "Sign in to act" in page.text


def test_without_a_token_there_is_no_sign_in(client: TestClient) -> None:
    page = client.get("/ui/login", follow_redirects=False)
    assert page.status_code == 303
    assert "Sign in" not in client.get("/ui").text


def test_odd_rows_written_with_sql_do_not_break_the_pages(
    client: TestClient, engine: Engine
) -> None:
    made = add(engine)
    execute(
        engine,
        "UPDATE scout_schedules SET timezone = 'Mars/Olympus', cron_expression = '0 0 L * *', "
        "last_error = 'bad timezone' WHERE id = :id",
        id=made["id"],
    )
    execute(
        engine,
        "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies, enabled) "
        "VALUES (:n, '* * * * *', :s, 1000, false)",
        n="x" * 255,
        s="<script>alert(1)</script>",
    )
    listing = client.get("/ui")
    assert listing.status_code == 200
    assert "<script>alert(1)</script>" not in listing.text
    assert "bad timezone" in text_of(listing.text)
    detail = client.get(f"/ui/schedules/{made['id']}")
    assert detail.status_code == 200
    assert "cannot plan this schedule" in text_of(detail.text)


@pytest.mark.parametrize(
    "params",
    [
        {"q": "\x00"},
        {"q": "x" * 10_000},
        {"after": "\x00" * 300},
        {"before": "zzz", "after": ""},
        {"state": "'; DROP TABLE scout_schedules; --"},
        {"failed": "maybe"},
    ],
)
def test_hostile_query_strings_answer_a_page(
    client: TestClient, engine: Engine, params: dict[str, str]
) -> None:
    add(engine)
    page = client.get("/ui", params=params)
    assert page.status_code == 200
    assert scalar(engine, "SELECT count(*) FROM scout_schedules") == 1


def test_long_histories_and_run_lists_page(client: TestClient, engine: Engine) -> None:
    made = add(engine)
    for n in range(55):
        execute(
            engine,
            "UPDATE scout_schedules SET max_strategies = :n WHERE id = :id",
            n=n + 1,
            id=made["id"],
        )
    for _ in range(21):
        service.run_now(engine, made["id"])
    first = client.get(f"/ui/schedules/{made['id']}").text
    assert "?history=2" in first and "?page=2" in first
    older = text_of(client.get(f"/ui/schedules/{made['id']}", params={"history": 2}).text)
    assert "create" in older  # the oldest change is on the second page
    assert "page 2 of 2" in older


def test_a_database_outage_is_a_page_not_json(make_client: MakeClient) -> None:
    # Nothing listens there: the API's classification (503), as a page.
    client = make_client(database_url="postgresql+psycopg2://nobody@127.0.0.1:1/none")
    page = client.get("/ui")
    assert page.status_code == 503
    assert page.headers["content-type"].startswith("text/html")
    assert "database unavailable" in text_of(page.text)
    api = client.get("/api/scout/schedules")
    assert api.status_code == 503 and api.headers["content-type"] == "application/json"


def test_the_backfill_form_appears_only_once_backfill_exists(
    client: TestClient, engine: Engine
) -> None:
    import importlib.util
    from datetime import UTC, datetime, timedelta

    made = add(engine, cron_expression="*/5 * * * *", timezone="UTC")
    page = client.get(f"/ui/schedules/{made['id']}").text
    if importlib.util.find_spec("scout_tasks.backfill") is None:
        assert "/backfill" not in page
        return
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    early = now - timedelta(minutes=32)
    start = early.replace(minute=early.minute // 5 * 5)
    end = start + timedelta(minutes=20)  # four slots: start, +5, +10, +15
    form = {
        "csrf": csrf_of(page),
        "from": start.strftime("%Y-%m-%dT%H:%M"),
        "to": end.strftime("%Y-%m-%dT%H:%M"),
    }
    preview = client.post(f"/ui/schedules/{made['id']}/backfill", data={**form, "dry_run": "1"})
    assert banner(preview.text).startswith("Preview: 4 slot(s) would get a run"), banner(
        preview.text
    )
    assert scalar(engine, "SELECT count(*) FROM scout_runs") == 0
    done = client.post(f"/ui/schedules/{made['id']}/backfill", data={**form, "dry_run": "0"})
    assert banner(done.text) == "Backfilled 4 slot(s)"
    again = client.post(f"/ui/schedules/{made['id']}/backfill", data={**form, "dry_run": "0"})
    assert banner(again.text) == "Backfilled 0 slot(s); 4 already had one"
    assert scalar(engine, "SELECT count(*) FROM scout_runs WHERE trigger_type = 'scheduled'") == 4
    wrong = client.post(
        f"/ui/schedules/{made['id']}/backfill", data={**form, "to": form["from"], "dry_run": "1"}
    )
    assert banner(wrong.text).startswith("to:")


def test_a_page_past_the_end_says_so_instead_of_no_runs_yet(
    client: TestClient, engine: Engine
) -> None:
    made = add(engine)
    for _ in range(3):
        service.run_now(engine, made["id"])
    # A bookmarked or hand-edited ?page= beyond the last page: the runs exist.
    for path in ("/ui/runs", f"/ui/schedules/{made['id']}"):
        words = text_of(client.get(path, params={"page": 9}).text)
        assert "No runs yet" not in words, path
        assert "past the last page" in words, path
        assert "page 9" in words.lower(), path
    listed = client.get("/ui/runs", params={"page": 9, "trigger_type": "manual"}).text
    assert "No run matches" not in text_of(listed)  # the filter matches 3 runs
    assert 'href="/ui/runs?trigger_type=manual&amp;page=1"' in listed  # back to the last page
    schedule_page = client.get(f"/ui/schedules/{made['id']}", params={"page": 9}).text
    assert 'href="?page=1#runs-h"' in schedule_page


def test_an_expression_the_scheduler_refuses_is_not_announced_as_planned_soon(
    client: TestClient, engine: Engine
) -> None:
    # Written with psql, before any beat has looked at it (no last_error yet).
    execute(
        engine,
        "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies) "
        "VALUES ('Broken by SQL', '61 25 * * *', 'stratninja', 5)",
    )
    made = row(engine, "SELECT id FROM scout_schedules WHERE name = 'Broken by SQL'")
    for path in ("/ui", f"/ui/schedules/{made['id']}"):
        words = text_of(client.get(path).text)
        assert "not planned yet" not in words.lower(), path
        assert "the next tick computes it" not in words, path
        assert "cannot be planned" in words, path
        assert "61 25 * * *" in words, path
    detail = text_of(client.get(f"/ui/schedules/{made['id']}").text)
    assert "Next 0 fire times" not in detail
    # The console says why, in the validator's words, as the CLI would.
    assert "cron_expression:" in detail


def test_the_overdue_schedule_the_header_counts_is_marked_on_its_row_and_page(
    client: TestClient, engine: Engine
) -> None:
    late = add(engine, "Late one")
    add(engine, "On time")
    execute(
        engine,
        "UPDATE scout_schedules SET next_run_at = now() - interval '2 hours' WHERE id = :id",
        id=late["id"],
    )
    page = client.get("/ui").text
    assert "1 overdue" in text_of(page)
    rows_ = {}
    for body in re.findall(r"<tr class=.*?</tr>", page, re.S):
        words = text_of(body)
        rows_["Late one" if "Late one" in words else "On time"] = words
    assert "overdue" in rows_["Late one"], rows_
    assert "overdue" not in rows_["On time"], rows_
    assert "overdue" in text_of(client.get(f"/ui/schedules/{late['id']}").text)


def test_an_overdue_schedule_previews_the_slots_it_will_fire_not_the_ones_it_missed(
    client: TestClient, engine: Engine
) -> None:
    from datetime import UTC, datetime

    late = add(engine, "Every quarter", cron_expression="*/15 * * * *", timezone="UTC")
    execute(
        engine,
        "UPDATE scout_schedules SET next_run_at = now() - interval '2 hours' WHERE id = :id",
        id=late["id"],
    )
    now = scalar(engine, "SELECT now()")
    page = client.get(f"/ui/schedules/{late['id']}").text
    card = page[page.index('id="next-h"') : page.index('id="act-h"')]
    shown = [
        datetime.strptime(t, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        for t in re.findall(r'<time datetime="([^"]+)"', card)[::2]
    ]
    assert len(shown) == 5, shown
    # The missed slot is due at once (marked overdue); after it the beat goes to
    # the first slot after now (coalesced), so the 4 slots since are not "next".
    assert shown[0] < now and "overdue" in text_of(card)
    assert all(moment > now for moment in shown[1:]), shown
    listed = client.get("/ui").text
    row_times = re.findall(r'<time datetime="([^"]+)"', listed)
    assert all(
        datetime.strptime(t, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) > now for t in row_times[1:3]
    ), row_times
