"""Rendering: the Jinja2 environment of the package's templates, pages, banners and redirects."""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from scout_tasks.console import formatting
from scout_tasks.console.session import Session, Sessions

# Pages hold a CSRF token and live data: never cached, never framed, and
# nothing runs or loads but this console's own files.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@functools.cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("scout_tasks.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(formatting.FILTERS)
    env.globals.update(formatting.GLOBALS)
    env.globals["query"] = query_string
    return env


def query_string(params: dict[str, Any], **changes: Any) -> str:
    """``?a=1&b=2`` for these parameters with ``changes`` applied; empty values dropped."""
    merged = {**params, **changes}
    kept = {k: v for k, v in merged.items() if v not in (None, "", False)}
    return "?" + urlencode(kept) if kept else "?"


def sessions(request: Request) -> Sessions:
    return request.app.state.console_sessions  # type: ignore[no-any-return]


def session(request: Request) -> Session:
    return sessions(request).load(request)


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    status_code: int = 200,
    *,
    keep_cookie: bool = False,
) -> HTMLResponse:
    """The page, with the session's banner shown once and the session cookie renewed.

    ``keep_cookie`` leaves the browser's cookie alone: a refused cross-site post
    arrives without it (SameSite), and answering with a fresh anonymous cookie
    would let any site sign the operator out.
    """
    store = sessions(request)
    current = store.load(request)
    flash, flash_kind = current.take_flash()
    html = (
        environment()
        .get_template(template)
        .render(
            request=request,
            path=request.url.path,
            csrf=current.csrf,
            can_act=store.can_act(current),
            needs_sign_in=store.needs_sign_in,
            signed_in=current.signed_in,
            operator=current.name,
            flash=flash,
            flash_kind=flash_kind,
            **context,
        )
    )
    response = HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
    if not keep_cookie:
        store.save(request, response, current)
    return response


def message(
    request: Request, status_code: int, title: str, text: str, *, keep_cookie: bool = False
) -> HTMLResponse:
    """A whole page saying what went wrong and what to do next."""
    return render(
        request,
        "message.html",
        {"title": title, "text": text},
        status_code=status_code,
        keep_cookie=keep_cookie,
    )


def safe_next(value: object, default: str) -> str:
    """Where to go after an action: only a path inside the console, never another site."""
    if not isinstance(value, str) or not value.startswith("/ui") or value.startswith("//"):
        return default
    # Backslashes and line breaks could turn a path into another host or header.
    return default if any(c in value for c in "\\\r\n") else value


def redirect(request: Request, to: str, flash: str | None = None, kind: str = "ok") -> Any:
    """Post-redirect-get: the page the action came from, with a one-line banner."""
    store = sessions(request)
    current = store.load(request)
    if flash is not None:
        current.flash, current.flash_kind = flash, kind
    response = RedirectResponse(to, status_code=303, headers={"Cache-Control": "no-store"})
    store.save(request, response, current)
    return response
