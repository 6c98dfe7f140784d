"""What a batch of lifecycle events does to its runs: the plan, decided in Python, no I/O.

The recorder applies a batch in one transaction: it writes the ledger, locks
the batch's runs and reads their statuses, then asks :func:`plan_batch` what
each event does. With the rows locked, the plan is exactly what applying the
events one by one would do, except that a run's events are taken in lifecycle
order (started, then progress, then the terminal event) rather than in the
order they happened to arrive, which delivery does not guarantee anyway:

- an ``event_id`` counts once: already in the ledger, or seen earlier in the
  same batch, it is a duplicate and changes nothing;
- an event for a run that does not exist is recorded and changes nothing, and
  so is one for a run already completed, failed or cancelled (a terminal run
  never changes);
- of several terminal events for one run in a batch, the first to arrive
  wins, as it would one by one; the others are recorded and ignored;
- of several progress events for one run, the database keeps the latest by
  timestamp (it owns the clock that distrusts a forged future one, see
  ``run_updates.record_runs_progress``).
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Mapping, Sequence, Set
from dataclasses import dataclass, field

from scout_tasks.inbound import (
    CompletedEvent,
    FailedEvent,
    LifecycleEvent,
    ProgressEvent,
    StartedEvent,
)

ACTIVE_STATUSES = frozenset({"pending", "running"})


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


@dataclass(slots=True)
class BatchPlan:
    """The statements a batch needs, and the outcome of each of its events (by position)."""

    outcomes: list[OutcomeKind]
    # Run ids, spelt as the plan's keys spell them.
    started: list[Hashable] = field(default_factory=list)
    progress: list[ProgressEvent] = field(default_factory=list)
    completed: list[CompletedEvent] = field(default_factory=list)
    failed: list[FailedEvent] = field(default_factory=list)

    @property
    def finished(self) -> dict[str, int]:
        """Runs this batch ends, by the status they end in."""
        return {"completed": len(self.completed), "failed": len(self.failed)}


# Keys: how a caller spells event and run ids. By default the models' UUIDs;
# the recorder uses their text, which the ledger statement returns as it is
# (hashing a str is cached in C, hashing a UUID is a Python call each time).
Keys = Sequence[tuple[Hashable, Hashable]]


def _keys_of(events: Sequence[LifecycleEvent]) -> Keys:
    return [(e.event_id, e.run_id) for e in events]


def first_occurrences(events: Sequence[LifecycleEvent], keys: Keys | None = None) -> list[int]:
    """The position of each event id's first event in the batch (what goes into the ledger).

    ``keys`` are the events' (event id, run id), spelt as the caller's ledger
    spells them (the UUIDs when omitted).
    """
    seen: set[Hashable] = set()
    out = []
    for i, (event_id, _) in enumerate(_keys_of(events) if keys is None else keys):
        if event_id not in seen:
            seen.add(event_id)
            out.append(i)
    return out


def plan_batch(
    events: Sequence[LifecycleEvent],
    new_ids: Set[Hashable],
    statuses: Mapping[Hashable, str],
    keys: Keys | None = None,
) -> BatchPlan:
    """The plan for ``events`` (in delivery order).

    ``new_ids`` are the event ids the ledger insert of this transaction wrote
    (the others were there before); ``statuses`` the status of every existing
    run those new events name, read with the rows locked. Both are spelt as
    ``keys`` spells each event's (event id, run id): the UUIDs when omitted.
    ``plan.started`` holds run ids spelt that way too.
    """
    plan = BatchPlan(outcomes=[])
    seen: set[Hashable] = set()
    started: set[Hashable] = set()
    ended: set[Hashable] = set()
    for event, (event_id, run_id) in zip(
        events, _keys_of(events) if keys is None else keys, strict=True
    ):
        if event_id in seen or event_id not in new_ids:
            plan.outcomes.append(OutcomeKind.DUPLICATE)
            continue
        seen.add(event_id)
        status = statuses.get(run_id)
        if status is None:
            kind = OutcomeKind.UNKNOWN_RUN
        elif status not in ACTIVE_STATUSES:
            kind = OutcomeKind.IGNORED
        # type() rather than isinstance(): pydantic's metaclass makes
        # isinstance a Python call, and these classes have no subclasses.
        elif type(event) is StartedEvent:
            kind = OutcomeKind.APPLIED
            if run_id not in started:
                started.add(run_id)
                plan.started.append(run_id)
        elif type(event) is ProgressEvent:
            kind = OutcomeKind.APPLIED
            plan.progress.append(event)
        elif run_id in ended:
            kind = OutcomeKind.IGNORED
        else:
            ended.add(run_id)
            kind = OutcomeKind.APPLIED
            if type(event) is CompletedEvent:
                plan.completed.append(event)
            else:
                plan.failed.append(event)  # type: ignore[arg-type]
        plan.outcomes.append(kind)
    return plan
