"""The consumer of the Scout agents' lifecycle events, and the sweep for runs that went quiet.

The agents report ``scout.started``, ``scout.progress``, ``scout.completed`` and
``scout.failed`` on the events exchange (CONTRACT.md, "Events"). Delivery is at
least once, in no guaranteed order, so:

- the database says "once": each event's ``event_id`` is inserted into
  ``scout_run_events`` in the same transaction as the run update, and an id
  already there means the event changes nothing;
- the run updates (``runs.mark_run_*``) are written so that any order ends in
  the right state, and a terminal run never changes;
- a message that can never be applied (not JSON, wrong fields, unknown routing
  key) is set aside in a dead-letter queue with the reason in a header, so it
  is neither lost nor redelivered forever;
- while the database is down a message is not acknowledged: it goes back to
  the queue after a growing delay, so nothing is lost and nothing spins.

:func:`handle_message` is the whole decision and needs no broker;
:class:`Listener` turns its :class:`Outcome` into an ack, a dead letter or a
delayed requeue; :class:`LifecycleConsumer` is the thin Celery bootstep that
runs a :class:`Listener` inside the worker.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from celery import bootsteps
from kombu import Consumer, Producer, Queue, binding
from kombu.message import Message
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from scout_tasks import db, runs
from scout_tasks.events import COMPLETED, FAILED, LIFECYCLE_EVENTS, PROGRESS, STARTED
from scout_tasks.publisher import declare_exchange
from scout_tasks.settings import get_settings

log = logging.getLogger(__name__)

# The queue names derive from the task queue's (default ``scout-tasks``), so two
# deployments or test runs sharing a vhost, which already use different task
# queues, never consume each other's events.
QUEUE_SUFFIX = ".lifecycle"
DEAD_QUEUE_SUFFIX = ".lifecycle.dead"
# Headers on a dead-lettered message: why, and where it was first published.
DEAD_REASON_HEADER = "x-scout-dead-reason"
DEAD_ROUTING_KEY_HEADER = "x-scout-routing-key"
DEAD_EXCHANGE_HEADER = "x-scout-exchange"
# How many unacknowledged events one consumer holds; it also bounds how many
# messages wait out a database outage in this worker.
PREFETCH = 10
# Backoff while the database is unavailable, in seconds.
RETRY_FIRST_DELAY = 1.0
RETRY_MAX_DELAY = 30.0
_MAX_REASON = 500


def lifecycle_queue_names(task_queue: str) -> tuple[str, str]:
    """The lifecycle queue and its dead-letter queue for a deployment's task queue."""
    return task_queue + QUEUE_SUFFIX, task_queue + DEAD_QUEUE_SUFFIX


# --- inbound payloads ---------------------------------------------------------


def _storable(value: Any) -> Any:
    """Refuse what PostgreSQL cannot store, so such a message is malformed, not a retry.

    ``text`` and ``jsonb`` refuse NUL characters, UTF-8 refuses lone surrogates
    (``json.loads`` lets both through), and JSON itself has no NaN/Infinity.
    """
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("contains a NUL character")
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ValueError("is not valid Unicode") from None
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("is not a finite number")
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key)
            _storable(item)
    elif isinstance(value, list):
        for item in value:
            _storable(item)
    return value


Text = Annotated[str, Field(strict=True), AfterValidator(_storable)]
Count = Annotated[int, Field(strict=True, ge=0)]
Percent = Annotated[float, Field(strict=True, ge=0, le=100, allow_inf_nan=False)]


class _Inbound(BaseModel):
    """What every agent event carries. Unknown keys are ignored (the contract says so)."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    # The routing key (and event_type) this model is for.
    EVENT_TYPE: ClassVar[str]

    event_id: uuid.UUID
    run_id: uuid.UUID
    event_type: str | None = None
    # Optional: the run's timestamps come from the database's clock, so a
    # missing timestamp loses nothing worth refusing an event for.
    timestamp: datetime | None = None

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        # The contract writes UTC ("...Z"); a naive timestamp means UTC too.
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class StartedEvent(_Inbound):
    EVENT_TYPE = STARTED

    source: Text | None = None


class ProgressEvent(_Inbound):
    EVENT_TYPE = PROGRESS

    stage: Text
    progress: Percent
    message: Text | None = None
    stage_metrics: Annotated[dict[str, Any], AfterValidator(_storable)] | None = None

    def as_metrics(self) -> dict[str, Any]:
        """What ``metrics['progress']`` keeps (the store adds ``at``)."""
        # 40 stays 40 in the JSON, not 40.0.
        progress = int(self.progress) if self.progress.is_integer() else self.progress
        return {
            "stage": self.stage,
            "progress": progress,
            "message": self.message,
            "stage_metrics": self.stage_metrics,
        }


class CompletedEvent(_Inbound):
    EVENT_TYPE = COMPLETED

    total_fetched: Count
    validated: Count
    validation_failed: Count
    duplicates_removed: Count
    submitted: Count

    def counters(self) -> dict[str, int]:
        return {
            "total_fetched": self.total_fetched,
            "validated": self.validated,
            "validation_failed": self.validation_failed,
            "duplicates_removed": self.duplicates_removed,
            "submitted": self.submitted,
        }


class FailedEvent(_Inbound):
    EVENT_TYPE = FAILED

    error_message: Text
    stage: Text | None = None


LifecycleEvent = StartedEvent | ProgressEvent | CompletedEvent | FailedEvent

MODELS: dict[str, type[_Inbound]] = {
    model.EVENT_TYPE: model for model in (StartedEvent, ProgressEvent, CompletedEvent, FailedEvent)
}


class MalformedEvent(ValueError):
    """The message can never be applied; ``str()`` is the reason, for the dead letter."""


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    if exc.error_count() > 3:
        parts.append(f"and {exc.error_count() - 3} more")
    return "invalid payload: " + "; ".join(parts)


def parse_event(body: bytes, routing_key: str, message_id: str | None) -> LifecycleEvent:
    """The typed event in a message, or :class:`MalformedEvent` saying why not.

    The routing key picks the model (it is the event type, by contract); an
    ``event_type`` in the body must agree with it. The body's ``event_id`` is
    the idempotency key; only a body without one falls back to the
    ``message_id`` (which the contract makes the same value).
    """
    model = MODELS.get(routing_key)
    if model is None:
        raise MalformedEvent(f"unknown routing key {routing_key!r}")
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError included
        raise MalformedEvent(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedEvent(f"body is a JSON {type(data).__name__}, not an object")
    if data.get("event_id") is None and message_id:
        data["event_id"] = message_id
    try:
        event = model.model_validate(data)
    except ValidationError as exc:
        raise MalformedEvent(_describe(exc)) from None
    if event.event_type is not None and event.event_type != routing_key:
        raise MalformedEvent(
            f"event_type {event.event_type!r} does not match routing key {routing_key!r}"
        )
    return event  # type: ignore[return-value]


# --- applying an event --------------------------------------------------------


class OutcomeKind(enum.StrEnum):
    APPLIED = "applied"
    # The event_id was already recorded: nothing changed.
    DUPLICATE = "duplicate"
    # Recorded, but the run is terminal (or the event changes nothing for it).
    IGNORED = "ignored"
    UNKNOWN_RUN = "unknown_run"
    # Can never be applied: dead-letter it.
    MALFORMED = "malformed"
    # The database is unavailable: do not acknowledge, try again later.
    RETRY = "retry"


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    event_id: uuid.UUID | None = None
    run_id: uuid.UUID | None = None
    reason: str | None = None

    @property
    def settled(self) -> bool:
        """Whether the message is done with (acknowledged, or dead-lettered then acknowledged)."""
        return self.kind is not OutcomeKind.RETRY


def apply_event(conn: Connection, event: LifecycleEvent) -> OutcomeKind:
    """Record ``event`` and change its run, inside the caller's transaction."""
    if not runs.record_run_event(
        conn, event_id=event.event_id, run_id=event.run_id, event_type=event.EVENT_TYPE
    ):
        return OutcomeKind.DUPLICATE
    if isinstance(event, StartedEvent):
        changed = runs.mark_run_started(conn, event.run_id)
    elif isinstance(event, ProgressEvent):
        changed = runs.record_run_progress(conn, event.run_id, event.as_metrics(), event.timestamp)
    elif isinstance(event, CompletedEvent):
        changed = runs.mark_run_completed(conn, event.run_id, event.counters())
    else:
        changed = runs.mark_run_failed(conn, event.run_id, event.error_message, event.stage)
    if changed:
        return OutcomeKind.APPLIED
    if runs.run_status(conn, event.run_id) is None:
        return OutcomeKind.UNKNOWN_RUN
    return OutcomeKind.IGNORED


def _first_line(exc: DBAPIError) -> str:
    text = str(exc.orig if exc.orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def handle_message(
    engine: Engine, body: bytes, routing_key: str, message_id: str | None
) -> Outcome:
    """Validate one delivery and apply it in one transaction; say what to do with the message.

    Never raises for a bad message or an unavailable database: the outcome
    says whether to acknowledge, dead-letter or retry. A value the database
    refuses (``DataError``, ``IntegrityError``) is the message's fault and
    would fail again, so it is malformed; any other database error is taken
    as an outage (including a missing table: events wait for the migration).
    """
    try:
        event = parse_event(body, routing_key, message_id)
    except MalformedEvent as exc:
        reason = str(exc)[:_MAX_REASON]
        log.warning(
            "malformed %s message set aside: %s",
            routing_key,
            reason,
            extra={
                "action": "lifecycle.malformed",
                "event_id": message_id,
                "routing_key": routing_key,
                "reason": reason,
            },
        )
        return Outcome(OutcomeKind.MALFORMED, reason=reason)

    ids = {"event_id": str(event.event_id), "run_id": str(event.run_id)}
    try:
        with engine.begin() as conn:
            kind = apply_event(conn, event)
    except (DataError, IntegrityError) as exc:
        reason = f"refused by the database: {_first_line(exc)}"[:_MAX_REASON]
        log.warning(
            "%s for run %s dead-lettered: %s",
            routing_key,
            event.run_id,
            reason,
            extra={"action": "lifecycle.malformed", "routing_key": routing_key, **ids},
        )
        return Outcome(OutcomeKind.MALFORMED, event.event_id, event.run_id, reason)
    except DBAPIError as exc:
        reason = _first_line(exc)[:_MAX_REASON]
        log.warning(
            "database unavailable, %s for run %s will be retried: %s",
            routing_key,
            event.run_id,
            reason,
            extra={"action": "lifecycle.db_error", "routing_key": routing_key, **ids},
        )
        if exc.connection_invalidated:
            engine.dispose()
        return Outcome(OutcomeKind.RETRY, event.event_id, event.run_id, reason)

    extra = {"action": f"lifecycle.{kind}", "routing_key": routing_key, **ids}
    if kind is OutcomeKind.APPLIED:
        log.info("run %s: %s recorded", event.run_id, routing_key, extra=extra)
    elif kind is OutcomeKind.DUPLICATE:
        # At-least-once delivery makes this normal.
        log.debug("run %s: duplicate %s ignored", event.run_id, routing_key, extra=extra)
    elif kind is OutcomeKind.UNKNOWN_RUN:
        log.warning("%s for unknown run %s ignored", routing_key, event.run_id, extra=extra)
    else:
        log.info("run %s: %s ignored, the run has ended", event.run_id, routing_key, extra=extra)
    return Outcome(kind, event.event_id, event.run_id)


# --- settling deliveries ------------------------------------------------------


def raw_body(message: Message) -> bytes:
    """The body's bytes as published.

    py-amqp decodes a body whose ``content_encoding`` it knows into ``str``;
    encoding it back with the same codec restores the exact bytes.
    """
    body = message.body
    if isinstance(body, str):
        return body.encode(message.content_encoding or "utf-8")
    return bytes(body)


CallLater = Callable[[float, Callable[[], None]], object]


class Listener:
    """Handles each delivery and settles it: ack, dead-letter then ack, or requeue later.

    A message is acknowledged only after its transaction committed, or after a
    copy was published to the dead-letter queue on the same channel (AMQP
    processes a channel's commands in order, so the copy is routed before the
    ack). If the connection drops in between, the message is redelivered and
    handled again, which the event ledger makes harmless.

    While the database is unavailable a message is requeued after a delay that
    doubles per consecutive failure up to ``max_delay``. With ``call_later``
    (the worker's event loop) the wait does not block; without it (a solo or
    thread pool, or a plain kombu loop) it sleeps, as everything else in such
    a loop does.
    """

    def __init__(
        self,
        engine: Engine,
        producer: Producer,
        dead_queue: str,
        *,
        exchange: str = "",
        call_later: CallLater | None = None,
        first_delay: float = RETRY_FIRST_DELAY,
        max_delay: float = RETRY_MAX_DELAY,
    ) -> None:
        self.engine = engine
        self.producer = producer
        self.dead_queue = dead_queue
        self.exchange = exchange
        self.call_later = call_later
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.failures = 0

    def __call__(self, message: Message) -> Outcome:
        routing_key = str(message.delivery_info.get("routing_key", ""))
        message_id = message.properties.get("message_id")
        try:
            outcome = handle_message(
                self.engine,
                raw_body(message),
                routing_key,
                None if message_id is None else str(message_id),
            )
        except Exception as exc:
            # A bug must not turn into a message redelivered forever: keep the
            # message, with the error, where an operator will find it.
            log.exception(
                "unexpected error handling %s",
                routing_key,
                extra={
                    "action": "lifecycle.error",
                    "routing_key": routing_key,
                    "event_id": message_id,
                },
            )
            outcome = Outcome(OutcomeKind.MALFORMED, reason=f"unexpected error: {exc!r}")
        self.settle(message, outcome)
        return outcome

    def settle(self, message: Message, outcome: Outcome) -> None:
        if outcome.kind is OutcomeKind.RETRY:
            self.failures += 1
            delay = min(self.max_delay, self.first_delay * 2 ** (self.failures - 1))
            if self.call_later is not None:
                self.call_later(delay, lambda: self._requeue(message))
            else:
                time.sleep(delay)
                self._requeue(message)
            return
        self.failures = 0
        if outcome.kind is OutcomeKind.MALFORMED:
            self.dead_letter(message, outcome.reason or "malformed")
        message.ack()

    def dead_letter(self, message: Message, reason: str) -> None:
        """Publish a copy of ``message`` to the dead-letter queue, the reason in a header."""
        headers = dict(message.headers or {})
        headers[DEAD_REASON_HEADER] = reason[:_MAX_REASON]
        headers[DEAD_ROUTING_KEY_HEADER] = str(message.delivery_info.get("routing_key", ""))
        headers[DEAD_EXCHANGE_HEADER] = str(message.delivery_info.get("exchange", self.exchange))
        properties: dict[str, Any] = {}
        if message.properties.get("message_id") is not None:
            properties["message_id"] = message.properties["message_id"]
        self.producer.publish(
            raw_body(message),
            exchange="",
            routing_key=self.dead_queue,
            headers=headers,
            content_type=message.content_type or "application/octet-stream",
            content_encoding=message.content_encoding or "binary",
            delivery_mode=2,
            retry=False,
            **properties,
        )

    def _requeue(self, message: Message) -> None:
        try:
            message.requeue()
        except Exception:
            # The channel closed meanwhile (worker stopping, connection lost):
            # the broker has already put the message back.
            log.debug(
                "requeue after backoff failed",
                exc_info=True,
                extra={
                    "action": "lifecycle.requeue_failed",
                    "event_id": message.properties.get("message_id"),
                },
            )


def declare_queues(channel: Any, exchange: str, queue: str, dead_queue: str) -> tuple[Queue, Queue]:
    """Declare the events exchange, the lifecycle queue bound to the four events, and the DLQ."""
    events = declare_exchange(channel, exchange)
    main = Queue(
        queue,
        bindings=[binding(events, routing_key=key) for key in LIFECYCLE_EVENTS],
        durable=True,
        auto_delete=False,
    )
    dead = Queue(dead_queue, durable=True, auto_delete=False)
    main(channel).declare()
    dead(channel).declare()
    return main, dead


# --- the worker's bootstep ----------------------------------------------------


class LifecycleConsumer(bootsteps.ConsumerStep):
    """Consume the agents' lifecycle events inside ``celery worker``, with manual acks.

    It starts and stops with the worker's consumer (and restarts with it when
    the broker connection is re-established), on its own channel of the
    worker's broker connection. Register it with
    ``app.steps["consumer"].add(LifecycleConsumer)``.
    """

    # Backoff while the database is unavailable, in seconds.
    retry_first_delay = RETRY_FIRST_DELAY
    retry_max_delay = RETRY_MAX_DELAY

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.hub: Any = None
        self.listener: Listener | None = None

    # Where to record and what to consume; a test subclass points these elsewhere.
    def get_engine(self) -> Engine:
        return db.get_engine()

    def exchange_name(self) -> str:
        return get_settings().exchange

    def queue_names(self) -> tuple[str, str]:
        return lifecycle_queue_names(get_settings().task_queue)

    def start(self, c: Any) -> None:
        # With the event loop (prefork pool) retries wait on its timer;
        # without one (solo, threads) the listener sleeps.
        self.hub = getattr(c, "hub", None)
        super().start(c)

    def get_consumers(self, channel: Any) -> list[Consumer]:
        queue, dead_queue = self.queue_names()
        exchange = self.exchange_name()
        main, _dead = declare_queues(channel, exchange, queue, dead_queue)
        self.listener = Listener(
            self.get_engine(),
            Producer(channel, auto_declare=False),
            dead_queue,
            exchange=exchange,
            call_later=self._call_later if self.hub is not None else None,
            first_delay=self.retry_first_delay,
            max_delay=self.retry_max_delay,
        )
        log.info(
            "consuming lifecycle events from %s",
            queue,
            extra={"action": "lifecycle.start", "queue": queue, "exchange": exchange},
        )
        return [
            Consumer(
                channel,
                queues=[main],
                on_message=self.listener,
                prefetch_count=PREFETCH,
                auto_declare=False,
                no_ack=False,
            )
        ]

    def _call_later(self, delay: float, callback: Callable[[], None]) -> None:
        self.hub.call_later(delay, callback)


# --- runs that went quiet -----------------------------------------------------


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def sweep_stale_runs(
    engine: Engine,
    now: datetime | None = None,
    pending_timeout: float | None = None,
    run_timeout: float | None = None,
) -> int:
    """Fail runs whose agent never started or went silent; return how many.

    A run still pending ``pending_timeout`` seconds after it was created never
    got a ``scout.started``; a running run with no event for ``run_timeout``
    seconds (measured from ``updated_at``, which every event sets) lost its
    agent. Without this they would stay active forever, and an
    ``overlap_policy = 'skip'`` schedule would never fire again. ``now``
    defaults to the database's clock; the timeouts default to the settings
    (``SCOUT_RUN_PENDING_TIMEOUT``, ``SCOUT_RUN_TIMEOUT``).
    """
    if now is not None and now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if pending_timeout is None or run_timeout is None:
        settings = get_settings()
        pending_timeout = (
            settings.run_pending_timeout if pending_timeout is None else pending_timeout
        )
        run_timeout = settings.run_timeout if run_timeout is None else run_timeout
    with engine.begin() as conn:
        failed = runs.fail_stale_runs(
            conn,
            now=now,
            pending_timeout=pending_timeout,
            run_timeout=run_timeout,
            pending_message=f"no {STARTED} within {_seconds(pending_timeout)}s",
            running_message=f"no event for {_seconds(run_timeout)}s",
        )
    for run_id, message in failed:
        log.warning(
            "run %s failed: %s",
            run_id,
            message,
            extra={"action": "run.stale", "run_id": str(run_id), "reason": message},
        )
    return len(failed)
