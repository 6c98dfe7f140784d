"""BodySizeLimit as a plain ASGI middleware, driven by hand: no server, no socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from scout_tasks.api.limits import BodySizeLimit

LIMIT = 1000


def _scope(headers: Iterable[tuple[bytes, bytes]] = ()) -> Scope:
    return {"type": "http", "method": "POST", "path": "/x", "headers": list(headers)}


class Reader:
    """An app that reads the whole body, then answers 200 with its length."""

    def __init__(self) -> None:
        self.called = False
        self.read = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.called = True
        more = True
        while more:
            message = await receive()
            self.read += len(message.get("body", b""))
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(self.read).encode()})


def _run(app: Any, scope: Scope, chunks: list[bytes]) -> tuple[list[Message], int]:
    """Run the middleware; the messages it sent, and how many chunks were taken."""
    sent: list[Message] = []
    queue = list(chunks)
    taken = 0

    async def receive() -> Message:
        nonlocal taken
        taken += 1
        body = queue.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(queue)}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(BodySizeLimit(app, max_bytes=LIMIT)(scope, receive, send))
    return sent, taken


def _status(sent: list[Message]) -> int:
    return int(sent[0]["status"])


def test_a_declared_length_over_the_limit_never_reaches_the_app() -> None:
    app = Reader()
    sent, taken = _run(app, _scope([(b"content-length", b"104857600")]), [b"{"])
    assert _status(sent) == 413
    assert not app.called and taken == 0
    assert json.loads(sent[1]["body"])["detail"].startswith("request body is larger")
    assert (b"connection", b"close") in sent[0]["headers"]


def test_a_streamed_body_stops_at_the_first_chunk_past_the_limit() -> None:
    app = Reader()
    chunks = [b"a" * 400, b"b" * 400, b"c" * 201, b"d" * 10_000, b"e"]
    sent, taken = _run(app, _scope(), chunks)
    assert _status(sent) == 413
    assert taken == 3  # 1001 bytes: the two chunks after it are never asked for


def test_exactly_the_limit_passes_declared_or_streamed() -> None:
    app = Reader()
    sent, _ = _run(app, _scope([(b"content-length", str(LIMIT).encode())]), [b"x" * LIMIT])
    assert _status(sent) == 200 and sent[1]["body"] == str(LIMIT).encode()
    sent, _ = _run(Reader(), _scope(), [b"x" * 500, b"x" * 500])
    assert _status(sent) == 200


def test_a_lying_content_length_is_still_capped_while_streaming() -> None:
    sent, _ = _run(Reader(), _scope([(b"content-length", b"10")]), [b"x" * 600, b"x" * 600])
    assert _status(sent) == 413


def test_other_scopes_pass_untouched() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def nothing() -> Message:
        raise AssertionError("not read")

    async def ignore(message: Message) -> None:
        raise AssertionError("nothing sent")

    asyncio.run(BodySizeLimit(app)({"type": "lifespan"}, nothing, ignore))
    assert seen == ["lifespan"]
