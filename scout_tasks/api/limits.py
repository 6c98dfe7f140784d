"""Request bodies over :data:`MAX_BODY_BYTES` are refused with 413 before they are read.

A pure ASGI middleware, so it sees the body as the server streams it: a
declared ``Content-Length`` over the limit is refused before the application
runs at all, and a chunked (or lying) body is cut off at the first byte past
the limit. Either way nothing downstream has the body, so nothing is written.
"""

from __future__ import annotations

import json
import logging

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024


class BodyTooLarge(HTTPException):
    """The body went past the limit while it was being read.

    An ``HTTPException`` so that, raised inside a route's body read, the
    application's own handler answers it like any other refusal.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, _detail(limit), headers={"Connection": "close"})


def _detail(limit: int) -> str:
    return f"request body is larger than the limit of {limit} bytes (1 MiB)"


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses such a request itself
    return None


def _log_refusal(scope: Scope, why: str) -> None:
    log.warning(
        "request body too large (%s): %s %s",
        why,
        scope.get("method"),
        scope.get("path"),
        extra={"action": "api.body_too_large"},
    )


class BodySizeLimit:
    """Wraps an ASGI app; answers 413 instead of letting it read a body over ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            _log_refusal(scope, f"Content-Length {declared}")
            await self._refuse(send)
            return

        received = 0
        started = False

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    _log_refusal(scope, f"more than {self.max_bytes} bytes streamed")
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, watched_send)
        except BodyTooLarge:
            # Read outside a route (no handler on the way): answer here.
            if started:
                raise
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": _detail(self.max_bytes), "field": None}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
