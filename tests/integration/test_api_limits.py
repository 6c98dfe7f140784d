"""Bodies over 1 MiB are refused with 413 before they are read, and nothing is written.

Over a real socket to uvicorn: a declared 100 MB body of which only a few bytes
ever arrive gets its 413 at once (the server cannot have waited for it), and a
chunked upload is cut off just past 1 MiB. Through TestClient: exactly 1 MiB
still reaches validation and is stored; one byte more is refused.
"""

from __future__ import annotations

import json
import socket
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine
from starlette.exceptions import StarletteDeprecationWarning

from scout_tasks.api import create_app
from scout_tasks.api.limits import MAX_BODY_BYTES
from tests.integration.helpers import app_settings, counts
from tests.integration.live import serve

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

SCHEDULES = "/api/scout/schedules"
TRIGGER = "/api/scout/trigger"
TOKEN = "limit-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
VALID = {"name": "big", "cron_expression": "0 12 * * *", "source": "s", "max_strategies": 1}


@pytest.fixture
def live_url(db_url: str, broker_url: str, exchange_name: str) -> Iterator[str]:
    with serve(create_app(app_settings(db_url, broker_url, exchange_name, api_token=TOKEN))) as url:
        yield url


@pytest.fixture
def client(db_url: str, broker_url: str, exchange_name: str) -> Iterator[TestClient]:
    app = create_app(app_settings(db_url, broker_url, exchange_name, api_token=TOKEN))
    with TestClient(app, headers=AUTH) as test_client:
        yield test_client


def padded(body: dict[str, Any], size: int) -> bytes:
    """``body`` as JSON, padded with trailing spaces (still valid JSON) to ``size`` bytes."""
    raw = json.dumps(body).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one HTTP/1.1 response with a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length]


def _head(path: str, *extra: str) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {TOKEN}",
        "Content-Type: application/json",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_declared_100_mb_body_is_refused_at_once(live_url: str, engine: Engine) -> None:
    before = counts(engine)
    with _connect(live_url) as sock:
        started = time.monotonic()
        # 100 MB promised, 20 bytes sent: only a server that refuses up front answers.
        sock.sendall(_head(SCHEDULES, f"Content-Length: {100 * 1024 * 1024}"))
        sock.sendall(b'{"name": "never end')
        status, headers, body = _read_response(sock)
        took = time.monotonic() - started
    assert status == 413, body
    assert took < 2.0, f"413 after {took:.2f} s"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "detail": f"request body is larger than the limit of {MAX_BODY_BYTES} bytes (1 MiB)",
        "field": None,
    }
    assert counts(engine) == before


def test_a_chunked_body_is_cut_off_just_past_1_mib(live_url: str, engine: Engine) -> None:
    before = counts(engine)
    chunk = b" " * (64 * 1024)
    with _connect(live_url) as sock:
        sock.sendall(_head(TRIGGER, "Transfer-Encoding: chunked"))
        # 2 bytes, then 16 x 64 KiB: 1 MiB + 2 bytes in all, and never the final
        # zero-length chunk, so only a server that stops reading at the limit answers.
        sock.sendall(b"2\r\n{}\r\n")
        for _ in range(MAX_BODY_BYTES // len(chunk)):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        started = time.monotonic()
        status, headers, body = _read_response(sock)
        took = time.monotonic() - started
    assert status == 413, body
    assert took < 2.0, f"413 after {took:.2f} s"
    assert headers.get("connection") == "close"
    assert json.loads(body)["detail"].startswith("request body is larger than the limit")
    assert counts(engine) == before


def test_exactly_1_mib_reaches_validation_and_is_stored(client: TestClient, engine: Engine) -> None:
    body = padded(VALID, MAX_BODY_BYTES)
    assert len(body) == MAX_BODY_BYTES
    response = client.post(SCHEDULES, content=body)
    assert response.status_code == 201, response.text
    assert counts(engine)["scout_schedules"] == 1

    # Just as large but invalid: validation, not the limit, answers.
    invalid = padded({**VALID, "name": "other", "max_strategies": 0}, MAX_BODY_BYTES)
    refused = client.post(SCHEDULES, content=invalid)
    assert refused.status_code == 422 and refused.json()["field"] == "max_strategies"


def test_one_byte_more_is_413_declared_or_streamed(client: TestClient, engine: Engine) -> None:
    before = counts(engine)
    body = padded(VALID, MAX_BODY_BYTES + 1)
    declared = client.post(SCHEDULES, content=body)
    assert declared.status_code == 413, declared.text
    assert declared.json()["field"] is None

    # A generator goes out chunked, without Content-Length: the streaming cap answers.
    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 100_000):
            yield body[start : start + 100_000]

    streamed = client.post(SCHEDULES, content=chunks())
    assert streamed.status_code == 413, streamed.text
    assert "content-length" not in {k.lower() for k in streamed.request.headers}
    assert counts(engine) == before


def test_the_limit_applies_before_authentication(
    db_url: str, broker_url: str, exchange_name: str, engine: Engine
) -> None:
    """An anonymous caller cannot make the server read a large body either."""
    app = create_app(app_settings(db_url, broker_url, exchange_name, api_token=TOKEN))
    with TestClient(app) as anonymous:
        big = anonymous.post(TRIGGER, content=b"x" * (MAX_BODY_BYTES + 1))
        small = anonymous.post(TRIGGER, content=b"{}")
    assert big.status_code == 413
    assert small.status_code == 401
