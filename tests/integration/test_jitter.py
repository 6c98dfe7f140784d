"""Jitter on the real database: SQL and Python agree on d; the claim and the horizon honour it."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import Engine, text

from scout_tasks import firing, horizon, jitter, schedules
from tests.integration.helpers import execute, insert_due_schedules, row, rows


def _insert(engine: Engine, schedule_id: uuid.UUID, name: str, j: int, due: str) -> None:
    execute(
        engine,
        "INSERT INTO scout_schedules (id, name, cron_expression, source, max_strategies,"
        " jitter_seconds, next_run_at) VALUES (:id, :name, '0 * * * *', 's', 1, :j, " + due + ")",
        id=schedule_id,
        name=name,
        j=j,
    )


def _id_with_offset_at_least(j: int, ms: int) -> uuid.UUID:
    while True:
        candidate = uuid.uuid4()
        if jitter.offset_ms(candidate, j) >= ms:
            return candidate


def test_sql_and_python_compute_the_same_offset(engine: Engine) -> None:
    execute(
        engine,
        """
        INSERT INTO scout_schedules (name, cron_expression, source, max_strategies, jitter_seconds)
        SELECT 'j-' || g, '0 * * * *', 's', 1, (g * 7) % 3601
        FROM generate_series(1, 2000) AS g
        """,
    )
    found = rows(engine, f"SELECT id, jitter_seconds, {jitter.sql_ms()} AS ms FROM scout_schedules")

    assert len(found) == 2000
    assert [r["ms"] for r in found] == [
        jitter.offset_ms(r["id"], r["jitter_seconds"]) for r in found
    ]
    assert all(0 <= r["ms"] < max(r["jitter_seconds"], 1) * 1000 for r in found)


def test_a_jittered_schedule_is_claimed_at_slot_plus_d_not_before(engine: Engine) -> None:
    sid = _id_with_offset_at_least(60, 10_000)
    d = jitter.offset(sid, 60)
    # The slot passed 5 s ago, but slot + d is still ahead.
    _insert(engine, sid, "jittered", 60, "now() - interval '5 seconds'")
    with engine.begin() as conn:
        assert schedules.claim_due(conn, 10) == []
    report = firing.fire_due(engine, None)
    assert report.runs == 0
    slot = row(engine, "SELECT next_run_at FROM scout_schedules")["next_run_at"]

    # Now slot + d is 1 s behind us.
    execute(
        engine,
        "UPDATE scout_schedules SET next_run_at = now() - make_interval(secs => :s)",
        s=d.total_seconds() + 1,
    )
    with engine.begin() as conn:
        (claimed,) = schedules.claim_due(conn, 10)
    assert (claimed.id, claimed.jitter_ms) == (sid, jitter.offset_ms(sid, 60))
    slot = row(engine, "SELECT next_run_at FROM scout_schedules")["next_run_at"]
    assert firing.fire_due(engine, None).runs == 1
    run = row(engine, "SELECT scheduled_for, created_at FROM scout_runs")
    # scheduled_for stays the slot; the run was made at slot + d or later.
    assert run["scheduled_for"] == slot
    assert run["created_at"] - run["scheduled_for"] >= d
    assert firing.fire_due(engine, None).runs == 0


def _horizon(engine: Engine) -> horizon.Horizon:
    with engine.connect() as conn:
        found = conn.execute(text(horizon.HORIZON_QUERY.text)).one()
    return horizon.Horizon(*found)


def test_the_beat_wakes_at_the_earliest_slot_plus_d(engine: Engine) -> None:
    first = _id_with_offset_at_least(600, 300_000)
    d_first = jitter.offset(first, 600)
    _insert(engine, first, "first-slot", 600, "date_trunc('second', now()) + interval '1 hour'")
    slot = row(engine, "SELECT next_run_at FROM scout_schedules")["next_run_at"]

    assert _horizon(engine).earliest == slot + d_first

    # A later slot with a smaller d can be due earlier: the beat wakes for it.
    second = uuid.uuid4()
    d_second = jitter.offset(second, 60)
    # A minute after the first slot itself (now() may have crossed a second since).
    later = f"'{(slot + timedelta(minutes=1)).isoformat()}'::timestamptz"
    _insert(engine, second, "later-slot", 60, later)
    assert _horizon(engine).earliest == slot + timedelta(minutes=1) + d_second

    # An unjittered schedule between them wins when it is earlier still.
    execute(
        engine,
        "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies, next_run_at)"
        " VALUES ('plain', '0 * * * *', 's', 1, :at)",
        at=slot + timedelta(seconds=30),
    )
    assert _horizon(engine).earliest == slot + timedelta(seconds=30)
    # A jittered schedule that is already due reads as due (earliest <= now).
    execute(
        engine,
        "UPDATE scout_schedules SET next_run_at = now() - interval '2 hours'"
        " WHERE name = 'first-slot'",
    )
    seen = _horizon(engine)
    assert seen.earliest is not None and seen.earliest <= seen.now


def test_a_herd_reads_as_a_bounded_lower_bound_not_a_full_scan(engine: Engine) -> None:
    n = horizon.HORIZON_WINDOW + 500
    execute(
        engine,
        """
        INSERT INTO scout_schedules (name, cron_expression, source, max_strategies,
                                     jitter_seconds, next_run_at)
        SELECT 'herd-' || g, '0 * * * *', 's', 1, 60,
               date_trunc('second', now()) + interval '1 hour'
        FROM generate_series(1, :n) AS g
        """,
        n=n,
    )
    slot = row(engine, "SELECT min(next_run_at) AS s FROM scout_schedules")["s"]
    true_earliest = row(
        engine, f"SELECT min(next_run_at + {jitter.sql_interval()}) AS e FROM scout_schedules"
    )["e"]

    seen = _horizon(engine)

    # Never later than the truth (the beat must not sleep past a due instant).
    assert seen.bounded
    assert seen.earliest == slot <= true_earliest
    # A small herd is read whole and exact.
    execute(engine, "DELETE FROM scout_schedules WHERE name <> 'herd-1'")
    exact = _horizon(engine)
    assert not exact.bounded
    assert (
        exact.earliest
        == row(engine, f"SELECT next_run_at + {jitter.sql_interval()} AS e FROM scout_schedules")[
            "e"
        ]
    )


def test_the_claim_and_horizon_still_use_the_due_index(engine: Engine) -> None:
    execute(
        engine,
        """
        INSERT INTO scout_schedules (name, cron_expression, source, max_strategies, next_run_at)
        SELECT 'idx-' || g, '0 * * * *', 's', 1, now() + make_interval(mins => g)
        FROM generate_series(1, 5000) AS g
        """,
    )
    execute(engine, "ANALYZE scout_schedules")
    with engine.begin() as conn:
        claim = "\n".join(
            r[0]
            for r in conn.execute(text("EXPLAIN " + schedules._CLAIM_DUE.text), {"limit": 1000})
        )
        plan = "\n".join(r[0] for r in conn.execute(text("EXPLAIN " + horizon.HORIZON_QUERY.text)))
    assert "ix_scout_schedules_due" in claim
    assert "Seq Scan" not in claim
    assert "Seq Scan on scout_schedules s" not in plan


def test_a_schedule_waiting_out_its_jitter_is_neither_due_nor_overdue(engine: Engine) -> None:
    sid = _id_with_offset_at_least(3600, 600_000)
    d = jitter.offset(sid, 3600)
    # The slot passed 5 minutes ago; its own instant, slot + d, is still ahead.
    _insert(engine, sid, "patient", 3600, "now() - interval '5 minutes'")
    with engine.connect() as conn:
        counts = schedules.count_enabled(conn, overdue_after=60)
    assert (counts.enabled, counts.due, counts.overdue) == (1, 0, 0)

    execute(
        engine,
        "UPDATE scout_schedules SET next_run_at = now() - make_interval(secs => :s)",
        s=d.total_seconds() + 120,
    )
    with engine.connect() as conn:
        counts = schedules.count_enabled(conn, overdue_after=60)
    assert (counts.due, counts.overdue) == (1, 1)


def test_the_horizon_counts_what_is_due_now_up_to_its_cap(engine: Engine) -> None:
    assert _horizon(engine).due_count == 0
    insert_due_schedules(engine, 7)
    assert _horizon(engine).due_count == 7
    # One waiting out its jitter is counted (read from the index alone, the count
    # is an upper bound); one due in the future is not.
    waiting = _id_with_offset_at_least(600, 300_000)
    _insert(engine, waiting, "waiting", 600, "now() - interval '1 second'")
    _insert(engine, uuid.uuid4(), "later", 0, "now() + interval '1 hour'")
    assert _horizon(engine).due_count == 8
    insert_due_schedules(engine, horizon.DUE_COUNT_CAP + 50, prefix="many")
    assert _horizon(engine).due_count == horizon.DUE_COUNT_CAP


def test_before_the_earliest_slot_the_horizon_counts_what_comes_due_at_it(
    engine: Engine,
) -> None:
    # What the beat sends ahead of a slot is sized by what will be due at it.
    _insert(
        engine, uuid.uuid4(), "at the slot", 0, "date_trunc('second', now()) + interval '1 hour'"
    )
    slot = row(engine, "SELECT next_run_at FROM scout_schedules")["next_run_at"]
    for i in range(2):
        _insert(engine, uuid.uuid4(), f"also at it {i}", 0, f"'{slot.isoformat()}'::timestamptz")
    _insert(engine, uuid.uuid4(), "after it", 0, "date_trunc('second', now()) + interval '2 hours'")
    seen = _horizon(engine)
    assert (seen.earliest, seen.due_count) == (slot, 3)


def test_the_horizon_reads_ahead_the_latest_due_the_beat_will_see_at_the_instant(
    engine: Engine,
) -> None:
    # A jittered slot that has passed, its instant (slot + d) still ahead.
    sid = _id_with_offset_at_least(60, 30_000)
    _insert(engine, sid, "jittered", 60, "date_trunc('second', now()) - interval '1 second'")
    slot = row(engine, "SELECT next_run_at FROM scout_schedules")["next_run_at"]
    ahead = _horizon(engine)
    assert ahead.earliest == slot + jitter.offset(sid, 60) and ahead.earliest > ahead.now
    # What the beat keys its early send on: the slot, as at the instant, not the instant.
    assert ahead.latest_due == slot

    # Without jitter, the slot still to come is the latest due by then.
    execute(engine, "UPDATE scout_schedules SET jitter_seconds = 0, next_run_at = now() + '1 h'")
    plain = _horizon(engine)
    assert (
        plain.latest_due
        == plain.earliest
        == row(engine, "SELECT next_run_at FROM scout_schedules")["next_run_at"]
    )
