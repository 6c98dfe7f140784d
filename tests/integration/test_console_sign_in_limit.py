"""The console's limit on failed sign-ins, through the real app on the real PostgreSQL.

Each client posts from an address of its own (TestClient's ``client``), the way
browsers on different machines reach the API; all of them talk to one app,
whose one limit counts them apart.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine
from starlette.exceptions import StarletteDeprecationWarning

from scout_tasks.api import create_app
from scout_tasks.console.throttle import FailureLimit
from tests.integration.helpers import app_settings, counts
from tests.integration.test_console import TOKEN, add, banner, csrf_of, text_of

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

GUESSER, OPERATOR = "203.0.113.5", "198.51.100.7"


@pytest.fixture
def app(db_url: str, broker_url: str, exchange_name: str) -> Iterator[FastAPI]:
    made = create_app(app_settings(db_url, broker_url, exchange_name, api_token=TOKEN))
    # One client runs the app's lifespan, so its engine is closed afterwards.
    with TestClient(made, base_url="http://testserver"):
        yield made


def client_at(app: FastAPI, address: str) -> TestClient:
    return TestClient(
        app, base_url="http://testserver", follow_redirects=True, client=(address, 40000)
    )


def sign_in(client: TestClient, token: str, **extra: Any) -> Any:
    page = client.get("/ui/login")
    return client.post(
        "/ui/login", data={"csrf": csrf_of(page.text), "token": token, "next": "/ui", **extra}
    )


def test_five_wrong_tokens_then_429_even_for_the_right_one(app: FastAPI, engine: Engine) -> None:
    made = add(engine)
    guesser = client_at(app, GUESSER)
    before = counts(engine)
    for attempt in range(1, 6):
        wrong = sign_in(guesser, f"guess-{attempt}")
        assert wrong.status_code == 200  # the sign-in page again, after the redirect
        assert wrong.history and wrong.history[0].status_code == 303
        assert "not this server's SCOUT_API_TOKEN" in banner(wrong.text)
        assert ("Too many failed sign-ins" in banner(wrong.text)) == (attempt == 5)
    assert "try again in 60 s" in banner(wrong.text)

    # The sixth attempt is refused before its token is looked at.
    limited = sign_in(guesser, TOKEN)
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert f"try again in {limited.headers['Retry-After']} s" in banner(limited.text)
    # The sign-in page itself, so the operator sees where they are and what to do.
    assert 'name="token"' in limited.text and "Sign in to act" in text_of(limited.text)
    assert limited.headers["Cache-Control"] == "no-store"
    page = guesser.get(f"/ui/schedules/{made['id']}")
    assert "Sign in to act" in page.text and "Run now</button>" not in page.text
    refused = guesser.post(f"/ui/schedules/{made['id']}/run", data={"csrf": csrf_of(limited.text)})
    assert refused.status_code == 401
    assert counts(engine) == before

    # Another address is not held back by the guesser's failures.
    operator = client_at(app, OPERATOR)
    signed = sign_in(operator, TOKEN)
    assert banner(signed.text) == "Signed in"
    assert "Run now</button>" in operator.get(f"/ui/schedules/{made['id']}").text


def test_a_session_signed_in_before_keeps_working_while_its_address_is_limited(
    app: FastAPI, engine: Engine
) -> None:
    made = add(engine)
    operator, guesser = client_at(app, GUESSER), client_at(app, GUESSER)
    assert banner(sign_in(operator, TOKEN).text) == "Signed in"
    for _ in range(5):
        sign_in(guesser, "guess")
    assert sign_in(guesser, "guess").status_code == 429

    page = operator.get(f"/ui/schedules/{made['id']}")
    done = operator.post(
        f"/ui/schedules/{made['id']}/pause", data={"csrf": csrf_of(page.text), "reason": "r"}
    )
    assert banner(done.text) == "Paused: r"


def test_successful_sign_ins_are_not_limited_and_forget_the_failures(app: FastAPI) -> None:
    client = client_at(app, OPERATOR)
    for _ in range(12):
        assert banner(sign_in(client, TOKEN).text) == "Signed in"
    # Four typos and a success, again and again: 16 failures in well under a
    # minute, never five in a row, never refused.
    for _ in range(4):
        for _ in range(4):
            assert "not this server's" in banner(sign_in(client, "typo").text)
        assert banner(sign_in(client, TOKEN).text) == "Signed in"


def test_the_address_may_try_again_once_the_window_has_passed(app: FastAPI) -> None:
    # The app's own limit, with a window short enough to wait out in a test.
    app.state.console_sign_in_limit = FailureLimit(limit=2, window=1.5)
    client = client_at(app, GUESSER)
    sign_in(client, "guess")
    sign_in(client, "guess")
    limited = sign_in(client, TOKEN)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] in ("1", "2")
    time.sleep(1.6)
    assert banner(sign_in(client, TOKEN).text) == "Signed in"


def test_refused_posts_do_not_count(app: FastAPI) -> None:
    # A forged post (no CSRF field) is refused before the limit and is not a guess.
    client = client_at(app, GUESSER)
    for _ in range(10):
        forged = client.post("/ui/login", data={"token": "guess"})
        assert forged.status_code == 403
    assert banner(sign_in(client, TOKEN).text) == "Signed in"
