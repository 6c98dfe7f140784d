"""The database schema as SQLAlchemy Core tables: the one description Alembic compares against.

Defaults live on the server (``server_default``) so that an operator's plain SQL
INSERT naming only the original columns (docs/contract.md, "Database") works.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSON, JSONB, UUID

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

RUN_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
TRIGGER_TYPES = ("scheduled", "manual", "event")
MISFIRE_POLICIES = ("coalesce", "skip", "catch_up")
OVERLAP_POLICIES = ("allow", "skip")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


# Python's datetime holds years 1 to 9999, and a value is often shown in a zone
# up to a day away from UTC; the bounds leave that day of margin on each side.
# The offsets are written out so the constants do not depend on the session's
# TimeZone when the constraint is created.
EARLIEST = "'0001-01-02 00:00:00+00'"
LATEST = "'9999-12-31 00:00:00+00'"


def _in_python_range(column: str) -> CheckConstraint:
    return CheckConstraint(
        f"{column} >= {EARLIEST} AND {column} < {LATEST}", name=f"{column}_range"
    )


# Columns of scout_schedules that the scheduler itself writes: a change to
# only these is not a change of the schedule, and its history does not record it.
SCHEDULE_BOOKKEEPING = (
    "next_run_at",
    "last_run_id",
    "last_run_at",
    "skipped_slots",
    "last_error",
    "updated_at",
)


_now = text("now()")

schedules = Table(
    "scout_schedules",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")),
    Column("name", String(255), nullable=False, unique=True),
    Column("cron_expression", String(255), nullable=False),
    Column("source", String(255), nullable=False),
    Column("max_strategies", Integer, nullable=False),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column(
        "last_run_id",
        UUID(as_uuid=True),
        ForeignKey("scout_runs.id", ondelete="SET NULL", use_alter=True),
    ),
    Column("last_run_at", DateTime(timezone=True)),
    Column("next_run_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=_now),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=_now),
    Column("timezone", String(64), nullable=False, server_default=text("'UTC'")),
    Column("misfire_policy", String(16), nullable=False, server_default=text("'coalesce'")),
    Column("misfire_grace_seconds", Integer, nullable=False, server_default=text("60")),
    Column("overlap_policy", String(16), nullable=False, server_default=text("'allow'")),
    Column("skipped_slots", BigInteger, nullable=False, server_default=text("0")),
    # Why the scheduler cannot compute this schedule's slots (a bad cron
    # expression or time zone written with plain SQL); cleared when fixed.
    Column("last_error", Text),
    Column("description", Text, nullable=False, server_default=text("''")),
    # Spreads a herd of schedules on one slot: each fires at slot + d, d in [0, J).
    Column("jitter_seconds", Integer, nullable=False, server_default=text("0")),
    # A pause is a disable with a reason and an author (see the paused_* checks).
    Column("paused_reason", Text),
    Column("paused_at", DateTime(timezone=True)),
    Column("paused_by", Text),
    # Who owns the schedule as code: set only by `schedules apply`, so --prune
    # never touches a schedule made any other way.
    Column("managed_by", Text),
    CheckConstraint("max_strategies BETWEEN 1 AND 1000", name="max_strategies_range"),
    # The write rules' lengths, so a schedule written with plain SQL keeps them too.
    CheckConstraint("char_length(name) >= 1", name="name_length"),
    CheckConstraint("char_length(source) BETWEEN 1 AND 50", name="source_length"),
    CheckConstraint(_one_of("misfire_policy", MISFIRE_POLICIES), name="misfire_policy"),
    CheckConstraint(_one_of("overlap_policy", OVERLAP_POLICIES), name="overlap_policy"),
    CheckConstraint("misfire_grace_seconds >= 0", name="misfire_grace_nonnegative"),
    CheckConstraint("jitter_seconds BETWEEN 0 AND 3600", name="jitter_seconds_range"),
    CheckConstraint("char_length(description) <= 2000", name="description_length"),
    CheckConstraint("char_length(paused_reason) BETWEEN 1 AND 500", name="paused_reason_length"),
    # Paused means a reason and an instant (paused_by may be unknown); a plain
    # disable (enabled = false, no reason) stays possible.
    CheckConstraint(
        "(paused_reason IS NULL AND paused_at IS NULL AND paused_by IS NULL)"
        " OR (paused_reason IS NOT NULL AND paused_at IS NOT NULL)",
        name="paused_fields",
    ),
    CheckConstraint("paused_reason IS NULL OR NOT enabled", name="paused_is_disabled"),
    *(
        _in_python_range(c)
        for c in ("next_run_at", "last_run_at", "created_at", "updated_at", "paused_at")
    ),
    # The beat's "when is the next slot" and the tick's "what is due" queries.
    Index(
        "ix_scout_schedules_due",
        "next_run_at",
        postgresql_where=text("enabled"),
    ),
    # Deleting a run (retention) sets last_run_id to NULL where it points at
    # it: without this, one scan of all schedules per deleted run.
    Index("ix_scout_schedules_last_run_id", "last_run_id"),
    # The console's "paused" filter and count; enabled rows never enter it.
    Index("ix_scout_schedules_disabled", "name", postgresql_where=text("NOT enabled")),
)

# The console's search: each schedule's name and source, kept in step by
# triggers (migration 0006) and trigram-indexed here rather than on
# scout_schedules, whose every fire would otherwise rewrite the trigram entries.
schedule_search = Table(
    "scout_schedule_search",
    metadata,
    Column(
        "schedule_id",
        UUID(as_uuid=True),
        ForeignKey("scout_schedules.id", ondelete="CASCADE", onupdate="CASCADE"),
        primary_key=True,
    ),
    Column("name", Text, nullable=False),
    Column("source", Text, nullable=False),
    Index("ix_scout_schedule_search_name", "name"),
    Index(
        "ix_scout_schedule_search_name_trgm",
        "name",
        postgresql_using="gin",
        postgresql_ops={"name": "gin_trgm_ops"},
    ),
    Index(
        "ix_scout_schedule_search_source_trgm",
        "source",
        postgresql_using="gin",
        postgresql_ops={"source": "gin_trgm_ops"},
    ),
)

runs = Table(
    "scout_runs",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")),
    Column("trigger_type", String(50), nullable=False),
    Column("triggered_by", String(255)),
    Column("source", String(255), nullable=False),
    Column("max_strategies", Integer, nullable=False),
    Column("status", String(50), nullable=False, server_default=text("'pending'")),
    Column("error_message", Text),
    Column("metrics", JSONB),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=_now),
    Column("started_at", DateTime(timezone=True)),
    Column("completed_at", DateTime(timezone=True)),
    Column(
        "schedule_id",
        UUID(as_uuid=True),
        ForeignKey("scout_schedules.id", ondelete="SET NULL"),
    ),
    Column("scheduled_for", DateTime(timezone=True)),
    # When the last lifecycle event arrived; the stale-run sweep measures from it.
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=_now),
    # The database says "once": one run per schedule per slot, whatever races.
    UniqueConstraint("schedule_id", "scheduled_for"),
    CheckConstraint(_one_of("status", RUN_STATUSES), name="status"),
    CheckConstraint(_one_of("trigger_type", TRIGGER_TYPES), name="trigger_type"),
    # The lifecycle merges into metrics with || and jsonb_set: an object or nothing.
    CheckConstraint("metrics IS NULL OR jsonb_typeof(metrics) = 'object'", name="metrics_object"),
    *(
        _in_python_range(c)
        for c in ("scheduled_for", "created_at", "started_at", "completed_at", "updated_at")
    ),
    Index("ix_scout_runs_created_at", "created_at"),
    Index(
        "ix_scout_runs_active",
        "status",
        "updated_at",
        postgresql_where=text("status IN ('pending', 'running')"),
    ),
    # Retention: the ended runs, oldest first, without reading the active ones.
    Index(
        "ix_scout_runs_ended",
        "completed_at",
        postgresql_where=text("status IN ('completed', 'failed', 'cancelled')"),
    ),
)

# Events waiting for the broker's confirm. A row is written in the same
# transaction as the run it announces and deleted once RabbitMQ confirmed it,
# so a broker outage or a crash between commit and publish loses nothing.
outbox = Table(
    "scout_outbox",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
    Column("routing_key", String(255), nullable=False),
    # JSON, not JSONB: the body goes out exactly as it was built.
    Column("payload", JSON, nullable=False),
    Column("run_id", UUID(as_uuid=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=_now),
    Column("available_at", DateTime(timezone=True), nullable=False, server_default=_now),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text),
    Index("ix_scout_outbox_available_at", "available_at"),
)

# Every lifecycle event the worker has recorded, keyed by its event_id: the
# database says "once", so a redelivered or duplicated event changes nothing.
# No foreign key to scout_runs, on purpose: an event for an unknown run is
# recorded too (a redelivery of it is then a plain duplicate), inserting a
# ledger row never waits on a lock of the run row, and deleting old runs is
# never blocked or slowed by their events.
run_events = Table(
    "scout_run_events",
    metadata,
    Column("event_id", UUID(as_uuid=True), primary_key=True),
    Column("run_id", UUID(as_uuid=True), nullable=False),
    Column("event_type", String(50), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=_now),
    # A run's history, and removing it together with the run.
    Index("ix_scout_run_events_run_id", "run_id"),
)

# What changed in each schedule, by whom: written by a trigger on scout_schedules
# (see migrations/versions/0003_*), so a plain-SQL edit is recorded like one made
# through the API. No foreign key, on purpose: the history of a deleted schedule
# (its "delete" row included) outlives it.
schedule_changes = Table(
    "scout_schedule_changes",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("schedule_id", UUID(as_uuid=True), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=_now),
    Column("actor", Text, nullable=False),
    Column("action", String(16), nullable=False),
    # {"field": [old, new]} for every field the change touched.
    Column("changes", JSONB, nullable=False),
    # A schedule's history, newest first, one page at a time.
    Index(
        "ix_scout_schedule_changes_schedule_id_at", "schedule_id", text("at DESC"), text("id DESC")
    ),
)

# The monotonic counters behind /metrics (see scout_tasks/counters.py): bumped in
# the transaction of the work they count, so they hold across processes, hosts
# and restarts, and deleting schedules or pruning runs never lowers them. A
# counter is split over a few shards so concurrent writers rarely share a row;
# a scrape adds the shards up. ``label`` is the one label's value (a trigger
# type, a status, a histogram bucket's upper bound), '' for none.
counters = Table(
    "scout_counters",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("label", String(100), primary_key=True, server_default=text("''")),
    Column("shard", SmallInteger, primary_key=True),
    Column("value", BigInteger, nullable=False, server_default=text("0")),
)

# The leading beat's heartbeat: one row, written by the leader every time it
# sends a tick (see scout_tasks/heartbeat.py), read by `scout-tasks status` and
# /metrics. The beat's own tick period is stored so a reader judges "silent"
# by the beat's configuration, not its own.
beat = Table(
    "scout_beat",
    metadata,
    Column("id", SmallInteger, primary_key=True, server_default=text("1")),
    Column("leader", Text, nullable=False),
    Column("tick_seconds", Float, nullable=False),
    Column("leader_since", DateTime(timezone=True), nullable=False, server_default=_now),
    Column("last_tick_at", DateTime(timezone=True), nullable=False, server_default=_now),
    CheckConstraint("id = 1", name="single_row"),
)
