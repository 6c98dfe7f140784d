"""The console's actions (form posts): run now, pause, resume, cancel, sign in and out.

Each one is checked (same origin, signed in when a token is set, CSRF token),
calls the same :mod:`scout_tasks.service` function as the API and the CLI,
and answers with a redirect to the page it came from and a one-line banner.
A refused input comes back as the service worded it ("reason: ...").
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from scout_tasks import cron, overview, service
from scout_tasks.api.deps import Scout, get_scout
from scout_tasks.console.formatting import in_zone, short_id
from scout_tasks.console.session import Refused, Session, check_csrf, check_same_origin
from scout_tasks.console.throttle import FailureLimit, client_key, retry_after_header
from scout_tasks.console.web import message, redirect, render, safe_next, session, sessions
from scout_tasks.errors import InvalidInput, NotFound, RunAlreadyTerminal

log = logging.getLogger(__name__)

router = APIRouter(prefix="/ui", include_in_schema=False)

ACTOR = "console"


def actor_of(request: Request) -> str:
    """Who acts, for the schedule's history: the name given at sign-in, else ``console``."""
    name = session(request).name
    return f"{name} (console)" if name else ACTOR


def _refused(request: Request, refused: Refused) -> HTMLResponse:
    title = "Sign in to act" if refused.status == 401 else "Refused"
    response = message(request, refused.status, title, refused.message, keep_cookie=True)
    if refused.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="scout-tasks console"'
    return response


async def _checked_form(request: Request) -> dict[str, Any]:
    """The posted form, or :class:`Refused` when the post may not act."""
    form = await request.form()
    sessions(request).check_post(request, session(request), form.get("csrf"))
    return {key: value for key, value in form.items() if isinstance(value, str)}


async def _act(
    request: Request,
    back: str,
    action: Callable[[Scout, dict[str, Any]], str],
) -> Any:
    """Check the post, run ``action`` (which returns the banner), redirect back."""
    try:
        form = await _checked_form(request)
    except Refused as refused:
        return _refused(request, refused)
    to = safe_next(form.get("next"), back)
    scout = get_scout(request)
    try:
        # Service calls block (database, broker): keep them off the event loop.
        banner = await run_in_threadpool(action, scout, form)
    except InvalidInput as exc:
        return redirect(request, to, str(exc), "error")
    except RunAlreadyTerminal as exc:
        return redirect(request, to, str(exc), "error")
    except NotFound as exc:
        return redirect(request, "/ui", str(exc), "error")
    return redirect(request, to, banner)


def _schedule_key(schedule_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(schedule_id)
    except ValueError:
        raise NotFound(f"no schedule with id {schedule_id!r}") from None


@router.post("/schedules/{schedule_id}/run")
async def run_now(request: Request, schedule_id: str) -> Any:
    who = actor_of(request)

    def action(scout: Scout, _form: dict[str, Any]) -> str:
        run, delivered = service.run_now(
            scout.engine, _schedule_key(schedule_id), actor=who, publisher=scout.publisher()
        )
        queued = "" if delivered else " (event queued: the broker did not confirm yet)"
        return f"Run {short_id(run['id'])} created{queued}"

    return await _act(request, f"/ui/schedules/{schedule_id}", action)


@router.post("/schedules/{schedule_id}/pause")
async def pause(request: Request, schedule_id: str) -> Any:
    who = actor_of(request)

    def action(scout: Scout, form: dict[str, Any]) -> str:
        row = service.pause(
            scout.engine, _schedule_key(schedule_id), reason=form.get("reason", ""), actor=who
        )
        return f"Paused: {row['paused_reason']}"

    return await _act(request, f"/ui/schedules/{schedule_id}", action)


@router.post("/schedules/{schedule_id}/resume")
async def resume(request: Request, schedule_id: str) -> Any:
    who = actor_of(request)

    def action(scout: Scout, _form: dict[str, Any]) -> str:
        row = service.resume(scout.engine, _schedule_key(schedule_id), actor=who)
        return f"Resumed {row['name']}"

    return await _act(request, f"/ui/schedules/{schedule_id}", action)


def _local_instant(field: str, value: str, zone: str) -> datetime:
    """A ``datetime-local`` field, read as a wall time in the schedule's zone."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(field, f"{value!r} is not a date and time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=cron.get_zone(zone))
    return moment


def _slots(items: list[datetime], zone: str) -> str:
    """The first five slots and, past them, the last: where the range really ends
    (across a DST change too) is what an operator checks before backfilling."""
    now = datetime.now(UTC)
    shown = ", ".join(in_zone(s, zone, now) for s in items[:5])
    if len(items) > 5:
        shown += f" and {len(items) - 5} more, the last {in_zone(items[-1], zone, now)}"
    return shown


@router.post("/schedules/{schedule_id}/backfill")
async def backfill(request: Request, schedule_id: str) -> Any:
    """A run for every slot of ``[from, to)`` that has none (or, dry, the list of them)."""

    def action(scout: Scout, form: dict[str, Any]) -> str:
        from scout_tasks import backfill as backfilling

        key = _schedule_key(schedule_id)
        zone = overview.schedule_zone(scout.engine, key)
        start = _local_instant("from", form.get("from", ""), zone)
        end = _local_instant("to", form.get("to", ""), zone)
        dry = form.get("dry_run") == "1"
        done = backfilling.backfill(
            scout.engine, key, start, end, dry_run=dry, publisher=None if dry else scout.publisher()
        )
        new = [slot for slot, _run in done.created]
        had = f"; {len(done.existing)} already had one" if done.existing else ""
        if dry:
            if not new:
                return f"Preview: no slot in that range lacks a run{had}"
            return f"Preview: {len(new)} slot(s) would get a run: {_slots(new, zone)}{had}"
        return f"Backfilled {len(new)} slot(s){had}"

    return await _act(request, _backfill_back(schedule_id, await request.form()), action)


def _backfill_back(schedule_id: str, form: Any) -> str:
    """The schedule's page with the range just posted, so a preview can be run for real.

    Without it the form comes back empty and the operator types both instants
    again after every preview or refusal.
    """
    fields = {
        name: value.strip()[:64]
        for name in ("from", "to")
        if isinstance(value := form.get(name), str) and value.strip()
    }
    path = f"/ui/schedules/{schedule_id}"
    return f"{path}?{urlencode(fields)}" if fields else path


@router.post("/runs/{run_id}/cancel")
async def cancel(request: Request, run_id: str) -> Any:
    def action(scout: Scout, _form: dict[str, Any]) -> str:
        try:
            key = uuid.UUID(run_id)
        except ValueError:
            raise NotFound(f"no run with id {run_id!r}") from None
        run, _delivered = service.cancel_run(scout.engine, key, scout.publisher())
        return f"Run {short_id(run['id'])} cancelled"

    return await _act(request, f"/ui/runs/{run_id}", action)


def _too_many(request: Request, to: str, wait: float) -> HTMLResponse:
    """The sign-in page again, with 429, ``Retry-After`` and how long to wait."""
    seconds = retry_after_header(wait)
    current = session(request)
    current.flash = f"Too many failed sign-ins from your address: try again in {seconds} s."
    current.flash_kind = "error"
    response = render(request, "login.html", {"next": to}, status_code=429)
    response.headers["Retry-After"] = seconds
    return response


@router.post("/login")
async def login(request: Request) -> Any:
    store = sessions(request)
    limit: FailureLimit = request.app.state.console_sign_in_limit
    form = await request.form()
    current = session(request)
    to = safe_next(form.get("next"), "/ui")
    try:
        # Before the limit: a forged cross-site post neither counts nor learns anything.
        check_same_origin(request)
        check_csrf(current, form.get("csrf"))
    except Refused as refused:
        return _refused(request, refused)
    client = client_key(request.client.host if request.client else None)
    # A blocked address is refused before its token is looked at, so even the
    # right token tells it nothing until the wait is over.
    wait = limit.retry_after(client, time.monotonic())
    if wait > 0:
        log.warning(
            "console sign-in limited: %s", client, extra={"action": "console.sign_in_limited"}
        )
        return _too_many(request, to, wait)
    token = form.get("token")
    if not store.check_token(token if isinstance(token, str) else ""):
        wait = limit.failed(client, time.monotonic())
        log.warning(
            "console sign-in refused: %s", client, extra={"action": "console.sign_in_refused"}
        )
        text = "That token is not this server's SCOUT_API_TOKEN: check it and try again."
        if wait > 0:
            text = (
                "That token is not this server's SCOUT_API_TOKEN. Too many failed sign-ins "
                f"from your address: try again in {retry_after_header(wait)} s."
            )
        return redirect(request, "/ui/login?" + urlencode({"next": to}), text, "error")
    limit.succeeded(client)
    name = form.get("name")
    # A new CSRF token on sign-in, so one seen before it cannot be replayed after.
    fresh = Session(signed_in=True)
    fresh.name = name.strip()[:64] if isinstance(name, str) and name.strip() else None
    if fresh.name and any(ord(c) < 32 or ord(c) == 127 for c in fresh.name):
        fresh.name = None
    request.state.console_session = fresh
    log.info("console sign-in", extra={"action": "console.signed_in"})
    return redirect(request, to, "Signed in")


@router.post("/logout")
async def logout(request: Request) -> Any:
    form = await request.form()
    try:
        check_same_origin(request)
        check_csrf(session(request), form.get("csrf"))
    except Refused as refused:
        return _refused(request, refused)
    request.state.console_session = Session()
    return redirect(request, "/ui", "Signed out")
