"""The console's session rules without a server: redirects, origins, CSRF, signing."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request

from scout_tasks.console.session import (
    Refused,
    Session,
    Sessions,
    check_csrf,
    check_same_origin,
)
from scout_tasks.console.web import safe_next


def _request(headers: dict[str, str], cookie: str | None = None) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    if cookie is not None:
        raw.append((b"cookie", f"scout_console={cookie}".encode()))
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "path": "/ui/x",
        "headers": [(b"host", b"127.0.0.1:8000"), *raw],
        "query_string": b"",
    }
    return Request(scope)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/ui/schedules/1", "/ui/schedules/1"),
        ("/ui?q=a", "/ui?q=a"),
        ("https://evil.example/ui", "/ui"),
        ("//evil.example/ui", "/ui"),
        ("/ui\\evil", "/ui"),
        ("/ui\r\nSet-Cookie: x", "/ui"),
        ("/api/scout/schedules", "/ui"),
        (None, "/ui"),
    ],
)
def test_redirect_targets_stay_inside_the_console(target: object, expected: str) -> None:
    assert safe_next(target, "/ui") == expected


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Origin": "http://127.0.0.1:8000"},
        {"Referer": "http://127.0.0.1:8000/ui"},
        {"Sec-Fetch-Site": "same-origin", "Origin": "http://127.0.0.1:8000"},
    ],
)
def test_own_origin_passes(headers: dict[str, str]) -> None:
    check_same_origin(_request(headers))


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://localhost:8000"},
        {"Origin": "http://127.0.0.1:8001"},
        {"Origin": "null"},
        {"Referer": "https://evil.example/"},
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
def test_other_origins_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(Refused) as refused:
        check_same_origin(_request(headers))
    assert refused.value.status == 403


def test_csrf_token_must_match_the_session() -> None:
    session = Session()
    check_csrf(session, session.csrf)
    for given in ("", None, "x", session.csrf + "x", 5):
        with pytest.raises(Refused):
            check_csrf(session, given)


def test_a_signed_session_survives_a_round_trip_and_nothing_else_does() -> None:
    store = Sessions("token-a")
    original = Session(signed_in=True, name="dana")
    cookie = store._serializer.dumps(original.to_json())
    loaded = store.load(_request({}, cookie))
    assert (loaded.csrf, loaded.signed_in, loaded.name) == (original.csrf, True, "dana")
    # Another token signs differently: the session is anonymous there.
    assert not Sessions("token-b").load(_request({}, cookie)).signed_in
    # Tampered: anonymous, with a fresh CSRF token.
    # (A changed payload character, never the signature's last one: base64's
    # spare bits there can decode to the same signature.)
    forged = cookie[:1] + ("A" if cookie[1] != "A" else "B") + cookie[2:]
    tampered = store.load(_request({}, forged))
    assert not tampered.signed_in and tampered.csrf != original.csrf


def test_without_a_token_everyone_may_act_and_nobody_is_signed_in() -> None:
    store = Sessions(None)
    cookie = store._serializer.dumps(Session(signed_in=True).to_json())
    session = store.load(_request({}, cookie))
    assert not session.signed_in
    assert store.can_act(session)
    assert store.check_token("anything")


def test_the_banner_is_shown_once() -> None:
    session = Session(flash="Paused: x", flash_kind="ok")
    assert session.take_flash() == ("Paused: x", "ok")
    assert session.take_flash() == (None, "ok")
