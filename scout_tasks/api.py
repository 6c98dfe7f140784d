"""The HTTP API: the CLI's operations over JSON, plus health and metrics.

Routes are thin: request bodies arrive as raw JSON objects and go through
:mod:`scout_tasks.service` (which validates with :mod:`scout_tasks.validation`),
so the CLI and the API refuse exactly the same input with the same messages.
Every error, FastAPI's own included, is ``{"detail": ..., "field": ...}``;
a database outage is a 503, never a 500 with a traceback.

Routes are plain ``def`` functions: SQLAlchemy and kombu block, so they run in
the threadpool. The one publisher per app is shared by those threads and
therefore serialised by a lock.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, Literal

import kombu
from amqp.exceptions import AMQPError
from fastapi import Depends, FastAPI, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from kombu.exceptions import KombuError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from pydantic import BaseModel, create_model
from sqlalchemy import Connection, Engine, Table, text
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException

from scout_tasks import cron, db, outbox, runs, schedules, service
from scout_tasks.broker import broker_transport_options
from scout_tasks.errors import (
    DuplicateScheduleName,
    InvalidInput,
    NotFound,
    PublishError,
    RunAlreadyTerminal,
    ScoutTasksError,
)
from scout_tasks.publisher import ConfirmingPublisher, OutgoingMessage, PublishResult
from scout_tasks.settings import Settings, get_settings
from scout_tasks.tables import RUN_STATUSES, TRIGGER_TYPES
from scout_tasks.tables import runs as runs_table
from scout_tasks.tables import schedules as schedules_table
from scout_tasks.validation import ScheduleCreate, ScheduleUpdate, TriggerRequest

log = logging.getLogger(__name__)

PREFIX = "/api/scout"
MAX_PAGE_SIZE = 1000
# Bounds the OFFSET so a silly page number is a 422, not a bigint overflow.
MAX_PAGE = 1_000_000

RunStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
TriggerType = Literal["scheduled", "manual", "event"]
assert set(RunStatus.__args__) == set(RUN_STATUSES)  # type: ignore[attr-defined]
assert set(TriggerType.__args__) == set(TRIGGER_TYPES)  # type: ignore[attr-defined]

# Fire lag buckets, in seconds: a healthy beat fires within a second or two of
# the slot; minutes mean the beat or the database was down.
LAG_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
LAG_WINDOW = timedelta(hours=1)


# --- the per-app resources ----------------------------------------------------------


class SharedPublisher(ConfirmingPublisher):
    """A :class:`ConfirmingPublisher` that the threadpool's threads may share.

    The confirm bookkeeping lives on the instance, so two concurrent publishes
    would steal each other's acks; a lock makes them take turns.
    """

    def __init__(self, url: str, exchange: str, *, confirm_timeout: float = 10.0) -> None:
        super().__init__(url, exchange, confirm_timeout=confirm_timeout)
        self._lock = threading.RLock()

    def publish(self, messages: Sequence[OutgoingMessage]) -> PublishResult:
        with self._lock:
            return super().publish(messages)

    def close(self) -> None:
        with self._lock:
            super().close()


@dataclass
class Scout:
    """What the routes share: settings, the engine, and the lazily made publisher."""

    settings: Settings
    engine: Engine
    _publisher: SharedPublisher | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def publisher(self) -> SharedPublisher:
        """Created on first use, so the API starts (and serves reads) without a broker."""
        with self._lock:
            if self._publisher is None:
                self._publisher = SharedPublisher(self.settings.broker_url, self.settings.exchange)
            return self._publisher

    def close(self) -> None:
        with self._lock:
            publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.close()
        self.engine.dispose()


def _scout(request: Request) -> Scout:
    return request.app.state.scout  # type: ignore[no-any-return]


ScoutDep = Annotated[Scout, Depends(_scout)]


# --- errors ---------------------------------------------------------------------------


class ErrorBody(BaseModel):
    """Every error response: a message, and the request field at fault (if any)."""

    detail: str
    field: str | None = None


def _error(code: int, detail: str, field: str | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": detail, "field": field, **extra}, status_code=code)


def _scout_error(_request: Request, exc: Exception) -> JSONResponse:
    # DuplicateScheduleName is an InvalidInput: test it first.
    if isinstance(exc, DuplicateScheduleName):
        return _error(409, str(exc), exc.field)
    if isinstance(exc, InvalidInput):
        return _error(422, str(exc), exc.field)
    if isinstance(exc, NotFound):
        return _error(404, str(exc))
    if isinstance(exc, RunAlreadyTerminal):
        return _error(409, str(exc))
    if isinstance(exc, PublishError):
        return _error(503, str(exc))
    log.error("unexpected error: %s", exc, extra={"action": "api.error"})
    return _error(500, "internal error")


def _request_field(loc: Sequence[Any]) -> str:
    """``("query", "page")`` -> ``page``; a whole-body problem is ``body``."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header", "cookie"} and len(parts) > 1:
        parts = parts[1:]
    return ".".join(parts) or "body"


def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if not errors:
        return _error(422, "invalid request", "body")
    first = errors[0]
    name = _request_field(first.get("loc", ()))
    message = "unknown field" if first.get("type") == "extra_forbidden" else first.get("msg", "")
    return _error(422, f"{name}: {message}", name)


def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    response = _error(exc.status_code, str(exc.detail))
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    """A bug still answers in JSON; the traceback goes to the log, not to the client."""
    log.error("unhandled error", exc_info=exc, extra={"action": "api.error"})
    return _error(500, "internal error")


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__


def _database_error(_request: Request, exc: Exception) -> JSONResponse:
    """An unreachable or unmigrated database is a 503 the client may retry, not a 500."""
    if isinstance(exc, OperationalError | InterfaceError | DisconnectionError | PoolTimeoutError):
        log.warning(
            "database unavailable: %s", _first_line(exc), extra={"action": "api.db_unavailable"}
        )
        return _error(503, f"database unavailable: {_first_line(exc)}")
    if isinstance(exc, DBAPIError) and getattr(exc.orig, "pgcode", None) == "42P01":
        return _error(503, "the database has no scout-tasks tables; run `scout-tasks db upgrade`")
    if isinstance(exc, DBAPIError) and str(getattr(exc.orig, "pgcode", None) or "").startswith(
        "22"
    ):
        # A value the database cannot store (class 22, data exception) is the
        # caller's input; validation should have caught it, so log it as a gap.
        log.warning(
            "database refused a value: %s", _first_line(exc), extra={"action": "api.data_error"}
        )
        return _error(422, f"invalid value: {_first_line(exc)}")
    log.error("database error", exc_info=exc, extra={"action": "api.db_error"})
    return _error(500, "internal error")


# --- request parts ---------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="SCOUT_API_TOKEN, when the server sets one.")


def _require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Mutating routes need the token when one is configured; reads stay open."""
    token = _scout(request).settings.api_token
    if token is None:
        return
    given = credentials.credentials if credentials is not None else ""
    # Constant-time, so the response time does not reveal how much of a guess matched.
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(
            401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


MUTATING = [Depends(_require_token)]


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON allows a key twice and keeps the last; a scheduler should not guess."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidInput(key, "given more than once")
        result[key] = value
    return result


async def _json_object(request: Request) -> dict[str, Any]:
    """The body as a raw JSON object, so :mod:`scout_tasks.validation` alone judges it.

    Declared as a dependency after the token check, so an unauthenticated
    request is a 401 whatever its body.
    """
    raw = await request.body()
    if not raw.strip():
        raise InvalidInput("body", "a JSON object is required")
    try:
        data = json.loads(raw, object_pairs_hook=_no_duplicate_keys)
    except InvalidInput:
        raise
    except (ValueError, RecursionError) as exc:
        raise InvalidInput("body", f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        kind = "an array" if isinstance(data, list) else f"a {type(data).__name__}"
        raise InvalidInput("body", f"must be a JSON object, not {kind}")
    return data


JsonBody = Annotated[dict[str, Any], Depends(_json_object)]


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a body read as a raw object: the validation model's schema."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


ScheduleId = Annotated[uuid.UUID, Path(alias="id", description="The schedule's id.")]
RunId = Annotated[uuid.UUID, Path(alias="id", description="The run's id.")]
Page = Annotated[int, Query(ge=1, le=MAX_PAGE, description="1-based page number.")]
# A NUL can never be stored, so it can never match: refuse it like any bad value.
SourceFilter = Annotated[str | None, Query(max_length=255, pattern=r"^[^\x00]*$")]
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page.")]


def _utc(value: datetime | None, field: str) -> datetime | None:
    """A bare timestamp in a filter means UTC, the zone everything is stored in."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        # PostgreSQL takes offsets up to 15:59; converting here accepts any.
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(field, "is out of range") from None


def _page(items: list[dict[str, Any]], total: int, page: int, page_size: int) -> dict[str, Any]:
    return {"items": items, "total": total, "page": page, "page_size": page_size}


# --- OpenAPI documentation of the objects ------------------------------------------------


def _document(name: str, table: Table) -> type[BaseModel]:
    """A schema for OpenAPI made from the table itself, so it cannot drift.

    Used for documentation only: responses are the rows as they are (like the
    CLI's ``--json``), not re-serialised through a model.
    """
    fields: dict[str, Any] = {}
    for column in table.c:
        try:
            kind: Any = column.type.python_type
        except NotImplementedError:
            kind = Any
        if kind is object:
            kind = Any
        fields[column.name] = (kind | None if column.nullable else kind, ...)
    return create_model(name, **fields)


ScheduleDoc = _document("Schedule", schedules_table)
RunDoc = _document("Run", runs_table)
SchedulePageDoc = create_model(
    "SchedulePage", items=(list[ScheduleDoc], ...), total=(int, ...), page=(int, ...),
    page_size=(int, ...),
)  # fmt: skip
RunPageDoc = create_model(
    "RunPage", items=(list[RunDoc], ...), total=(int, ...), page=(int, ...), page_size=(int, ...)
)


class Message(BaseModel):
    message: str


class NextTimes(BaseModel):
    id: uuid.UUID
    cron_expression: str
    timezone: str
    times: list[str]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody} for code in codes}


def _ok(code: int, model: type[BaseModel], *errors: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": model}, **_errors(*errors)}


# --- routes: schedules ------------------------------------------------------------------


def _register_schedule_routes(app: FastAPI) -> None:
    @app.post(
        f"{PREFIX}/schedules",
        status_code=201,
        dependencies=MUTATING,
        openapi_extra=_body_doc(ScheduleCreate),
        responses=_ok(201, ScheduleDoc, 401, 409, 422, 503),
        tags=["schedules"],
    )
    def create_schedule(scout: ScoutDep, body: JsonBody) -> Any:
        """Create a schedule; an enabled one gets its first ``next_run_at`` at once."""
        return jsonable_encoder(service.create_schedule(scout.engine, body))

    @app.get(
        f"{PREFIX}/schedules",
        responses=_ok(200, SchedulePageDoc, 422, 503),
        tags=["schedules"],
    )
    def list_schedules(
        scout: ScoutDep,
        enabled: bool | None = None,
        source: SourceFilter = None,
        page: Page = 1,
        page_size: PageSize = 50,
    ) -> Any:
        """Schedules ordered by name, one page at a time."""
        with scout.engine.connect() as conn:
            items, total = schedules.list_schedules(
                conn,
                enabled=enabled,
                source=source,
                limit=page_size,
                offset=(page - 1) * page_size,
            )
        return jsonable_encoder(_page(items, total, page, page_size))

    @app.post(
        f"{PREFIX}/schedules/reload",
        dependencies=MUTATING,
        responses=_ok(200, Message, 401, 503),
        tags=["schedules"],
    )
    def reload_all(scout: ScoutDep) -> Any:
        """Wake every beat now (changes take effect without this too)."""
        service.reload_schedules(scout.engine)
        return {"message": "schedules reloaded"}

    @app.get(
        f"{PREFIX}/schedules/{{id}}",
        responses=_ok(200, ScheduleDoc, 404, 422, 503),
        tags=["schedules"],
    )
    def get_schedule(scout: ScoutDep, schedule_id: ScheduleId) -> Any:
        with scout.engine.connect() as conn:
            return jsonable_encoder(schedules.get_schedule(conn, schedule_id))

    @app.patch(
        f"{PREFIX}/schedules/{{id}}",
        dependencies=MUTATING,
        openapi_extra=_body_doc(ScheduleUpdate),
        responses=_ok(200, ScheduleDoc, 401, 404, 409, 422, 503),
        tags=["schedules"],
    )
    def update_schedule(scout: ScoutDep, schedule_id: ScheduleId, body: JsonBody) -> Any:
        """Change only the fields given; timing changes recompute ``next_run_at``."""
        return jsonable_encoder(service.update_schedule(scout.engine, schedule_id, body))

    @app.delete(
        f"{PREFIX}/schedules/{{id}}",
        status_code=204,
        dependencies=MUTATING,
        responses=_errors(401, 404, 422, 503),
        tags=["schedules"],
    )
    def delete_schedule(scout: ScoutDep, schedule_id: ScheduleId) -> Response:
        """Delete a schedule; its runs stay, with ``schedule_id`` set to null."""
        service.delete_schedule(scout.engine, schedule_id)
        return Response(status_code=204)

    @app.get(
        f"{PREFIX}/schedules/{{id}}/next",
        responses=_ok(200, NextTimes, 404, 422, 503),
        tags=["schedules"],
    )
    def next_fire_times(
        scout: ScoutDep,
        schedule_id: ScheduleId,
        n: Annotated[int, Query(ge=1, le=1000, description="How many fire times.")] = 5,
    ) -> Any:
        """The next ``n`` fire times, with their offset in the schedule's zone.

        An enabled schedule starts from its ``next_run_at``, which an operator
        may have set off the cron grid; a disabled one previews from now.
        """
        with scout.engine.connect() as conn:
            row = schedules.get_schedule(conn, schedule_id)
            now = db.db_now(conn)
        expr, zone = row["cron_expression"], row["timezone"]
        first: datetime | None = row["next_run_at"] if row["enabled"] else None
        times: list[datetime] = []
        if first is not None:
            times.append(first.astimezone(cron.get_zone(zone)))
        if len(times) < n:
            times += cron.next_times(expr, zone, first or now, n - len(times))
        return {
            "id": str(row["id"]),
            "cron_expression": expr,
            "timezone": zone,
            "times": [t.isoformat() for t in times],
        }

    @app.post(
        f"{PREFIX}/schedules/{{id}}/reload",
        dependencies=MUTATING,
        responses=_ok(200, Message, 401, 404, 422, 503),
        tags=["schedules"],
    )
    def reload_one(scout: ScoutDep, schedule_id: ScheduleId) -> Any:
        """As in the seed: wakes every beat, after checking the schedule exists."""
        with scout.engine.connect() as conn:
            schedules.get_schedule(conn, schedule_id)
        service.reload_schedules(scout.engine)
        return {"message": f"schedule {schedule_id} reloaded"}


# --- routes: runs ------------------------------------------------------------------------


def _event_header(response: Response, delivered: bool) -> None:
    """Tell the caller whether the broker confirmed the event or the outbox holds it."""
    response.headers["Scout-Event"] = "published" if delivered else "queued"
    if not delivered:
        log.warning(
            "event not confirmed by the broker; kept in the outbox",
            extra={"action": "api.event_queued"},
        )


def _register_run_routes(app: FastAPI) -> None:
    @app.post(
        f"{PREFIX}/trigger",
        status_code=201,
        dependencies=MUTATING,
        openapi_extra=_body_doc(TriggerRequest),
        responses=_ok(201, RunDoc, 401, 422, 503),
        tags=["runs"],
    )
    def trigger(scout: ScoutDep, body: JsonBody, response: Response) -> Any:
        """Start a manual run and publish its ``scout.trigger``.

        201 once the run is committed: if the broker is down the event waits in
        the outbox (header ``Scout-Event: queued``) and the next tick sends it.
        """
        run, delivered = service.trigger_run(scout.engine, body, scout.publisher())
        _event_header(response, delivered)
        return jsonable_encoder(run)

    @app.get(f"{PREFIX}/runs", responses=_ok(200, RunPageDoc, 422, 503), tags=["runs"])
    def list_runs(
        scout: ScoutDep,
        status: RunStatus | None = None,
        source: SourceFilter = None,
        schedule_id: uuid.UUID | None = None,
        trigger_type: TriggerType | None = None,
        created_after: Annotated[
            datetime | None, Query(description="Inclusive; a bare timestamp is UTC.")
        ] = None,
        created_before: Annotated[
            datetime | None, Query(description="Exclusive; a bare timestamp is UTC.")
        ] = None,
        page: Page = 1,
        page_size: PageSize = 50,
    ) -> Any:
        """Runs, newest first, one page at a time."""
        filters = runs.RunFilter(
            status=status,
            source=source,
            schedule_id=schedule_id,
            trigger_type=trigger_type,
            created_after=_utc(created_after, "created_after"),
            created_before=_utc(created_before, "created_before"),
        )
        with scout.engine.connect() as conn:
            items, total = runs.list_runs(
                conn, filters, limit=page_size, offset=(page - 1) * page_size
            )
        return jsonable_encoder(_page(items, total, page, page_size))

    @app.get(f"{PREFIX}/runs/{{id}}", responses=_ok(200, RunDoc, 404, 422, 503), tags=["runs"])
    def get_run(scout: ScoutDep, run_id: RunId) -> Any:
        with scout.engine.connect() as conn:
            return jsonable_encoder(runs.get_run(conn, run_id))

    @app.post(
        f"{PREFIX}/runs/{{id}}/cancel",
        dependencies=MUTATING,
        responses=_ok(200, RunDoc, 401, 404, 409, 422, 503),
        tags=["runs"],
    )
    def cancel_run(scout: ScoutDep, run_id: RunId, response: Response) -> Any:
        """Cancel a pending or running run and publish ``scout.cancelled``."""
        run, delivered = service.cancel_run(scout.engine, run_id, scout.publisher())
        _event_header(response, delivered)
        return jsonable_encoder(run)


# --- health and metrics ---------------------------------------------------------------------


def _check_database(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return _first_line(exc)
    return None


def _check_broker(url: str) -> str | None:
    try:
        options = broker_transport_options(url)
        with kombu.Connection(url, connect_timeout=3, transport_options=options) as conn:
            conn.connect()
    except (OSError, AMQPError, KombuError) as exc:
        return _first_line(exc)
    return None


def collect_metrics(conn: Connection) -> list[Metric]:
    """Every metric, read from the database now.

    Scraped state lives in PostgreSQL, not in this process, so any API
    process reports the same numbers as any other.
    """
    by_status = dict.fromkeys(RUN_STATUSES, 0)
    by_status.update(runs.count_by_status(conn))
    enabled, skipped = schedules.enabled_and_skipped_totals(conn)
    backlog = outbox.backlog(conn)
    count, total, cumulative = runs.fire_lag_buckets(conn, LAG_BUCKETS, LAG_WINDOW)

    runs_metric = GaugeMetricFamily("scout_runs", "Runs by status.", labels=["status"])
    for status, n in by_status.items():
        runs_metric.add_metric([status], n)
    lag = HistogramMetricFamily(
        "scout_fire_lag_seconds",
        "created_at - scheduled_for of scheduled runs created in the last hour.",
        buckets=[
            *((str(bound), n) for bound, n in zip(LAG_BUCKETS, cumulative, strict=True)),
            ("+Inf", count),
        ],
        sum_value=float(total),
    )
    return [
        runs_metric,
        GaugeMetricFamily("scout_schedules_enabled", "Enabled schedules.", value=enabled),
        GaugeMetricFamily(
            "scout_outbox_backlog", "Events waiting in the outbox for the broker.", value=backlog
        ),
        CounterMetricFamily(
            "scout_skipped_slots", "Cron slots skipped by misfire or overlap policy.", skipped
        ),
        lag,
    ]


class _Snapshot(Collector):
    """Hands already-read metrics to a registry made for one scrape."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self.metrics = list(metrics)

    def collect(self) -> Iterable[Metric]:
        return self.metrics


def _register_ops_routes(app: FastAPI) -> None:
    @app.get("/healthz", responses={503: {"model": ErrorBody}}, tags=["ops"])
    def healthz(scout: ScoutDep) -> Any:
        """200 only when PostgreSQL answers ``SELECT 1`` and RabbitMQ accepts a connection."""
        checks = {
            "database": _check_database(scout.engine),
            "broker": _check_broker(scout.settings.broker_url),
        }
        report = {name: error or "ok" for name, error in checks.items()}
        failed = [name for name, error in checks.items() if error is not None]
        if failed:
            detail = "; ".join(f"{name} unavailable: {checks[name]}" for name in failed)
            return _error(503, detail, None, status="unavailable", **report)
        return {"status": "ok", **report}

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, 503: {"model": ErrorBody}},
        tags=["ops"],
    )
    def metrics(scout: ScoutDep) -> Response:
        """Prometheus text, computed at scrape time from the database."""
        with scout.engine.connect() as conn:
            snapshot = collect_metrics(conn)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Snapshot(snapshot))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


# --- the app ------------------------------------------------------------------------------


def _version() -> str:
    try:
        return version("scout-tasks")
    except PackageNotFoundError:
        return "0"


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for ``settings`` (default: the process's), as ``uvicorn --factory`` wants."""
    settings = settings or get_settings()
    scout = Scout(settings=settings, engine=db.get_engine(settings.database_url))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            scout.close()

    app = FastAPI(
        title="scout-tasks",
        version=_version(),
        description="Cron schedules for Scout runs. See CONTRACT.md, section HTTP API.",
        lifespan=lifespan,
    )
    app.state.scout = scout
    handlers: list[tuple[type[Exception], Callable[[Request, Exception], JSONResponse]]] = [
        (ScoutTasksError, _scout_error),
        (RequestValidationError, _validation_error),
        (HTTPException, _http_error),
        (SQLAlchemyError, _database_error),
        (Exception, _unexpected),
    ]
    for exc_class, handler in handlers:
        app.add_exception_handler(exc_class, handler)
    _register_schedule_routes(app)
    _register_run_routes(app)
    _register_ops_routes(app)
    return app
