"""Applying a schedules document: plan against the locked rows, write it in one transaction.

The plan itself is pure (:func:`scout_tasks.manifest.plan`); this module reads
the rows it concerns, asks for the plan, locks the rows it will write and
plans again from them, and writes it through the
same functions as every other face (:func:`scout_tasks.service.write_create`,
:func:`~scout_tasks.service.write_update`), with the actor recorded by the
history trigger. An invalid document is refused before anything is read, and
any failure while writing rolls the whole apply back.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from sqlalchemy import Engine

from scout_tasks import manifest, schedules, service, validation
from scout_tasks.changes import set_actor
from scout_tasks.errors import InvalidInput
from scout_tasks.manifest import CREATE, DELETE, MANAGED_BY, UPDATE, Plan

log = logging.getLogger(__name__)


def apply(
    engine: Engine,
    document: Any,
    *,
    dry_run: bool = False,
    prune: bool = False,
    actor: str | None = None,
) -> Plan:
    """Make the schedules match ``document`` (``{"schedules": [...]}``); return the plan.

    Idempotent: once applied, the same document plans all ``=`` and writes
    nothing (so the history gains nothing either). A dry run plans and writes
    nothing.
    """
    wanted = manifest.parse_document(document)
    who = validation.actor(actor)
    names = [e.name for e in wanted]
    with engine.begin() as conn:
        set_actor(conn, who)
        current = schedules.find_for_apply(conn, names, managed=prune)
        plan = manifest.plan(current, wanted, prune=prune)
        if dry_run or not plan.changes:
            # Nothing locked: an apply that changes nothing never delays a firing.
            return plan
        # Lock only the rows the plan writes, then plan again from them as
        # they are now: a fire batch skips just those rows for the few
        # milliseconds this takes, and a concurrent edit is seen, not lost.
        writes = {s.schedule_id for s in plan.steps if s.action in (UPDATE, DELETE)}
        locked = schedules.lock_schedules(conn, sorted(i for i in writes if i is not None))
        current = [r for r in current if r["id"] not in writes] + locked
        plan = manifest.plan(current, wanted, prune=prune)
        rows = {row["name"]: row for row in current}
        # Deletes first, so a pruned schedule's slot in the unique names is free.
        for step in plan.steps:
            if step.action == DELETE and step.schedule_id is not None:
                schedules.delete_schedule(conn, step.schedule_id)
        steps = []
        for step in plan.steps:
            if step.action == UPDATE:
                changes = {k: new for k, (_old, new) in step.changes.items()}
                service.write_update(conn, rows[step.name], changes)
            elif step.action == CREATE and step.entry is not None:
                made = service.write_create(conn, step.entry, {"managed_by": MANAGED_BY})
                # The plan as applied names the new schedule, as it names every other.
                step = dataclasses.replace(step, schedule_id=made["id"])
            steps.append(step)
        plan = Plan(steps)
    log.info(
        "schedules applied: %s",
        plan.summary(),
        extra={"action": "schedules.applied", "changes": plan.changes},
    )
    return plan


def export(engine: Engine) -> dict[str, Any]:
    """Every schedule as a document that :func:`apply` accepts with no change.

    A row written with plain SQL may hold what the write rules refuse (an
    expression that can never fire, an unknown zone); apply would reject the
    file, so the export is refused instead, naming the schedule and the field.
    """
    with engine.connect() as conn:
        rows, _total = schedules.list_schedules(conn)
    document = manifest.export_document(rows)
    try:
        manifest.parse_document(document)
    except InvalidInput as exc:
        head = exc.field.split("]", 1)[0].removeprefix("schedules[")
        if not head.isdigit():
            raise
        name = document["schedules"][int(head)]["name"]
        raise InvalidInput(
            exc.field, f"schedule {name!r} cannot be exported as it is: {exc.reason}"
        ) from None
    return document
