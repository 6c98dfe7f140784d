"""Backfill: a run for every slot of a schedule in ``[from, to)`` that has none yet.

After an outage of the agents an operator re-runs a range of slots. Each run
is exactly what firing makes for the slot (``trigger_type`` scheduled,
``scheduled_for`` the slot, its ``scout.trigger`` through the outbox), written
through the same insert with ``ON CONFLICT DO NOTHING`` as the fire batch
(:func:`scout_tasks.firing.insert_runs`), so a backfill racing the beat on a
slot that is due right now still makes one run and one event; a second
backfill of the same range makes nothing. The schedule itself is not changed:
its ``next_run_at`` stays where it was.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine

from scout_tasks import counters, cron, firing, outbox, runs, schedules
from scout_tasks.db import db_now
from scout_tasks.errors import InvalidInput
from scout_tasks.publisher import ConfirmingPublisher

log = logging.getLogger(__name__)

MAX_SLOTS = 1000


@dataclass(frozen=True, slots=True)
class Backfill:
    """What a backfill did (or, dry, would do): every slot in the range, split."""

    schedule_id: uuid.UUID
    start: datetime
    end: datetime
    dry_run: bool
    # Slots that got a run now (or would, in a dry run), with the run's id (None when dry).
    created: list[tuple[datetime, uuid.UUID | None]] = field(default_factory=list)
    # Slots that already had a run.
    existing: list[datetime] = field(default_factory=list)
    # Whether the broker confirmed every new event now (else the outbox delivers them).
    delivered: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The CLI's ``--json`` and the API's response: every slot of the range, in order."""
        new = "would_create" if self.dry_run else "created"
        slots = [(slot, run_id, new) for slot, run_id in self.created]
        slots += [(slot, None, "exists") for slot in self.existing]
        return {
            "schedule_id": str(self.schedule_id),
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "dry_run": self.dry_run,
            "slots": [
                {"slot": slot.isoformat(), "run_id": None if r is None else str(r), "status": st}
                for slot, r, st in sorted(slots, key=lambda item: item[0])
            ],
            "created": 0 if self.dry_run else len(self.created),
            "would_create": len(self.created) if self.dry_run else 0,
            "existing": len(self.existing),
        }


def parse_instant(name: str, value: Any) -> datetime:
    """An ISO 8601 instant; one without an offset is UTC, the zone everything is stored in."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(name, f"{value!r} is not an ISO 8601 timestamp") from None
    else:
        raise InvalidInput(name, "must be an ISO 8601 timestamp string")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(name, "is out of range") from None


def plan_slots(
    schedule: dict[str, Any], start: datetime, end: datetime, now: datetime
) -> list[datetime]:
    """The cron slots in ``[start, end)``; refused, naming ``to``, past MAX_SLOTS or ``now``."""
    if start >= end:
        raise InvalidInput("to", "must be after from")
    expr, zone = schedule["cron_expression"], schedule["timezone"]
    slots = list(itertools.islice(cron.iter_between(expr, zone, start, end), MAX_SLOTS + 1))
    if len(slots) > MAX_SLOTS:
        raise InvalidInput(
            "to", f"the range holds more than {MAX_SLOTS} slots; backfill it in parts"
        )
    if slots and slots[-1] > now:
        raise InvalidInput(
            "to",
            f"slot {slots[-1].isoformat()} is still to come; a backfill only runs past slots",
        )
    return slots


def _new_runs(schedule: dict[str, Any], slots: list[datetime]) -> list[runs.NewScheduledRun]:
    return [
        runs.NewScheduledRun(
            schedule_id=schedule["id"],
            scheduled_for=slot,
            triggered_by=schedule["name"],
            source=schedule["source"],
            max_strategies=schedule["max_strategies"],
        )
        for slot in slots
    ]


def _schedule(conn: Connection, key: uuid.UUID | str, *, lock: bool) -> dict[str, Any]:
    """The schedule by id or name; with ``lock``, its row locked as a fire batch's claim locks it.

    The lock orders a backfill and a fire batch on the same schedule: without
    it each could insert the slot's run and then wait for the other (the fire
    batch on the run's unique key, the backfill's foreign-key check on the
    claimed schedule row), a deadlock. With it, whichever commits first makes
    the run and the other's ON CONFLICT skips it. A fire batch that finds the
    row locked skips the schedule and takes it on its next pass.
    """
    if isinstance(key, uuid.UUID):
        return schedules.get_schedule(conn, key, lock=lock)
    found = schedules.find_schedule(conn, key)
    return schedules.get_schedule(conn, found["id"], lock=True) if lock else found


def backfill(
    engine: Engine,
    schedule_id_or_name: uuid.UUID | str,
    start: Any,
    end: Any,
    *,
    dry_run: bool = False,
    publisher: ConfirmingPublisher | None = None,
) -> Backfill:
    """Create the missing runs of ``[start, end)`` (ISO strings or aware datetimes).

    Refused, writing nothing, when ``from >= to``, when the range holds more
    than MAX_SLOTS slots, or when a slot in it is still to come. A dry run
    lists the slots and writes nothing.
    """
    start_at, end_at = parse_instant("from", start), parse_instant("to", end)
    with engine.begin() as conn:
        schedule = _schedule(conn, schedule_id_or_name, lock=not dry_run)
        now = db_now(conn)
        slots = plan_slots(schedule, start_at, end_at, now)
        if dry_run:
            existing = runs.slots_with_runs(conn, schedule["id"], slots)
            return Backfill(
                schedule["id"],
                start_at,
                end_at,
                True,
                created=[(s, None) for s in slots if s not in existing],
                existing=[s for s in slots if s in existing],
            )
        new = _new_runs(schedule, slots)
        inserted, queued, _last = firing.insert_runs(conn, new, now)
        # Runs created, like the fire batch's; not fire lag (the slots are old on purpose).
        counters.bump(conn, counters.runs_created("scheduled", len(inserted)))
    created = sorted((r.scheduled_for, uuid.UUID(r.id)) for r in inserted)
    made = {slot for slot, _run_id in created}
    existing = [r.scheduled_for for r in new if r.scheduled_for not in made]
    log.info(
        "backfill: %d run(s) created, %d slot(s) already had one",
        len(created),
        len(existing),
        extra={"action": "schedule.backfilled", "schedule_id": str(schedule["id"])},
    )
    delivered = not queued
    if publisher is not None and queued:
        delivered = outbox.deliver(engine, publisher, queued).published == len(queued)
    return Backfill(schedule["id"], start_at, end_at, False, created, existing, delivered)
