"""Celery tasks: ``tick`` (the periodic safety net) and ``fire`` (a slot came due).

Both carry the slot they are for, and both are idempotent: what a task does
is decided by the database's state under row locks, so a redelivered,
retried or duplicated task finds the slot already fired and does nothing.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any

from sqlalchemy.exc import DBAPIError

from scout_tasks import db, firing, outbox, retention, sweep
from scout_tasks.celery_app import EARLY, FIRE, PAIRED, TICK, app
from scout_tasks.publisher import process_publisher
from scout_tasks.settings import get_settings

log = logging.getLogger(__name__)


def _expires() -> float:
    # A tick or fire that waited longer than this is superseded by a newer one.
    return max(2 * get_settings().tick_seconds, 10.0)


def _send_fire(slot: str | None) -> None:
    fire.apply_async(kwargs={"slot": slot}, expires=_expires(), retry=False)


# The longest a fire task sent ahead waits for its slot: the beat sends it at
# most beat.EARLY_LEAD before; more means a clock or a message gone astray.
EARLY_WAIT_CAP = 1.0


def _fire(
    slot: str | None, origin: str, *, paired: bool = False, early: bool = False
) -> dict[str, Any]:
    settings = get_settings()
    engine = db.get_engine()

    def hand_over() -> None:
        try:
            _send_fire(slot)
        except Exception as exc:  # noqa: BLE001 - any send failure: carry on alone
            log.warning(
                "could not hand the burst on: %s",
                exc,
                extra={"action": "fire.fan_out_failed", "slot": slot},
            )

    def fan_out() -> None:
        # A full batch means a burst: let another pool process claim batches too.
        # Called while this batch's claim is held, so it is sent from a thread of
        # its own: a broker that is slow to answer never holds the claim, and one
        # that is away only means this process fires the rest alone.
        threading.Thread(target=hand_over, name="scout-fan-out", daemon=True).start()

    try:
        if early and slot:
            db.sleep_until(engine, datetime.fromisoformat(slot), EARLY_WAIT_CAP)
        report = firing.fire_due(
            engine,
            process_publisher(),
            batch_size=settings.fire_batch_size,
            on_full_batch=fan_out,
            # A pair shares the first two batches; a third means more than both.
            hand_over_on=2 if paired else 1,
        )
    except DBAPIError as exc:
        # The next tick tries again; a traceback per tick helps nobody.
        log.warning(
            "database unavailable, %s skipped: %s",
            origin,
            str(exc.orig).strip().splitlines()[0] if exc.orig else exc,
            extra={"action": f"{origin}.db_error", "slot": slot},
        )
        db.get_engine().dispose()
        return {"error": "database unavailable"}
    if report.claimed or report.initialised:
        log.info(
            "%s: %d schedule(s) fired, %d run(s), %d event(s) published",
            origin,
            report.claimed,
            report.runs,
            report.published,
            extra={"action": f"{origin}.done", "slot": slot, "runs": report.runs},
        )
    return {
        "claimed": report.claimed,
        "runs": report.runs,
        "published": report.published,
        "skipped": report.skipped,
        "initialised": report.initialised,
        "invalid": report.invalid,
        "publish_failed": report.publish_failed,
    }


@app.task(name=FIRE, acks_late=True, ignore_result=True)
def fire(slot: str | None = None) -> dict[str, Any]:
    """Fire every schedule due now (sent by the beat the moment a slot comes due)."""
    request = fire.request
    return _fire(slot, "fire", paired=_header(request, PAIRED), early=_header(request, EARLY))


def _header(request: Any, name: str) -> bool:
    # A worker puts a message's headers on the request itself; an eager call
    # (``fire.apply``) puts them only in ``request.headers``.
    return bool(request.get(name) or (request.headers or {}).get(name))


@app.task(name=TICK, acks_late=True, ignore_result=True)
def tick(slot: str | None = None) -> dict[str, Any]:
    """The periodic safety net: deliver stranded events, then fire anything due."""
    relayed = 0
    try:
        relayed = outbox.relay(db.get_engine(), process_publisher()).published
    except DBAPIError as exc:
        log.warning(
            "database unavailable, outbox relay skipped: %s",
            exc.orig,
            extra={"action": "tick.db_error", "slot": slot},
        )
        db.get_engine().dispose()
        return {"error": "database unavailable"}
    if relayed:
        log.info(
            "relayed %d stranded event(s)",
            relayed,
            extra={"action": "outbox.relayed", "count": relayed, "slot": slot},
        )
    result = _fire(slot, "tick")
    result["relayed"] = relayed
    if "error" not in result:
        result["stale"] = _sweep(slot)
        result["pruned"] = _prune(slot)
    return result


def _sweep(slot: str | None) -> int:
    """Fail runs whose agent never started or went silent (they would stay active forever)."""
    settings = get_settings()
    try:
        return sweep.sweep_stale_runs(
            db.get_engine(), None, settings.run_pending_timeout, settings.run_timeout
        )
    except DBAPIError as exc:
        log.warning(
            "database unavailable, stale-run sweep skipped: %s",
            exc.orig,
            extra={"action": "tick.db_error", "slot": slot},
        )
        return 0


# The tick's share of retention: at most this many batches (of
# retention.BATCH_SIZE runs) per tick, so a long backlog of old runs is worked
# off over several ticks instead of holding up this one.
PRUNE_BATCHES_PER_TICK = 5


def _prune(slot: str | None) -> int:
    """Delete ended runs older than SCOUT_RUN_RETENTION_DAYS (0: keep everything)."""
    days = get_settings().run_retention_days
    if days <= 0:
        return 0
    try:
        report = retention.prune_runs(db.get_engine(), days, max_batches=PRUNE_BATCHES_PER_TICK)
    except DBAPIError as exc:
        log.warning(
            "database unavailable, retention skipped: %s",
            exc.orig,
            extra={"action": "tick.db_error", "slot": slot},
        )
        return 0
    return report.runs
