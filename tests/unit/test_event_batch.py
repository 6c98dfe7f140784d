"""The batch planner: what a batch of lifecycle events does, decided without a database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from scout_tasks.event_batch import OutcomeKind, first_occurrences, plan_batch
from scout_tasks.inbound import (
    CompletedEvent,
    FailedEvent,
    LifecycleEvent,
    ProgressEvent,
    StartedEvent,
)

RUN, OTHER = uuid.uuid4(), uuid.uuid4()
COUNTERS = {
    "total_fetched": 4,
    "validated": 3,
    "validation_failed": 1,
    "duplicates_removed": 0,
    "submitted": 3,
}


def started(run: uuid.UUID = RUN, event_id: uuid.UUID | None = None) -> StartedEvent:
    return StartedEvent(event_id=event_id or uuid.uuid4(), run_id=run)


def progress(run: uuid.UUID = RUN, stage: str = "fetch") -> ProgressEvent:
    return ProgressEvent(
        event_id=uuid.uuid4(),
        run_id=run,
        stage=stage,
        progress=10,
        timestamp=datetime(2026, 3, 1, tzinfo=UTC),
    )


def completed(run: uuid.UUID = RUN, event_id: uuid.UUID | None = None) -> CompletedEvent:
    return CompletedEvent(event_id=event_id or uuid.uuid4(), run_id=run, **COUNTERS)


def failed(run: uuid.UUID = RUN) -> FailedEvent:
    return FailedEvent(event_id=uuid.uuid4(), run_id=run, error_message="boom", stage="x")


def all_new(events: list[LifecycleEvent]) -> set[uuid.UUID]:
    return {e.event_id for e in events}


def test_started_and_completed_of_one_run_are_both_applied_in_lifecycle_order() -> None:
    # Arrived completed first: the run is still started (started_at set) then completed.
    events: list[LifecycleEvent] = [completed(), started()]
    plan = plan_batch(events, all_new(events), {RUN: "pending"})
    assert plan.outcomes == [OutcomeKind.APPLIED, OutcomeKind.APPLIED]
    assert plan.started == [RUN]
    assert [e.run_id for e in plan.completed] == [RUN]
    assert plan.finished == {"completed": 1, "failed": 0}


def test_the_first_terminal_event_of_a_run_wins_as_it_would_one_by_one() -> None:
    first, second = failed(), completed()
    plan = plan_batch([first, second], all_new([first, second]), {RUN: "running"})
    assert plan.outcomes == [OutcomeKind.APPLIED, OutcomeKind.IGNORED]
    assert plan.failed == [first]
    assert plan.completed == []
    assert plan.finished == {"completed": 0, "failed": 1}


def test_a_duplicate_within_the_batch_counts_once() -> None:
    event_id = uuid.uuid4()
    # The same id twice, even with another type: the second is a duplicate.
    one, again = completed(event_id=event_id), started(event_id=event_id)
    assert first_occurrences([one, again]) == [0]
    assert first_occurrences([one, again], [("e", "r"), ("e", "r")]) == [0]
    plan = plan_batch([one, again], {event_id}, {RUN: "running"})
    assert plan.outcomes == [OutcomeKind.APPLIED, OutcomeKind.DUPLICATE]
    assert plan.started == []
    assert plan.completed == [one]


def test_an_event_already_in_the_ledger_is_a_duplicate() -> None:
    old, new = started(), progress()
    plan = plan_batch([old, new], {new.event_id}, {RUN: "running"})
    assert plan.outcomes == [OutcomeKind.DUPLICATE, OutcomeKind.APPLIED]
    assert plan.started == []
    assert plan.progress == [new]


def test_a_terminal_run_is_frozen() -> None:
    for status in ("completed", "failed", "cancelled"):
        events: list[LifecycleEvent] = [started(), progress(), completed(), failed()]
        plan = plan_batch(events, all_new(events), {RUN: status})
        assert plan.outcomes == [OutcomeKind.IGNORED] * 4
        assert (plan.started, plan.progress, plan.completed, plan.failed) == ([], [], [], [])
        assert plan.finished == {"completed": 0, "failed": 0}


def test_an_unknown_run_changes_nothing_and_does_not_stop_the_others() -> None:
    events: list[LifecycleEvent] = [started(OTHER), started(RUN), completed(OTHER)]
    plan = plan_batch(events, all_new(events), {RUN: "pending"})
    assert plan.outcomes == [OutcomeKind.UNKNOWN_RUN, OutcomeKind.APPLIED, OutcomeKind.UNKNOWN_RUN]
    assert plan.started == [RUN]
    assert plan.completed == []


def test_every_progress_of_an_active_run_goes_to_the_database_in_arrival_order() -> None:
    # The database picks the latest by timestamp (it owns the clock that clamps
    # forged ones), so the planner passes them all, in arrival order.
    events: list[LifecycleEvent] = [progress(stage="a"), progress(stage="b"), progress(OTHER)]
    plan = plan_batch(events, all_new(events), {RUN: "running", OTHER: "completed"})
    assert [e.stage for e in plan.progress] == ["a", "b"]
    assert plan.outcomes == [OutcomeKind.APPLIED, OutcomeKind.APPLIED, OutcomeKind.IGNORED]


def test_a_run_started_twice_is_updated_once() -> None:
    events: list[LifecycleEvent] = [started(), started(), started(OTHER)]
    plan = plan_batch(events, all_new(events), {RUN: "pending", OTHER: "running"})
    assert plan.started == [RUN, OTHER]
    assert plan.outcomes == [OutcomeKind.APPLIED] * 3


def test_a_large_batch_of_many_runs() -> None:
    run_ids = [uuid.uuid4() for _ in range(500)]
    events: list[LifecycleEvent] = [started(r) for r in run_ids] + [completed(r) for r in run_ids]
    statuses = dict.fromkeys(run_ids, "pending")
    plan = plan_batch(events, all_new(events), statuses)
    assert plan.started == run_ids
    assert [e.run_id for e in plan.completed] == run_ids
    assert set(plan.outcomes) == {OutcomeKind.APPLIED}
