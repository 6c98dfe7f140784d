"""Schedules, runs and the event outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Plain SQL is a first-class way to change a schedule, so the rules that keep
# next_run_at honest live in the database rather than in Python:
# - changing the cron expression or time zone (without also setting
#   next_run_at) clears next_run_at, and re-enabling a schedule does too, so the
#   scheduler recomputes the next slot from now instead of firing a stale one;
# - every write NOTIFYs the beat so the change is honoured at once. The
#   trigger is per statement and the payload constant, so PostgreSQL folds a
#   transaction's notifications into one.
SCHEDULE_TRIGGERS = """
CREATE FUNCTION scout_schedules_before_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    IF NEW.next_run_at IS NOT DISTINCT FROM OLD.next_run_at AND (
        NEW.cron_expression IS DISTINCT FROM OLD.cron_expression
        OR NEW.timezone IS DISTINCT FROM OLD.timezone
        OR (NEW.enabled AND NOT OLD.enabled)
    ) THEN
        NEW.next_run_at := NULL;
    END IF;
    -- A fix made by hand clears the error; the scheduler recording one does not.
    IF NEW.last_error IS NOT DISTINCT FROM OLD.last_error AND (
        NEW.cron_expression IS DISTINCT FROM OLD.cron_expression
        OR NEW.timezone IS DISTINCT FROM OLD.timezone
        OR NEW.next_run_at IS DISTINCT FROM OLD.next_run_at
    ) THEN
        NEW.last_error := NULL;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER scout_schedules_before_update
    BEFORE UPDATE ON scout_schedules
    FOR EACH ROW EXECUTE FUNCTION scout_schedules_before_update();

CREATE FUNCTION scout_schedules_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('scout_schedules', '');
    RETURN NULL;
END $$;

CREATE TRIGGER scout_schedules_notify
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON scout_schedules
    FOR EACH STATEMENT EXECUTE FUNCTION scout_schedules_notify();
"""

DROP_SCHEDULE_TRIGGERS = """
DROP TRIGGER IF EXISTS scout_schedules_notify ON scout_schedules;
DROP FUNCTION IF EXISTS scout_schedules_notify();
DROP TRIGGER IF EXISTS scout_schedules_before_update ON scout_schedules;
DROP FUNCTION IF EXISTS scout_schedules_before_update();
"""


def upgrade() -> None:
    op.create_table(
        "scout_outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("routing_key", sa.String(length=255), nullable=False),
        sa.Column("payload", postgresql.JSON(astext_type=sa.Text()), nullable=False),
        sa.Column("run_id", sa.UUID(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "available_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scout_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_scout_outbox_event_id")),
    )
    op.create_index("ix_scout_outbox_available_at", "scout_outbox", ["available_at"], unique=False)
    op.create_table(
        "scout_schedules",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("cron_expression", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("max_strategies", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("last_run_id", sa.UUID(), nullable=True),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "timezone", sa.String(length=64), server_default=sa.text("'UTC'"), nullable=False
        ),
        sa.Column(
            "misfire_policy",
            sa.String(length=16),
            server_default=sa.text("'coalesce'"),
            nullable=False,
        ),
        sa.Column(
            "misfire_grace_seconds", sa.Integer(), server_default=sa.text("60"), nullable=False
        ),
        sa.Column(
            "overlap_policy",
            sa.String(length=16),
            server_default=sa.text("'allow'"),
            nullable=False,
        ),
        sa.Column("skipped_slots", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "misfire_policy IN ('coalesce', 'skip', 'catch_up')",
            name=op.f("ck_scout_schedules_misfire_policy"),
        ),
        sa.CheckConstraint(
            "overlap_policy IN ('allow', 'skip')", name=op.f("ck_scout_schedules_overlap_policy")
        ),
        sa.CheckConstraint(
            "max_strategies BETWEEN 1 AND 1000",
            name=op.f("ck_scout_schedules_max_strategies_range"),
        ),
        sa.CheckConstraint(
            "misfire_grace_seconds >= 0", name=op.f("ck_scout_schedules_misfire_grace_nonnegative")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scout_schedules")),
        sa.UniqueConstraint("name", name=op.f("uq_scout_schedules_name")),
    )
    op.create_index(
        "ix_scout_schedules_due",
        "scout_schedules",
        ["next_run_at"],
        unique=False,
        postgresql_where=sa.text("enabled"),
    )
    op.create_table(
        "scout_runs",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("trigger_type", sa.String(length=50), nullable=False),
        sa.Column("triggered_by", sa.String(length=255), nullable=True),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("max_strategies", sa.Integer(), nullable=False),
        sa.Column(
            "status", sa.String(length=50), server_default=sa.text("'pending'"), nullable=False
        ),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("metrics", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("schedule_id", sa.UUID(), nullable=True),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'completed', 'failed', 'cancelled')",
            name=op.f("ck_scout_runs_status"),
        ),
        sa.CheckConstraint(
            "trigger_type IN ('scheduled', 'manual', 'event')",
            name=op.f("ck_scout_runs_trigger_type"),
        ),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["scout_schedules.id"],
            name=op.f("fk_scout_runs_schedule_id"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scout_runs")),
        sa.UniqueConstraint(
            "schedule_id", "scheduled_for", name=op.f("uq_scout_runs_schedule_id_scheduled_for")
        ),
    )
    op.create_index(
        "ix_scout_runs_active",
        "scout_runs",
        ["status", "updated_at"],
        unique=False,
        postgresql_where=sa.text("status IN ('pending', 'running')"),
    )
    op.create_index("ix_scout_runs_created_at", "scout_runs", ["created_at"], unique=False)
    # The two tables point at each other, so this key is added once both exist.
    op.create_foreign_key(
        op.f("fk_scout_schedules_last_run_id"),
        "scout_schedules",
        "scout_runs",
        ["last_run_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.execute(SCHEDULE_TRIGGERS)


def downgrade() -> None:
    op.execute(DROP_SCHEDULE_TRIGGERS)
    op.drop_constraint(
        op.f("fk_scout_schedules_last_run_id"), "scout_schedules", type_="foreignkey"
    )
    op.drop_index("ix_scout_runs_created_at", table_name="scout_runs")
    op.drop_index(
        "ix_scout_runs_active",
        table_name="scout_runs",
        postgresql_where=sa.text("status IN ('pending', 'running')"),
    )
    op.drop_table("scout_runs")
    op.drop_index(
        "ix_scout_schedules_due", table_name="scout_schedules", postgresql_where=sa.text("enabled")
    )
    op.drop_table("scout_schedules")
    op.drop_index("ix_scout_outbox_available_at", table_name="scout_outbox")
    op.drop_table("scout_outbox")
