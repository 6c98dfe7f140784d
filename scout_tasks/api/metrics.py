"""/metrics: one registry for the app's life, whose collector reads the database per scrape.

Counters come from ``scout_counters`` (see :mod:`scout_tasks.counters` for why
they live in the database), gauges from :func:`scout_tasks.health.read_snapshot`:
both are the same whichever API replica is scraped, so the alert rules
aggregate replicas with max(). A database that does not answer makes the
scrape fail (the route answers 503) rather than report zeros.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from scout_tasks import counters, health
from scout_tasks.tables import TRIGGER_TYPES

ENDED_STATUSES = ("completed", "failed", "cancelled")


def _labelled(
    name: str, doc: str, label: str, values: Iterable[str], totals: dict[counters.Key, int]
) -> CounterMetricFamily:
    """A counter per label value, the known values always present (0 until counted)."""
    family = CounterMetricFamily(name.removesuffix("_total"), doc, labels=[label])
    seen = {lab for (n, lab) in totals if n == name}
    for value in sorted(set(values) | seen):
        family.add_metric([value], totals.get((name, value), 0))
    return family


def _plain(name: str, doc: str, totals: dict[counters.Key, int]) -> CounterMetricFamily:
    return CounterMetricFamily(name.removesuffix("_total"), doc, value=totals.get((name, ""), 0))


def fire_lag_histogram(
    totals: dict[counters.Key, int], bounds: Sequence[float] = counters.FIRE_LAG_BOUNDS
) -> HistogramMetricFamily:
    """The stored (per-bucket) counts made cumulative, as Prometheus wants them.

    A stored bucket whose bound is not in ``bounds`` (the bounds changed since
    it was written) is counted in the first bound at or above it, so every
    bucket still counts only observations at or below its ``le``.
    """
    per_bound = dict.fromkeys([*bounds, math.inf], 0)
    for (name, label), n in totals.items():
        if name != counters.FIRE_LAG_BUCKET:
            continue
        stored = float(label)
        target = next((b for b in per_bound if stored <= b), math.inf)
        per_bound[target] += n
    cumulative, running = [], 0
    for bound, n in per_bound.items():
        running += n
        cumulative.append(("+Inf" if math.isinf(bound) else repr(bound), running))
    return HistogramMetricFamily(
        "scout_fire_lag_seconds",
        "Seconds from a run's slot (scheduled_for) to its creation, per run fired.",
        buckets=cumulative,
        sum_value=totals.get((counters.FIRE_LAG_SUM_MICROS, ""), 0) / 1_000_000,
    )


def collect_metrics(engine: Engine) -> list[Metric]:
    """Every metric, read from the database now."""
    with engine.connect() as conn:
        totals = counters.totals(conn)
        snap = health.read_snapshot(conn)
    beat_tick = snap.beat.last_tick_at.timestamp() if snap.beat else None
    metrics: list[Metric] = [
        _labelled(counters.RUNS_CREATED, "Runs created.", "trigger_type", TRIGGER_TYPES, totals),
        _labelled(
            counters.RUNS_FINISHED,
            "Runs that reached a terminal status.",
            "status",
            ENDED_STATUSES,
            totals,
        ),
        _plain(
            counters.RUNS_STALE,
            "Runs marked failed by the stale-run sweep (no agent event in time).",
            totals,
        ),
        _plain(
            counters.EVENTS_PUBLISHED, "Events confirmed by the broker (outbox rows done).", totals
        ),
        _plain(
            counters.SKIPPED_SLOTS, "Cron slots skipped by the misfire or overlap policy.", totals
        ),
        fire_lag_histogram(totals),
        GaugeMetricFamily(
            "scout_schedules_enabled", "Enabled schedules.", value=snap.schedules_enabled
        ),
        GaugeMetricFamily(
            "scout_schedules_due",
            "Enabled schedules whose next_run_at has passed.",
            value=snap.schedules_due,
        ),
        GaugeMetricFamily(
            "scout_schedules_overdue",
            "Enabled schedules whose next_run_at is more than 60 s past.",
            value=snap.schedules_overdue,
        ),
        GaugeMetricFamily(
            "scout_schedules_cannot_fire",
            "Enabled schedules with no next_run_at and a last_error: they never fire as they are.",
            value=snap.schedules_cannot_fire,
        ),
        GaugeMetricFamily(
            "scout_outbox_backlog",
            "Events waiting in the outbox for the broker's confirm.",
            value=snap.outbox_backlog,
        ),
        GaugeMetricFamily(
            "scout_outbox_oldest_age_seconds",
            "Seconds the oldest event in the outbox has waited (0 when empty).",
            value=snap.outbox_oldest_age,
        ),
    ]
    active = GaugeMetricFamily("scout_runs_active", "Runs pending or running.", labels=["status"])
    active.add_metric(["pending"], snap.runs_pending)
    active.add_metric(["running"], snap.runs_running)
    metrics.append(active)
    if beat_tick is not None:
        # No series until a beat has ticked: the alert rules' absent() sees that.
        metrics.append(
            GaugeMetricFamily(
                "scout_beat_last_tick_timestamp_seconds",
                "Unix time of the leading beat's last tick (the database's clock).",
                value=beat_tick,
            )
        )
    return metrics


class ScoutCollector(Collector):
    """Reads the database on every scrape; registered once, in :func:`make_registry`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterable[Metric]:
        return collect_metrics(self.engine)

    def describe(self) -> Iterable[Metric]:
        # Registering must not touch the database (the API starts without it).
        return []


def make_registry(engine: Engine) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScoutCollector(engine))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
