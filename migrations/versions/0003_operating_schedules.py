"""Operating schedules: description, jitter, pause, managed_by; change history; sane timestamps.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Python's datetime holds years 1 to 9999, and a value is often shown in a zone
# up to a day away from UTC: keep a day of margin at each end. The offsets are
# spelled out so the bounds do not depend on the session's TimeZone.
EARLIEST = "'0001-01-02 00:00:00+00'"
LATEST = "'9999-12-31 00:00:00+00'"

SCHEDULE_TIMES = ("next_run_at", "last_run_at", "created_at", "updated_at", "paused_at")
RUN_TIMES = ("scheduled_for", "created_at", "started_at", "completed_at", "updated_at")


# A value Python cannot read (year 0 or before, 10000 or after) would stop the
# beat or the API; this migration must still apply on such a database, so it
# repairs them first. A nullable column loses the value (the scheduler then
# recomputes next_run_at); a required one takes the time of the migration.
REPAIRS = (
    ("scout_schedules", "next_run_at", "NULL"),
    ("scout_schedules", "last_run_at", "NULL"),
    ("scout_schedules", "created_at", "now()"),
    # The update trigger sets updated_at = now() on any UPDATE anyway.
    ("scout_schedules", "updated_at", "now()"),
    ("scout_runs", "scheduled_for", "NULL"),
    ("scout_runs", "created_at", "now()"),
    ("scout_runs", "started_at", "NULL"),
    ("scout_runs", "completed_at", "NULL"),
    ("scout_runs", "updated_at", "now()"),
)


def _repair(table: str, column: str, replacement: str) -> str:
    # Only this module's constants are interpolated. NULL stays NULL: NOT (NULL)
    # is NULL, which no WHERE selects.
    return (
        f"UPDATE {table} SET {column} = {replacement} "  # noqa: S608
        f"WHERE NOT ({column} >= {EARLIEST} AND {column} < {LATEST})"
    )


# What the scheduler writes on its own (firing, planning, recording an error);
# an UPDATE that changes only these is bookkeeping, not a change of the schedule.
# id and created_at never change, and a create row would only repeat them.
NOT_CHANGES = (
    "id",
    "created_at",
    "next_run_at",
    "last_run_id",
    "last_run_at",
    "skipped_slots",
    "last_error",
    "updated_at",
)
_NOT_CHANGES = "CAST('{" + ",".join(NOT_CHANGES) + "}' AS text[])"

# The actor of a change: what the application set for this transaction
# (SELECT set_config('scout.actor', :actor, true)), else the database role and
# the client's application_name, e.g. "postgres (psql)". A custom setting once
# set in a session reads '' afterwards, not NULL, hence the NULLIF.
ACTOR_FUNCTION = """
CREATE FUNCTION scout_actor() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(
        NULLIF(current_setting('scout.actor', true), ''),
        session_user::text
            || COALESCE(' (' || NULLIF(current_setting('application_name', true), '') || ')', '')
    )
$$;
"""

# The 0001 trigger, plus the pause rules that let plain SQL pause and resume in
# one statement without tripping the paused_* checks:
# - giving a reason where there was none pauses: disabled, paused_at and
#   paused_by filled in when the statement left them out;
# - taking the reason away clears paused_at and paused_by;
# - re-enabling a paused schedule resumes it (clears the paused fields).
# A plain disable (enabled = false, no reason) stays what it was.
BEFORE_UPDATE = """
CREATE OR REPLACE FUNCTION scout_schedules_before_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    IF NEW.paused_reason IS NOT NULL AND OLD.paused_reason IS NULL THEN
        NEW.enabled := false;
        NEW.paused_at := COALESCE(NEW.paused_at, now());
        NEW.paused_by := COALESCE(NEW.paused_by, scout_actor());
    ELSIF NEW.paused_reason IS NULL AND OLD.paused_reason IS NOT NULL THEN
        NEW.paused_at := NULL;
        NEW.paused_by := NULL;
    ELSIF NEW.enabled AND NOT OLD.enabled AND NEW.paused_reason IS NOT NULL THEN
        NEW.paused_reason := NULL;
        NEW.paused_at := NULL;
        NEW.paused_by := NULL;
    END IF;
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
"""

BEFORE_UPDATE_0001 = """
CREATE OR REPLACE FUNCTION scout_schedules_before_update() RETURNS trigger
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
"""

# Every other column: a change to any of them is recorded. The UPDATE trigger
# names them in its WHEN clause, which PostgreSQL evaluates without entering
# PL/pgSQL, so firing's bulk bookkeeping (100,000 rows in one statement) costs
# next to nothing (measured: within noise, where comparing to_jsonb(OLD) and
# to_jsonb(NEW) there added ~50%). A migration that adds a column recreates the
# trigger with it; tests/integration/test_migrations.py checks none is missed.
TRACKED = (
    "name",
    "cron_expression",
    "source",
    "max_strategies",
    "enabled",
    "timezone",
    "misfire_policy",
    "misfire_grace_seconds",
    "overlap_policy",
    "description",
    "jitter_seconds",
    "paused_reason",
    "paused_at",
    "paused_by",
    "managed_by",
)


def _row(alias: str) -> str:
    return "(" + ", ".join(f"{alias}.{c}" for c in TRACKED) + ")"


# The history is written by the database, so an edit made with psql is recorded
# like one made through the API. The functions compare rows as JSON (all
# columns but NOT_CHANGES), so what they record never depends on TRACKED.
# SECURITY DEFINER: a role allowed to edit schedules gets its edits recorded
# without being allowed to write (or forge) history itself; session_user, which
# the actor names, is not changed by it. The search_path is pinned to the
# migration's so nobody can slip another scout_schedule_changes in front.
#
# Creates and deletes are recorded per statement from the transition table, in
# one INSERT ... SELECT: a bulk load of 100,000 schedules costs ~2x the bare
# INSERT where a row trigger cost ~5x.
_RECORD_CHANGE = """
CREATE FUNCTION scout_schedules_record_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    old_fields jsonb := to_jsonb(OLD) - $not_changes;
    new_fields jsonb := to_jsonb(NEW) - $not_changes;
    diff jsonb;
    kind text;
BEGIN
    SELECT COALESCE(jsonb_object_agg(key, jsonb_build_array(old_fields -> key, new_fields -> key)), '{}')
      INTO diff
      FROM jsonb_object_keys(old_fields || new_fields) AS key
     WHERE old_fields -> key IS DISTINCT FROM new_fields -> key;
    IF diff = '{}' THEN
        RETURN NULL;
    ELSIF OLD.paused_reason IS NULL AND NEW.paused_reason IS NOT NULL THEN
        kind := 'pause';
    ELSIF OLD.paused_reason IS NOT NULL AND NEW.paused_reason IS NULL AND NEW.enabled THEN
        kind := 'resume';
    ELSIF diff - 'enabled' = '{}' THEN
        kind := CASE WHEN NEW.enabled THEN 'enable' ELSE 'disable' END;
    ELSE
        kind := 'update';
    END IF;
    INSERT INTO scout_schedule_changes (schedule_id, actor, action, changes)
    VALUES (NEW.id, scout_actor(), kind, diff);
    RETURN NULL;
END $$;

CREATE FUNCTION scout_schedules_record_create() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO scout_schedule_changes (schedule_id, actor, action, changes)
    SELECT s.id, scout_actor(), 'create',
           (SELECT COALESCE(jsonb_object_agg(key, jsonb_build_array(NULL, value)), '{}')
              FROM jsonb_each(to_jsonb(s) - $not_changes)
             WHERE value <> 'null')
      FROM created AS s;
    RETURN NULL;
END $$;

CREATE FUNCTION scout_schedules_record_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO scout_schedule_changes (schedule_id, actor, action, changes)
    SELECT s.id, scout_actor(), 'delete',
           (SELECT COALESCE(jsonb_object_agg(key, jsonb_build_array(value, NULL)), '{}')
              FROM jsonb_each(to_jsonb(s) - $not_changes)
             WHERE value <> 'null')
      FROM deleted AS s;
    RETURN NULL;
END $$;

CREATE TRIGGER scout_schedules_record_create
    AFTER INSERT ON scout_schedules
    REFERENCING NEW TABLE AS created
    FOR EACH STATEMENT EXECUTE FUNCTION scout_schedules_record_create();

CREATE TRIGGER scout_schedules_record_delete
    AFTER DELETE ON scout_schedules
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION scout_schedules_record_delete();

CREATE TRIGGER scout_schedules_record_update
    AFTER UPDATE ON scout_schedules
    FOR EACH ROW
    WHEN ($old_row IS DISTINCT FROM $new_row)
    EXECUTE FUNCTION scout_schedules_record_update();
"""

RECORD_CHANGE = (
    _RECORD_CHANGE.replace("$not_changes", _NOT_CHANGES)
    .replace("$old_row", _row("OLD"))
    .replace("$new_row", _row("NEW"))
)

DROP_RECORD_CHANGE = """
DROP TRIGGER IF EXISTS scout_schedules_record_update ON scout_schedules;
DROP TRIGGER IF EXISTS scout_schedules_record_delete ON scout_schedules;
DROP TRIGGER IF EXISTS scout_schedules_record_create ON scout_schedules;
DROP FUNCTION IF EXISTS scout_schedules_record_update();
DROP FUNCTION IF EXISTS scout_schedules_record_delete();
DROP FUNCTION IF EXISTS scout_schedules_record_create();
"""


def _range_checks(table: str, columns: Sequence[str]) -> None:
    for column in columns:
        op.create_check_constraint(
            op.f(f"ck_{table}_{column}_range"),
            table,
            f"{column} >= {EARLIEST} AND {column} < {LATEST}",
        )


def upgrade() -> None:
    op.add_column(
        "scout_schedules",
        sa.Column("description", sa.Text(), server_default=sa.text("''"), nullable=False),
    )
    op.add_column(
        "scout_schedules",
        sa.Column("jitter_seconds", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("scout_schedules", sa.Column("paused_reason", sa.Text(), nullable=True))
    op.add_column(
        "scout_schedules", sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("scout_schedules", sa.Column("paused_by", sa.Text(), nullable=True))
    op.add_column("scout_schedules", sa.Column("managed_by", sa.Text(), nullable=True))

    for table, column, replacement in REPAIRS:
        op.execute(_repair(table, column, replacement))

    checks = {
        "jitter_seconds_range": "jitter_seconds BETWEEN 0 AND 3600",
        "description_length": "char_length(description) <= 2000",
        "paused_reason_length": "char_length(paused_reason) BETWEEN 1 AND 500",
        "paused_fields": (
            "(paused_reason IS NULL AND paused_at IS NULL AND paused_by IS NULL)"
            " OR (paused_reason IS NOT NULL AND paused_at IS NOT NULL)"
        ),
        "paused_is_disabled": "paused_reason IS NULL OR NOT enabled",
    }
    for name, condition in checks.items():
        op.create_check_constraint(op.f(f"ck_scout_schedules_{name}"), "scout_schedules", condition)
    _range_checks("scout_schedules", SCHEDULE_TIMES)
    _range_checks("scout_runs", RUN_TIMES)

    op.create_table(
        "scout_schedule_changes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("schedule_id", sa.UUID(), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("changes", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scout_schedule_changes")),
    )
    op.create_index(
        "ix_scout_schedule_changes_schedule_id_at",
        "scout_schedule_changes",
        ["schedule_id", sa.text("at DESC"), sa.text("id DESC")],
        unique=False,
    )
    op.execute(ACTOR_FUNCTION)
    op.execute(BEFORE_UPDATE)
    op.execute(RECORD_CHANGE)


def downgrade() -> None:
    op.execute(DROP_RECORD_CHANGE)
    op.execute(BEFORE_UPDATE_0001)
    op.execute("DROP FUNCTION IF EXISTS scout_actor()")
    op.drop_index("ix_scout_schedule_changes_schedule_id_at", table_name="scout_schedule_changes")
    op.drop_table("scout_schedule_changes")
    for column in RUN_TIMES:
        op.drop_constraint(op.f(f"ck_scout_runs_{column}_range"), "scout_runs", type_="check")
    for column in SCHEDULE_TIMES:
        if column != "paused_at":  # dropped with its column
            op.drop_constraint(
                op.f(f"ck_scout_schedules_{column}_range"), "scout_schedules", type_="check"
            )
    # The remaining checks go with the columns they name.
    for column in (
        "managed_by",
        "paused_by",
        "paused_at",
        "paused_reason",
        "jitter_seconds",
        "description",
    ):
        op.drop_column("scout_schedules", column)
