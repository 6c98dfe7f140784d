"""Recording one lifecycle event on its run: the whole decision, with no broker in sight.

Delivery is at least once, in no guaranteed order, so:

- the database says "once": each event's ``event_id`` goes into the ledger
  (``scout_run_events``) in the same transaction as the run update, and an id
  already there means the event changes nothing;
- the run updates (``runs.mark_run_*``) are written so that any order ends in
  the right state, and a terminal run never changes.

:func:`handle_message` never raises for a bad message or an unavailable
database: its :class:`Outcome` says whether the message is done with, must be
set aside, or must wait for the database.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from scout_tasks import counters, run_events, runs
from scout_tasks.inbound import (
    MAX_NAME_CHARS,
    CompletedEvent,
    LifecycleEvent,
    MalformedEvent,
    ProgressEvent,
    StartedEvent,
    parse_event,
)

log = logging.getLogger("scout_tasks.lifecycle")

MAX_REASON = 500


class OutcomeKind(enum.StrEnum):
    APPLIED = "applied"
    # The event_id was already recorded: nothing changed.
    DUPLICATE = "duplicate"
    # Recorded, but the run is terminal (or the event changes nothing for it).
    IGNORED = "ignored"
    UNKNOWN_RUN = "unknown_run"
    # Can never be applied: set it aside.
    MALFORMED = "malformed"
    # The database is unavailable: keep the message and try again later.
    RETRY = "retry"


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    event_id: uuid.UUID | None = None
    run_id: uuid.UUID | None = None
    reason: str | None = None

    @property
    def settled(self) -> bool:
        """Whether the message is done with (acknowledged, or set aside)."""
        return self.kind is not OutcomeKind.RETRY


def apply_event(conn: Connection, event: LifecycleEvent) -> OutcomeKind:
    """Record ``event`` and change its run, inside the caller's transaction."""
    if not run_events.record_run_event(
        conn, event_id=event.event_id, run_id=event.run_id, event_type=event.EVENT_TYPE
    ):
        return OutcomeKind.DUPLICATE
    ended: str | None = None
    if isinstance(event, StartedEvent):
        changed = runs.mark_run_started(conn, event.run_id)
    elif isinstance(event, ProgressEvent):
        changed = runs.record_run_progress(conn, event.run_id, event.as_metrics(), event.timestamp)
    elif isinstance(event, CompletedEvent):
        changed = runs.mark_run_completed(conn, event.run_id, event.counters())
        ended = "completed"
    else:
        changed = runs.mark_run_failed(conn, event.run_id, event.error_message, event.stage)
        ended = "failed"
    if changed:
        if ended is not None:
            # The run's last event: counted in its transaction (scout_tasks.counters).
            counters.bump(conn, counters.runs_finished([ended]))
        return OutcomeKind.APPLIED
    if runs.run_status(conn, event.run_id) is None:
        return OutcomeKind.UNKNOWN_RUN
    return OutcomeKind.IGNORED


def db_error_outcome(exc: DBAPIError) -> OutcomeKind:
    """Whose fault a database error is: the message's (MALFORMED) or the database's (RETRY).

    The one place that classifies driver errors for the lifecycle consumer (to
    be pointed at the project's shared translator). A value the database
    refuses (``DataError``, ``IntegrityError``) or a program limit it hits
    (SQLSTATE class 54) would fail again; anything else is taken as an outage,
    a missing table included (events wait for the migration).
    """
    if isinstance(exc, DataError | IntegrityError):
        return OutcomeKind.MALFORMED
    if str(getattr(exc.orig, "pgcode", "") or "").startswith("54"):
        return OutcomeKind.MALFORMED
    return OutcomeKind.RETRY


def _first_line(exc: DBAPIError) -> str:
    text = str(exc.orig if exc.orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def handle_message(
    engine: Engine, body: bytes, routing_key: str, message_id: str | None
) -> Outcome:
    """Validate one delivery and apply it in one transaction; say what to do with the message."""
    try:
        event = parse_event(body, routing_key, message_id)
    except MalformedEvent as exc:
        reason = str(exc)[:MAX_REASON]
        log.warning(
            "malformed %s message set aside: %s",
            routing_key[:MAX_NAME_CHARS],
            reason,
            extra={
                "action": "lifecycle.malformed",
                "event_id": None if message_id is None else message_id[:MAX_NAME_CHARS],
                "routing_key": routing_key[:MAX_NAME_CHARS],
                "reason": reason,
                # Finds the message in the dead-letter queue, which keeps no reason.
                "body_bytes": len(body),
                "body_sha256": hashlib.sha256(body).hexdigest(),
            },
        )
        return Outcome(OutcomeKind.MALFORMED, reason=reason)

    ids = {"event_id": str(event.event_id), "run_id": str(event.run_id)}
    try:
        with engine.begin() as conn:
            kind = apply_event(conn, event)
    except DBAPIError as exc:
        verdict = db_error_outcome(exc)
        if verdict is OutcomeKind.MALFORMED:
            reason = f"refused by the database: {_first_line(exc)}"[:MAX_REASON]
            log.warning(
                "%s for run %s set aside: %s",
                routing_key,
                event.run_id,
                reason,
                extra={"action": "lifecycle.malformed", "routing_key": routing_key, **ids},
            )
            return Outcome(verdict, event.event_id, event.run_id, reason)
        reason = _first_line(exc)[:MAX_REASON]
        log.warning(
            "database unavailable, %s for run %s will be retried: %s",
            routing_key,
            event.run_id,
            reason,
            extra={"action": "lifecycle.db_error", "routing_key": routing_key, **ids},
        )
        if exc.connection_invalidated:
            engine.dispose()
        return Outcome(verdict, event.event_id, event.run_id, reason)

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


def database_answers(engine: Engine) -> bool:
    """Whether the database answers a trivial query (tells an outage from a bad message)."""
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except DBAPIError:
        return False
    return True
