"""The transactional outbox: events written with the run they announce, published after.

An event row is inserted in the same transaction as its run, so either both
exist or neither does. After the commit the row is locked, published with a
broker confirm, and deleted. A publish that fails (broker down, connection
reset, message unroutable, process killed) leaves the row behind, and the
relay delivers it later with the same ``event_id``. Delivery is therefore at
least once; consumers deduplicate on ``event_id`` (the ``message_id``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, RootTransaction, text

from scout_tasks import counters, pg_arrays
from scout_tasks.confirms import PublishResult
from scout_tasks.errors import PublishError
from scout_tasks.events import encode
from scout_tasks.publisher import ConfirmingPublisher, OutgoingMessage, Sent

log = logging.getLogger(__name__)

# Longest retry delay, in seconds, for an event the broker refused or could not
# route (no queue bound yet): that is about the message, not the broker.
_BACKOFF_CAP = 60


@dataclass(frozen=True, slots=True)
class PendingEvent:
    event_id: uuid.UUID
    routing_key: str
    payload: dict[str, Any]
    run_id: uuid.UUID | None


_ADD = text(
    """
    INSERT INTO scout_outbox (event_id, routing_key, payload, run_id)
    SELECT * FROM unnest(
        CAST(:event_ids AS uuid[]), CAST(:routing_keys AS text[]),
        CAST(:payloads AS json[]), CAST(:run_ids AS uuid[])
    )
    RETURNING id, event_id::text
    """
)

# Outbox id -> the message as it will go on the wire.
Queued = dict[int, OutgoingMessage]


def add_events(conn: Connection, events: Sequence[PendingEvent]) -> Queued:
    """Queue events inside the caller's transaction.

    Returns the wire messages by outbox id, so the caller can publish the bytes
    it already built once the transaction commits, without reading them back.
    """
    return add_messages(
        conn,
        [OutgoingMessage(str(e.event_id), e.routing_key, encode(e.payload)) for e in events],
        [None if e.run_id is None else str(e.run_id) for e in events],
    )


def add_messages(
    conn: Connection, messages: Sequence[OutgoingMessage], run_ids: Sequence[str | None]
) -> Queued:
    """Queue wire messages (``message_id`` is the event id), each for its run, if any."""
    if not messages:
        return {}
    by_id = {m.message_id: m for m in messages}
    rows = conn.execute(
        _ADD,
        {
            "event_ids": [m.message_id for m in messages],
            "routing_keys": [m.routing_key for m in messages],
            "payloads": [m.body.decode() for m in messages],
            "run_ids": list(run_ids),
        },
    )
    return {outbox_id: by_id[event_id] for outbox_id, event_id in rows}


_LOCK_IDS = text(
    """
    SELECT id FROM scout_outbox
    WHERE id = ANY(CAST(:ids AS bigint[]))
    ORDER BY id
    FOR UPDATE SKIP LOCKED
    """
)

_LOCK_AVAILABLE = text(
    """
    SELECT id, event_id, routing_key, payload::text FROM scout_outbox
    WHERE available_at <= now()
    ORDER BY id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)

_DELETE = text("DELETE FROM scout_outbox WHERE id = ANY(CAST(:ids AS bigint[]))")

_DEFER = text(
    """
    UPDATE scout_outbox
    SET attempts = attempts + 1,
        last_error = :error,
        available_at = now() + make_interval(secs => LEAST(:cap, power(2, attempts)))
    WHERE id = ANY(:ids)
    """
)


@dataclass(slots=True)
class DeliveryReport:
    published: int = 0
    deferred: int = 0
    failed: bool = False


@dataclass(slots=True)
class InFlight:
    """Outbox rows locked by their own transaction and handed to the broker, not yet settled.

    The lock keeps a relay elsewhere from publishing the same rows meanwhile; it
    is held until :func:`settle` deletes what the broker confirmed.
    """

    conn: Connection
    transaction: RootTransaction
    locked: Queued
    sent: Sent


def send(engine: Engine, publisher: ConfirmingPublisher, queued: Queued) -> InFlight | None:
    """Lock events a transaction just committed (what :func:`add_events` returned), send them.

    Rows another process is already relaying are skipped, not published twice.
    The caller must :func:`settle` (or :func:`abandon`) what this returns.
    """
    if not queued:
        return None

    def lock(conn: Connection) -> Queued:
        ids = conn.execute(_LOCK_IDS, {"ids": pg_arrays.plain(queued)}).scalars()
        return {outbox_id: queued[outbox_id] for outbox_id in ids}

    return _send(engine, publisher, lock)


def _send(
    engine: Engine, publisher: ConfirmingPublisher, lock: Callable[[Connection], Queued]
) -> InFlight:
    conn = engine.connect()
    try:
        transaction = conn.begin()
        locked = lock(conn)
        return InFlight(conn, transaction, locked, publisher.send(list(locked.values())))
    except BaseException:
        conn.close()
        raise


def settle(engine: Engine, publisher: ConfirmingPublisher, flight: InFlight) -> DeliveryReport:
    """Wait for the broker's verdicts; delete (and count) the confirmed rows, defer the refused."""
    try:
        try:
            result = publisher.settle(flight.sent)
        except PublishError as exc:
            flight.transaction.rollback()
            ids = list(flight.locked)
            log.warning(
                "publish failed; %d event(s) stay in the outbox: %s",
                len(ids),
                exc,
                extra={"action": "outbox.publish_failed", "count": len(ids)},
            )
            if ids:
                _note_failure(engine, ids, str(exc))
            return DeliveryReport(failed=True)
        report = _record(flight.conn, flight.locked, result)
        flight.transaction.commit()
        return report
    finally:
        flight.conn.close()


def abandon(flight: InFlight | None) -> None:
    """Give up a batch in flight (the caller is failing): its rows stay for the relay."""
    if flight is not None:
        flight.conn.close()


def deliver(engine: Engine, publisher: ConfirmingPublisher, queued: Queued) -> DeliveryReport:
    """:func:`send` and :func:`settle` in one go."""
    flight = send(engine, publisher, queued)
    return DeliveryReport() if flight is None else settle(engine, publisher, flight)


def relay(engine: Engine, publisher: ConfirmingPublisher, limit: int = 1000) -> DeliveryReport:
    """Publish every outbox row that is due, in batches of ``limit``, until none is left."""
    total = DeliveryReport()
    while True:
        flight = _send(engine, publisher, lambda conn: _lock_available(conn, limit))
        report = settle(engine, publisher, flight)
        total.published += report.published
        total.deferred += report.deferred
        if report.failed:
            total.failed = True
            return total
        if report.published + report.deferred < limit:
            return total


def _lock_available(conn: Connection, limit: int) -> Queued:
    rows = conn.execute(_LOCK_AVAILABLE, {"limit": limit})
    return {
        outbox_id: OutgoingMessage(str(event_id), routing_key, payload.encode())
        for outbox_id, event_id, routing_key, payload in rows
    }


def _record(conn: Connection, locked: Queued, result: PublishResult) -> DeliveryReport:
    by_message = {message.message_id: outbox_id for outbox_id, message in locked.items()}
    done = [by_message[m] for m in result.confirmed]
    if done:
        conn.execute(_DELETE, {"ids": pg_arrays.plain(done)})
    for message_id, reason in result.rejected.items():
        conn.execute(
            _DEFER, {"ids": [by_message[message_id]], "error": reason, "cap": _BACKOFF_CAP}
        )
        log.warning(
            "event not delivered, kept in the outbox: %s",
            reason,
            extra={"action": "outbox.deferred", "event_id": message_id},
        )
    # Counted in the transaction that deletes the confirmed rows: once per event.
    counters.bump(conn, {(counters.EVENTS_PUBLISHED, ""): len(done)})
    return DeliveryReport(published=len(done), deferred=len(result.rejected))


_NOTE_FAILURE = text(
    "UPDATE scout_outbox SET attempts = attempts + 1, last_error = :error WHERE id = ANY(:ids)"
)


def _note_failure(engine: Engine, ids: list[int], error: str) -> None:
    # The broker as a whole was unreachable: the rows stay due (no backoff), so
    # the first tick after it returns delivers all of them at once.
    try:
        with engine.begin() as conn:
            conn.execute(_NOTE_FAILURE, {"ids": ids, "error": error[:1000]})
    except Exception:
        log.warning(
            "could not record the failed publish",
            exc_info=True,
            extra={"action": "outbox.defer_failed"},
        )


# The oldest row by id (the primary key), not a scan for min(created_at).
_BACKLOG = text(
    """
    SELECT count(*),
           (SELECT created_at FROM scout_outbox ORDER BY id LIMIT 1)
    FROM scout_outbox
    """
)


def backlog(conn: Connection) -> tuple[int, datetime | None]:
    """How many events wait in the outbox, and when the oldest of them was written."""
    count, oldest = conn.execute(_BACKLOG).one()
    return int(count), oldest


_DELETE_FOR_RUNS = text(
    """
    DELETE FROM scout_outbox
    WHERE id IN (
        SELECT id FROM scout_outbox WHERE run_id = ANY(CAST(:run_ids AS uuid[]))
        FOR UPDATE SKIP LOCKED
    )
    """
)


def delete_for_runs(conn: Connection, run_ids: Sequence[uuid.UUID]) -> int:
    """Drop undelivered events of runs being deleted (retention); returns how many.

    A row a relay holds right now is skipped: it is being delivered, and the
    relay deletes it once confirmed.
    """
    if not run_ids:
        return 0
    return conn.execute(_DELETE_FOR_RUNS, {"run_ids": [str(r) for r in run_ids]}).rowcount
