"""Recording lifecycle events on their runs, a batch per transaction, with no broker in sight.

Delivery is at least once, in no guaranteed order, so:

- the database says "once": each event's ``event_id`` goes into the ledger
  (``scout_run_events``) in the same transaction as the run updates, and an
  id already there means the event changes nothing;
- the run updates (``run_updates.mark_runs_*``) are written so that any order ends
  in the right state, and a terminal run never changes;
- a batch is one transaction: the ledger insert, which also locks the
  batch's runs in id order (one statement), then one statement per event
  kind (:mod:`scout_tasks.event_batch` plans them).

:func:`handle_batch` and :func:`handle_message` never raise for a bad message
or an unavailable database: each delivery's :class:`Outcome` says whether it
is done with, must be set aside, or must wait for the database. A malformed
message is set aside alone; a batch the database refuses is applied again
one event per transaction, so only the event at fault is set aside.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError, DisconnectionError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from scout_tasks import counters, run_events, run_updates
from scout_tasks.db import translate_db_error
from scout_tasks.errors import (
    ConstraintViolation,
    DatabaseNotMigrated,
    DatabaseUnavailable,
    InvalidValue,
)
from scout_tasks.event_batch import OutcomeKind, first_occurrences, plan_batch
from scout_tasks.inbound import (
    MAX_NAME_CHARS,
    LifecycleEvent,
    MalformedEvent,
    parse_event,
)

log = logging.getLogger("scout_tasks.lifecycle")

MAX_REASON = 500
# SQLSTATE class 54, program limit exceeded (a jsonb too big, say): the message's fault.
_PROGRAM_LIMIT = "54"
# lock_not_available: a row the batch needs stayed locked past LOCK_TIMEOUT.
_LOCK_NOT_AVAILABLE = "55P03"
# How long a batch waits for a run's row lock. Our own writers hold one for
# milliseconds; an operator's open transaction may hold it for hours, and the
# consumer must not wait with every other run's events behind it.
LOCK_TIMEOUT = "2s"
# set_config(..., true) is SET LOCAL with the value as a bound parameter.
_SET_LOCK_TIMEOUT = text("SELECT set_config('lock_timeout', :timeout, true)")

__all__ = [
    "MAX_REASON",
    "Delivery",
    "Outcome",
    "OutcomeKind",
    "Session",
    "apply_event",
    "apply_events",
    "database_answers",
    "db_error_outcome",
    "handle_batch",
    "handle_message",
]


# Outcome and Delivery are made for every message: named tuples, which cost
# a third of a frozen dataclass to build.
class Outcome(NamedTuple):
    """What became of one delivery's event, and so what to do with the message."""

    kind: OutcomeKind
    event_id: uuid.UUID | None = None
    run_id: uuid.UUID | None = None
    reason: str | None = None
    # RETRY because the run's row is locked elsewhere: neither the database's
    # fault nor the message's, so it does not count towards blaming it.
    contended: bool = False

    @property
    def settled(self) -> bool:
        """Whether the message is done with (acknowledged, or set aside)."""
        return self.kind is not OutcomeKind.RETRY


class Delivery(NamedTuple):
    """What the recorder reads of one message."""

    body: bytes
    routing_key: str
    message_id: str | None


def apply_events(conn: Connection, events: Sequence[LifecycleEvent]) -> list[OutcomeKind]:
    """Record ``events`` (in arrival order) and change their runs, in the caller's transaction.

    Returns each event's outcome, by position.
    """
    # The batch is keyed by the ids' text, made once per event: the statements
    # take text, the ledger statement returns it, and a str hashes in C.
    keys = [(str(e.event_id), str(e.run_id)) for e in events]
    fresh = first_occurrences(events, keys)
    new_ids, statuses = run_events.record_and_lock(
        conn, [(*keys[i], events[i].EVENT_TYPE) for i in fresh]
    )
    plan = plan_batch(events, new_ids, statuses, keys)
    run_updates.mark_runs_started(conn, plan.started)  # type: ignore[arg-type]
    run_updates.record_runs_progress(
        conn,
        [run_updates.RunProgress(e.run_id, e.as_metrics(), e.timestamp) for e in plan.progress],
    )
    run_updates.mark_runs_completed(conn, [(e.run_id, e.counters()) for e in plan.completed])
    run_updates.mark_runs_failed(conn, [(e.run_id, e.error_message, e.stage) for e in plan.failed])
    # The batch's outcome is known here: the runs it ended are counted in its
    # transaction (scout_tasks.counters), so the count commits or rolls back with it.
    finished = [status for status, n in plan.finished.items() for _ in range(n)]
    if finished:
        counters.bump(conn, counters.runs_finished(finished))
    return plan.outcomes


def apply_event(conn: Connection, event: LifecycleEvent) -> OutcomeKind:
    """Record one event and change its run, inside the caller's transaction."""
    return apply_events(conn, [event])[0]


def db_error_outcome(exc: SQLAlchemyError) -> OutcomeKind:
    """Whose fault a database error is: the message's (MALFORMED) or the database's (RETRY).

    Classified by the project's translator (:func:`scout_tasks.db.translate_db_error`):
    a value the database refuses (:class:`InvalidValue`,
    :class:`ConstraintViolation`) or a program limit it hits (SQLSTATE class
    54) would fail again; anything else is taken as an outage, a missing table
    included (events wait for the migration).
    """
    error = translate_db_error(exc)
    if isinstance(error, InvalidValue | ConstraintViolation):
        return OutcomeKind.MALFORMED
    orig = getattr(exc, "orig", None)
    if str(getattr(orig, "pgcode", "") or "").startswith(_PROGRAM_LIMIT):
        return OutcomeKind.MALFORMED
    return OutcomeKind.RETRY


def _contended(exc: SQLAlchemyError) -> bool:
    """Whether a row lock another transaction holds made the statement give up."""
    return str(getattr(getattr(exc, "orig", None), "pgcode", "") or "") == _LOCK_NOT_AVAILABLE


def _is_outage(exc: SQLAlchemyError) -> bool:
    """Whether no event of a batch can be to blame (so splitting it would not help).

    A lock timeout is not: one run's row is held, and the batch's other
    events are applied one at a time around it.
    """
    if _contended(exc):
        return False
    return isinstance(translate_db_error(exc), DatabaseUnavailable | DatabaseNotMigrated)


def _parse(delivery: Delivery) -> LifecycleEvent | Outcome:
    try:
        return parse_event(delivery.body, delivery.routing_key, delivery.message_id)
    except MalformedEvent as exc:
        reason = str(exc)[:MAX_REASON]
        routing_key = delivery.routing_key[:MAX_NAME_CHARS]
        message_id = delivery.message_id
        log.warning(
            "malformed %s message set aside: %s",
            routing_key,
            reason,
            extra={
                "action": "lifecycle.malformed",
                "event_id": None if message_id is None else message_id[:MAX_NAME_CHARS],
                "routing_key": routing_key,
                "reason": reason,
                # Finds the message in the dead-letter queue, which keeps no reason.
                "body_bytes": len(delivery.body),
                "body_sha256": hashlib.sha256(delivery.body).hexdigest(),
            },
        )
        return Outcome(OutcomeKind.MALFORMED, reason=reason)


def _log_outcome(event: LifecycleEvent, kind: OutcomeKind) -> None:
    routing_key = event.EVENT_TYPE
    if kind is OutcomeKind.APPLIED:
        if log.isEnabledFor(logging.INFO):  # the hot path: no record built for nothing
            log.info("run %s: %s recorded", event.run_id, routing_key, extra=_extra(event, kind))
    elif kind is OutcomeKind.DUPLICATE:
        # At-least-once delivery makes this normal.
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "run %s: duplicate %s ignored", event.run_id, routing_key, extra=_extra(event, kind)
            )
    elif kind is OutcomeKind.UNKNOWN_RUN:
        log.warning(
            "%s for unknown run %s ignored", routing_key, event.run_id, extra=_extra(event, kind)
        )
    elif log.isEnabledFor(logging.INFO):
        log.info(
            "run %s: %s ignored, the run has ended",
            event.run_id,
            routing_key,
            extra=_extra(event, kind),
        )


def _extra(event: LifecycleEvent, kind: OutcomeKind | str) -> dict[str, str]:
    return {
        "action": f"lifecycle.{kind}",
        "routing_key": event.EVENT_TYPE,
        "event_id": str(event.event_id),
        "run_id": str(event.run_id),
    }


class Session:
    """Where batches are recorded: ``engine``, through one connection kept between batches.

    A flood of batches then costs no pool checkout (and no pre-ping round trip)
    per batch; a connection left idle for :data:`IDLE_RECHECK` seconds goes
    back to the pool and is checked out (and pinged) again. Use it from one
    thread; :meth:`close` returns the connection.
    """

    IDLE_RECHECK = 1.0

    def __init__(self) -> None:
        self._conn: Connection | None = None
        self._used = 0.0

    @contextlib.contextmanager
    def transaction(self, engine: Engine) -> Iterator[Connection]:
        conn = self._conn
        if conn is not None and (
            conn.engine is not engine
            or conn.invalidated
            or conn.closed
            or time.monotonic() - self._used > self.IDLE_RECHECK
        ):
            self.close()
        if self._conn is None:
            self._conn = engine.connect()
        try:
            with self._conn.begin():
                self._conn.execute(_SET_LOCK_TIMEOUT, {"timeout": LOCK_TIMEOUT})
                yield self._conn
        finally:
            self._used = time.monotonic()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def _apply(engine: Engine, events: list[LifecycleEvent], session: Session) -> list[Outcome]:
    """Apply ``events`` in one transaction; several the database refuses: one at a time."""
    try:
        with session.transaction(engine) as conn:
            kinds = apply_events(conn, events)
    except (DBAPIError, DisconnectionError, PoolTimeoutError) as exc:
        session.close()
        if getattr(exc, "connection_invalidated", False):
            engine.dispose()
        if len(events) > 1 and not _is_outage(exc):
            # One of them may be at fault: find it, and apply the others.
            log.info(
                "batch of %d refused by the database, applying it one event at a time: %s",
                len(events),
                translate_db_error(exc).detail,
                extra={"action": "lifecycle.batch_split", "size": len(events)},
            )
            return [o for event in events for o in _apply(engine, [event], session)]
        return [_db_failure(exc, event) for event in events]
    out = []
    # The hot path: an applied event is logged only at INFO, so at the usual
    # WARNING no call is made for it at all.
    log_applied = log.isEnabledFor(logging.INFO)
    for event, kind in zip(events, kinds, strict=True):
        if log_applied or kind is not OutcomeKind.APPLIED:
            _log_outcome(event, kind)
        out.append(Outcome(kind, event.event_id, event.run_id))
    return out


def _db_failure(exc: SQLAlchemyError, event: LifecycleEvent) -> Outcome:
    if _contended(exc):
        log.warning(
            "run %s is locked by another transaction, %s will be retried",
            event.run_id,
            event.EVENT_TYPE,
            extra=_extra(event, "locked"),
        )
        return Outcome(
            OutcomeKind.RETRY, event.event_id, event.run_id, "the run is locked", contended=True
        )
    verdict = db_error_outcome(exc)
    detail = translate_db_error(exc).detail or type(exc).__name__
    extra = _extra(event, "malformed" if verdict is OutcomeKind.MALFORMED else "db_error")
    if verdict is OutcomeKind.MALFORMED:
        reason = f"refused by the database: {detail}"[:MAX_REASON]
        log.warning(
            "%s for run %s set aside: %s", event.EVENT_TYPE, event.run_id, reason, extra=extra
        )
    else:
        reason = detail[:MAX_REASON]
        log.warning(
            "database unavailable, %s for run %s will be retried: %s",
            event.EVENT_TYPE,
            event.run_id,
            reason,
            extra=extra,
        )
    return Outcome(verdict, event.event_id, event.run_id, reason)


def handle_batch(
    engine: Engine, deliveries: Sequence[Delivery], session: Session | None = None
) -> list[Outcome]:
    """Validate each delivery and apply the valid ones in one transaction; one outcome each.

    A malformed delivery gets its own MALFORMED outcome and never stops the
    others. The database away: every valid one gets RETRY. ``session`` keeps
    a connection between calls (without one, the transaction checks one out).
    """
    outcomes: list[Outcome | None] = []
    events: list[LifecycleEvent] = []
    for delivery in deliveries:
        parsed = _parse(delivery)
        if isinstance(parsed, Outcome):
            outcomes.append(parsed)
        else:
            outcomes.append(None)
            events.append(parsed)
    if events:
        own = session is None
        session = session or Session()
        try:
            applied = iter(_apply(engine, events, session))
        finally:
            if own:
                session.close()
        outcomes = [next(applied) if o is None else o for o in outcomes]
    return outcomes  # type: ignore[return-value]


def handle_message(
    engine: Engine, body: bytes, routing_key: str, message_id: str | None
) -> Outcome:
    """Validate one delivery and apply it in one transaction; say what to do with the message."""
    return handle_batch(engine, [Delivery(body, routing_key, message_id)])[0]


def database_answers(engine: Engine) -> bool:
    """Whether the database answers a trivial query (tells an outage from a bad message)."""
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except (DBAPIError, DisconnectionError, PoolTimeoutError):
        return False
    return True
