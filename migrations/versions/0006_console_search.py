"""The console's search: a narrow copy of each schedule's name and source, trigram-indexed.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30

Why a side table and not trigram indexes on ``scout_schedules`` itself: every
fire updates ``next_run_at``, an indexed column, so PostgreSQL writes a new
entry into every index of the table on every fire. Measured on 200,000 rows,
trigram GIN indexes on name and source made that update about four times as
slow; here firing never touches the search table, because only a change of
``name`` or ``source`` (or a new schedule) writes to it, through triggers, so
plain-SQL edits are searchable at once too.

Also a partial index of disabled schedules by name: the console's "paused"
filter and count read it, and enabled rows (nearly all, on the fire path)
never enter it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SECURITY DEFINER with the migration's search_path, as the history triggers
# (0003): a role allowed to edit schedules keeps the copy in step without
# being allowed to write it.
_SYNC = """
CREATE FUNCTION scout_schedule_search_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO scout_schedule_search (schedule_id, name, source)
    SELECT id, name, source FROM created
    ON CONFLICT (schedule_id) DO UPDATE SET name = EXCLUDED.name, source = EXCLUDED.source;
    RETURN NULL;
END $$;

CREATE FUNCTION scout_schedule_search_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE scout_schedule_search SET name = NEW.name, source = NEW.source
     WHERE schedule_id = NEW.id;
    RETURN NULL;
END $$;

-- Per statement, from the transition table: a bulk load stays one INSERT ... SELECT.
CREATE TRIGGER scout_schedules_search_insert
AFTER INSERT ON scout_schedules REFERENCING NEW TABLE AS created
FOR EACH STATEMENT EXECUTE FUNCTION scout_schedule_search_insert();

-- Only when the name or the source really changes: firing's updates never get here.
CREATE TRIGGER scout_schedules_search_update
AFTER UPDATE OF name, source ON scout_schedules
FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name OR OLD.source IS DISTINCT FROM NEW.source)
EXECUTE FUNCTION scout_schedule_search_update();
"""


def upgrade() -> None:
    # Trusted since PostgreSQL 13: a database owner may create it without superuser.
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_table(
        "scout_schedule_search",
        sa.Column("schedule_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["scout_schedules.id"],
            name=op.f("fk_scout_schedule_search_schedule_id"),
            ondelete="CASCADE",
            onupdate="CASCADE",
        ),
        sa.PrimaryKeyConstraint("schedule_id", name=op.f("pk_scout_schedule_search")),
    )
    op.execute(
        "INSERT INTO scout_schedule_search (schedule_id, name, source) "
        "SELECT id, name, source FROM scout_schedules"
    )
    op.create_index(
        op.f("ix_scout_schedule_search_name"), "scout_schedule_search", ["name"], unique=False
    )
    op.create_index(
        "ix_scout_schedule_search_name_trgm",
        "scout_schedule_search",
        ["name"],
        unique=False,
        postgresql_using="gin",
        postgresql_ops={"name": "gin_trgm_ops"},
    )
    op.create_index(
        "ix_scout_schedule_search_source_trgm",
        "scout_schedule_search",
        ["source"],
        unique=False,
        postgresql_using="gin",
        postgresql_ops={"source": "gin_trgm_ops"},
    )
    op.create_index(
        "ix_scout_schedules_disabled",
        "scout_schedules",
        ["name"],
        unique=False,
        postgresql_where=sa.text("NOT enabled"),
    )
    op.execute(_SYNC)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS scout_schedules_search_update ON scout_schedules")
    op.execute("DROP TRIGGER IF EXISTS scout_schedules_search_insert ON scout_schedules")
    op.execute("DROP FUNCTION IF EXISTS scout_schedule_search_update()")
    op.execute("DROP FUNCTION IF EXISTS scout_schedule_search_insert()")
    op.drop_index("ix_scout_schedules_disabled", table_name="scout_schedules")
    op.drop_table("scout_schedule_search")
    # pg_trgm stays: another application in this database may use it.
