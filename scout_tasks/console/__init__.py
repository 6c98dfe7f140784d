"""The operator console at ``/ui``: server-rendered pages over :mod:`scout_tasks.service`.

Modules: ``pages`` (GET routes), ``actions`` (form posts), ``session`` (the
signed cookie, sign-in and CSRF), ``throttle`` (failed sign-ins per address),
``web`` (templates, banners, redirects), ``formatting`` (times, ids, states).
Templates and the stylesheet ship in the package; there is no build step and
no front-end library.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

from scout_tasks.console import actions, pages
from scout_tasks.console.session import Sessions
from scout_tasks.console.throttle import FailureLimit
from scout_tasks.console.web import message
from scout_tasks.settings import Settings

STATIC = "/ui/static"


Handler = Callable[[Request, Exception], Any]
TITLES = {404: "Not found", 503: "Not available right now", 500: "Something went wrong"}


def _pages_for(original: Handler) -> Handler:
    """The API's handler, answering a page under ``/ui`` instead of JSON.

    The API's classification (status, message) is kept, so an operator reads
    the same words as a script: "database unavailable: ..." with a 503.
    """

    def handler(request: Request, exc: Exception) -> Response:
        response: Response = original(request, exc)
        if not request.url.path.startswith("/ui"):
            return response
        try:
            detail = str(json.loads(bytes(response.body))["detail"])
        except (ValueError, KeyError, TypeError):
            detail = "the server could not answer this page"
        title = TITLES.get(response.status_code, "Refused")
        return message(request, response.status_code, title, detail, keep_cookie=True)

    return handler


def install(app: FastAPI, settings: Settings) -> None:
    """Serve the console from ``app`` (the API's), signed with the API token.

    Call after the API's error handlers are installed: the console wraps them.
    """
    app.state.console_sessions = Sessions(settings.token())
    # Failed sign-ins per client address (5 a minute), kept by this process.
    app.state.console_sign_in_limit = FailureLimit()
    app.include_router(pages.router)
    app.include_router(actions.router)
    app.mount(STATIC, StaticFiles(packages=[("scout_tasks.console", "static")]), name="console")
    for exc_class, original in list(app.exception_handlers.items()):
        if isinstance(exc_class, type) and issubclass(exc_class, Exception):
            app.add_exception_handler(exc_class, _pages_for(original))


__all__ = ["install"]
