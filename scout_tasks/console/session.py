"""The console's session: a signed cookie, the CSRF token, sign-in, and the one-line banner.

The cookie holds ``{"csrf", "signed_in", "name", "flash"}`` signed with
itsdangerous (tampering is detected, nothing secret is inside). It is
HttpOnly, ``SameSite=Lax`` (a link from a chat opens the console signed in,
a cross-site POST carries no cookie) and scoped to ``/ui``.

The signing key is derived from ``SCOUT_API_TOKEN`` when one is set, so every
API process accepts the same sessions and changing the token signs everyone
out. Without a token a random key per process is used: sessions then only
carry the CSRF token, and a restart merely asks for a reload of open forms.

Every form post is checked three ways, each closing a different hole:
the request's ``Origin`` (or ``Referer``) must be this console's own, the
session must be signed in when a token is configured (401, as the API), and
the form's hidden ``csrf`` field must equal the session's (403).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "scout_console"
COOKIE_PATH = "/ui"
# A signed-in session lasts a working day; an idle one is refused after it.
MAX_AGE_SECONDS = 12 * 3600
_SALT = "scout-tasks console session"


class Refused(Exception):
    """A form post the console will not act on: the status and what to do about it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Session:
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    signed_in: bool = False
    name: str | None = None
    flash: str | None = None
    flash_kind: str = "ok"

    def to_json(self) -> dict[str, Any]:
        return {
            "csrf": self.csrf,
            "signed_in": self.signed_in,
            "name": self.name,
            "flash": self.flash,
            "flash_kind": self.flash_kind,
        }

    def take_flash(self) -> tuple[str | None, str]:
        """The banner to show once, then forget."""
        flash, kind = self.flash, self.flash_kind
        self.flash, self.flash_kind = None, "ok"
        return flash, kind


class Sessions:
    """Reads and writes the console's session cookie for one app."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        secret = token if token is not None else secrets.token_hex(32)
        self._serializer = URLSafeTimedSerializer(secret, salt=_SALT)

    @property
    def needs_sign_in(self) -> bool:
        return self.token is not None

    def load(self, request: Request) -> Session:
        """The request's session, or a new anonymous one (a bad or old cookie is ignored)."""
        cached = getattr(request.state, "console_session", None)
        if isinstance(cached, Session):
            return cached
        session = Session()
        raw = request.cookies.get(COOKIE)
        if raw:
            try:
                data = self._serializer.loads(raw, max_age=MAX_AGE_SECONDS)
            except BadSignature:
                data = None
            if isinstance(data, dict) and isinstance(data.get("csrf"), str):
                session = Session(
                    csrf=data["csrf"],
                    signed_in=bool(data.get("signed_in")) and self.needs_sign_in,
                    name=data.get("name") if isinstance(data.get("name"), str) else None,
                    flash=data.get("flash") if isinstance(data.get("flash"), str) else None,
                    flash_kind=str(data.get("flash_kind") or "ok"),
                )
        request.state.console_session = session
        return session

    def save(self, request: Request, response: Response, session: Session) -> None:
        response.set_cookie(
            COOKIE,
            self._serializer.dumps(session.to_json()),
            max_age=MAX_AGE_SECONDS,
            path=COOKIE_PATH,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )

    def can_act(self, session: Session) -> bool:
        return session.signed_in or not self.needs_sign_in

    def check_token(self, given: str) -> bool:
        """The sign-in form's token, compared in constant time."""
        if self.token is None:
            return True
        return hmac.compare_digest(given.encode(), self.token.encode())

    def check_post(self, request: Request, session: Session, form_csrf: object) -> None:
        """Raise :class:`Refused` unless this form post may act."""
        check_same_origin(request)
        if not self.can_act(session):
            raise Refused(
                401, "Sign in to act: this console needs the API token (SCOUT_API_TOKEN)."
            )
        check_csrf(session, form_csrf)


def check_csrf(session: Session, form_csrf: object) -> None:
    given = form_csrf if isinstance(form_csrf, str) else ""
    if not given or not hmac.compare_digest(given.encode(), session.csrf.encode()):
        raise Refused(
            403,
            "This form is out of date or came from another site: reload the page and try again.",
        )


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def check_same_origin(request: Request) -> None:
    """Refuse a post whose browser says it comes from another site.

    Browsers send ``Origin`` on every form post (``Referer`` as a fallback);
    a client that sends neither (curl, a test) is judged by the CSRF token alone.
    """
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise Refused(403, "Refused: this form was posted from another site.")
    own = f"{request.url.scheme}://{request.url.netloc}".lower()
    claimed = request.headers.get("origin")
    if claimed is not None:
        # "null" is what a sandboxed or privacy-stripped page sends: not us.
        if claimed.lower() != own:
            raise Refused(403, "Refused: this form was posted from another site.")
        return
    referer = request.headers.get("referer")
    if referer and _origin_of(referer) != own:
        raise Refused(403, "Refused: this form was posted from another site.")
