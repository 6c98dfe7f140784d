"""The monotonic counters behind /metrics, kept in the database beside the work they count.

Why in PostgreSQL and not in each process (prometheus_client's multiprocess
mode): the work is done by any number of Celery workers, beats and API
processes, on different hosts, each of which restarts on its own schedule.
Per-process counters need every one of them scraped and summed, lose their
history when a container is replaced, and cannot see work done by plain SQL
tools. Here each increment is written in the same transaction as the work it
counts (the fire batch, a trigger, a run's last event, an outbox row deleted
after the broker's confirm), so a counter is exactly as true as the data: a
rolled-back batch counts nothing, a committed one counts once, whichever
process did it. Any API replica serves the same totals (the alert rules
aggregate them with max(), not sum()), and deleting a schedule or pruning runs
never lowers them.

Cost: one statement per transaction, the last one before the commit so its
row locks are held for a moment only. Each counter is split over
:data:`SHARDS` rows chosen by the writer's backend pid, so concurrent writers
rarely wait on the same row; a scrape adds the shards up (a GROUP BY over a
few dozen rows). Keys are locked in one sorted order, so two writers that
share a shard queue instead of deadlocking.

The SQL of ``scout_counters`` lives here and only here: other modules build
their deltas with the helpers below and call :func:`bump`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import Connection, text

# A counter: (metric name, the value of its one label or '').
Key = tuple[str, str]
Deltas = Mapping[Key, int]

SHARDS = 8

RUNS_CREATED = "scout_runs_created_total"
RUNS_FINISHED = "scout_runs_finished_total"
RUNS_STALE = "scout_runs_stale_total"
EVENTS_PUBLISHED = "scout_events_published_total"
SKIPPED_SLOTS = "scout_skipped_slots_total"
# The fire-lag histogram: one row per bucket, NOT cumulative (an observation
# lands in exactly one bucket, labelled with that bucket's upper bound); the
# scrape accumulates them. The sum is kept in microseconds, exactly.
FIRE_LAG_BUCKET = "scout_fire_lag_seconds_bucket"
FIRE_LAG_SUM_MICROS = "scout_fire_lag_seconds_sum_micros"

# Upper bounds, in seconds: a healthy beat fires 10-30 ms after the slot; minutes
# mean the beat, the workers or the database were away.
FIRE_LAG_BOUNDS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
)  # fmt: skip
INF = "+Inf"


def bound_label(bound: float) -> str:
    """A bucket's stored label: ``repr`` of the float (``0.005``, ``1.0``), or ``+Inf``."""
    return INF if math.isinf(bound) else repr(float(bound))


def runs_created(trigger_type: str, n: int = 1) -> dict[Key, int]:
    return {(RUNS_CREATED, trigger_type): n}


def runs_finished(statuses: Iterable[str]) -> dict[Key, int]:
    """One for each run that reached a terminal status (completed, failed, cancelled)."""
    return {(RUNS_FINISHED, status): n for status, n in Counter(statuses).items()}


def fire_lag(lags: Sequence[float], bounds: Sequence[float] = FIRE_LAG_BOUNDS) -> dict[Key, int]:
    """Observations of the fire-lag histogram, in seconds (a negative lag counts as 0)."""
    if not lags:
        return {}
    deltas: Counter[Key] = Counter()
    micros = 0
    for lag in lags:
        lag = max(0.0, float(lag))
        micros += round(lag * 1_000_000)
        bound = next((b for b in bounds if lag <= b), math.inf)
        deltas[(FIRE_LAG_BUCKET, bound_label(bound))] += 1
    deltas[(FIRE_LAG_SUM_MICROS, "")] = micros
    return dict(deltas)


def merge(*parts: Mapping[Key, int]) -> dict[Key, int]:
    """Several deltas as one, so a transaction bumps once."""
    total: Counter[Key] = Counter()
    for part in parts:
        total.update(part)
    return dict(total)


# The rows are sorted by key so every writer locks them in the same order.
_BUMP = text(
    """
    INSERT INTO scout_counters AS c (name, label, shard, value)
    SELECT d.name, d.label, pg_backend_pid() % :shards, d.delta
    FROM unnest(CAST(:names AS text[]), CAST(:labels AS text[]), CAST(:deltas AS bigint[]))
         AS d(name, label, delta)
    ORDER BY d.name, d.label
    ON CONFLICT (name, label, shard)
        DO UPDATE SET value = LEAST(c.value, :top - EXCLUDED.value) + EXCLUDED.value
    """
)
# Counters saturate at bigint's end: a row set there by hand (or a sum of lags
# that large) must not overflow and fail every transaction that bumps it, the
# fire batches included (README, "No single row stops firing").
_TOP = 9223372036854775807


def bump(conn: Connection, deltas: Deltas) -> None:
    """Add ``deltas`` to their counters inside the caller's transaction.

    Call it once per transaction, as its last statement (see the module's
    docstring). A zero or negative delta is dropped: counters only go up.
    """
    items = sorted((key, min(n, _TOP)) for key, n in deltas.items() if n > 0)
    if not items:
        return
    conn.execute(
        _BUMP,
        {
            "shards": SHARDS,
            "top": _TOP,
            "names": [name for (name, _label), _n in items],
            "labels": [label for (_name, label), _n in items],
            "deltas": [n for _key, n in items],
        },
    )


_TOTALS = text("SELECT name, label, sum(value) FROM scout_counters GROUP BY name, label")


def totals(conn: Connection) -> dict[Key, int]:
    """Every counter's total over its shards (a few dozen rows, whatever the history)."""
    return {(name, label): int(value) for name, label, value in conn.execute(_TOTALS)}
