"""The console's pages (GET): schedules, a schedule, runs, a run.

Query parameters are read leniently: a page is for people, so an unknown
filter value is ignored (and said so in the banner) instead of answering 422.
"""

from __future__ import annotations

import importlib.util
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, RedirectResponse

from scout_tasks import overview, runs
from scout_tasks.api.deps import get_scout
from scout_tasks.console.web import message, render, sessions
from scout_tasks.errors import NotFound
from scout_tasks.search import ScheduleSearch
from scout_tasks.tables import RUN_STATUSES, TRIGGER_TYPES

router = APIRouter(prefix="/ui", include_in_schema=False)

PAGE_SIZE = 50
RUNS_PAGE_SIZE = 50
# Search text longer than any name or source could match nothing; cut it.
MAX_SEARCH = 255


def _text(request: Request, name: str, limit: int = MAX_SEARCH) -> str | None:
    value = request.query_params.get(name, "").replace("\x00", "").strip()
    return value[:limit] or None


def _uuid(value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _page(request: Request, name: str = "page") -> int:
    try:
        return min(max(int(request.query_params.get(name, "1")), 1), 100_000)
    except ValueError:
        return 1


def _when(value: str | None) -> datetime | None:
    """A ``datetime-local`` field or an ISO instant; a bare time is UTC, as in the API."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        # In UTC, as the API does: PostgreSQL refuses offsets past 15:59.
        return parsed.astimezone(UTC)
    except OverflowError:
        return None


def _local_field(value: str | None) -> str:
    """A ``datetime-local`` value (``2026-11-20T00:00``) as the field takes it, or ``""``."""
    if not value:
        return ""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return ""
    # The field holds a wall time without an offset; seconds only when there are some.
    return parsed.strftime("%Y-%m-%dT%H:%M:%S" if parsed.second else "%Y-%m-%dT%H:%M")


def backfill_available() -> bool:
    """The backfill form appears once scout-tasks can backfill (``scout_tasks.backfill``, #13)."""
    return importlib.util.find_spec("scout_tasks.backfill") is not None


@router.get("", response_class=HTMLResponse)
@router.get("/", response_class=HTMLResponse)
def schedules_page(request: Request) -> HTMLResponse:
    scout = get_scout(request)
    state = request.query_params.get("state")
    search = ScheduleSearch(
        text=_text(request, "q"),
        state=state if state in {"enabled", "paused"} else None,
        last_run_failed=request.query_params.get("failed") in {"1", "on", "true"},
        after=_text(request, "after"),
        before=_text(request, "before"),
    )
    page = overview.schedule_page(scout.engine, search, PAGE_SIZE)
    params = {
        "q": search.text,
        "state": search.state,
        "failed": "1" if search.last_run_failed else None,
    }
    return render(
        request,
        "schedules.html",
        {"page": page, "search": search, "params": params, "now": page.now},
    )


@router.get("/schedules/{schedule_id}", response_class=HTMLResponse)
def schedule_page(request: Request, schedule_id: str) -> HTMLResponse:
    scout = get_scout(request)
    key = _uuid(schedule_id)
    if key is None:
        return message(request, 404, "No such schedule", f"{schedule_id!r} is not a schedule id.")
    try:
        detail = overview.schedule_detail(
            scout.engine,
            key,
            runs_page=_page(request),
            changes_page=_page(request, "history"),
        )
    except NotFound:
        return message(
            request,
            404,
            "No such schedule",
            f"No schedule has the id {key}; it may have been deleted.",
        )
    return render(
        request,
        "schedule.html",
        {
            "d": detail,
            "s": detail.schedule,
            "now": detail.now,
            "page": _page(request),
            "page_size": 20,
            "history_page": _page(request, "history"),
            "history_page_size": overview.CHANGES_PAGE_SIZE,
            "backfill": backfill_available(),
            # The range of the last backfill post, back in its fields (see actions).
            "backfill_range": {
                name: _local_field(_text(request, name, 64)) for name in ("from", "to")
            },
        },
    )


@router.get("/runs", response_class=HTMLResponse)
def runs_page(request: Request) -> HTMLResponse:
    scout = get_scout(request)
    raw: dict[str, Any] = {
        name: _text(request, name)
        for name in (
            "status",
            "trigger_type",
            "source",
            "schedule_id",
            "created_after",
            "created_before",
        )
    }
    ignored = []
    status = raw["status"] if raw["status"] in RUN_STATUSES else None
    trigger_type = raw["trigger_type"] if raw["trigger_type"] in TRIGGER_TYPES else None
    schedule_id = _uuid(raw["schedule_id"])
    after, before = _when(raw["created_after"]), _when(raw["created_before"])
    for name, given, used in (
        ("status", raw["status"], status),
        ("trigger_type", raw["trigger_type"], trigger_type),
        ("schedule_id", raw["schedule_id"], schedule_id),
        ("created_after", raw["created_after"], after),
        ("created_before", raw["created_before"], before),
    ):
        if given and used is None:
            ignored.append(name)
    filters = runs.RunFilter(
        status=status,
        source=raw["source"],
        schedule_id=schedule_id,
        trigger_type=trigger_type,
        created_after=after,
        created_before=before,
    )
    page = _page(request)
    result = overview.run_page(scout.engine, filters, page, RUNS_PAGE_SIZE)
    return render(
        request,
        "runs.html",
        {
            "result": result,
            "params": {k: None if k in ignored else v for k, v in raw.items()},
            "ignored": ignored,
            "page": page,
            "page_size": RUNS_PAGE_SIZE,
            "now": result.now,
            "statuses": RUN_STATUSES,
            "trigger_types": TRIGGER_TYPES,
        },
    )


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str) -> HTMLResponse:
    scout = get_scout(request)
    key = _uuid(run_id)
    if key is None:
        return message(request, 404, "No such run", f"{run_id!r} is not a run id.")
    try:
        detail = overview.run_detail(scout.engine, key)
    except NotFound:
        return message(request, 404, "No such run", f"No run has the id {key}.")
    payload = json.dumps(jsonable_encoder(detail.run), indent=2, ensure_ascii=False)
    return render(
        request,
        "run.html",
        {"d": detail, "r": detail.run, "now": detail.now, "payload": payload},
    )


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> Any:
    if not sessions(request).needs_sign_in:
        return RedirectResponse("/ui", status_code=303)
    return render(request, "login.html", {"next": request.query_params.get("next", "/ui")})
