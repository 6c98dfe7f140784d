"""The operator console at ``/ui``: server-rendered pages over :mod:`scout_tasks.service`.

Modules: ``pages`` (GET routes), ``actions`` (form posts), ``session`` (the
signed cookie, sign-in and CSRF), ``web`` (templates, banners, redirects),
``formatting`` (times, ids, states). Templates and the stylesheet ship in the
package; there is no build step and no front-end library.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from scout_tasks.console import actions, pages
from scout_tasks.console.session import Sessions
from scout_tasks.settings import Settings

STATIC = "/ui/static"


def install(app: FastAPI, settings: Settings) -> None:
    """Serve the console from ``app`` (the API's), signed with ``settings.api_token``."""
    app.state.console_sessions = Sessions(settings.api_token)
    app.include_router(pages.router)
    app.include_router(actions.router)
    app.mount(STATIC, StaticFiles(packages=[("scout_tasks.console", "static")]), name="console")


__all__ = ["install"]
